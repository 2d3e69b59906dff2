"""Cityscapes (fine annotations), read with the 19 official training classes.

``data.root`` is the folder holding::

    leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

Any split folder under ``leftImg8bit/`` is a split (``train``, ``val``, ``test``,
``train_extra`` ...). The 34 label ids of ``*_labelIds.png`` are mapped to the 19
train ids of cityscapesScripts (``labels.py``); every other id (unlabeled, ego vehicle,
rectification border, out of roi, static, dynamic, ground, parking, rail track,
guard rail, bridge, tunnel, polegroup, caravan, trailer, license plate) is the ignore
index. An image without a ``*_labelIds.png`` has no mask (e.g. an unlabelled split); the
public ``test`` masks exist but are all ignore.

``data.splits.<split>`` may name the annotation set: ``gtFine`` (default) or ``gtCoarse``
(``gtCoarse/<split>/<city>/*_gtCoarse_labelIds.png``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from seglab.data.formats import FormatDefaults, Item
from seglab.data.io import read_mask as read_index_png
from seglab.errors import SeglabError

if TYPE_CHECKING:
    from seglab.data.dataset import DatasetDefinition

# (name, label id, colour) of the 19 evaluated classes in train-id order (cityscapesScripts)
TRAIN_CLASSES: list[tuple[str, int, tuple[int, int, int]]] = [
    ("road", 7, (128, 64, 128)),
    ("sidewalk", 8, (244, 35, 232)),
    ("building", 11, (70, 70, 70)),
    ("wall", 12, (102, 102, 156)),
    ("fence", 13, (190, 153, 153)),
    ("pole", 17, (153, 153, 153)),
    ("traffic light", 19, (250, 170, 30)),
    ("traffic sign", 20, (220, 220, 0)),
    ("vegetation", 21, (107, 142, 35)),
    ("terrain", 22, (152, 251, 152)),
    ("sky", 23, (70, 130, 180)),
    ("person", 24, (220, 20, 60)),
    ("rider", 25, (255, 0, 0)),
    ("car", 26, (0, 0, 142)),
    ("truck", 27, (0, 0, 70)),
    ("bus", 28, (0, 60, 100)),
    ("train", 31, (0, 80, 100)),
    ("motorcycle", 32, (0, 0, 230)),
    ("bicycle", 33, (119, 11, 32)),
]

DEFAULTS = FormatDefaults(
    classes=[name for name, _, _ in TRAIN_CLASSES],
    colors=[color for _, _, color in TRAIN_CLASSES],
    ignore_index=255,
    in_channels=3,
)

ANNOTATION_SETS = ("gtFine", "gtCoarse")
_IMAGE_SUFFIX = "_leftImg8bit.png"


def label_to_train_lut(ignore_index: int = 255) -> np.ndarray:
    """256-entry uint8 table: Cityscapes label id -> train id (0..18), else ``ignore_index``."""
    lut = np.full(256, ignore_index, dtype=np.uint8)
    for train_id, (_, label_id, _) in enumerate(TRAIN_CLASSES):
        lut[label_id] = train_id
    return lut


def list_split(root: Path, split: str, spec: str | None = None) -> list[Item]:
    """The images of ``leftImg8bit/<split>/*/`` with their ``*_labelIds.png`` (or None)."""
    gt = spec or "gtFine"
    if gt not in ANNOTATION_SETS:
        raise SeglabError(
            f"data.splits.{split}: '{spec}' is not a Cityscapes annotation set; "
            f"use one of {', '.join(ANNOTATION_SETS)}"
        )
    img_dir = root / "leftImg8bit" / split
    if not img_dir.is_dir():
        raise SeglabError(
            f"Cityscapes split '{split}': {img_dir} not found; data.root must hold "
            "leftImg8bit/ and gtFine/"
        )
    items: list[Item] = []
    for img in sorted(img_dir.glob(f"*/*{_IMAGE_SUFFIX}")):
        base = img.name[: -len(_IMAGE_SUFFIX)]
        mask = root / gt / split / img.parent.name / f"{base}_{gt}_labelIds.png"
        items.append(Item(img, mask if mask.is_file() else None, base))
    return items


def read_mask(item: Item, definition: DatasetDefinition) -> np.ndarray:
    """The train ids (``H x W`` uint8) of a ``*_labelIds.png``; unmapped ids -> ignore."""
    return label_to_train_lut(definition.ignore_index)[read_index_png(item.mask)]
