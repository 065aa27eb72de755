"""Opening zarr groups from paths and URLs, the array layouts robopolicy writes, and reading chunks so that
damage is named instead of read as data.

Stores written by Diffusion Policy, UMI and DP3 are zarr v2 (directories or `.zarr.zip`)
and may use image codecs from imagecodecs; both are read unchanged through zarr 3.
zarr reads a missing chunk file as its fill value (zeros); a store opened read only is
wrapped in CheckedStore, which raises DataError for a missing or empty chunk instead, and
read_rows turns a chunk that fails to decode into a DataError naming the chunk.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import zarr
import zarr.abc.store
import zarr.storage
from zarr.abc.store import ByteRequest
from zarr.codecs import BloscCodec
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.core.chunk_key_encodings import ChunkKeyEncoding, V2ChunkKeyEncoding
from zarr.core.sync import sync
from zarr.storage import WrapperStore

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
EXISTS_FIX = "pick a new path, or pass overwrite=True to replace it"
# Files of a zarr node that are no chunk: a store may lack them (zarr probes for v2 and v3 names).
METADATA_NAMES = frozenset({"zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata"})
MISSING_FIX = ("restore the file from a backup, or convert the store again from its source (zarr 3 by default "
               "skips writing a chunk whose values all equal the fill value: write such stores with "
               "write_empty_chunks=True); `robopolicy dataset validate PATH` lists every missing chunk")
DAMAGED_FIX = ("the file is damaged: restore it from a backup, or convert the store again from its source; "
               "`robopolicy dataset validate --deep PATH` finds every damaged chunk")


def store_location(path: str | os.PathLike) -> str:
    """A path or URL as a plain string, with `file://` turned into a local path."""
    text = os.fspath(path)
    return text[len("file://"):] if text.startswith("file://") else text


def is_url(location: str) -> bool:
    """True for fsspec URLs other than local files (`memory://`, `s3://`, ...)."""
    return "://" in location


def make_zarr_store(location: str, read_only: bool, storage_options: dict[str, Any] | None = None) -> zarr.abc.store.Store:
    """The zarr store behind a directory, a `.zip` file (read only) or an fsspec URL; read only, it is a
    CheckedStore, so that a missing chunk is an error and not zeros."""
    if is_url(location):
        store = zarr.storage.FsspecStore.from_url(location, read_only=read_only, storage_options=storage_options)
    elif location.endswith(".zip"):
        if not read_only:
            raise DataError(location, "zip stores are read-only here", fix="copy it to a directory store to write")
        if not Path(location).is_file():
            raise DataError(location, "no such file", fix="check the path of the .zarr.zip store")
        store = zarr.storage.ZipStore(location, mode="r")
    else:
        store = zarr.storage.LocalStore(location, read_only=read_only)
    return CheckedStore(store, location) if read_only else store


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


def check_new_store_path(location: str, overwrite: bool) -> None:
    """Refuse a path that exists unless overwrite=True, and never replace what is not a zarr store."""
    if not is_url(location) and Path(location).exists():
        if not overwrite:
            raise DataError(location, "already exists", fix=EXISTS_FIX)
        if not looks_like_zarr_directory(location):
            raise DataError(location, "exists and is not a zarr store; refusing to delete it", fix="pick another path")


def empty_directory(location: str, keep: str) -> None:
    """Delete everything inside a local store directory but the file named `keep` (its writer's lock)."""
    for entry in Path(location).iterdir():
        if entry.name == keep:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def create_zarr_group(
    path: str | os.PathLike, zarr_format: int, overwrite: bool, storage_options: dict[str, Any] | None = None
) -> zarr.Group:
    """A new, empty root group. A local directory is never emptied here (the caller does that under its
    lock, see check_new_store_path); a URL's old store is replaced only with overwrite=True."""
    location = store_location(path)
    store = make_zarr_store(location, read_only=False, storage_options=storage_options)
    try:
        return zarr.create_group(store, zarr_format=zarr_format, overwrite=overwrite and is_url(location))
    except (FileExistsError, zarr.errors.ContainsGroupError, zarr.errors.ContainsArrayError) as err:
        raise DataError(location, "already exists", fix=EXISTS_FIX) from err


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
        name, shape=(0, *sample_shape), chunks=layout.chunks, dtype=dtype, fill_value=0,
        config={"write_empty_chunks": True}, **kwargs
    )


