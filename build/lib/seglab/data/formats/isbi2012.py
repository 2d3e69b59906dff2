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


def _slices(spec: str) -> range:
    try:
        a, b = (int(v) for v in spec.split("-"))
    except ValueError:
        raise SeglabError(
            f"data.splits: ISBI 2012 slice range {spec!r} should look like 0-5"
        ) from None
    if not 0 <= a <= b <= 29:
        raise SeglabError(f"data.splits: ISBI 2012 slice range {spec!r} must lie within 0-29")
    return range(a, b + 1)


def list_split(root: Path, split: str, spec: str | None = None) -> list[Item]:
    """Items of ``split``; ``spec`` "A-B" takes labelled slices A..B instead (e.g. "0-5")."""
    if spec:
        folder, ids = "train", _slices(spec)
    elif split in _SPLITS:
        folder, ids = _SPLITS[split]
    else:
        raise SeglabError(f"ISBI 2012 has splits {', '.join(_SPLITS)}; got '{split}'")
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
