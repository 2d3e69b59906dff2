"""Generic folder layout: ``images/`` and ``masks/`` with matching file stems.

A split is found, in order, from ``data.splits[split]`` (a list file of stems, or a
sub-folder holding ``images/`` + ``masks/``), ``<root>/<split>.txt``,
``<root>/images/<split>/`` (+ ``masks/<split>/``), or, for ``train`` only, all of ``images/``
but the stems listed in ``<root>/val.txt`` and ``<root>/test.txt``.

Masks may be index masks (one class index per pixel), 0/255 binary masks (data sets with
two classes) or RGB colour-coded masks; see :func:`read_mask`. Class names and colours can
be given by a ``classes.csv`` (``name,r,g,b``) or ``classes.json``
(``[{"name": ..., "color": [r, g, b]}]``) in the data set root; see :func:`classes_from_root`.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from seglab.data.formats import FormatDefaults, Item
from seglab.data.io import IMAGE_SUFFIXES, as_uint8_mask
from seglab.errors import SeglabError

if TYPE_CHECKING:
    from seglab.data.dataset import DatasetDefinition

DEFAULTS = FormatDefaults(classes=[], ignore_index=255, in_channels=3)

#: image (and mask) file suffixes the layout lists: OpenCV's plus GIF (read through Pillow)
SUFFIXES = tuple(dict.fromkeys((*IMAGE_SUFFIXES, ".gif")))
#: files in the data set root that name the classes and their mask colours
CLASS_FILES = ("classes.csv", "classes.json")
#: class name in a classes file whose colour marks pixels that are not scored (ignore_index)
IGNORE_NAME = "ignore"


class UnknownColorError(SeglabError):
    """A colour-coded mask holds colours that are no class's colour."""


# --------------------------------------------------------------------------- splits


@dataclass
class SplitScan:
    """What defines a split on disk, found without stopping at the first problem.

    ``source`` is the list file or folder the split comes from (None: the split does not
    exist); ``images``/``masks`` index the files of ``image_dir``/``mask_dir`` by stem (the
    first file in sorted order when several share a stem); ``duplicates`` holds
    ``(file, kept_file)`` for every other file sharing a stem; ``unknown_stems`` the stems of
    a list file that have no image.
    """

    items: list[Item]
    source: Path | None
    image_dir: Path
    mask_dir: Path
    images: dict[str, Path] = field(default_factory=dict)
    masks: dict[str, Path] = field(default_factory=dict)
    duplicates: list[tuple[Path, Path]] = field(default_factory=list)
    unknown_stems: list[str] = field(default_factory=list)


