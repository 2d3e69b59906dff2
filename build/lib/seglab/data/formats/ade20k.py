"""ADE20K scene parsing (SceneParsing / ADEChallengeData2016, 150 classes).

``data.root`` is the ``ADEChallengeData2016`` folder (or the folder holding it)::

    images/{training,validation}/ADE_*.jpg
    annotations/{training,validation}/ADE_*.png   0 = other / unlabelled, 1..150 = classes

Splits ``train`` and ``val`` read ``training`` and ``validation``; the folder names
themselves, and any other sub-folder of ``images/`` (e.g. ``testing``), work too, and
``data.splits.<split>`` may name the folder. Images of a split without an
``annotations/<folder>/`` have no masks.

Masks are "zero label reduced" as in the benchmark: value 0 is not scored (the ignore
index) and class ``k`` (1..150) becomes index ``k - 1``. Class names are the first names
of objectInfo150 (``wall``, ``building``, ``sky``, ...). Colours are seglab's distinct
default palette (the usual ADE palette repeats a colour).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from seglab.data.dataset import default_palette
from seglab.data.formats import FormatDefaults, Item
from seglab.data.io import IMAGE_SUFFIXES
from seglab.data.io import read_mask as read_index_png
from seglab.errors import SeglabError

if TYPE_CHECKING:
    from seglab.data.dataset import DatasetDefinition

CLASSES = [
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane",
    "grass", "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant",
    "curtain", "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea",
    "mirror", "rug", "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe",
    "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace",
    "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table",
    "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind",
    "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine",
    "hovel", "bus", "towel", "light", "truck", "tower", "chandelier", "awning",
    "streetlight", "booth", "television receiver", "airplane", "dirt track", "apparel",
    "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster",
    "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike",
    "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave", "pot",
    "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen",
    "plate", "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
]  # fmt: skip

DEFAULTS = FormatDefaults(
    classes=CLASSES, colors=default_palette(len(CLASSES)), ignore_index=255, in_channels=3
)

SPLIT_FOLDERS = {"train": "training", "val": "validation", "test": "testing"}


def _ade_root(root: Path) -> Path:
    if not (root / "images").is_dir() and (root / "ADEChallengeData2016" / "images").is_dir():
        return root / "ADEChallengeData2016"
    return root


def list_split(root: Path, split: str, spec: str | None = None) -> list[Item]:
    """The images of ``images/<folder>/`` with ``annotations/<folder>/<stem>.png``."""
    root = _ade_root(root)
    folder = spec or SPLIT_FOLDERS.get(split, split)
    img_dir = root / "images" / folder
    if not img_dir.is_dir():
        raise SeglabError(
            f"ADE20K split '{split}': {img_dir} not found; data.root must be the "
            "ADEChallengeData2016 folder (images/training, images/validation)"
        )
    ann_dir = root / "annotations" / folder
    labelled = ann_dir.is_dir()
    return [
        Item(p, ann_dir / f"{p.stem}.png" if labelled else None, p.stem)
        for p in sorted(img_dir.iterdir())
        if p.suffix.lower() in IMAGE_SUFFIXES
    ]


def reduce_zero_label_lut(ignore_index: int = 255) -> np.ndarray:
    """256-entry uint8 table: 0 -> ``ignore_index``, k -> k - 1."""
    lut = (np.arange(256, dtype=np.int64) - 1).astype(np.uint8)
    lut[0] = ignore_index
    return lut


def read_mask(item: Item, definition: DatasetDefinition) -> np.ndarray:
    """The class indices (``H x W`` uint8) of an ADE20K annotation: ``mask - 1``, 0 -> ignore.

    Raw values above 150 land outside the classes and are reported by ``check_mask``.
    """
    return reduce_zero_label_lut(definition.ignore_index)[read_index_png(item.mask)]
