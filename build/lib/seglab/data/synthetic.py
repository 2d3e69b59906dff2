"""A small synthetic multi-class data set for the offline demo and tests.

Shapes (circles, rectangles, triangles) of noisy, overlapping colours on a textured
background; written in the generic folder layout (images/, masks/, train/val/test lists).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

CLASSES = ["background", "circle", "rectangle", "triangle"]
COLORS = [(0, 0, 0), (230, 25, 75), (60, 180, 75), (0, 130, 200)]


def make_sample(rng: np.random.Generator, size: tuple[int, int] = (128, 128)):
    """One (RGB uint8 image, uint8 index mask)."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = rng.uniform(40, 120, 3)
    grad = (xx / w)[..., None] * rng.uniform(-40, 40, 3)
    img = base + grad + rng.normal(0, 12, (h, w, 3))
    mask = np.zeros((h, w), np.uint8)
    for _ in range(rng.integers(2, 6)):
        cls = int(rng.integers(1, 4))
        layer = np.zeros((h, w), np.uint8)
        cx, cy = int(rng.integers(10, w - 10)), int(rng.integers(10, h - 10))
        r = int(rng.integers(8, max(9, min(h, w) // 4)))
        if cls == 1:
            cv2.circle(layer, (cx, cy), r, 1, -1)
        elif cls == 2:
            cv2.rectangle(layer, (cx - r, cy - r // 2), (cx + r, cy + r // 2), 1, -1)
        else:
            pts = np.array([[cx, cy - r], [cx - r, cy + r], [cx + r, cy + r]], np.int32)
            cv2.fillPoly(layer, [pts], 1)
        colour = np.array(COLORS[cls], float) * 0.6 + rng.uniform(30, 110, 3)
        sel = layer.astype(bool)
        img[sel] = colour + rng.normal(0, 18, (int(sel.sum()), 3))
        mask[sel] = cls
    return np.clip(img, 0, 255).astype(np.uint8), mask


def make_dataset(
    root: Path,
    n_train: int = 64,
    n_val: int = 16,
    n_test: int = 16,
    size: tuple[int, int] = (128, 128),
    seed: int = 0,
) -> Path:
    """Write the data set under ``root`` and return it."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    i = 0
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        stems = []
        for _ in range(n):
            img, mask = make_sample(rng, size)
            stem = f"{split}_{i:04d}"
            cv2.imwrite(str(root / "images" / f"{stem}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            cv2.imwrite(str(root / "masks" / f"{stem}.png"), mask)
            stems.append(stem)
            i += 1
        (root / f"{split}.txt").write_text("\n".join(stems) + "\n")
    return root
