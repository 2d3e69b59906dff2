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


#: ``data.intensity_range``: how images of more than 8 bits are brought to 0..255. None:
#: 16-bit >> 8, other types min-max per image; (lo, hi): lo..hi linearly onto 0..255,
#: clipped; "percentile": per image, its PERCENTILES linearly onto 0..255, clipped
Intensity = tuple[float, float] | str | None
#: CSBDeep / StarDist's default per-image normalisation of microscopy images
PERCENTILES = (1.0, 99.8)


def _stretch(img: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi <= lo:
        return np.zeros(img.shape, np.uint8)
    f = (img.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / (hi - lo))
    return np.nan_to_num(f).clip(0, 255).round().astype(np.uint8)


def _to_uint8(img: np.ndarray, intensity: Intensity = None, alpha: bool = False) -> np.ndarray:
    """8-bit images as they are; deeper ones as ``intensity`` says (see :data:`Intensity`);
    bool x 255. ``alpha``: a fourth channel is opacity, left out of the percentiles."""
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.bool_:
        return img.astype(np.uint8) * 255
    if intensity == "percentile":
        colour = img[..., :3] if alpha and img.ndim == 3 and img.shape[2] == 4 else img
        lo, hi = np.nanpercentile(colour, PERCENTILES)
        if hi > lo:
            return _stretch(img, float(lo), float(hi))
        # a flat image but for a few pixels: its min-max range, not the type's default
    elif intensity is not None:
        return _stretch(img, float(intensity[0]), float(intensity[1]))
    elif img.dtype == np.uint16:
        return (img >> 8).astype(np.uint8)
    f = img.astype(np.float64)
    lo, hi = float(np.nanmin(f)), float(np.nanmax(f))
    if hi <= lo:
        return np.zeros(img.shape, np.uint8)
    return np.nan_to_num((f - lo) * (255.0 / (hi - lo))).round().astype(np.uint8)


#: suffixes whose fourth channel is always opacity (a TIFF's may be near infrared)
_ALPHA = (".png", ".webp")


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


def _read_cv2(path: Path, intensity: Intensity = None) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise _undecodable(path)
    if path.suffix.lower() in _EXIF and (turn := _UPRIGHT.get(_exif_orientation(path))):
        img = np.ascontiguousarray(turn(img))  # as viewers and labelling tools show it
    img = _to_uint8(img, intensity, alpha=path.suffix.lower() in _ALPHA)
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


def _read_tiff(path: Path, intensity: Intensity = None) -> np.ndarray:
    import tifffile

    try:
        tf = tifffile.TiffFile(path)
    except Exception:  # noqa: BLE001 - tifffile cannot parse it: let OpenCV try
        return _read_cv2(path, intensity)
    with tf:
        series = tf.series[0]
        axes, shape = series.axes, tuple(series.shape)
        # drop singleton axes other than Y and X
        keep = [i for i, a in enumerate(axes) if a in "YX" or shape[i] != 1]
        axes = "".join(axes[i] for i in keep)
        if axes == "YX" or (axes == "YXS" and shape[-1] <= 4):
            return _read_cv2(path, intensity)  # OpenCV decodes LZW/JPEG TIFFs without imagecodecs
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
    return np.ascontiguousarray(_to_uint8(arr, intensity))


def sixteen_bit(path: str | Path) -> bool:
    """Whether the file stores 16 bits per sample (PNG or TIFF), from its header alone."""
    path = Path(path)
    try:
        if path.suffix.lower() in _TIFF:
            import tifffile

            with tifffile.TiffFile(path) as tf:
                return tf.series[0].dtype.itemsize == 2
        with open(path, "rb") as f:
            head = f.read(26)
        return head[:8] == b"\x89PNG\r\n\x1a\n" and head[24] == 16  # IHDR bit depth
    except Exception:  # noqa: BLE001 - unreadable headers are reported by the reader
        return False


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


def read_image_any(path: str | Path, intensity: Intensity = None) -> np.ndarray:
    """Read an image as ``H x W x C`` uint8, channels in file order (RGB, RGBA, grey C=1).

    * PNG, JPEG, WebP, BMP: OpenCV (BGR converted to RGB); a JPEG or WebP with an EXIF
      orientation tag (phone photos) is turned upright, as image viewers and labelling tools
      (labelme, CVAT) show it and its masks are drawn.
    * GIF: the first frame through Pillow (RGB, RGBA when it has transparency, or grey).
    * TIFF: OpenCV for plain grey/RGB/RGBA pages; tifffile for more than 4 channels,
      planar channels (axes ``SYX``/``CYX``) or one page per channel (``tifffile.imwrite``
      of a ``C x H x W`` array, axes ``QYX``). Other stacks (Z, time) raise a SeglabError.
    * 8-bit data is returned as it is. Deeper data goes to 8 bits as ``intensity``
      (``data.intensity_range``) says: by default 16-bit by ``>> 8`` and float and other
      integer types min-max per image; ``(lo, hi)`` maps lo..hi onto 0..255 (12-bit
      microscopy: ``(0, 4095)``); ``"percentile"`` maps each image's 1st..99.8th percentile
      onto 0..255. 1-bit images become 0/255.

    Raises SeglabError naming the file when it is missing or cannot be decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise SeglabError(f"image {path} is missing; restore it or remove it from the split")
    suffix = path.suffix.lower()
    if suffix == ".gif":
        return _read_gif(path)
    if suffix in _TIFF:
        return _read_tiff(path, intensity)
    return _read_cv2(path, intensity)
