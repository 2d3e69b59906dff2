"""Generic folder layout: ``images/`` and ``masks/`` with matching file stems.

A split is found, in order, from ``data.splits[split]`` (a list file of stems, or a
sub-folder holding ``images/`` + ``masks/``), ``<root>/<split>.txt``,
``<root>/images/<split>/`` (+ ``masks/<split>/``), or, for ``train`` only, all of ``images/``.
"""

from __future__ import annotations

from pathlib import Path

from seglab.data.formats import FormatDefaults, Item
from seglab.data.io import IMAGE_SUFFIXES
from seglab.errors import SeglabError

DEFAULTS = FormatDefaults(classes=[], ignore_index=255, in_channels=3)


def _index(folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    if folder.is_dir():
        for p in sorted(folder.iterdir()):
            if p.suffix.lower() in IMAGE_SUFFIXES:
                if p.stem in out:
                    raise SeglabError(
                        f"{p} and {out[p.stem]} share the stem '{p.stem}'; rename one"
                    )
                out[p.stem] = p
    return out


def _pairs(img_dir: Path, mask_dir: Path, stems: list[str] | None, where: str) -> list[Item]:
    images, masks = _index(img_dir), _index(mask_dir)
    if stems is None:
        stems = list(images)
    pairs: list[Item] = []
    for s in stems:
        if s not in images:
            raise SeglabError(f"{where}: no image with stem '{s}' in {img_dir}; fix the split list")
        pairs.append(Item(images[s], masks.get(s, mask_dir / f"{s}.png")))
    return pairs


def list_split(root: Path, split: str, spec: str | None = None) -> list[Item]:
    candidates = [root / spec] if spec else [root / f"{split}.txt", root / "images" / split]
    for c in candidates:
        if c.is_file():
            stems = [ln.strip() for ln in c.read_text().splitlines() if ln.strip()]
            stems = [Path(s).stem for s in stems]
            return _pairs(root / "images", root / "masks", stems, str(c))
        if c.is_dir():
            if (c / "images").is_dir():
                return _pairs(c / "images", c / "masks", None, str(c))
            return _pairs(c, root / "masks" / c.name, None, str(c))
    if spec:
        raise SeglabError(f"split '{split}': {root / spec} not found; fix data.splits.{split}")
    if split == "train":
        return _pairs(root / "images", root / "masks", None, str(root))
    return []
