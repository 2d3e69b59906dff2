"""Pascal VOC 2012 segmentation, optionally with the SBD augmented training set.

``data.root`` is the ``VOC2012`` folder (a ``VOCdevkit`` folder, or one holding
``VOC2012/`` or ``VOCdevkit/VOC2012/``, is accepted too)::

    JPEGImages/<id>.jpg
    SegmentationClass/<id>.png           palette PNGs; the palette index is the class
    ImageSets/Segmentation/{train,val,trainval}.txt   one image id per line

Classes: background + the 20 VOC classes, in the standard order and colour map; the
white object boundaries (palette index 255) are the ignore index. Masks are read with
Pillow, so palette PNGs give their indices; grey PNGs that already hold the index are
accepted too.

SBD augmented set ("SegmentationClassAug", the 10,582-image ``train_aug`` set used since
DeepLab): for the split ``train_aug``, or any split whose ``data.splits`` entry is
``sbd``, ids come from ``ImageSets/Segmentation/train_aug.txt`` and masks from
``SegmentationClassAug/<id>.png`` (grey index PNGs). List lines may be bare ids or
DeepLab's ``/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png`` pairs; the id is the
first field's stem. SBD's original ``.mat`` files (``dataset/cls/*.mat``) are not read:
convert them to ``SegmentationClassAug`` PNGs first.

Any other ``data.splits`` entry is a list file of ids, relative to the root, whose masks
are in ``SegmentationClass/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from seglab.data.formats import FormatDefaults, Item, voc_colormap
from seglab.errors import SeglabError

if TYPE_CHECKING:
    from seglab.data.dataset import DatasetDefinition

CLASSES = [
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
]

BOUNDARY = 255  # value of the white object outlines in VOC masks: not scored


DEFAULTS = FormatDefaults(
    classes=CLASSES, colors=voc_colormap(len(CLASSES)), ignore_index=BOUNDARY, in_channels=3
)


def _voc_root(root: Path) -> Path:
    """``root`` itself, or the VOC2012 folder below it when given VOCdevkit or its parent."""
    for cand in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (cand / "ImageSets" / "Segmentation").is_dir() or (cand / "JPEGImages").is_dir():
            return cand
    return root


def _read_ids(list_file: Path, split: str) -> list[str]:
    if not list_file.is_file():
        raise SeglabError(
            f"VOC split '{split}': list file {list_file} not found; data.root must be the "
            "VOC2012 folder (for train_aug/sbd add ImageSets/Segmentation/train_aug.txt)"
        )
    ids = []
    for line in list_file.read_text().splitlines():
        fields = line.split()
        if fields:
            ids.append(Path(fields[0]).stem)
    return ids


def list_split(root: Path, split: str, spec: str | None = None) -> list[Item]:
    """The items of ``split``: ids from its list file, masks from SegmentationClass(Aug)."""
    root = _voc_root(root)
    sets = root / "ImageSets" / "Segmentation"
    if spec == "sbd" or split == "train_aug":
        list_file, mask_dir = sets / "train_aug.txt", root / "SegmentationClassAug"
    elif spec:
        list_file, mask_dir = root / spec, root / "SegmentationClass"
    else:
        list_file, mask_dir = sets / f"{split}.txt", root / "SegmentationClass"
    ids = _read_ids(list_file, split)
    if ids and not mask_dir.is_dir():
        raise SeglabError(
            f"VOC split '{split}': mask folder {mask_dir} not found; "
            "restore it or point data.root at the VOC2012 folder"
        )
    return [Item(root / "JPEGImages" / f"{i}.jpg", mask_dir / f"{i}.png", i) for i in ids]


def read_mask(item: Item, definition: DatasetDefinition) -> np.ndarray:
    """The class indices of a VOC mask (palette or grey PNG) as ``H x W`` uint8.

    The boundary value 255 becomes ``definition.ignore_index``.
    """
    path = Path(item.mask)
    if not path.is_file():
        raise SeglabError(f"mask {path} is missing; add it or remove its id from the split list")
    try:
        with Image.open(path) as im:
            mode = im.mode
            m = np.array(im)
    except (UnidentifiedImageError, OSError) as err:
        raise SeglabError(
            f"mask {path} cannot be decoded (corrupt or unsupported); replace it"
        ) from err
    if m.ndim == 3:
        if m.shape[2] >= 3 and (m[..., 0] == m[..., 1]).all() and (m[..., 1] == m[..., 2]).all():
            m = m[..., 0]
        else:
            raise SeglabError(
                f"mask {path} is a colour ({mode}) image; VOC masks must be palette or grey "
                "index PNGs as in SegmentationClass/"
            )
    if m.dtype != np.uint8:
        if m.min() < 0 or m.max() > 255:
            raise SeglabError(f"mask {path} has values outside 0..255; VOC masks are 8-bit")
        m = m.astype(np.uint8)
    if definition.ignore_index != BOUNDARY:
        m = np.where(m == BOUNDARY, np.uint8(definition.ignore_index), m)
    return m
