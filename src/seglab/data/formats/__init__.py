"""One module per dataset layout. Each provides ``DEFAULTS`` and ``list_split(root, split, spec)``.

``list_split`` returns (image path, mask path or None) pairs; readers do not decide training
policy (see the README's design section).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType


@dataclass(frozen=True)
class FormatDefaults:
    classes: list[str]
    colors: list[tuple[int, int, int]] = field(default_factory=list)
    ignore_index: int = 255
    in_channels: int = 3


Pair = tuple[Path, Path | None]


def get_format(name: str) -> ModuleType:
    from seglab.data.formats import camvid, folder, isbi2012

    return {"folder": folder, "camvid": camvid, "isbi2012": isbi2012}[name]
