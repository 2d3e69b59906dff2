"""Uploaded images: type sniffed from the bytes, size and pixel limits checked before the
image is decoded, then decoded by the same reader as ``seglab predict`` (so a served mask
equals the mask ``seglab predict`` writes for the same file)."""

from __future__ import annotations

import math
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from seglab.data.imageio_ext import Intensity
from seglab.data.io import read_image
from seglab.errors import SeglabError

#: media type -> file suffix, for the types accepted (checked by content, not by name)
ACCEPTED = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/bmp": ".bmp",
    "image/tiff": ".tif",
    "image/gif": ".gif",
}


class UploadError(Exception):
    """A bad upload: HTTP ``status`` (400, 413, 415, 422), a machine ``code`` and a message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def sniff(data: bytes) -> str | None:
    """The image media type from the first bytes (magic numbers), or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith(b"BM"):
        return "image/bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return None


def header_size(data: bytes, media_type: str) -> tuple[int, int]:
    """(width, height) from the image header, without decoding the pixels."""
    import io

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as im:
                return im.size
        except Image.DecompressionBombError:
            raise  # handled by the caller as "too many pixels"
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
            raise UploadError(
                400, "undecodable", f"the {media_type} upload cannot be decoded ({err})"
            ) from None


def tiff_pixels(data: bytes) -> tuple[int, tuple[int, ...]] | None:
    """(pixels, shape) of a TIFF's first series from its headers, without decoding: every page
    and every channel beyond a pixel's 1-4 colour samples counts as a plane of pixels, as
    :func:`seglab.data.imageio_ext.read_image_any` reads pages as channels. None when tifffile
    cannot parse the file (the decoder then reports it)."""
    import io

    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tf:
            axes, shape = tf.series[0].axes, tuple(tf.series[0].shape)
    except Exception:  # noqa: BLE001 - unparsable: read_image decides
        return None
    samples = shape[-1] if axes.endswith("S") and shape[-1] <= 4 else 1
    return math.prod(shape) // samples, shape


def decode_upload(
    data: bytes, max_bytes: int, max_pixels: int, intensity: Intensity = None
) -> np.ndarray:
    """Bytes of an uploaded file -> ``H x W x C`` uint8 (images deeper than 8 bits as the
    model's ``intensity_range`` says), or :class:`UploadError`."""
    if not data:
        raise UploadError(400, "empty", "the uploaded file is empty; send an image file")
    if len(data) > max_bytes:
        raise UploadError(
            413, "too_large", f"the upload is {len(data)} bytes; the limit is {max_bytes} bytes"
        )
    media_type = sniff(data)
    if media_type is None:
        raise UploadError(
            415,
            "unsupported_type",
            "the upload is not a supported image (by content); send PNG, JPEG, WebP, BMP, "
            "TIFF or GIF",
        )
    try:
        w, h = header_size(data, media_type)
    except Image.DecompressionBombError:
        w, h = max_pixels + 1, 1  # far too many pixels for Pillow: refuse as such
    if w * h > max_pixels:
        raise UploadError(
            413,
            "too_many_pixels",
            f"the image is {w}x{h} = {w * h} pixels; the limit is {max_pixels} pixels",
        )
    if w < 1 or h < 1:
        raise UploadError(400, "undecodable", f"the image has no pixels ({w}x{h})")
    if media_type == "image/tiff" and (found := tiff_pixels(data)) and found[0] > max_pixels:
        raise UploadError(
            413,
            "too_many_pixels",
            f"the TIFF holds {found[0]} pixels over its pages and channels (shape {found[1]}); "
            f"the limit is {max_pixels} pixels",
        )
    with tempfile.TemporaryDirectory(prefix="seglab-upload-") as tmp:
        path = Path(tmp) / f"upload{ACCEPTED[media_type]}"
        path.write_bytes(data)
        try:
            image = read_image(path, intensity)
        except SeglabError as err:
            message = str(err).replace(str(path), "the upload")
            raise UploadError(400, "undecodable", message) from None
    if image.shape[0] * image.shape[1] > max_pixels:  # e.g. a header that lied
        raise UploadError(413, "too_many_pixels", f"the image exceeds {max_pixels} pixels")
    return image
