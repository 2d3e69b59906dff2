"""Convert any readable data set to the generic folder layout (``seglab data convert``).

Output::

    out/images/<stem>.<png|jpg|...>    original bytes when the source is PNG/JPEG/TIFF, else PNG
    out/masks/<stem>.png               uint8 index PNG (class index, ignore_index; see below)
    out/<split>.txt                    stems of each split
    out/dataset.yaml                   ``data:`` section (format folder, root ".", classes ...)

Masks come from :meth:`SegDataset.load`, so format-specific readers (palettes, id maps, JSON
annotations) and the mask checks apply. Stems are the source image stems; when two
different source images share a stem, the later one is renamed ``<split>_<stem>`` (then
``<split>_<stem>_<n>``). The same source image listed in two splits is written once and
listed in both. The output is built in a temporary sibling folder and moved into place at
the end, so a failure leaves no half-written data set.

A data set with 2 classes and ``ignore_index`` 255 is written with ignore_index 254 (ignored
pixels 254 in the masks): the folder reader takes a 2-class mask holding only 0 and 255 for
a 0/255 binary mask, so a mask of class 0 plus ignored pixels would read back as classes 0/1.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
import yaml

from seglab.config import DataConfig
from seglab.data.dataset import DatasetDefinition, SegDataset
from seglab.data.stats import Progress, available_splits
from seglab.errors import SeglabError

#: images copied byte for byte (TIFF: multi-channel images that PNG cannot hold)
COPY_SUFFIXES = {".png": ".png", ".jpg": ".jpg", ".jpeg": ".jpeg", ".tif": ".tif", ".tiff": ".tiff"}


def output_ignore_index(definition: DatasetDefinition) -> int:
    """The ignore_index of the converted copy: 254 instead of 255 for 2 classes, because the
    folder reader reads a 2-class mask holding only 0 and 255 as a 0/255 binary mask."""
    if definition.num_classes == 2 and definition.ignore_index == 255:
        return 254
    return definition.ignore_index


def data_section(definition: DatasetDefinition, root: str = ".") -> dict:
    """The ``data:`` config section describing the converted copy of ``definition``."""
    return {
        "format": "folder",
        "root": root,
        "classes": list(definition.classes),
        "colors": [list(c) for c in definition.colors],
        "ignore_index": output_ignore_index(definition),
        "in_channels": definition.in_channels,
        "mean": [float(v) for v in definition.mean],
        "std": [float(v) for v in definition.std],
        # PNG/TIFF images are copied as they are, 16 bits included: read them the same way
        "intensity_range": definition.to_meta()["intensity_range"],
    }


def _check_empty_target(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SeglabError(
            f"output folder {out} is not empty; choose a new or empty folder (nothing was written)"
        )


def _unique_stem(stem: str, split: str, used: set[str]) -> str:
    if stem not in used:
        return stem
    cand = f"{split}_{stem}"
    n = 1
    while cand in used:
        n += 1
        cand = f"{split}_{stem}_{n}"
    return cand


def _write_png(path: Path, arr: np.ndarray, source: Path) -> None:
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGBA2BGRA)
    try:
        ok = cv2.imwrite(str(path), np.ascontiguousarray(arr))
    except cv2.error:
        channels = arr.shape[2] if arr.ndim == 3 else 1
        raise SeglabError(
            f"cannot write {source} as PNG ({channels} channels, {arr.dtype}); "
            "save it as a PNG, JPEG or TIFF image and convert again"
        ) from None
    if not ok:
        raise SeglabError(
            f"cannot write {path} (from {source}); check the disk space and permissions"
        )


def convert_dataset(
    definition: DatasetDefinition,
    out: Path,
    splits: list[str] | None = None,
    progress: Progress | None = None,
    limit: int | None = None,
) -> Path:
    """Write ``definition`` (``splits``, default every existing split) as a folder-format data
    set in ``out`` and return the path of ``out/dataset.yaml``.

    ``limit`` keeps the first ``limit`` items of each split (for quick subsets). Refuses an
    existing non-empty ``out``. Splits without masks (e.g. a test split) are written with
    images only.
    """
    out = Path(out)
    _check_empty_target(out)
    items_by_split, _ = available_splits(definition, splits)
    if limit is not None:
        items_by_split = {s: v[:limit] for s, v in items_by_split.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        ignore = output_ignore_index(definition)
        used: set[str] = set()
        written: dict[tuple, str] = {}
        total = sum(len(v) for v in items_by_split.values())
        done = 0
        for split, items in items_by_split.items():
            ds = SegDataset(definition, split, cache=False, require_masks=False)
            ds.pairs = items
            stems: list[str] = []
            for i, item in enumerate(items):
                key = (str(item.image), str(item.mask), repr(item.ref))
                if key in written:
                    stems.append(written[key])
                else:
                    img, mask = ds.load(i)
                    stem = _unique_stem(item.image.stem, split, used)
                    suffix = COPY_SUFFIXES.get(item.image.suffix.lower())
                    if suffix:
                        shutil.copyfile(item.image, tmp / "images" / f"{stem}{suffix}")
                    else:
                        _write_png(tmp / "images" / f"{stem}.png", img, item.image)
                    if mask is not None:
                        mask = mask.astype(np.uint8)
                        mask[mask == definition.ignore_index] = ignore
                        _write_png(tmp / "masks" / f"{stem}.png", mask, Path(item.mask))
                    used.add(stem)
                    written[key] = stem
                    stems.append(stem)
                done += 1
                if progress:
                    progress(f"convert {split}", done, total)
            (tmp / f"{split}.txt").write_text("".join(f"{s}\n" for s in stems))
        section = data_section(definition)
        DataConfig.model_validate(section)
        (tmp / "dataset.yaml").write_text(
            f"# converted by seglab from {definition.format} data at {definition.root}\n"
            + yaml.safe_dump({"data": section}, sort_keys=False)
        )
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp creates 0700
        _check_empty_target(out)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / "dataset.yaml"
