"""Training targets derived from instance maps."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from skimage.segmentation import find_boundaries

BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2
THREE_CLASSES = ["background", "interior", "boundary"]


def boundary_targets(
    instances: np.ndarray, width: int = 2, ignore: np.ndarray | None = None, ignore_index=255
) -> np.ndarray:
    """H x W int instance map -> uint8 map 0 background, 1 interior, 2 boundary.

    A pixel of an object is boundary when it lies within ``width`` pixels of a pixel with
    another id (background or a touching object), so touching objects are separated by a
    band of 2 x ``width`` boundary pixels. ``ignore`` pixels (e.g. COCO crowd) get
    ``ignore_index``."""
    fg = instances > 0
    edge = find_boundaries(instances, mode="inner") & fg
    if width > 1:
        edge = ndimage.binary_dilation(edge, iterations=width - 1) & fg
    out = np.zeros(instances.shape, dtype=np.uint8)
    out[fg] = INTERIOR
    out[edge] = BOUNDARY
    if ignore is not None:
        out[ignore & ~fg] = ignore_index
    return out


def maskrcnn_target(instances: np.ndarray, labels: dict[int, int] | None = None) -> dict:
    """Instance map -> torchvision detection target: ``boxes`` (x0, y0, x1, y1; N x 4 float),
    ``labels`` (N int64; class of each id, default 1) and ``masks`` (N x H x W uint8).

    Boxes come from the masks, so they always have positive area; an image without objects
    gives empty tensors (torchvision trains on it as all background)."""
    ids = np.unique(instances)
    ids = ids[ids > 0]
    boxes, masks, cls = [], [], []
    slices = ndimage.find_objects(instances.astype(np.int32)) if len(ids) else []
    for i in ids:
        sl = slices[i - 1] if i - 1 < len(slices) else None
        if sl is None:
            continue
        ys, xs = sl
        boxes.append([xs.start, ys.start, xs.stop, ys.stop])
        masks.append(instances == i)
        cls.append((labels or {}).get(int(i), 1))
    h, w = instances.shape
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(cls, dtype=torch.int64),
        "masks": torch.from_numpy(np.stack(masks).astype(np.uint8))
        if masks
        else torch.zeros((0, h, w), dtype=torch.uint8),
    }
