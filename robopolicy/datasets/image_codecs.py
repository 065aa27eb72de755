"""Image codecs for zarr v3 image arrays: one frame per chunk as JPEG-XL or JPEG (imagecodecs).

A zarr v3 array->bytes codec named `robopolicy.image`, registered with zarr when this module is
imported (robopolicy's store code does), so the frames sit in shards as in the default layout.
JPEG-XL is lossless unless a quality is given (then 0-100, like JPEG's). Stores written with it
need robopolicy (and imagecodecs) to read; `blosc` (lossless zstd) and `none` need only zarr.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.buffer import Buffer, NDBuffer
from zarr.core.common import parse_named_configuration
from zarr.registry import register_codec

if TYPE_CHECKING:
    from zarr.core.array_spec import ArraySpec

NAME = "robopolicy.image"
IMAGE_CODECS = ("blosc", "none", "jpegxl", "jpeg")  # the choices a store's image arrays take


def _encode(frame: np.ndarray, image_format: str, quality: int | None) -> bytes:
    import imagecodecs

    image = frame[..., 0] if frame.shape[-1] == 1 else frame
    if image_format == "jpeg":
        return imagecodecs.jpeg8_encode(image, level=quality or 90)
    if quality is None:
        return imagecodecs.jpegxl_encode(image, lossless=True, effort=1)
    return imagecodecs.jpegxl_encode(image, level=quality, effort=3)


@dataclass(frozen=True)
class ImageCodec(ArrayBytesCodec):
    """uint8 (1, H, W, C) chunks <-> JPEG-XL / JPEG bytes."""

    is_fixed_size = False
    image_format: str
    quality: int | None

    def __init__(self, *, image_format: str = "jpegxl", quality: int | None = None) -> None:
        if image_format not in ("jpegxl", "jpeg"):
            raise ValueError(f"image_format must be jpegxl or jpeg, got {image_format!r}")
        object.__setattr__(self, "image_format", image_format)
        object.__setattr__(self, "quality", quality)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageCodec:
        _, configuration = parse_named_configuration(data, NAME)
        return cls(**configuration)

    def to_dict(self) -> dict[str, Any]:
        return {"name": NAME, "configuration": {"image_format": self.image_format, "quality": self.quality}}

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        import imagecodecs

        data = chunk_bytes.to_bytes()
        frame = imagecodecs.jpeg8_decode(data) if self.image_format == "jpeg" else imagecodecs.jpegxl_decode(data)
        return chunk_spec.prototype.nd_buffer.from_ndarray_like(np.asarray(frame).reshape(chunk_spec.shape))

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        frames = np.asarray(chunk_array.as_ndarray_like())
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[0] != 1:
            raise ValueError(f"the image codec takes one uint8 (H, W, C) frame per chunk, got {frames.shape} "
                             f"{frames.dtype}")
        return chunk_spec.prototype.buffer.from_bytes(_encode(frames[0], self.image_format, self.quality))

    def compute_encoded_size(self, input_byte_length: int, _chunk_spec: ArraySpec) -> int:
        raise NotImplementedError("image chunks have variable encoded sizes")


register_codec(NAME, ImageCodec)
