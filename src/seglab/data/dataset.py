"""The dataset definition (data) and the torch Dataset that reads Samples from it."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from seglab.config import DataConfig
from seglab.data.formats import Item, get_format, voc_colormap
from seglab.data.formats.folder import classes_from_root
from seglab.data.io import adapt_channels, check_mask, read_image, read_mask
from seglab.errors import SeglabError

IMAGENET_MEAN = [0.485 * 255, 0.456 * 255, 0.406 * 255]
IMAGENET_STD = [0.229 * 255, 0.224 * 255, 0.225 * 255]


def default_palette(n: int) -> list[tuple[int, int, int]]:
    """``n`` distinct colours: the Pascal VOC colour map without its black (n > 1)."""
    return voc_colormap(n + 1)[1:] if n > 1 else [(128, 0, 0)]


@dataclass(frozen=True)
class DatasetDefinition:
    """What a data set is: format, root, classes, colours, ignore index, channels, splits."""

    format: str
    root: Path
    classes: list[str]
    colors: list[tuple[int, int, int]]
    ignore_index: int
    in_channels: int
    splits: dict[str, str]
    mean: list[float]
    std: list[float]
    intensity_range: tuple[float, float] | str | None = None  # images deeper than 8 bits

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @classmethod
    def from_config(cls, cfg: DataConfig) -> DatasetDefinition:
        fmt = get_format(cfg.format)
        d = fmt.DEFAULTS
        from_data = getattr(fmt, "dataset_classes", None)  # e.g. COCO: the JSON's categories
        classes = (
            cfg.classes or (from_data(cfg.root, cfg.splits) if from_data else None) or d.classes
        )
        if not classes:
            raise SeglabError(
                "data.classes is required for the folder format, e.g. [background, cell], "
                "or a classes.csv / classes.json in data.root"
            )
        if len(classes) < 2:
            raise SeglabError(
                "data.classes: need at least 2 classes (e.g. [background, foreground])"
            )
        root_classes = classes_from_root(cfg.root) if cfg.format == "folder" else None
        root_colors = dict(zip(*root_classes, strict=True)) if root_classes else {}
        if cfg.colors:
            colors = cfg.colors
        elif root_colors and all(c in root_colors for c in classes):
            colors = [root_colors[c] for c in classes]
        else:
            colors = d.colors if len(d.colors) == len(classes) else default_palette(len(classes))
        if len(colors) != len(classes):
            raise SeglabError(f"data.colors has {len(colors)} entries for {len(classes)} classes")
        ignore = d.ignore_index if cfg.ignore_index is None else cfg.ignore_index
        if ignore < len(classes):
            raise SeglabError(
                f"data.ignore_index {ignore} is a class index (0..{len(classes) - 1}); "
                "use a value >= the number of classes, e.g. 255"
            )
        ch = cfg.in_channels or d.in_channels
        mean = cfg.mean or (IMAGENET_MEAN if ch == 3 else [127.5] * ch)
        std = cfg.std or (IMAGENET_STD if ch == 3 else [64.0] * ch)
        if len(mean) != ch or len(std) != ch:
            raise SeglabError(f"data.mean and data.std need {ch} values (one per channel)")
        if not cfg.root.is_dir():
            raise SeglabError(f"data.root {cfg.root} is not a folder; point it at the dataset")
        return cls(
            cfg.format,
            cfg.root,
            list(classes),
            [tuple(c) for c in colors],
            ignore,
            ch,
            dict(cfg.splits),
            list(mean),
            list(std),
            cfg.intensity_range,
        )

    def pairs(self, split: str) -> list[Item]:
        """The (image, mask) files of ``split``; raises when the split is empty."""
        pairs = get_format(self.format).list_split(self.root, split, self.splits.get(split))
        if not pairs:
            raise SeglabError(
                f"split '{split}' of {self.root} is empty; add images or set data.splits.{split}"
            )
        return pairs

    def to_meta(self) -> dict:
        """What a checkpoint or exported model must carry to be used alone."""
        return {
            "classes": self.classes,
            "colors": [list(c) for c in self.colors],
            "ignore_index": self.ignore_index,
            "in_channels": self.in_channels,
            "mean": self.mean,
            "std": self.std,
            "intensity_range": (  # a list: meta goes to JSON and YAML
                list(self.intensity_range)
                if isinstance(self.intensity_range, tuple)
                else self.intensity_range
            ),
        }


def load_definition(source: str | Path, format: str | None = None) -> DatasetDefinition:
    """A dataset definition from a config / dataset.yaml (its ``data:`` section) or from a
    data set folder and its ``format`` (classes from the format, or classes.csv/json)."""
    from seglab.config import load_config

    source = Path(source)
    if not source.exists():
        raise SeglabError(f"{source} not found; pass a config, a dataset.yaml or a data set folder")
    if source.is_dir():
        try:
            cfg = DataConfig(format=format or "folder", root=source.resolve())
        except ValueError as err:
            raise SeglabError(f"--format {format!r}: {str(err).splitlines()[-2].strip()}") from None
        return DatasetDefinition.from_config(cfg)
    if format:
        raise SeglabError(
            f"--format applies to a data set folder; {source} is a file (its data.format is used)"
        )
    return DatasetDefinition.from_config(load_config(source).data)


class SegDataset(Dataset):
    """Samples ``{"image": uint8 C x H x W, "mask": int64 H x W, "index": int}`` of one split.

    Every mask is checked against its image (size) and the declared classes when it is
    read. With ``cache`` all pairs are decoded once, up front, so bad data is reported
    before training starts.
    """

    def __init__(
        self,
        definition: DatasetDefinition,
        split: str,
        transform: Callable | None = None,
        cache: bool = True,
        require_masks: bool = True,
        fraction: float = 1.0,
        seed: int = 0,
    ) -> None:
        """``fraction`` < 1 keeps a random share of the pairs; for one ``seed`` the shares
        are nested (10% is inside 25%, ...), as a learning curve needs."""
        self.definition = definition
        self.split = split
        self.pairs = definition.pairs(split)
        if fraction < 1.0:
            order = np.random.default_rng(seed).permutation(len(self.pairs))
            keep = sorted(order[: max(1, math.ceil(fraction * len(self.pairs)))])
            self.pairs = [self.pairs[i] for i in keep]
        if require_masks:
            missing = [it.image for it in self.pairs if it.mask is None]
            if missing:
                raise SeglabError(
                    f"split '{split}' has no masks (e.g. for {missing[0]}); "
                    "it can be predicted but not trained or evaluated"
                )
        self.transform = transform
        self._cache: list[tuple[np.ndarray, np.ndarray | None]] | None = None
        if cache:
            self._cache = [self.load(i) for i in range(len(self.pairs))]

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Decode and validate pair ``i``: (H x W x C uint8 image, H x W uint8 mask or None)."""
        if self._cache is not None:
            return self._cache[i]
        item = self.pairs[i]
        d = self.definition
        img = adapt_channels(read_image(item.image, d.intensity_range), d.in_channels, item.image)
        if item.mask is None:
            return img, None
        reader = getattr(get_format(d.format), "read_mask", None)
        mask = reader(item, d) if reader else read_mask(item.mask)
        check_mask(mask, img.shape, d.num_classes, d.ignore_index, item.mask, item.image)
        return img, mask

    def __getitem__(self, i: int) -> dict:
        img, mask = self.load(i)
        if self.transform is not None:
            img, mask = self.transform(img, mask)
        image = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        target = torch.from_numpy(mask.astype(np.int64)) if mask is not None else None
        return {"image": image, "mask": target, "index": i}


