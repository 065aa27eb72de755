"""Tests for robopolicy.datasets.pointcloud: FPS against a brute-force reference, depth
back-projection against known geometry and open3d, workspace crop and input checks."""

import numpy as np
import open3d as o3d
import pytest

from robopolicy.datasets.pointcloud import (
    crop_workspace,
    depth_to_points,
    farthest_point_sample,
    sample_point_cloud,
)

K = np.array([[300.0, 0.0, 15.5], [0.0, 280.0, 11.0], [0.0, 0.0, 1.0]])
H, W = 24, 32


def reference_fps(points: np.ndarray, n_samples: int, start_index: int = 0) -> np.ndarray:
    """Naive FPS in the input's precision: min distance to the chosen set, first argmax."""
    xyz = points[:, :3]
    min_dist = np.full(len(points), np.inf, dtype=points.dtype)
    chosen = [start_index]
    for _ in range(1, n_samples):
        diff = xyz - xyz[chosen[-1]]
        dist = diff[:, 0] * diff[:, 0] + diff[:, 1] * diff[:, 1] + diff[:, 2] * diff[:, 2]
        min_dist = np.minimum(min_dist, dist)
        chosen.append(int(np.argmax(min_dist)))
    return np.array(chosen)


def camera_looking_down(position) -> np.ndarray:
    """Camera-to-world pose of a camera at ``position`` looking down world -z, image x = world x."""
    pose = np.eye(4)
    pose[:3, :3] = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]]).T
    pose[:3, 3] = position
    return pose


def random_pose(rng: np.random.Generator) -> np.ndarray:
    """A random rigid camera-to-world transform."""
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    pose = np.eye(4)
    pose[:3, :3] = q * np.sign(np.linalg.det(q))
    pose[:3, 3] = rng.normal(size=3)
    return pose


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_points", [7, 2048, 5001])
def test_fps_matches_reference_and_carries_channels(dtype, n_points):
    rng = np.random.default_rng(n_points)
    points = np.concatenate([rng.normal(size=(n_points, 3)) * 5, rng.random((n_points, 3))], axis=1)
    points = points.astype(dtype)
    n_samples = min(n_points, 300)
    indices, sampled = farthest_point_sample(points, n_samples)
    np.testing.assert_array_equal(indices, reference_fps(points, n_samples))
    assert len(set(indices.tolist())) == n_samples
    assert sampled.dtype == dtype and sampled.shape == (n_samples, 6)
    np.testing.assert_array_equal(sampled, points[indices])


def test_fps_chooses_the_same_points_as_open3d():
    points = np.random.default_rng(7).uniform(-1.0, 1.0, (3000, 3))
    indices, _ = farthest_point_sample(points, 100, start_index=5)
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    expected = np.asarray(cloud.farthest_point_down_sample(100, start_index=5).points)
    np.testing.assert_array_equal(points[np.sort(indices)], expected)  # open3d keeps input order


def test_fps_ties_go_to_lowest_index_across_blocks():
    grid = np.stack(np.meshgrid(np.arange(16), np.arange(16), np.arange(12), indexing="ij"), -1)
    points = grid.reshape(-1, 3).astype(np.float64)  # 3,072 points, many equal distances
    indices, _ = farthest_point_sample(points, 400, start_index=1000)
    np.testing.assert_array_equal(indices, reference_fps(points, 400, start_index=1000))


def test_fps_start_index():
    points = np.random.default_rng(1).random((3000, 3)).astype(np.float32)
    indices, sampled = farthest_point_sample(points, 64, start_index=1234)
    assert indices[0] == 1234
    np.testing.assert_array_equal(sampled[0], points[1234])
    np.testing.assert_array_equal(indices, reference_fps(points, 64, start_index=1234))


def test_fps_pads_small_cloud_by_cycling_chosen_indices():
    points = np.random.default_rng(2).random((5, 6)).astype(np.float32)
    indices, sampled = farthest_point_sample(points, 12, start_index=3)
    np.testing.assert_array_equal(indices[:5], reference_fps(points, 5, start_index=3))
    assert sorted(indices[:5].tolist()) == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(indices, indices[np.arange(12) % 5])
    np.testing.assert_array_equal(sampled, points[indices])


def test_fps_single_point_cloud():
    indices, sampled = farthest_point_sample(np.array([[1.0, 2.0, 3.0]]), 4)
    np.testing.assert_array_equal(indices, [0, 0, 0, 0])
    np.testing.assert_array_equal(sampled, np.tile([1.0, 2.0, 3.0], (4, 1)))


