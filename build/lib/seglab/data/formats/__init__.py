"""One module per dataset layout.

A format module provides

* ``DEFAULTS``: a :class:`FormatDefaults` (class names, colours, ignore index, channels);
* ``list_split(root, split, spec) -> list[Item]``: the items of a split;
* optionally ``read_mask(item, definition) -> H x W uint8`` when its masks are not plain
  index images (palette PNGs, id mappings, colour codes, annotations in a JSON file);
  the default is :func:`seglab.data.io.read_mask` on ``item.mask``.

Readers turn a layout into Samples; they do not decide training policy.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple


@dataclass(frozen=True)
class FormatDefaults:
    classes: list[str]
    colors: list[tuple[int, int, int]] = field(default_factory=list)
    ignore_index: int = 255
    in_channels: int = 3


class Item(NamedTuple):
    """One sample of a split: its image file, the file its mask comes from (None when the
    split is unlabelled) and a format-specific reference (e.g. a COCO image id)."""

    image: Path
    mask: Path | None
    ref: Any = None


def voc_colormap(n: int = 256) -> list[tuple[int, int, int]]:
    """The Pascal VOC bit-interleaved colour map: colour of index ``i`` for ``i < n``."""
    out = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out.append((r, g, b))
    return out


FORMATS = ("folder", "camvid", "isbi2012", "voc", "cityscapes", "ade20k", "coco", "dsb2018")


def get_format(name: str) -> ModuleType:
    """The module of format ``name`` (``seglab/data/formats/<name>.py``)."""
    if name not in FORMATS:
        raise KeyError(name)
    return importlib.import_module(f"seglab.data.formats.{name}")
