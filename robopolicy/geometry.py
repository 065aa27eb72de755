"""The 6D rotation layout of absolute actions: the first two columns of the rotation matrix.

A (..., 6) vector is [R[:, 0], R[:, 1]], column after column. It is continuous over SO(3),
which makes it a better regression target than a quaternion or an axis-angle, and any
6 numbers whose two 3-vectors are not parallel map back to a rotation (Gram-Schmidt).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

_EPS = 1e-8


def matrix_to_rot6d(matrix: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) -> their first two columns (..., 6), column after column."""
    m = np.asarray(matrix)
    if m.shape[-2:] != (3, 3):
        raise ValueError(f"matrix: got shape {m.shape}, expected (..., 3, 3)")
    return np.concatenate([m[..., :, 0], m[..., :, 1]], axis=-1)


def rot6d_to_matrix(rot6d: np.ndarray) -> np.ndarray:
    """(..., 6) -> rotation matrices (..., 3, 3) by Gram-Schmidt, so unnormalized inputs are valid."""
    r = np.asarray(rot6d, dtype=np.float64)
    if r.shape[-1] != 6:
        raise ValueError(f"rot6d: got shape {r.shape}, expected (..., 6)")
    a, b = r[..., :3], r[..., 3:]
    x = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), _EPS)
    y = b - np.sum(x * b, axis=-1, keepdims=True) * x
    y = y / np.maximum(np.linalg.norm(y, axis=-1, keepdims=True), _EPS)
    z = np.cross(x, y)
    return np.stack([x, y, z], axis=-1)


def matrix_to_axis_angle(matrix: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) -> axis-angle vectors (..., 3): unit axis times angle (rad)."""
    m = np.asarray(matrix, dtype=np.float64)
    return Rotation.from_matrix(m.reshape(-1, 3, 3)).as_rotvec().reshape(*m.shape[:-2], 3)


def rot6d_to_axis_angle(rot6d: np.ndarray) -> np.ndarray:
    """(..., 6) -> axis-angle vectors (..., 3), the absolute rotation input robosuite's OSC takes."""
    return matrix_to_axis_angle(rot6d_to_matrix(rot6d))


def quat_xyzw_to_matrix(quat: np.ndarray) -> np.ndarray:
    """Quaternions (..., 4) in robosuite's x, y, z, w order -> rotation matrices (..., 3, 3)."""
    q = np.asarray(quat, dtype=np.float64)
    return Rotation.from_quat(q.reshape(-1, 4)).as_matrix().reshape(*q.shape[:-1], 3, 3)


def yaw_of(matrix: np.ndarray) -> float:
    """Heading (rad) of a rotation's x axis projected on the world's horizontal plane."""
    return float(np.arctan2(matrix[1, 0], matrix[0, 0]))


def rotation_z(angle: float) -> np.ndarray:
    """(3, 3) rotation by ``angle`` rad about the world z axis."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
