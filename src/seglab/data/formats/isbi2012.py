"""ISBI 2012 EM membranes: ``train/images/NN.png`` + ``train/masks/NN.png`` (0 membrane, 1 cell).

Fixed split for this project: slices 00..23 train, 24..29 val; ``test`` has no labels.
"""

from __future__ import annotations

from pathlib import Path

from seglab.data.formats import FormatDefaults, Item
from seglab.errors import SeglabError

DEFAULTS = FormatDefaults(
    classes=["membrane", "cell"],
    colors=[(255, 0, 0), (0, 0, 0)],
    ignore_index=255,
    in_channels=1,
)

_SPLITS = {
    "train": ("train", range(0, 24)),
    "val": ("train", range(24, 30)),
    "all": ("train", range(0, 30)),
    "test": ("test", range(0, 30)),
}


def list_split(root: Path, split: str, spec: str | None = None) -> list[Item]:
    if split not in _SPLITS:
        raise SeglabError(f"ISBI 2012 has splits {', '.join(_SPLITS)}; got '{split}'")
    folder, ids = _SPLITS[split]
    if not (root / folder / "images").is_dir():
        raise SeglabError(
            f"{root / folder / 'images'} not found; data.root must be the isbi2012 folder"
        )
    pairs: list[Item] = []
    for i in ids:
        img = root / folder / "images" / f"{i:02d}.png"
        mask = root / folder / "masks" / f"{i:02d}.png"
        pairs.append(Item(img, mask if folder == "train" else None))
    return pairs