def empty_chunks_written(array: zarr.Array) -> zarr.Array:
    """`array` writing every chunk, all-zero ones too: zarr by default deletes a chunk equal to the fill value,
    which a reader could not tell from a lost file."""
    config = {"order": array.order, "write_empty_chunks": True}
    return zarr.Array(zarr.AsyncArray(metadata=array.metadata, store_path=array.store_path, config=config))


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


# ---------------------------------------------------------------------------------------------- chunks
@dataclass(frozen=True)
class ChunkGrid:
    """How the rows of one array map to chunks (what zarr decodes) and stored objects (files: a shard in a
    sharded v3 array, else the chunk itself), and how the files are named."""

    path: str
    rows: int
    chunk_rows: int
    object_shape: tuple[int, ...]
    sample_shape: tuple[int, ...]
    sharded: bool
    encoding: ChunkKeyEncoding  # the v3 array's, or for a v2 array its dimension separator as an encoding

    @classmethod
    def of(cls, array: zarr.Array) -> ChunkGrid:
        """The grid of a zarr array as it is now."""
        metadata = array.metadata
        if metadata.zarr_format == 2:
            encoding = V2ChunkKeyEncoding(separator=metadata.dimension_separator)
        else:
            encoding = metadata.chunk_key_encoding
        return cls(array.path, array.shape[0], array.chunks[0], tuple(array.shards or array.chunks),
                   tuple(array.shape[1:]), array.shards is not None, encoding)

    @property
    def object_rows(self) -> int:
        return self.object_shape[0]

    def n_objects(self, rows: int) -> int:
        """Stored objects along time that hold rows [0, rows)."""
        return -(-rows // self.object_rows)

    def object_keys(self, index: int) -> list[str]:
        """Store keys of the files that hold time slice `index` (one per chunk of the other axes)."""
        others = [range(-(-n // c)) for n, c in zip(self.sample_shape, self.object_shape[1:])]
        return [f"{self.path}/{self.encoding.encode_chunk_key((index, *rest))}" for rest in itertools.product(*others)]

    def time_index(self, key: str) -> int:
        """The time index of the stored object at store key `key` (a key of this array)."""
        parts = [p for p in re.split(r"[./]", key[len(self.path) + 1:]) if p]
        return int(parts[1] if parts[0] == "c" else parts[0])

    def object_name(self, first: int, last: int | None = None) -> str:
        """'shard 1 (rows [256, 512))' or 'chunk 3 (rows [483, 644))', or for a run 'chunks 3-5 (rows [483, 966))'."""
        last = first if last is None else last
        kind = "shard" if self.sharded else "chunk"
        rows = self._rows(first * self.object_rows, (last + 1) * self.object_rows)
        return f"{kind} {first} ({rows})" if first == last else f"{kind}s {first}-{last} ({rows})"

    def n_chunks(self, rows: int) -> int:
        """Chunks along time that hold rows [0, rows)."""
        return -(-rows // self.chunk_rows)

    def chunk_name(self, first: int, last: int | None = None) -> str:
        """'chunk 5 (rows [5, 6), shard 0)', or for a run of chunks 'chunks 5-9 (rows [5, 10), shard 0)'."""
        last = first if last is None else last
        rows = self._rows(first * self.chunk_rows, (last + 1) * self.chunk_rows)
        per_shard = self.object_rows // self.chunk_rows
        shards = sorted({first // per_shard, last // per_shard})
        shard = f", shard {'-'.join(map(str, shards))}" if self.sharded else ""
        return f"chunk {first} ({rows}{shard})" if first == last else f"chunks {first}-{last} ({rows}{shard})"

    def _rows(self, start: int, stop: int) -> str:
        """'rows [start, stop)', the stop cut at the array's length (the last chunk may be partly filled)."""
        return f"rows [{start}, {min(stop, self.rows) if self.rows > start else stop})"


class CheckedStore(WrapperStore):
    """A read-only zarr store that refuses to hand zarr a missing or empty chunk file of a registered array,
    which zarr would read as its fill value: it raises DataError naming the array, the chunk and its rows.

    Costs nothing on a present chunk (the check runs only when the wrapped store returns nothing).
    """

    def __init__(self, store: zarr.abc.store.Store, location: str):
        super().__init__(store)
        self.location = location
        self.grids: dict[str, ChunkGrid] = {}

    def __enter__(self) -> CheckedStore:
        return CheckedStore(self._store.__enter__(), self.location)

    def register(self, grids: Iterable[ChunkGrid]) -> None:
        """Check reads of these arrays' chunks from now on."""
        self.grids.update({grid.path: grid for grid in grids})

    async def get(self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None) -> Buffer | None:
        value = await self._store.get(key, prototype, byte_range)
        if not value:
            self._refuse_missing_chunk(key)
        return value

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ) -> list[Buffer | None]:
        key_ranges = list(key_ranges)
        values = await self._store.get_partial_values(prototype, key_ranges)
        for (key, _), value in zip(key_ranges, values):
            if not value:
                self._refuse_missing_chunk(key)
        return values

    def _refuse_missing_chunk(self, key: str) -> None:
        """Raise DataError when `key` names a chunk file of a registered array (not one of its metadata files)."""
        array_path, _, name = key.rpartition("/")
        grid = next((g for g in self.grids.values() if key.startswith(g.path + "/")), None)
        if grid is None or (name in METADATA_NAMES and array_path == grid.path):
            return
        raise DataError(self.location, f"{grid.object_name(grid.time_index(key))} is missing or empty: file {key} "
                        "(zarr would read zeros in its place)", key=grid.path, fix=MISSING_FIX)


def register_chunk_grids(store: zarr.abc.store.Store, arrays: Iterable[zarr.Array]) -> None:
    """Have a CheckedStore refuse missing chunks of `arrays` (nothing for other stores)."""
    if isinstance(store, CheckedStore):
        store.register(ChunkGrid.of(array) for array in arrays)


def array_location(array: zarr.Array) -> str:
    """The store location an array lives in, for error messages."""
    store = array.store
    if isinstance(store, CheckedStore):
        return store.location
    return str(getattr(store, "root", store))


def stored_keys(array: zarr.Array) -> set[str]:
    """Every store key under the array (a listing; nothing is read or decoded)."""
    async def keys() -> set[str]:
        return {key async for key in array.store.list_prefix(array.path + "/")}

    return sync(keys())


def missing_objects(array: zarr.Array, rows: int) -> list[tuple[int, str]]:
    """(time index, first missing key) of each stored object that rows [0, rows) need and the store lacks."""
    grid = ChunkGrid.of(array)
    present = stored_keys(array)
    missing = []
    for index in range(grid.n_objects(rows)):
        absent = [key for key in grid.object_keys(index) if key not in present]
        if absent:
            missing.append((index, absent[0]))
    return missing


def chunk_starts(array: zarr.Array, start: int, stop: int) -> list[int]:
    """First rows of the chunks that rows [start, stop) touch."""
    step = array.chunks[0]
    return list(range(start // step * step, stop, step))


def undecodable_chunks(array: zarr.Array, start: int, stop: int) -> list[tuple[int, Exception]]:
    """(chunk index, error) of each chunk in rows [start, stop) that fails to decode, read one by one; missing
    chunks are left to the listing (missing_objects)."""
    step = array.chunks[0]
    failed = []
    for first in chunk_starts(array, start, stop):
        try:
            array[max(first, start) : min(first + step, stop)]
        except DataError:
            continue
        except Exception as err:  # any codec's error: blosc, zstd, checksums, image codecs
            failed.append((first // step, err))
    return failed


def undecodable_error(array: zarr.Array, chunk: int, err: Exception) -> DataError:
    """The error for a chunk that is present but cannot be decoded."""
    name = ChunkGrid.of(array).chunk_name(chunk)
    return DataError(array_location(array), f"{name} cannot be decoded ({type(err).__name__}: {err})",
                     key=array.path, fix=DAMAGED_FIX)


def read_rows(array: zarr.Array | np.ndarray, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) as numpy. A chunk that fails to decode becomes a DataError naming the array, the
    chunk and its rows (found by reading the chunks one by one, only after a failure)."""
    if isinstance(array, np.ndarray):
        return array[start:stop]
    try:
        return np.asarray(array[start:stop])
    except DataError:
        raise
    except Exception as err:
        failed = undecodable_chunks(array, start, stop)
        if not failed:
            raise
        raise undecodable_error(array, *failed[0]) from err