#: ENet's constant in ``1 / ln(c + p_class)`` (Paszke et al. 2016): it bounds weights to
#: ``1 / ln(1.02) ~= 50.5`` for the rarest classes.
ENET_C = 1.02


def median_frequency_weights(counts: np.ndarray, image_pixels: np.ndarray) -> np.ndarray:
    """SegNet's median frequency balancing: ``median(freq) / freq(c)``.

    ``freq(c)`` = pixels of class c / labelled pixels of the images where c is present
    (ignored pixels count in neither, as in the loss these weights scale).
    """
    freq = np.where(image_pixels > 0, counts / np.maximum(image_pixels, 1), 0.0)
    med = np.median(freq[freq > 0]) if (freq > 0).any() else 1.0
    return np.where(freq > 0, med / np.maximum(freq, 1e-12), 0.0)


def inverse_log_weights(counts: np.ndarray, c: float = ENET_C) -> np.ndarray:
    """ENet's class weights ``1 / ln(c + p_class)``, ``p_class`` = pixels of the class / all
    counted pixels. Classes absent from ``counts`` get the upper bound ``1 / ln(c)``."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    p = counts / total if total > 0 else np.zeros_like(counts)
    return 1.0 / np.log(c + p)


def class_weights_from(dataset: SegDataset, scheme: str = "median_frequency") -> np.ndarray:
    """Class weights computed on ``dataset``: ``median_frequency`` (SegNet) or ``inverse_log``
    (ENet)."""
    n = dataset.definition.num_classes
    counts = np.zeros(n, dtype=np.int64)
    present_pixels = np.zeros(n, dtype=np.int64)
    for i in range(len(dataset)):
        _, mask = dataset.load(i)
        c = np.bincount(mask.ravel(), minlength=256)[:n]
        counts += c
        present_pixels += np.where(c > 0, c.sum(), 0)  # labelled pixels: ignore left out
    if scheme == "inverse_log":
        return inverse_log_weights(counts)
    return median_frequency_weights(counts, present_pixels)
