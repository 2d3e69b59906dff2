"""Data set checks: every problem of every split, each with its file, in one pass.

:func:`check_dataset` decodes each image and mask once, with the same readers and checks as
:meth:`seglab.data.dataset.SegDataset.load` (the format's ``read_mask`` hook when it has
one, :func:`seglab.data.io.check_mask`), and never stops at the first problem.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from seglab.data.dataset import DatasetDefinition
from seglab.data.formats import Item, get_format
from seglab.data.formats import folder as folder_format
from seglab.data.imageio_ext import sixteen_bit
from seglab.data.io import adapt_channels, check_mask, read_image, read_mask
from seglab.errors import SeglabError, one_line

#: problem kinds, in the order :func:`summarize` lists them
KINDS = (
    "missing_split",
    "empty_split",
    "unreadable_image",
    "unreadable_mask",
    "missing_mask",
    "orphan_mask",
    "duplicate_stem",
    "size_mismatch",
    "undeclared_value",
    "unknown_color",
    "size_outlier",
    "few_grey_levels",
)
#: a 16-bit image read by ``>> 8`` whose brightest pixel is below this keeps at most this
#: many grey levels (a 12-bit image keeps 16 of its 4096)
FEW_LEVELS = 32
DEFAULT_SPLITS = ("train", "val", "test")
#: splits ``seglab train`` loads (SegDataModule(cfg, definition, "train", "val")): they must
#: exist and have a mask for every image
TRAINING_SPLITS = ("train", "val")
#: an image whose area is below 1/OUTLIER_RATIO or above OUTLIER_RATIO times the median area
#: of its split is flagged as ``size_outlier``
OUTLIER_RATIO = 32.0  # DSB 2018 legitimately mixes 256x256 and 1388x1040 (22x)


@dataclass
class Problem:
    """One problem of a data set: the file it concerns, its kind (one of :data:`KINDS`) and a
    one-line message naming the file and the fix."""

    file: str
    kind: str
    message: str


def _error_text(err: BaseException, what: str, path: Path) -> str:
    if isinstance(err, SeglabError):
        return one_line(err)
    return f"{what} {path} cannot be decoded ({type(err).__name__}: {one_line(err)}); replace it"


class _Collector:
    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self._seen: set[tuple[str, str, str]] = set()

    def add(self, file: str | Path, kind: str, message: str) -> None:
        key = (str(file), kind, message)
        if key not in self._seen:
            self._seen.add(key)
            self.problems.append(Problem(str(file), kind, message))


def _folder_split(
    d: DatasetDefinition, split: str, required: bool, out: _Collector, scans: list
) -> tuple[list[Item], set[int]]:
    """Items of a folder-format split (problems of the listing recorded) and the indices of
    the items whose masks folder does not exist (reported once, not per image)."""
    spec = d.splits.get(split)
    scan = folder_format.scan_split(d.root, split, spec)
    if scan.source is None:
        if required:
            where = d.root / spec if spec else d.root
            out.add(
                where,
                "missing_split",
                f"split '{split}' not found in {d.root} (no {split}.txt, images/{split}/"
                + (f" or {spec}" if spec else "")
                + f"); add it or set data.splits.{split}",
            )
        return [], set()
    scans.append(scan)
    for p, other in scan.duplicates:
        out.add(p, "duplicate_stem", f"{p} and {other} share the stem '{p.stem}'; rename one")
    for stem in scan.unknown_stems:
        out.add(
            scan.source,
            "unreadable_image",
            f"{scan.source} lists '{stem}' but {scan.image_dir} has no image with that stem; "
            "add the image or fix the split list",
        )
    if not scan.items:
        if not scan.unknown_stems:
            out.add(
                scan.source,
                "empty_split",
                f"split '{split}' ({scan.source}) has no images; add images or remove it",
            )
        return [], set()
    no_mask_dir: set[int] = set()
    if split in TRAINING_SPLITS and all(it.mask is None for it in scan.items):
        where = "has none of their masks" if scan.mask_dir.is_dir() else "does not exist"
        out.add(
            scan.mask_dir,
            "missing_mask",
            f"split '{split}' is unlabelled: masks folder {scan.mask_dir} {where} "
            f"({len(scan.items)} images); add the masks",
        )
        no_mask_dir = set(range(len(scan.items)))  # reported once, not per image
    return scan.items, no_mask_dir


def _orphans(scans: list, out: _Collector) -> None:
    done: set[tuple[Path, Path]] = set()
    for scan in scans:
        key = (scan.image_dir, scan.mask_dir)
        if key in done:
            continue
        done.add(key)
        for stem, p in scan.masks.items():
            if stem not in scan.images:
                out.add(
                    p,
                    "orphan_mask",
                    f"mask {p} has no image with stem '{stem}' in {scan.image_dir}; "
                    "add the image or remove the mask",
                )


def check_dataset(
    definition: DatasetDefinition,
    splits: list[str] | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> list[Problem]:
    """Every problem of the data set, each with its file; ``[]`` when it is clean.

    ``splits`` default to train, val, test and the splits of ``data.splits``, those that exist
    for the format; train, val (both loaded by ``seglab train``) and the splits named in
    ``data.splits`` must exist, test may be missing (explicitly requested splits must all
    exist). Images without a mask are ``missing_mask`` in train and val (a test split may be
    unlabelled). ``progress`` wraps the iterable of samples (e.g. ``rich.progress.track``).
    Each image and mask is decoded once.

    Kinds: ``missing_split``, ``empty_split``; ``unreadable_image`` (missing, undecodable, a
    channel count the model cannot take, or a stem of a split list without image);
    ``unreadable_mask``, ``missing_mask``, ``unknown_color`` (colour-coded masks);
    ``size_mismatch`` (mask and image sizes differ), ``undeclared_value`` (mask values
    outside the classes and ignore_index); ``orphan_mask`` and ``duplicate_stem`` (folder
    format: masks without image, files sharing a stem in images/ or masks/);
    ``size_outlier`` (area below 1/16 or above 16x the median area of the split).
    """
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # we report bad files
    try:
        return _check(definition, splits, progress)
    finally:
        cv2.utils.logging.setLogLevel(level)


def _check(
    definition: DatasetDefinition,
    splits: list[str] | None,
    progress: Callable[[Iterable], Iterable] | None,
) -> list[Problem]:
    d = definition
    fmt = get_format(d.format)
    is_folder = d.format == "folder"
    reader = getattr(fmt, "read_mask", None)
    explicit = splits is not None
    names = list(splits) if explicit else list(dict.fromkeys([*DEFAULT_SPLITS, *d.splits]))
    out = _Collector()
    scans: list = []
    work: list[tuple[str, Item, bool]] = []  # split, item, mask folder exists
    for split in names:
        required = explicit or split in TRAINING_SPLITS or split in d.splits
        if is_folder:
            items, no_mask_dir = _folder_split(d, split, required, out, scans)
        else:
            no_mask_dir = set()
            try:
                items = fmt.list_split(d.root, split, d.splits.get(split))
            except SeglabError as err:
                if required:
                    out.add(d.root, "missing_split", one_line(err))
                continue
            if not items:
                if required:
                    out.add(
                        d.root,
                        "empty_split",
                        f"split '{split}' of {d.root} is empty; add images or set "
                        f"data.splits.{split}",
                    )
                continue
        work += [(split, it, i not in no_mask_dir) for i, it in enumerate(items)]
    if is_folder:
        _orphans(scans, out)

    shapes: dict[Path, tuple[int, ...] | None] = {}  # image -> shape (None: unreadable)
    dark: dict[str, list[Path]] = {}  # split -> 16-bit images >> 8 leaves with few levels
    done: set[tuple[Path, Path | None]] = set()
    areas: dict[str, list[tuple[Path, int, int]]] = {}
    for split, item, mask_dir_ok in progress(work) if progress else work:
        image = Path(item.image)
        if image not in shapes:
            shapes[image] = None
            try:
                img = read_image(image, d.intensity_range)
                shapes[image] = img.shape
                adapt_channels(img, d.in_channels, image)
                colour = img[..., :3] if img.shape[2] == 4 else img  # not the alpha
                if d.intensity_range is None and colour.max() < FEW_LEVELS and sixteen_bit(image):
                    dark.setdefault(split, []).append(image)
            except Exception as err:  # noqa: BLE001 - every failure is a problem to report
                out.add(image, "unreadable_image", _error_text(err, "image", image))
        shape = shapes[image]
        if shape is not None:
            areas.setdefault(split, []).append((image, shape[0], shape[1]))
        if item.mask is None and split in TRAINING_SPLITS and mask_dir_ok:
            out.add(
                image,
                "missing_mask",
                f"image {image} of split '{split}' has no mask (labels not extracted?); "
                "add its mask or remove the image",
            )
        key = (image, None if item.mask is None else Path(item.mask))
        if item.mask is None or not mask_dir_ok or key in done:
            continue
        done.add(key)
        mask_path = Path(item.mask)
        if not mask_path.exists():
            out.add(
                mask_path,
                "missing_mask",
                f"mask {mask_path} of image {image} is missing; add it or remove the image",
            )
            continue
        try:
            mask = reader(item, d) if reader else read_mask(mask_path)
        except folder_format.UnknownColorError as err:
            out.add(mask_path, "unknown_color", one_line(err))
            continue
        except Exception as err:  # noqa: BLE001
            out.add(mask_path, "unreadable_mask", _error_text(err, "mask", mask_path))
            continue
        try:
            check_mask(mask, shape or mask.shape, d.num_classes, d.ignore_index, mask_path, image)
        except SeglabError as err:
            kind = "size_mismatch" if shape and mask.shape[:2] != shape[:2] else "undeclared_value"
            out.add(mask_path, kind, one_line(err))
            if kind == "size_mismatch":  # check the values too
                try:
                    check_mask(mask, mask.shape, d.num_classes, d.ignore_index, mask_path, image)
                except SeglabError as err2:
                    out.add(mask_path, "undeclared_value", one_line(err2))

    flagged: set[Path] = set()
    for split, sizes in areas.items():
        hw = np.array([(h, w) for _, h, w in sizes], dtype=np.int64)
        area = hw[:, 0] * hw[:, 1]
        med = float(np.median(area))
        for (image, h, w), a in zip(sizes, area, strict=True):
            if image in flagged or (OUTLIER_RATIO * a >= med and a <= OUTLIER_RATIO * med):
                continue
            flagged.add(image)
            ratio = a / med
            rel = f"{1 / ratio:.0f}x smaller" if ratio < 1 else f"{ratio:.0f}x larger"
            out.add(
                image,
                "size_outlier",
                f"image {image} is {w}x{h}, an area {rel} than the median of split '{split}' "
                f"({med:.0f} pixels); check it is the right file (thumbnail, wrong scale?)",
            )
    for split, files in dark.items():  # once per split: a 12-bit data set is all alike
        out.add(
            files[0],
            "few_grey_levels",
            f"{len(files)} 16-bit images of split '{split}' (e.g. {files[0]}) keep fewer than "
            f"{FEW_LEVELS} grey levels when read by >> 8 (12-bit data?); set "
            "data.intensity_range: [0, 4095] (their real range) or percentile",
        )
    return out.problems


def summarize(problems: list[Problem]) -> str:
    """Counts of ``problems`` per kind, one line per kind (``no problems found`` when empty)."""
    if not problems:
        return "no problems found"
    counts = Counter(p.kind for p in problems)
    order = [k for k in KINDS if k in counts] + sorted(k for k in counts if k not in KINDS)
    n = len(problems)
    lines = [f"{n} problem{'s' if n != 1 else ''}:"]
    lines += [f"  {k}: {counts[k]}" for k in order]
    return "\n".join(lines)
