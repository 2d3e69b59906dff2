"""2018 Data Science Bowl nuclei (BBBC038): one class ``nucleus``, semantic masks and instances.

Two layouts, detected from ``data.root``:

* **shared** (``images/`` present)::

      images/<id>.png      RGB(A) image
      masks/<id>.png       0 background, any non-zero value nucleus
      instances/<id>.png   16-bit, 0 background, 1..N one id per nucleus
      train.txt, val.txt   ids, one a line

* **kaggle** (the original download, e.g. ``stage1_train/``)::

      <id>/images/<id>.png
      <id>/masks/*.png     one binary PNG (0/255) per nucleus

  The semantic mask is the union of the nucleus masks, the instance map gives each non-empty
  mask file (in file-name order) its own id; where nuclei overlap the later file wins.

Splits: ``data.splits.<split>`` is a list file of ids (relative to ``data.root`` or
absolute); otherwise ``<root>/<split>.txt``; otherwise, for ``train`` only, every id.
List lines may be ids or file names (``<id>.png``). Images with an alpha channel are read
as RGB (the dataset drops alpha to match ``in_channels: 3``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from seglab.data.formats import FormatDefaults, Item
from seglab.data.io import read_mask as read_index_mask
from seglab.errors import SeglabError

DEFAULTS = FormatDefaults(
    classes=["background", "nucleus"],
    colors=[(0, 0, 0), (255, 255, 0)],
    ignore_index=255,
    in_channels=3,
)


def layout(root: Path) -> str:
    """``shared`` (images/ + masks/ folders) or ``kaggle`` (one folder per id)."""
    if (root / "images").is_dir():
        return "shared"
    for d in root.iterdir() if root.is_dir() else []:
        if d.is_dir() and (d / "images").is_dir():
            return "kaggle"
    raise SeglabError(
        f"{root} holds neither images/ + masks/ nor <id>/images/<id>.png folders; "
        "point data.root at the DSB 2018 folder (e.g. stage1_train)"
    )


def _kaggle_image(folder: Path) -> Path | None:
    img = folder / "images" / f"{folder.name}.png"
    if img.is_file():
        return img
    pngs = sorted((folder / "images").glob("*.png"))
    return pngs[0] if pngs else None


def _all_ids(root: Path, kind: str) -> list[str]:
    if kind == "shared":
        return sorted(p.stem for p in (root / "images").glob("*.png"))
    return sorted(d.name for d in root.iterdir() if d.is_dir() and _kaggle_image(d) is not None)


def _read_ids(list_file: Path) -> list[str]:
    ids = []
    for line in list_file.read_text().splitlines():
        s = line.strip()
        if s:
            name = Path(s).name
            ids.append(name[:-4] if name.lower().endswith(".png") else name)
    return ids


def _item(root: Path, kind: str, id_: str, where: Path | None) -> Item:
    if kind == "shared":
        img = root / "images" / f"{id_}.png"
        if not img.is_file():
            raise SeglabError(f"{where or root}: image {img} of id '{id_}' not found; fix the list")
        return Item(img, root / "masks" / f"{id_}.png", id_)
    img = _kaggle_image(root / id_)
    if img is None:
        raise SeglabError(
            f"{where or root}: no {root / id_}/images/{id_}.png for id '{id_}'; fix the list"
        )
    masks = root / id_ / "masks"
    return Item(img, masks if masks.is_dir() else None, id_)


def list_split(root: Path, split: str, spec: str | None = None) -> list[Item]:
    """Items of ``split`` (``ref`` = the image id; for the Kaggle layout ``mask`` is the
    id's ``masks/`` folder, None when it has none)."""
    kind = layout(root)
    list_file = root / (spec or f"{split}.txt")
    if list_file.is_file():
        return [_item(root, kind, i, list_file) for i in _read_ids(list_file)]
    if spec:
        raise SeglabError(f"split '{split}': list file {list_file} not found; fix data.splits")
    if split == "train":
        return [_item(root, kind, i, None) for i in _all_ids(root, kind)]
    return []


def _nucleus_masks(folder: Path) -> list[tuple[Path, np.ndarray]]:
    """(file, boolean mask) of every nucleus PNG in a Kaggle ``masks/`` folder, by name."""
    out: list[tuple[Path, np.ndarray]] = []
    for p in sorted(folder.glob("*.png")):
        m = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        if m is None:
            raise SeglabError(f"nucleus mask {p} cannot be decoded; replace or delete it")
        if out and m.shape != out[0][1].shape:
            raise SeglabError(
                f"nucleus mask {p} is {m.shape[1]}x{m.shape[0]} but {out[0][0].name} is "
                f"{out[0][1].shape[1]}x{out[0][1].shape[0]}; all masks of an image need its size"
            )
        out.append((p, m > 0))
    if not out:
        raise SeglabError(f"{folder} has no nucleus mask PNGs; add them or remove the image")
    return out


def read_mask(item: Item, definition: Any = None) -> np.ndarray:
    """H x W uint8: 0 background, 1 nucleus (the union of the nucleus masks for Kaggle)."""
    path = Path(item.mask)
    if path.is_dir():
        masks = _nucleus_masks(path)
        union = np.zeros(masks[0][1].shape, dtype=np.uint8)
        for _, m in masks:
            union[m] = 1
        return union
    return (read_index_mask(path) > 0).astype(np.uint8)


def read_instances(item: Item, definition: Any = None) -> np.ndarray:
    """H x W int32 instance map: 0 background, 1..N one id per nucleus."""
    path = Path(item.mask)
    if path.is_dir():
        masks = _nucleus_masks(path)
        inst = np.zeros(masks[0][1].shape, dtype=np.int32)
        k = 0
        for _, m in masks:
            if m.any():  # an empty mask file gets no id, so ids stay 1..N
                k += 1
                inst[m] = k
        return inst
    f = path.parent.parent / "instances" / path.name
    if not f.is_file():
        raise SeglabError(
            f"instance map {f} is missing; add the 16-bit instance PNG of {item.image.name}"
        )
    inst = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
    if inst is None or inst.ndim != 2:
        raise SeglabError(f"instance map {f} is not a single-channel PNG; replace it")
    return inst.astype(np.int32)
