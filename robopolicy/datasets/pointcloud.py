"""Point-cloud utilities: depth back-projection, workspace crop and farthest point sampling.

Conventions
- Camera frame is OpenCV's: x right, y down, z forward (along the optical axis).
- ``extrinsics`` is the (4, 4) camera-to-world transform: ``p_world = T @ p_cam``.
  (open3d's ``create_from_depth_image`` takes the inverse, world-to-camera.)
- Depth in metres is ``depth / depth_scale`` for any depth dtype: float metres use the
  default ``depth_scale=1.0``, uint16 millimetres use ``depth_scale=1000``.
- Clouds are (N, C) arrays, C >= 3: xyz first, then extra channels (e.g. rgb in [0, 1]).
"""

from __future__ import annotations

import logging

import numba
import numpy as np
from numpy.typing import ArrayLike

logger = logging.getLogger(__name__)

# Points per FPS block: the block's min-distances (8 KiB in float32) stay in L1 between
# the distance update and the max that follows it.
_FPS_BLOCK = 2048


def _shape_error(name: str, got: object, expected: str) -> ValueError:
    """Build the ValueError every check raises: argument name, shape got, shape expected."""
    return ValueError(f"{name}: got shape {got}, expected {expected}")


def _check_real(name: str, array: np.ndarray) -> None:
    """Reject non-numeric arrays (bool, complex, object) with the argument's name."""
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer)
                                   or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"{name}: got dtype {array.dtype}, expected a real integer or float dtype")


def _check_points(points: ArrayLike) -> np.ndarray:
    """Return ``points`` as an (N, C>=3) real array, or raise ValueError."""
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise _shape_error("points", pts.shape, "(N, C) with C >= 3")
    _check_real("points", pts)
    return pts


def _check_intrinsics(intrinsics: ArrayLike) -> np.ndarray:
    """Return pinhole K (3, 3) as float64; fx, fy > 0 and last row (0, 0, 1)."""
    k = np.asarray(intrinsics, dtype=np.float64)
    if k.shape != (3, 3):
        raise _shape_error("intrinsics", k.shape, "(3, 3)")
    pinhole = k[0, 0] > 0 and k[1, 1] > 0 and np.array_equal(k[2], [0, 0, 1])
    if not (np.isfinite(k).all() and pinhole):
        raise ValueError(f"intrinsics: expected a pinhole K [[fx, s, cx], [0, fy, cy], [0, 0, 1]] "
                         f"with fx, fy > 0, got {k.tolist()}")
    return k


def _check_extrinsics(extrinsics: ArrayLike | None) -> np.ndarray:
    """Return the camera-to-world (4, 4) transform as float64 (identity when None)."""
    if extrinsics is None:
        return np.eye(4)
    t = np.asarray(extrinsics, dtype=np.float64)
    if t.shape != (4, 4):
        raise _shape_error("extrinsics", t.shape, "(4, 4)")
    if not np.isfinite(t).all() or not np.array_equal(t[3], [0, 0, 0, 1]):
        raise ValueError(f"extrinsics: expected a finite homogeneous transform with last row "
                         f"(0, 0, 0, 1), got {t.tolist()}")
    return t


def depth_to_points(depth: ArrayLike, intrinsics: ArrayLike, extrinsics: ArrayLike | None = None,
                    rgb: ArrayLike | None = None, depth_scale: float = 1.0,
                    max_depth: float | None = None) -> np.ndarray:
    """Back-project a depth image (H, W) to a world-frame cloud (N, 3), or (N, 6) with rgb.

    Metres are ``depth / depth_scale``; pixels whose depth is <= 0, NaN, inf or beyond
    ``max_depth`` metres are dropped. Points come in row-major pixel order. ``rgb`` (H, W, 3)
    uint8 is appended as float channels in [0, 1]. Returns float32.
    """
    d = np.asarray(depth)
    if d.ndim != 2:
        raise _shape_error("depth", d.shape, "(H, W)")
    _check_real("depth", d)
    k = _check_intrinsics(intrinsics)
    cam_to_world = _check_extrinsics(extrinsics)
    if not (np.isfinite(depth_scale) and depth_scale > 0):
        raise ValueError(f"depth_scale: got {depth_scale}, expected a finite number > 0")
    if max_depth is not None and not max_depth > 0:
        raise ValueError(f"max_depth: got {max_depth}, expected None or a number > 0")
    if rgb is not None:
        rgb = np.asarray(rgb)
        if rgb.shape != (*d.shape, 3):
            raise _shape_error("rgb", rgb.shape, f"{(*d.shape, 3)} (H, W, 3) matching depth")
        if rgb.dtype != np.uint8:
            raise ValueError(f"rgb: got dtype {rgb.dtype}, expected uint8")

    z = d.astype(np.float64).ravel() / depth_scale
    valid = np.isfinite(z) & (z > 0)
    if max_depth is not None:
        valid &= z <= max_depth
    flat = np.flatnonzero(valid)
    v, u = np.divmod(flat, d.shape[1])
    z = z[flat]
    logger.debug("depth_to_points: kept %d of %d pixels", z.size, d.size)

    # p_world = R @ (z * K^-1 @ [u, v, 1]) + t, with R @ K^-1 folded into one matrix.
    ray_to_world = cam_to_world[:3, :3] @ np.linalg.inv(k)
    out = np.empty((z.size, 3 if rgb is None else 6), dtype=np.float32)
    for axis in range(3):
        m = ray_to_world[axis]
        out[:, axis] = z * (m[0] * u + m[1] * v + m[2]) + cam_to_world[axis, 3]
    if rgb is not None:
        for channel in range(3):
            out[:, 3 + channel] = rgb[..., channel].ravel()[flat] / np.float32(255.0)
    return out


