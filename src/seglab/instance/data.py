"""Instance samples of the dsb2018 and COCO formats, with crop / flip / rot90 augmentation.

A sample is the image, an int32 instance map (0 background, 1..N), the class of every id
and, for COCO, the crowd region (not scored, not trained on as background).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_utils
from torch.utils.data import Dataset

from seglab.data.dataset import DatasetDefinition
from seglab.data.formats import Item, coco, dsb2018
from seglab.data.io import adapt_channels, read_image
from seglab.errors import SeglabError

INSTANCE_FORMATS = ("dsb2018", "coco")


@dataclass
class InstanceSample:
    image: np.ndarray  # H x W x C uint8
    instances: np.ndarray  # H x W int32
    labels: dict[int, int]  # instance id -> class index (1..K)
    crowd: np.ndarray | None  # H x W bool, COCO iscrowd regions


def check_format(definition: DatasetDefinition) -> None:
    if definition.format not in INSTANCE_FORMATS:
        raise SeglabError(
            f"task: instance reads instance maps of the {' and '.join(INSTANCE_FORMATS)} "
            f"formats; data.format is {definition.format}"
        )


def read_sample(item: Item, definition: DatasetDefinition) -> InstanceSample:
    """Image, instance map, class per id and crowd region of one item."""
    image = adapt_channels(
        read_image(item.image, definition.intensity_range), definition.in_channels, item.image
    )
    if definition.format == "dsb2018":
        inst = dsb2018.read_instances(item, definition)
        labels = {int(i): 1 for i in np.unique(inst) if i > 0}
        sample = InstanceSample(image, inst, labels, None)
    else:
        c = coco.load_coco(item.mask)
        h, w = coco._image_size(c, item.ref, item.image)
        usable = coco._image_annotations(c, item.ref, h, w, Counter())
        things = [u for u in usable if not u[0].get("iscrowd")]
        inst = coco.read_instances(item, definition)  # ids 1..N in the order of ``things``
        labels = {i + 1: cls for i, (_, _, cls) in enumerate(things)}
        crowd = np.zeros((h, w), bool)
        for ann, rle, _ in usable:
            if ann.get("iscrowd"):
                crowd |= mask_utils.decode(rle).astype(bool)
        sample = InstanceSample(image, inst, labels, crowd if crowd.any() else None)
    if sample.instances.shape != image.shape[:2]:
        raise SeglabError(
            f"instance map of {item.image} is {sample.instances.shape[1]}x"
            f"{sample.instances.shape[0]} but the image is {image.shape[1]}x{image.shape[0]}"
        )
    return sample


def annotation_problems(definition: DatasetDefinition, split: str) -> dict[str, int]:
    """Bad annotations of ``split`` per kind (COCO: see ``coco.PROBLEM_KINDS``); for dsb2018
    the images without any nucleus."""
    if definition.format == "coco":
        return coco.annotation_problems(definition.root, split, definition.splits.get(split))
    return {}


class InstanceDataset(Dataset):
    """Samples of one split; training augmentation is a random crop, flips and rot90, all
    exact on instance maps (no interpolation)."""

    def __init__(
        self,
        definition: DatasetDefinition,
        split: str,
        crop: tuple[int, int] | None = None,
        augment: bool = False,
        fraction: float = 1.0,
        seed: int = 0,
    ) -> None:
        check_format(definition)
        self.definition = definition
        self.split = split
        self.pairs = definition.pairs(split)
        if fraction < 1.0:
            order = np.random.default_rng(seed).permutation(len(self.pairs))
            keep = sorted(order[: max(1, int(np.ceil(fraction * len(self.pairs))))])
            self.pairs = [self.pairs[i] for i in keep]
        missing = [it.image for it in self.pairs if it.mask is None]
        if missing:
            raise SeglabError(
                f"split '{split}' has no annotations (e.g. for {missing[0]}); "
                "it can be predicted but not trained or evaluated"
            )
        if definition.format == "coco":  # the JSON decides the class indices
            for f in dict.fromkeys(it.mask for it in self.pairs):
                coco._check_classes(coco.load_coco(f), definition, Path(f))
        self.crop = crop
        self.augment = augment
        self.samples = [read_sample(it, definition) for it in self.pairs]
        self.empty_images = sum(1 for s in self.samples if not s.labels)

    def __len__(self) -> int:
        return len(self.samples)

    def name(self, i: int) -> str:
        return Path(self.pairs[i].image).name

    def __getitem__(self, i: int) -> dict:
        s = self.samples[i]
        img, inst = s.image, s.instances
        crowd = s.crowd if s.crowd is not None else np.zeros(inst.shape, bool)
        if self.augment:
            rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()).item()))
            if self.crop is not None:
                ch, cw = self.crop
                h, w = inst.shape
                if h < ch or w < cw:  # pad small images (black, not scored)
                    ph, pw = max(ch - h, 0), max(cw - w, 0)
                    img = np.pad(img, ((0, ph), (0, pw), (0, 0)))
                    inst = np.pad(inst, ((0, ph), (0, pw)))
                    crowd = np.pad(crowd, ((0, ph), (0, pw)), constant_values=True)
                    h, w = inst.shape
                y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
                img, inst, crowd = (
                    img[y : y + ch, x : x + cw],
                    inst[y : y + ch, x : x + cw],
                    (crowd[y : y + ch, x : x + cw]),
                )
            if rng.random() < 0.5:
                img, inst, crowd = img[:, ::-1], inst[:, ::-1], crowd[:, ::-1]
            if rng.random() < 0.5:
                img, inst, crowd = img[::-1], inst[::-1], crowd[::-1]
            k = int(rng.integers(0, 4))
            if inst.shape[0] != inst.shape[1]:  # a quarter turn would change the shape
                k -= k % 2
            if k:
                img, inst, crowd = np.rot90(img, k), np.rot90(inst, k), np.rot90(crowd, k)
        image = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        return {
            "image": image,
            "instances": np.ascontiguousarray(inst),
            "labels": s.labels,
            "crowd": np.ascontiguousarray(crowd),
            "index": i,
            "name": self.name(i),
        }


def list_collate(batch: list[dict]) -> dict:
    """Images of different sizes and detection targets stay lists."""
    return {k: [b[k] for b in batch] for k in batch[0]}