def test_fps_is_invariant_to_permutation_of_the_input():
    rng = np.random.default_rng(3)
    points = rng.random((4000, 6)).astype(np.float32)
    perm = rng.permutation(len(points))
    start = 17
    _, sampled = farthest_point_sample(points, 128, start_index=start)
    _, sampled_perm = farthest_point_sample(points[perm], 128,
                                            start_index=int(np.flatnonzero(perm == start)[0]))
    np.testing.assert_array_equal(sampled_perm, sampled)


def test_depth_to_points_plane_at_known_pose():
    depth = np.full((H, W), 1.2, dtype=np.float32)
    depth[3, 4] = 0.0  # one hole, dropped
    rgb = np.random.default_rng(4).integers(0, 256, (H, W, 3), dtype=np.uint8)
    pose = camera_looking_down([0.5, -0.2, 1.5])
    points = depth_to_points(depth, K, pose, rgb=rgb)

    v, u = np.nonzero(depth > 0)
    assert points.shape == (H * W - 1, 6) and points.dtype == np.float32
    np.testing.assert_allclose(points[:, 2], 1.5 - 1.2, atol=1e-6)
    np.testing.assert_allclose(points[:, 0], 0.5 + (u - K[0, 2]) * 1.2 / K[0, 0], atol=1e-6)
    np.testing.assert_allclose(points[:, 1], -0.2 - (v - K[1, 2]) * 1.2 / K[1, 1], atol=1e-6)
    np.testing.assert_array_equal(points[:, 3:], rgb[v, u] / np.float32(255.0))

    homogeneous = np.concatenate([points[:, :3], np.ones((len(points), 1))], axis=1)
    cam = (np.linalg.inv(pose) @ homogeneous.T)[:3]
    pixels = (K @ cam)[:2] / cam[2]
    np.testing.assert_allclose(pixels, np.stack([u, v]), atol=1e-3)


def test_depth_to_points_uint16_scale_and_identity_extrinsics():
    depth = np.zeros((H, W), dtype=np.uint16)
    depth[10, 20] = 1500  # 1.5 m at depth_scale 1000
    points = depth_to_points(depth, K, depth_scale=1000.0)
    expected = [(20 - K[0, 2]) * 1.5 / K[0, 0], (10 - K[1, 2]) * 1.5 / K[1, 1], 1.5]
    np.testing.assert_allclose(points, [expected], atol=1e-6)


def test_depth_to_points_matches_open3d():
    rng = np.random.default_rng(5)
    depth = rng.integers(0, 3000, (H, W)).astype(np.uint16)  # millimetres, some 0 and > max
    depth[depth == 2000] = 1999  # keep clear of the truncation boundary
    pose = random_pose(rng)
    points = depth_to_points(depth, K, pose, depth_scale=1000.0, max_depth=2.0)

    intrinsic = o3d.camera.PinholeCameraIntrinsic(W, H, K)
    cloud = o3d.geometry.PointCloud.create_from_depth_image(
        o3d.geometry.Image(depth), intrinsic, np.linalg.inv(pose),  # open3d: world-to-camera
        depth_scale=1000.0, depth_trunc=2.0)
    expected = np.asarray(cloud.points)
    assert points.shape == expected.shape == (np.count_nonzero((depth > 0) & (depth <= 2000)), 3)
    np.testing.assert_allclose(points, expected, atol=1e-5)


def test_depth_to_points_drops_invalid_depths():
    depth = np.full((2, 4), 1.0)
    depth[0] = [np.nan, np.inf, -np.inf, -0.5]
    depth[1] = [0.0, 3.0, 2.0, 1.0]
    points = depth_to_points(depth, np.eye(3), max_depth=2.0)
    # identity K: pixel (u, v) at depth z maps to (u z, v z, z)
    np.testing.assert_allclose(points, [[4.0, 2.0, 2.0], [3.0, 1.0, 1.0]])


