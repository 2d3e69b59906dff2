"""Reading images and index masks, with one-line errors that name the file and the fix."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from seglab.data.imageio_ext import Intensity, read_image_any
from seglab.errors import SeglabError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")


def read_image(path: str | Path, intensity: Intensity = None) -> np.ndarray:
    """Read an image as ``H x W x C`` uint8 (grey C=1, RGB, RGBA, or more channels).

    PNG, JPEG, WebP, BMP (OpenCV), GIF (Pillow, first frame), 8/16-bit and multi-channel
    TIFF (tifffile); deeper data goes to 8 bits as ``intensity`` (``data.intensity_range``)
    says, see :func:`seglab.data.imageio_ext.read_image_any`.
    """
    return read_image_any(path, intensity)


def adapt_channels(img: np.ndarray, channels: int, path: str | Path = "<image>") -> np.ndarray:
    """Convert grey <-> RGB and drop alpha so ``img`` has the channels the model expects."""
    c = img.shape[2]
    if c == channels:
        return img
    if channels == 3 and c == 1:
        return np.repeat(img, 3, axis=2)
    if channels == 3 and c == 4:
        return np.ascontiguousarray(img[:, :, :3])
    if channels == 1 and c in (3, 4):
        return cv2.cvtColor(np.ascontiguousarray(img[:, :, :3]), cv2.COLOR_RGB2GRAY)[:, :, None]
    raise SeglabError(
        f"image {path} has {c} channels but the model expects {channels}; "
        f"convert the image or set data.in_channels: {c} and retrain"
    )


def read_mask(path: str | Path) -> np.ndarray:
    """Read an index mask (one class index per pixel) as ``H x W`` uint8."""
    path = Path(path)
    if not path.is_file():
        raise SeglabError(f"mask {path} is missing; add it or remove its image from the split")
    m = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if m is None or m.size == 0:
        raise SeglabError(f"mask {path} cannot be decoded (corrupt or unsupported); replace it")
    if m.ndim == 3:
        if m.shape[2] >= 3 and (
            np.array_equal(m[..., 0], m[..., 1]) and np.array_equal(m[..., 1], m[..., 2])
        ):
            m = m[..., 0]
        else:
            raise SeglabError(
                f"mask {path} is a colour image; masks must hold one class index per pixel "
                "(convert colour masks to index PNGs)"
            )
    return as_uint8_mask(m, path)


def as_uint8_mask(m: np.ndarray, path: str | Path) -> np.ndarray:
    """A single-channel index mask as uint8; values above 255 are an error."""
    if m.dtype != np.uint8:
        if m.max() > 255:
            raise SeglabError(
                f"mask {path} has values above 255; seglab masks hold at most 255 classes"
            )
        m = m.astype(np.uint8)
    return m


def check_mask(
    mask: np.ndarray,
    image_shape: tuple[int, ...],
    num_classes: int,
    ignore_index: int,
    mask_path: str | Path,
    image_path: str | Path,
) -> None:
    """Raise if the mask's size differs from its image or it holds undeclared class values."""
    if mask.shape[:2] != tuple(image_shape[:2]):
        mh, mw = mask.shape[:2]
        ih, iw = image_shape[:2]
        raise SeglabError(
            f"mask {mask_path} is {mw}x{mh} but its image {image_path} is {iw}x{ih}; "
            "masks must have their image's size"
        )
    counts = np.bincount(mask.ravel(), minlength=256)
    counts[ignore_index] = 0
    bad = np.nonzero(counts[num_classes:])[0] + num_classes
    if bad.size:
        shown = ", ".join(str(v) for v in bad[:8])
        raise SeglabError(
            f"mask {mask_path} has values {shown} outside the {num_classes} declared classes "
            f"(0..{num_classes - 1}, ignore {ignore_index}); declare the classes in data.classes "
            "or set data.ignore_index"
        )