def _index(folder: Path, duplicates: list[tuple[Path, Path]]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    if folder.is_dir():
        for p in sorted(folder.iterdir()):
            if p.suffix.lower() in SUFFIXES and p.is_file():
                if p.stem in out:
                    duplicates.append((p, out[p.stem]))
                    continue
                out[p.stem] = p
    return out


def _scan_pairs(
    img_dir: Path,
    mask_dir: Path,
    stems: list[str] | None,
    source: Path | None,
    exclude: frozenset[str] = frozenset(),
) -> SplitScan:
    dup_images: list[tuple[Path, Path]] = []
    dup_masks: list[tuple[Path, Path]] = []
    images, masks = _index(img_dir, dup_images), _index(mask_dir, dup_masks)
    scan = SplitScan([], source, img_dir, mask_dir, images, masks, dup_images + dup_masks)
    found = []
    for s in [s for s in images if s not in exclude] if stems is None else stems:
        if s not in images:
            scan.unknown_stems.append(s)
            continue
        found.append(s)
    # a split none of whose images has a mask is unlabelled (a test split to predict, as
    # `data convert` writes ISBI's); one with some masks missing is a labelled split with
    # missing masks
    labelled = any(s in masks for s in found)
    scan.items = [
        Item(images[s], masks.get(s, mask_dir / f"{s}.png") if labelled else None) for s in found
    ]
    return scan


def _list_stem(line: str) -> str:
    """A split-list entry as a stem: ``a.png`` or ``images/a.png`` -> ``a``; a stem with dots
    (``frame.0001``, as ``seglab data split`` writes it) stays whole."""
    p = Path(line)
    return p.stem if p.suffix.lower() in SUFFIXES else p.name


def _read_list(path: Path) -> list[str]:
    """The stems of a split list file, one per non-empty line."""
    return [_list_stem(ln.strip()) for ln in path.read_text().splitlines() if ln.strip()]


def scan_split(root: Path, split: str, spec: str | None = None) -> SplitScan:
    """Find split ``split`` like :func:`list_split`, recording problems instead of raising."""
    candidates = [root / spec] if spec else [root / f"{split}.txt", root / "images" / split]
    for c in candidates:
        if c.is_file():
            return _scan_pairs(root / "images", root / "masks", _read_list(c), c)
        if c.is_dir():
            if (c / "images").is_dir():
                return _scan_pairs(c / "images", c / "masks", None, c)
            return _scan_pairs(c, root / "masks" / c.name, None, c)
    if split == "train" and not spec:  # every image but those of root/val.txt, root/test.txt
        source = root / "images" if (root / "images").is_dir() else None
        lists = [root / "val.txt", root / "test.txt"]
        held_out = frozenset(stem for f in lists if f.is_file() for stem in _read_list(f))
        return _scan_pairs(root / "images", root / "masks", None, source, held_out)
    return SplitScan([], None, root / "images", root / "masks")


def list_split(root: Path, split: str, spec: str | None = None) -> list[Item]:
    """The items of ``split``; raises on a missing ``spec``, shared stems or unknown stems."""
    scan = scan_split(root, split, spec)
    if spec and scan.source is None:
        raise SeglabError(f"split '{split}': {root / spec} not found; fix data.splits.{split}")
    if scan.duplicates:
        p, other = scan.duplicates[0]
        raise SeglabError(f"{p} and {other} share the stem '{p.stem}'; rename one")
    if scan.unknown_stems:
        raise SeglabError(
            f"{scan.source}: no image with stem '{scan.unknown_stems[0]}' in {scan.image_dir}; "
            "fix the split list"
        )
    return scan.items


# --------------------------------------------------------------------------- classes


def _class_file(root: Path) -> Path | None:
    found = [root / n for n in CLASS_FILES if (root / n).is_file()]
    if len(found) > 1:
        raise SeglabError(
            f"{root} has both {found[0].name} and {found[1].name}; keep one to name the classes"
        )
    return found[0] if found else None


def _rgb(value: object, where: str) -> tuple[int, int, int]:
    try:
        rgb = tuple(int(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        rgb = ()
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        raise SeglabError(f"{where}: colour {value!r} must be three integers r, g, b in 0..255")
    return rgb  # type: ignore[return-value]


def _parse_csv(path: Path) -> list[tuple[str, tuple[int, int, int]]]:
    rows = []
    with path.open(newline="") as f:
        for lineno, row in enumerate(csv.reader(f), start=1):
            row = [c.strip() for c in row]
            if not any(row):
                continue
            if lineno == 1 and [c.lower() for c in row] == ["name", "r", "g", "b"]:
                continue
            if len(row) != 4 or not row[0]:
                raise SeglabError(f"{path} line {lineno}: expected 'name,r,g,b', got {row!r}")
            rows.append((row[0], _rgb(row[1:], f"{path} line {lineno}")))
    return rows


def _parse_json(path: Path) -> list[tuple[str, tuple[int, int, int]]]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SeglabError(f"{path} is not valid JSON ({e}); fix the file") from None
    if not isinstance(data, list):
        raise SeglabError(f'{path} must be a list of {{"name": ..., "color": [r, g, b]}}')
    rows = []
    for i, entry in enumerate(data):
        where = f"{path} entry {i}"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise SeglabError(f'{where}: expected {{"name": ..., "color": [r, g, b]}}')
        rows.append((entry["name"], _rgb(entry.get("color"), where)))
    return rows


@lru_cache(maxsize=32)
def _class_rows(path: Path, mtime_ns: int) -> tuple[tuple[str, tuple[int, int, int]], ...]:
    rows = _parse_csv(path) if path.suffix == ".csv" else _parse_json(path)
    if not rows:
        raise SeglabError(f"{path} lists no classes; add one 'name,r,g,b' entry per class")
    names: dict[str, int] = {}
    colours: dict[tuple[int, int, int], str] = {}
    for name, rgb in rows:
        if name in names:
            raise SeglabError(f"{path}: class '{name}' is listed twice; keep one")
        if rgb in colours:
            raise SeglabError(
                f"{path}: classes '{colours[rgb]}' and '{name}' share the colour {rgb}; "
                "give each class its own colour"
            )
        names[name] = len(names)
        colours[rgb] = name
    return tuple(rows)


def _root_rows(root: Path) -> tuple[Path, tuple[tuple[str, tuple[int, int, int]], ...]] | None:
    path = _class_file(Path(root))
    if path is None:
        return None
    return path, _class_rows(path, path.stat().st_mtime_ns)


def classes_from_root(root: str | Path) -> tuple[list[str], list[tuple[int, int, int]]] | None:
    """Class names and mask colours from ``classes.csv`` or ``classes.json`` in ``root``.

    ``classes.csv``: one ``name,r,g,b`` row per class (an optional ``name,r,g,b`` header).
    ``classes.json``: ``[{"name": "road", "color": [128, 64, 128]}, ...]``. The order is the
    class index order. An entry named ``ignore`` gives the colour of pixels that are not
    scored; it is not a class and is left out of the result. Returns None when neither file
    exists; raises SeglabError naming the file when both exist or one is malformed.
    """
    found = _root_rows(Path(root))
    if found is None:
        return None
    rows = [(n, c) for n, c in found[1] if n.lower() != IGNORE_NAME]
    return [n for n, _ in rows], [c for _, c in rows]


def dataset_classes(root: str | Path, splits: dict[str, str] | None = None) -> list[str]:
    """Class names of ``classes.csv``/``classes.json`` in ``root`` ([] when there is none):
    the format hook :meth:`DatasetDefinition.from_config` uses when data.classes is unset."""
    found = classes_from_root(root) if Path(root).is_dir() else None
    return found[0] if found else []


def _pack(rgb: np.ndarray) -> np.ndarray:
    """``... x 3`` RGB uint8 -> ``...`` uint32 ``r << 16 | g << 8 | b``."""
    rgb = rgb.astype(np.uint32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _color_table(definition: DatasetDefinition) -> tuple[np.ndarray, np.ndarray, str]:
    """(sorted packed colours, class index of each, where the colours come from)."""
    found = _root_rows(definition.root)
    pairs: list[tuple[tuple[int, int, int], int]] = []
    if found is not None:
        path, rows = found
        where = path.name
        for name, rgb in rows:
            if name.lower() == IGNORE_NAME:
                pairs.append((rgb, definition.ignore_index))
            elif name in definition.classes:
                pairs.append((rgb, definition.classes.index(name)))
            else:
                raise SeglabError(
                    f"{path} lists class '{name}' which is not in data.classes "
                    f"({', '.join(definition.classes)}); make them agree"
                )
    else:
        where = "data.colors"
        pairs = [(tuple(c), i) for i, c in enumerate(definition.colors)]
    if not pairs:
        keys = np.zeros(0, np.uint32)
        return keys, np.zeros(0, np.uint8), where
    keys = _pack(np.array([c for c, _ in pairs], dtype=np.uint8))
    values = np.array([i for _, i in pairs], dtype=np.uint8)
    order = np.argsort(keys, kind="stable")
    return keys[order], values[order], where


def _lookup(packed: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``packed`` in ``keys`` (clipped) and whether each was found."""
    if keys.size == 0:
        return np.zeros(packed.shape, np.intp), np.zeros(packed.shape, bool)
    pos = np.minimum(np.searchsorted(keys, packed), keys.size - 1)
    return pos, keys[pos] == packed


def _map_colors(rgb: np.ndarray, definition: DatasetDefinition, path: Path) -> np.ndarray:
    keys, values, where = _color_table(definition)
    packed = _pack(rgb)
    pos, ok = _lookup(packed, keys)
    if not ok.all():
        bad, counts = np.unique(packed[~ok], return_counts=True)
        top = np.argsort(-counts, kind="stable")[:4]
        shown = ", ".join(
            f"({bad[i] >> 16},{(bad[i] >> 8) & 255},{bad[i] & 255}) on {counts[i]} pixels"
            for i in top
        )
        more = f" and {bad.size - top.size} more colours" if bad.size > top.size else ""
        fix = "data.colors or a classes.csv" if where == "data.colors" else where
        raise UnknownColorError(
            f"mask {path} has colours that are not class colours in {where}: {shown}{more}; "
            f"add them to {fix} or fix the mask"
        )
    return values[pos]


# --------------------------------------------------------------------------- masks


def _palette_indices(path: Path, definition: DatasetDefinition) -> np.ndarray | None:
    """The indices of a palette PNG when they are the classes (see :func:`read_mask`), else
    None: the file is then decoded by OpenCV, which expands a palette to its colours."""
    if path.suffix.lower() != ".png" or _class_file(definition.root) is not None:
        return None
    try:
        with Image.open(path) as im:
            if im.mode != "P":
                return None
            m = np.array(im)
    except (UnidentifiedImageError, OSError):
        return None  # OpenCV's decoder reports it
    values = np.flatnonzero(np.bincount(m.ravel(), minlength=256))
    valid = (values < definition.num_classes) | (values == definition.ignore_index)
    return m if valid.all() else None


def read_mask(item: Item, definition: DatasetDefinition) -> np.ndarray:
    """Read ``item.mask`` as ``H x W`` uint8 class indices (ignored pixels =
    ``definition.ignore_index``). The file is decoded once; its encoding is told apart by:

    1. **Colour-coded masks** - a file with 3 or 4 channels that are not all equal (alpha is
       dropped), or any 3/4-channel file when the root has ``classes.csv``/``classes.json``.
       Each colour maps to its class through the root's classes file when there is one
       (class names matched to ``definition.classes``; a colour named ``ignore`` maps to
       ``ignore_index``), else through ``definition.colors`` (colour i -> class i). Colours
       that are not class colours raise :class:`UnknownColorError` naming the file, each colour
       (r,g,b) and its pixel count.
    2. **0/255 binary masks** - with exactly 2 classes, a single-channel (grey) mask whose
       values are all 0 or 255 and that holds at least one 255 becomes 0 -> 0, 255 -> 1.
       This applies whatever ``ignore_index`` is: under the default ``ignore_index`` 255 a
       mask holding only 0 and 255 is read as binary (not as class 0 plus ignored pixels),
       while a mask that also holds 1s is an index mask whose 255s are ignored.
    3. **Ambiguous** - with 2 classes and ``ignore_index`` other than 255, a mask holding
       both 1s and 255s and nothing but 0, 1 and 255 could be a binary mask with stray 1s
       or an index mask with stray 255s: it raises SeglabError.
    4. **Index masks** - everything else (as :func:`seglab.data.io.read_mask`). A grey mask
       stored with 3 equal channels whose values are not all class indices (or
       ``ignore_index``) but are all class colours (v, v, v) is read as a colour mask.

    Palette PNGs (labelme's ``label.png``, VOC's SegmentationClass) hold an index per pixel
    and a colour per index: without a classes file their indices are read as an index mask
    when all of them are class indices (or ``ignore_index``), else their colours as a colour
    mask; with a classes file, always their colours.

    Missing or undecodable files raise SeglabError naming the file; class values outside
    the declared classes are left for :func:`seglab.data.io.check_mask` to report.
    """
    path = Path(item.mask)
    if not path.is_file():
        raise SeglabError(f"mask {path} is missing; add it or remove its image from the split")
    raw = _palette_indices(path, definition)
    if raw is None:
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.size == 0:
        raise SeglabError(f"mask {path} cannot be decoded (corrupt or unsupported); replace it")
    three = raw.ndim == 3 and raw.shape[2] >= 3
    if raw.ndim == 3 and not three:
        raw = raw[..., 0]  # grey + alpha
    if three:
        bgr = raw[..., :3]
        grey = np.array_equal(bgr[..., 0], bgr[..., 1]) and np.array_equal(bgr[..., 1], bgr[..., 2])
        if not grey or _class_file(definition.root) is not None:
            if bgr.dtype != np.uint8:
                raise SeglabError(f"mask {path} is a 16-bit colour image; save it as 8-bit RGB")
            return _map_colors(bgr[..., ::-1], definition, path)
        raw = bgr[..., 0]
    m = as_uint8_mask(raw, path)
    counts = np.bincount(m.ravel(), minlength=256)
    n, ignore = definition.num_classes, definition.ignore_index
    if n == 2 and counts[255] and not counts[1:255].any():
        return (m >> 7).astype(np.uint8)  # {0, 255} -> {0, 1}
    if n == 2 and counts[255] and counts[1] and ignore != 255 and not counts[2:255].any():
        raise SeglabError(
            f"mask {path} holds 0, 1 and 255 but data.ignore_index is {ignore}: it is neither a "
            "0/1 index mask nor a 0/255 binary mask; fix the mask or set data.ignore_index: 255"
        )
    if three:
        values = np.nonzero(counts)[0]
        valid = (values < n) | (values == ignore)
        if not valid.all():
            keys, _, _ = _color_table(definition)
            _, known = _lookup(_pack(np.repeat(values[:, None], 3, axis=1)), keys)
            if known.all():
                return _map_colors(np.repeat(m[..., None], 3, axis=2), definition, path)
    return m