def test_crop_workspace_keeps_exactly_the_inside_points():
    rng = np.random.default_rng(6)
    points = rng.uniform(-1.0, 1.0, (2000, 6)).astype(np.float32)
    points[0, :3] = [-0.5, -0.25, 0.0]  # on the low corner
    points[1, :3] = [0.5, 0.25, 0.75]  # on the high corner
    points[2, :3] = [0.5, 0.25, 0.7500001]  # just outside
    low, high = [-0.5, -0.25, 0.0], [0.5, 0.25, 0.75]
    cropped = crop_workspace(points, low, high)
    inside = [i for i, p in enumerate(points)
              if all(lo <= c <= hi for c, lo, hi in zip(p[:3], low, high))]
    assert {0, 1}.issubset(inside) and 2 not in inside
    np.testing.assert_array_equal(cropped, points[inside])


def test_sample_point_cloud_pipeline():
    depth = np.full((H, W), 1.0, dtype=np.float32)
    rgb = np.zeros((H, W, 3), dtype=np.uint8)
    pose = camera_looking_down([0.0, 0.0, 1.0])
    workspace = ([-0.02, -0.02, -0.1], [0.02, 0.02, 0.1])
    sampled = sample_point_cloud(depth, K, 16, pose, rgb=rgb, workspace=workspace)
    full = crop_workspace(depth_to_points(depth, K, pose, rgb=rgb), *workspace)
    assert sampled.shape == (16, 6) and 16 < len(full)
    np.testing.assert_array_equal(sampled, farthest_point_sample(full, 16)[1])
    with pytest.raises(ValueError, match="workspace"):
        sample_point_cloud(depth, K, 16, pose, workspace=([5, 5, 5], [6, 6, 6]))


DEPTH = np.ones((2, 3))
CLOUD = np.ones((4, 3))
BOX = ([0, 0, 0], [1, 1, 1])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: depth_to_points(np.ones((2, 3, 1)), K),
         r"depth: got shape \(2, 3, 1\), expected \(H, W\)"),
        (lambda: depth_to_points(DEPTH.astype(bool), K), "depth: got dtype bool"),
        (lambda: depth_to_points(DEPTH, np.eye(3, 4)),
         r"intrinsics: got shape \(3, 4\), expected \(3, 3\)"),
        (lambda: depth_to_points(DEPTH, -np.eye(3)), "intrinsics: expected a pinhole K"),
        (lambda: depth_to_points(DEPTH, K, np.eye(3)),
         r"extrinsics: got shape \(3, 3\), expected \(4, 4\)"),
        (lambda: depth_to_points(DEPTH, K, 2 * np.eye(4)), "extrinsics: expected a finite homogeneous"),
        (lambda: depth_to_points(DEPTH, K, rgb=np.zeros((3, 2, 3), np.uint8)),
         r"rgb: got shape \(3, 2, 3\), expected \(2, 3, 3\)"),
        (lambda: depth_to_points(DEPTH, K, rgb=np.zeros((2, 3, 3))),
         "rgb: got dtype float64, expected uint8"),
        (lambda: depth_to_points(DEPTH, K, depth_scale=0.0), "depth_scale: got 0.0"),
        (lambda: depth_to_points(DEPTH, K, max_depth=np.nan), "max_depth: got nan"),
        (lambda: crop_workspace(np.ones((4, 2)), *BOX),
         r"points: got shape \(4, 2\), expected \(N, C\) with C >= 3"),
        (lambda: crop_workspace(CLOUD, [0, 0], [1, 1, 1]), r"low: got shape \(2,\), expected \(3,\)"),
        (lambda: crop_workspace(CLOUD, [0, 0, 0], [[1, 1, 1]]),
         r"high: got shape \(1, 3\), expected \(3,\)"),
        (lambda: crop_workspace(CLOUD, [0, 2, 0], [1, 1, 1]), "expected low <= high"),
        (lambda: farthest_point_sample(np.ones(3), 2), r"points: got shape \(3,\), expected \(N, C\)"),
        (lambda: farthest_point_sample(np.ones((0, 6)), 2),
         r"points: got shape \(0, 6\), expected .* N >= 1"),
        (lambda: farthest_point_sample(CLOUD, 0), "n_samples: got 0"),
        (lambda: farthest_point_sample(CLOUD, 2.0), "n_samples: got 2.0"),
        (lambda: farthest_point_sample(CLOUD, 2, start_index=4),
         r"start_index: got 4, expected an int in \[0, 4\)"),
        (lambda: farthest_point_sample(CLOUD, 2, start_index=-1), "start_index: got -1"),
        (lambda: farthest_point_sample(np.array([[0, 0, np.nan]]), 2), "points: xyz contains NaN"),
    ],
)
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
