"""Opening zarr groups from paths and URLs, and the array layouts robopolicy writes.

Stores written by Diffusion Policy, UMI and DP3 are zarr v2 (directories or `.zarr.zip`)
and may use image codecs from imagecodecs; both are read unchanged through zarr 3.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import zarr
import zarr.abc.store
import zarr.storage
from zarr.codecs import BloscCodec

from robopolicy.datasets.errors import DataError
from robopolicy.datasets.image_codecs import IMAGE_CODECS, ImageCodec

log = logging.getLogger(__name__)

try:  # Image codecs (JPEG-XL, JPEG 2000, ...) used by UMI and real-robot stores.
    from imagecodecs.numcodecs import register_codecs as _register_image_codecs

    _register_image_codecs(verbose=False)
except ImportError:  # optional: only stores that use these codecs need it (see unknown_codec_error)
    pass


def unknown_codec_error(location: str, key: str, err: Exception) -> DataError:
    """The error for an array whose compressor is not installed here."""
    return DataError(location, f"compressed with a codec that is not installed ({err})", key=key,
                     fix="pip install imagecodecs (robopolicy's 'codecs' extra) for image codecs, "
                         "or the package that provides this numcodecs codec")

# Uncompressed bytes aimed at per chunk (low-dim) and per shard (images, v3). zarr handles
# the chunks inside a shard one by one, so a shard holds at most MAX_FRAMES_PER_SHARD frames.
CHUNK_BYTES = 1 << 20
SHARD_BYTES = 32 << 20
MAX_FRAMES_PER_SHARD = 256


def store_location(path: str | os.PathLike) -> str:
    """A path or URL as a plain string, with `file://` turned into a local path."""
    text = os.fspath(path)
    return text[len("file://"):] if text.startswith("file://") else text


def is_url(location: str) -> bool:
    """True for fsspec URLs other than local files (`memory://`, `s3://`, ...)."""
    return "://" in location


def make_zarr_store(location: str, read_only: bool, storage_options: dict[str, Any] | None = None) -> zarr.abc.store.Store:
    """The zarr store behind a directory, a `.zip` file (read only) or an fsspec URL."""
    if is_url(location):
        return zarr.storage.FsspecStore.from_url(location, read_only=read_only, storage_options=storage_options)
    if location.endswith(".zip"):
        if not read_only:
            raise DataError(location, "zip stores are read-only here", fix="copy it to a directory store to write")
        if not Path(location).is_file():
            raise DataError(location, "no such file", fix="check the path of the .zarr.zip store")
        return zarr.storage.ZipStore(location, mode="r")
    return zarr.storage.LocalStore(location, read_only=read_only)


def looks_like_zarr_directory(location: str) -> bool:
    """A directory with zarr group metadata (v3 zarr.json or v2 .zgroup)."""
    root = Path(location)
    return root.is_dir() and ((root / "zarr.json").is_file() or (root / ".zgroup").is_file())


def open_zarr_group(
    path: str | os.PathLike, mode: str = "r", storage_options: dict[str, Any] | None = None
) -> zarr.Group:
    """Open the root group of an existing store: mode "r" (read only) or "a" (read and write)."""
    location = store_location(path)
    if not is_url(location) and not location.endswith(".zip") and not Path(location).is_dir():
        what = "is a file, not a zarr store directory" if Path(location).exists() else "does not exist"
        raise DataError(location, what, fix="pass the directory that holds data/ and meta/ (or a .zarr.zip)")
    store = make_zarr_store(location, read_only=mode == "r", storage_options=storage_options)
    try:
        return zarr.open_group(store, mode=mode)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError, ValueError) as err:
        raise DataError(
            location,
            f"not a zarr store ({type(err).__name__}: {err})",
            fix="pass the directory that holds data/ and meta/episode_ends",
        ) from err


def create_zarr_group(
    path: str | os.PathLike, zarr_format: int, overwrite: bool, storage_options: dict[str, Any] | None = None
) -> zarr.Group:
    """A new, empty root group; an existing store is replaced only with overwrite=True."""
    location = store_location(path)
    exists_fix = "pick a new path, or pass overwrite=True to replace it"
    if not is_url(location) and Path(location).exists():
        if not overwrite:
            raise DataError(location, "already exists", fix=exists_fix)
        if not looks_like_zarr_directory(location):
            raise DataError(location, "exists and is not a zarr store; refusing to delete it", fix="pick another path")
        shutil.rmtree(location)
    store = make_zarr_store(location, read_only=False, storage_options=storage_options)
    try:
        return zarr.open_group(store, mode="w" if overwrite else "w-", zarr_format=zarr_format)
    except FileExistsError as err:
        raise DataError(location, "already exists", fix=exists_fix) from err


def is_image_array(shape: tuple[int, ...], dtype: np.dtype) -> bool:
    """Heuristic for arrays written without shape_meta: (T, H, W, C) uint8 or float frames."""
    dtype = np.dtype(dtype)
    frames = len(shape) == 4 and shape[-1] in (1, 3, 4) and min(shape[1:3]) >= 8
    return frames and (dtype == np.uint8 or np.issubdtype(dtype, np.floating))


@dataclass(frozen=True)
class ArrayLayout:
    """How one time-major array is chunked and compressed on disk."""

    chunks: tuple[int, ...]
    shards: tuple[int, ...] | None
    compressor: Any
    serializer: Any = None  # a v3 array->bytes codec in place of plain bytes (image codecs)


def image_compression(image_codec: str, quality: int | None, zarr_format: int) -> tuple[Any, Any]:
    """(compressor, serializer) for uint8 frames: JPEG-XL / JPEG from imagecodecs, or none."""
    if image_codec == "none":
        return None, None
    if zarr_format == 3:
        return None, ImageCodec(image_format=image_codec, quality=quality)
    from imagecodecs.numcodecs import Jpeg, Jpegxl

    if image_codec == "jpeg":
        return Jpeg(level=quality or 90), None
    return (Jpegxl(lossless=True, effort=1) if quality is None else Jpegxl(level=quality, effort=3, lossless=False)), None


def default_layout(sample_shape: tuple[int, ...], dtype: np.dtype, zarr_format: int, image_codec: str = "blosc",
                   quality: int | None = None) -> ArrayLayout:
    """Per-frame chunks for images (sharded in v3), about 1 MiB chunks for everything else; image
    frames (uint8) take `image_codec` (blosc, none, jpegxl, jpeg; see image_codecs)."""
    if image_codec not in IMAGE_CODECS:
        raise ValueError(f"image_codec must be one of {IMAGE_CODECS}, got {image_codec!r}")
    dtype = np.dtype(dtype)
    frame_bytes = max(1, math.prod(sample_shape) * dtype.itemsize)
    image = is_image_array((0, *sample_shape), dtype)
    if image:
        chunks = (1, *sample_shape)
        frames = min(MAX_FRAMES_PER_SHARD, max(1, SHARD_BYTES // frame_bytes))
        shards = (frames, *sample_shape) if zarr_format == 3 else None
    else:
        chunks = (max(1, CHUNK_BYTES // frame_bytes), *sample_shape)
        shards = None
    if zarr_format == 3:
        compressor = BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle" if image else "shuffle")
    else:
        compressor = numcodecs.Blosc(
            cname="zstd", clevel=5, shuffle=numcodecs.Blosc.BITSHUFFLE if image else numcodecs.Blosc.SHUFFLE
        )
    if image and dtype == np.uint8 and image_codec != "blosc":
        compressor, serializer = image_compression(image_codec, quality, zarr_format)
        return ArrayLayout(chunks=chunks, shards=shards, compressor=compressor, serializer=serializer)
    return ArrayLayout(chunks=chunks, shards=shards, compressor=compressor)


def create_time_array(
    group: zarr.Group, name: str, sample_shape: tuple[int, ...], dtype: np.dtype, layout: ArrayLayout | None = None
) -> zarr.Array:
    """An empty array of shape (0, *sample_shape) that grows along time."""
    zarr_format = group.metadata.zarr_format
    layout = layout or default_layout(sample_shape, dtype, zarr_format)
    kwargs: dict[str, Any] = {"compressors": layout.compressor}
    if layout.shards is not None:
        kwargs["shards"] = layout.shards
    if layout.serializer is not None:
        kwargs["serializer"] = layout.serializer
    return group.create_array(
        name, shape=(0, *sample_shape), chunks=layout.chunks, dtype=dtype, fill_value=0, **kwargs
    )


def describe_codec(array: zarr.Array | np.ndarray) -> str:
    """A short human-readable codec description of an array ('in memory' for numpy)."""
    if isinstance(array, np.ndarray):
        return "in memory"
    parts = [type(f).__name__ if not hasattr(f, "codec_id") else f.codec_id for f in array.filters]
    for comp in array.compressors:
        if hasattr(comp, "cname"):
            cname = getattr(comp.cname, "value", comp.cname)
            parts.append(f"blosc-{cname}-{comp.clevel}")
        else:
            parts.append(getattr(comp, "codec_id", type(comp).__name__))
    serializer = getattr(array, "serializer", None)
    if isinstance(serializer, ImageCodec):
        parts.append(f"{serializer.image_format}-" + (f"q{serializer.quality}" if serializer.quality else "lossless"))
    if getattr(array, "shards", None):
        parts.append(f"sharded {array.shards[0]}")
    return "+".join(parts) or "raw"
