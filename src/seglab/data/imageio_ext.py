"""Reading images of every common format as ``H x W x C`` uint8.

:func:`read_image_any` is a drop-in replacement for :func:`seglab.data.io.read_image` that
also reads what OpenCV cannot: GIF (first frame, through Pillow, whatever the OpenCV build)
and TIFF with more than 4 channels, planar channels or channels stored as pages (through
tifffile). It imports nothing from :mod:`seglab.data.io`, so ``io.read_image`` can call it.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from seglab.errors import SeglabError

_TIFF = (".tif", ".tiff")
# tifffile axes codes that hold channels when they precede Y and X: S (samples, planar),
# C (ImageJ channels), Q and I (unnamed axis: tifffile.imwrite of a C x H x W array)
_CHANNEL_AXES = "SCQI"


def _undecodable(path: Path, why: str = "corrupt or unsupported") -> SeglabError:
    return SeglabError(f"image {path} cannot be decoded ({why}); replace it")


def _to_uint8(img: np.ndarray) -> np.ndarray:
    """uint16 >> 8, bool x 255, other types min-max scaled to 0..255 per image."""
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return (img >> 8).astype(np.uint8)
    if img.dtype == np.bool_:
        return img.astype(np.uint8) * 255
    f = img.astype(np.float64)
    lo, hi = float(np.nanmin(f)), float(np.nanmax(f))
    if hi <= lo:
        return np.zeros(img.shape, np.uint8)
    return np.nan_to_num((f - lo) * (255.0 / (hi - lo))).round().astype(np.uint8)


def _hwc(img: np.ndarray) -> np.ndarray:
    return img[:, :, None] if img.ndim == 2 else img


#: suffixes whose files carry a camera's EXIF orientation (phones store portrait photos as
#: landscape pixels plus a tag); OpenCV's IMREAD_UNCHANGED ignores the tag
_EXIF = (".jpg", ".jpeg", ".webp")
_EXIF_ORIENTATION = 0x0112
#: EXIF orientation -> the array operation that makes the image upright (Pillow's
#: ImageOps.exif_transpose: 2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90
#: clockwise, 7 transverse, 8 rotate 90 counter-clockwise)
_UPRIGHT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(_EXIF_ORIENTATION, 1))
    except (OSError, ValueError, TypeError):
        return 1  # no readable tag: as stored


def _exif_orientation(path: Path) -> int:
    try:
        with Image.open(path) as im:  # reads the header only
            return _orientation(im)
    except (UnidentifiedImageError, OSError, ValueError):
        return 1  # OpenCV reports an undecodable file


def _read_cv2(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise _undecodable(path)
    if path.suffix.lower() in _EXIF and (turn := _UPRIGHT.get(_exif_orientation(path))):
        img = np.ascontiguousarray(turn(img))  # as viewers and labelling tools show it
    img = _to_uint8(img)
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
    return _hwc(img)


def _read_gif(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im.seek(0)
            if im.mode in ("1", "L", "I;16", "I"):
                frame = im.convert("L")
            else:
                frame = im.convert("RGBA" if "transparency" in im.info else "RGB")
            return _hwc(np.asarray(frame))
    except (OSError, UnidentifiedImageError, ValueError, EOFError) as e:
        raise _undecodable(path, f"{type(e).__name__}: {e}") from None


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    try:
        tf = tifffile.TiffFile(path)
    except Exception:  # noqa: BLE001 - tifffile cannot parse it: let OpenCV try
        return _read_cv2(path)
    with tf:
        series = tf.series[0]
        axes, shape = series.axes, tuple(series.shape)
        # drop singleton axes other than Y and X
        keep = [i for i, a in enumerate(axes) if a in "YX" or shape[i] != 1]
        axes = "".join(axes[i] for i in keep)
        if axes == "YX" or (axes == "YXS" and shape[-1] <= 4):
            return _read_cv2(path)  # OpenCV decodes LZW/JPEG TIFFs without imagecodecs
        planar = len(axes) == 3 and axes.endswith("YX") and axes[0] in _CHANNEL_AXES
        if not (planar or axes in ("YXS", "YXC")):
            raise SeglabError(
                f"image {path} is a TIFF stack (axes {axes}, shape {shape}); seglab reads one "
                "2-D image with channels per file: save each plane as its own file"
            )
        try:
            arr = series.asarray()
        except ValueError as e:
            why = f"{e}; install imagecodecs or save it uncompressed"
            raise _undecodable(path, why) from None
        except Exception as e:  # noqa: BLE001 - corrupt data surfaces as many exception types
            raise _undecodable(path, f"{type(e).__name__}: {e}") from None
    arr = arr.reshape([shape[i] for i in keep])
    if planar:
        arr = np.moveaxis(arr, 0, -1)
    return np.ascontiguousarray(_to_uint8(arr))


def image_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` of an image as :func:`read_image_any` returns it, from the file's
    header where Pillow reads it (EXIF orientation applied), else by decoding the image."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            (w, h), turned = im.size, path.suffix.lower() in _EXIF and _orientation(im) >= 5
    except (UnidentifiedImageError, OSError, ValueError):
        return read_image_any(path).shape[:2]
    return (w, h) if turned else (h, w)  # orientations 5-8 swap height and width


def read_image_any(path: str | Path) -> np.ndarray:
    """Read an image as ``H x W x C`` uint8, channels in file order (RGB, RGBA, grey C=1).

    * PNG, JPEG, WebP, BMP: OpenCV (BGR converted to RGB); a JPEG or WebP with an EXIF
      orientation tag (phone photos) is turned upright, as image viewers and labelling tools
      (labelme, CVAT) show it and its masks are drawn.
    * GIF: the first frame through Pillow (RGB, RGBA when it has transparency, or grey).
    * TIFF: OpenCV for plain grey/RGB/RGBA pages; tifffile for more than 4 channels,
      planar channels (axes ``SYX``/``CYX``) or one page per channel (``tifffile.imwrite``
      of a ``C x H x W`` array, axes ``QYX``). Other stacks (Z, time) raise a SeglabError.
    * 16-bit data is scaled to 8 bits by ``>> 8``; float and other integer types are
      min-max scaled to 0..255 per image; 1-bit images become 0/255.

    Raises SeglabError naming the file when it is missing or cannot be decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise SeglabError(f"image {path} is missing; restore it or remove it from the split")
    suffix = path.suffix.lower()
    if suffix == ".gif":
        return _read_gif(path)
    if suffix in _TIFF:
        return _read_tiff(path)
    return _read_cv2(path)
