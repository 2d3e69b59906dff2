"""CPU cost of training augmentation per sample: seglab's OpenCV path against the same
augmentation through torchvision.transforms.v2 on tensors (seglab's implementation until
2026-12-06), one thread each, as in a DataLoader worker.

    .venv/bin/python benchmarks/augment_speed.py [--config configs/camvid.yaml] [--passes 3]

Runs each path over the config's train split (CamVid: 367 images) at the config's
``inference.scale``, interleaved, ``--passes`` times, and prints the median milliseconds per
sample and the ratio. On a 2-core machine the loader process takes this CPU from the
training step, so every millisecond here is training time.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from _common import ROOT, save
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from seglab.config import load_config
from seglab.data.dataset import DatasetDefinition, SegDataset
from seglab.data.transforms import PairTransform


class TorchvisionPair:
    """The same augmentation as PairTransform (no elastic), built from torchvision v2 ops."""

    def __init__(self, cfg, ignore_index: int, base_scale: float) -> None:
        self.base_scale = base_scale
        fill = {tv_tensors.Image: 0, tv_tensors.Mask: ignore_index}
        ops: list = []
        if cfg.rotate or cfg.translate or cfg.scale != (1.0, 1.0):
            ops.append(
                v2.RandomAffine(
                    degrees=cfg.rotate,
                    translate=(cfg.translate, cfg.translate) if cfg.translate else None,
                    scale=cfg.scale if cfg.scale != (1.0, 1.0) else None,
                    interpolation=v2.InterpolationMode.BILINEAR,
                    fill=fill,
                )
            )
        if cfg.crop:
            ops.append(v2.RandomCrop(cfg.crop, pad_if_needed=True, fill=fill))
        if cfg.hflip:
            ops.append(v2.RandomHorizontalFlip(cfg.hflip))
        if cfg.vflip:
            ops.append(v2.RandomVerticalFlip(cfg.vflip))
        cj = cfg.color_jitter
        if cj.brightness or cj.contrast or cj.saturation or cj.hue:
            ops.append(v2.ColorJitter(cj.brightness, cj.contrast, cj.saturation, cj.hue))
        self.pipeline = v2.Compose(ops)

    def __call__(self, image: np.ndarray, mask: np.ndarray):
        image = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        mask = torch.from_numpy(mask.astype(np.int64))
        if self.base_scale != 1.0:
            h, w = image.shape[-2:]
            size = [round(h * self.base_scale), round(w * self.base_scale)]
            image = F.resize(image, size, antialias=True)
            mask = F.resize(mask[None], size, interpolation=v2.InterpolationMode.NEAREST)[0]
        return self.pipeline(tv_tensors.Image(image), tv_tensors.Mask(mask))


def seglab_path(t: PairTransform):
    def run(image: np.ndarray, mask: np.ndarray):
        img, m = t(image, mask)  # what SegDataset.__getitem__ does after the transform
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))), torch.from_numpy(
            m.astype(np.int64)
        )

    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "camvid.yaml")
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--set", action="append", default=[], help="config overrides")
    args = ap.parse_args()
    torch.set_num_threads(1)  # a DataLoader worker's setting
    cv2.setNumThreads(1)  # seglab's loader workers do the same
    cfg = load_config(args.config, args.set)
    d = DatasetDefinition.from_config(cfg.data)
    ds = SegDataset(d, "train")
    pairs = [ds.load(i) for i in range(len(ds))]
    paths = {
        "torchvision v2": TorchvisionPair(cfg.augment, d.ignore_index, cfg.inference.scale),
        "seglab (OpenCV)": seglab_path(
            PairTransform(cfg.augment, d.ignore_index, cfg.inference.scale)
        ),
    }
    times: dict[str, list[float]] = {k: [] for k in paths}
    torch.manual_seed(0)
    for _ in range(args.passes):
        for name, fn in paths.items():
            t = time.perf_counter()
            for image, mask in pairs:
                fn(image, mask)
            times[name].append((time.perf_counter() - t) / len(pairs) * 1000)
    ms = {k: statistics.median(v) for k, v in times.items()}
    base, ours = ms["torchvision v2"], ms["seglab (OpenCV)"]
    for k, v in ms.items():
        print(f"{k:16s}: {v:6.2f} ms / sample (median of {args.passes} passes)")
    print(f"ratio           : {base / ours:.1f}x less CPU per sample")
    save(
        f"augment_speed_{cfg.name}_s{cfg.inference.scale:g}",
        {
            "config": str(args.config.relative_to(ROOT))
            if args.config.is_absolute()
            else str(args.config),
            "overrides": args.set,
            "samples": len(pairs),
            "input_scale": cfg.inference.scale,
            "torchvision_ms_per_sample": round(base, 2),
            "seglab_ms_per_sample": round(ours, 2),
            "ratio": round(base / ours, 2),
            "ms_per_pass": times,
        },
    )


if __name__ == "__main__":
    main()