def crop_workspace(points: ArrayLike, low: ArrayLike, high: ArrayLike) -> np.ndarray:
    """Keep the rows of points (N, C) whose xyz is in the box [low, high] (3,), bounds included."""
    pts = _check_points(points)
    lo = np.asarray(low, dtype=np.float64)
    hi = np.asarray(high, dtype=np.float64)
    for name, bound in (("low", lo), ("high", hi)):
        if bound.shape != (3,):
            raise _shape_error(name, bound.shape, "(3,)")
    if not (lo <= hi).all():
        raise ValueError(f"low, high: expected low <= high on every axis, got low={lo.tolist()}, "
                         f"high={hi.tolist()}")
    xyz = pts[:, :3]
    return pts[((xyz >= lo) & (xyz <= hi)).all(axis=1)]


@numba.njit(cache=True)
def _update_min_dist(x: np.ndarray, y: np.ndarray, z: np.ndarray, min_dist: np.ndarray,
                     cx: float, cy: float, cz: float) -> None:
    """min_dist = min(min_dist, |p - c|^2) over one block; branch-free so it vectorizes."""
    for i in range(min_dist.shape[0]):
        dx = x[i] - cx
        dy = y[i] - cy
        dz = z[i] - cz
        min_dist[i] = min(min_dist[i], dx * dx + dy * dy + dz * dz)


@numba.njit(cache=True)
def _max_bits(bits: np.ndarray) -> int:
    """Max of the integer view of non-negative floats (same order as the floats; vectorizes)."""
    best = bits[0]
    for i in range(bits.shape[0]):
        best = max(best, bits[i])
    return best


@numba.njit(cache=True)
def _fps_kernel(x: np.ndarray, y: np.ndarray, z: np.ndarray, min_dist: np.ndarray,
                bits: np.ndarray, start: int, out: np.ndarray) -> None:
    """Exact FPS into out (K,); min_dist (N,) starts at inf and ``bits`` is its integer view.

    Each step updates min_dist block by block and keeps the first block holding the
    maximum, then the first index in that block equal to it: ties go to the lowest index.
    """
    n = x.shape[0]
    cur = start
    out[0] = cur
    for k in range(1, out.shape[0]):
        cx, cy, cz = x[cur], y[cur], z[cur]
        best = -1
        best_lo = 0
        for lo in range(0, n, _FPS_BLOCK):
            hi = min(lo + _FPS_BLOCK, n)
            _update_min_dist(x[lo:hi], y[lo:hi], z[lo:hi], min_dist[lo:hi], cx, cy, cz)
            block_best = _max_bits(bits[lo:hi])
            if block_best > best:
                best = block_best
                best_lo = lo
        for i in range(best_lo, min(best_lo + _FPS_BLOCK, n)):
            if bits[i] == best:
                cur = i
                break
        out[k] = cur


def farthest_point_sample(points: ArrayLike, n_samples: int,
                          start_index: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Farthest point sampling of points (N, C) -> (indices (K,) int64, points[indices] (K, C)).

    Exact iterative FPS on xyz (squared Euclidean distance, computed in float32 for float32
    input and float64 otherwise): starts at ``start_index``, each next point is the one
    farthest from the chosen set, ties go to the lowest index. Extra channels are carried.
    With N < K, all N points are chosen in FPS order and the indices are then repeated
    cyclically (index i of the output is index i % N) so the output always has K rows.
    """
    pts = _check_points(points)
    n = pts.shape[0]
    if n == 0:
        raise _shape_error("points", pts.shape, "(N, C) with N >= 1; the cloud is empty")
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
        raise ValueError(f"n_samples: got {n_samples!r}, expected an int >= 1")
    if (isinstance(start_index, bool) or not isinstance(start_index, (int, np.integer))
            or not 0 <= start_index < n):
        raise ValueError(f"start_index: got {start_index!r}, expected an int in [0, {n})")
    if not np.isfinite(pts[:, :3]).all():
        raise ValueError("points: xyz contains NaN or inf; drop those points first")

    dtype, int_dtype = (np.float32, np.int32) if pts.dtype == np.float32 else (np.float64, np.int64)
    x, y, z = np.ascontiguousarray(pts[:, :3].T, dtype=dtype)
    min_dist = np.full(n, np.inf, dtype=dtype)
    indices = np.empty(min(n, n_samples), dtype=np.int64)
    _fps_kernel(x, y, z, min_dist, min_dist.view(int_dtype), int(start_index), indices)
    if n < n_samples:
        logger.debug("farthest_point_sample: %d points, padding to %d by repetition", n, n_samples)
        indices = np.resize(indices, n_samples)
    return indices, pts[indices]


def sample_point_cloud(depth: ArrayLike, intrinsics: ArrayLike, n_samples: int,
                       extrinsics: ArrayLike | None = None, rgb: ArrayLike | None = None,
                       depth_scale: float = 1.0, max_depth: float | None = None,
                       workspace: tuple[ArrayLike, ArrayLike] | None = None) -> np.ndarray:
    """One camera frame -> fixed-size world cloud (n_samples, 3|6): back-project, crop, FPS.

    This is the per-frame observation DP3-style policies use; ``workspace`` is (low, high).
    """
    points = depth_to_points(depth, intrinsics, extrinsics, rgb, depth_scale, max_depth)
    if workspace is not None:
        points = crop_workspace(points, *workspace)
    if points.shape[0] == 0:
        raise ValueError("depth: no valid pixel falls inside the workspace; check depth_scale, "
                         "max_depth, extrinsics and workspace")
    return farthest_point_sample(points, n_samples)[1]
