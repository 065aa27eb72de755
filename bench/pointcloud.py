"""Times farthest point sampling against open3d and depth back-projection; prints one JSON object.

Run: .venv/bin/python -m bench.pointcloud
"""

import json
import os

import numpy as np
import open3d as o3d

from bench.timing import percentiles_ms
from robopolicy.datasets.pointcloud import depth_to_points, farthest_point_sample

REPEATS = 20


def bench_fps(n_points: int, n_samples: int, rng: np.random.Generator) -> dict:
    """Ours vs open3d's farthest_point_down_sample on one uniform cloud in a 1 m cube."""
    points = rng.uniform(-0.5, 0.5, (n_points, 3))
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    points32 = points.astype(np.float32)
    ours = percentiles_ms(lambda: farthest_point_sample(points32, n_samples), REPEATS)
    theirs = percentiles_ms(lambda: cloud.farthest_point_down_sample(n_samples), REPEATS)
    # Same float64 cloud on both sides: the same points are chosen (open3d keeps input order).
    indices, _ = farthest_point_sample(points, n_samples)
    same = np.array_equal(points[np.sort(indices)],
                          np.asarray(cloud.farthest_point_down_sample(n_samples).points))
    return {"ours_float32": ours, "open3d": theirs,
            "ratio_p50_ours_over_open3d": round(ours["p50_ms"] / theirs["p50_ms"], 4),
            "same_point_set_as_open3d_float64": bool(same)}


def bench_depth(rng: np.random.Generator) -> dict:
    """depth_to_points on a 480x640 float32 depth image (10% holes), with and without rgb."""
    depth = rng.uniform(0.3, 2.0, (480, 640)).astype(np.float32)
    depth[rng.random(depth.shape) < 0.1] = 0.0
    rgb = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    k = np.array([[615.0, 0.0, 320.0], [0.0, 615.0, 240.0], [0.0, 0.0, 1.0]])
    pose = np.eye(4)
    pose[:3, 3] = [0.1, -0.2, 0.8]
    return {"xyz": percentiles_ms(lambda: depth_to_points(depth, k, pose), REPEATS),
            "xyz_rgb": percentiles_ms(lambda: depth_to_points(depth, k, pose, rgb=rgb), REPEATS)}


def main() -> None:
    """Run every case and print the results as one JSON object."""
    rng = np.random.default_rng(0)
    farthest_point_sample(np.zeros((2, 3), np.float32), 2)  # numba compile or cache load
    farthest_point_sample(np.zeros((2, 3)), 2)
    result = {
        "cpu_count": os.cpu_count(),
        "repeats": REPEATS,
        "fps_100000_to_1024": bench_fps(100_000, 1024, rng),
        "fps_10000_to_1024": bench_fps(10_000, 1024, rng),
        "fps_100000_to_512": bench_fps(100_000, 512, rng),
        "depth_to_points_480x640": bench_depth(rng),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
