"""Training augmentation with torchvision.transforms.v2.

Image and mask go through the same random geometry (masks with nearest interpolation,
areas outside the image filled with the ignore index); colour jitter touches the image only.
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F
from torchvision.transforms.v2._utils import query_size

from seglab.config import AugmentConfig


class GridElastic(v2.ElasticTransform):
    """Elastic deformation as in the U-Net paper (Ronneberger et al. 2015): displacements drawn
    from N(0, ``sigma`` pixels) on a coarse ``grid`` x ``grid`` lattice, interpolated bicubically
    to every pixel, so the warp is smooth at the scale of the image rather than of a few
    pixels (torchvision's own ``alpha``/``sigma`` field is a blurred per-pixel noise).
    Resampling, nearest interpolation for masks and fill are torchvision's."""

    def __init__(self, grid: int, sigma: float, fill: Any) -> None:
        super().__init__(fill=fill)
        self.grid, self.sigma_px = grid, sigma

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = query_size(flat_inputs)
        d = torch.randn(1, 2, self.grid, self.grid) * self.sigma_px
        d = torch.nn.functional.interpolate(
            d, size=(height, width), mode="bicubic", align_corners=True
        )
        scale = torch.tensor([2.0 / width, 2.0 / height]).view(1, 2, 1, 1)  # pixels -> [-1, 1]
        return {"displacement": (d * scale).permute(0, 2, 3, 1)}  # 1 x H x W x (dx, dy)


class PairTransform:
    """Callable ``(image uint8 CxHxW, mask int64 HxW) -> (image, mask)``."""

    def __init__(
        self, cfg: AugmentConfig, ignore_index: int, in_channels: int, base_scale: float = 1.0
    ) -> None:
        self.base_scale = base_scale  # the inference input scale: train at the size we infer at
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
        if cfg.elastic.p:
            elastic = GridElastic(cfg.elastic.grid, cfg.elastic.sigma, fill)
            ops.append(v2.RandomApply([elastic], p=cfg.elastic.p))
        if cfg.crop:
            ops.append(v2.RandomCrop(cfg.crop, pad_if_needed=True, fill=fill))
        if cfg.hflip:
            ops.append(v2.RandomHorizontalFlip(cfg.hflip))
        if cfg.vflip:
            ops.append(v2.RandomVerticalFlip(cfg.vflip))
        cj = cfg.color_jitter
        if cj.brightness or cj.contrast or cj.saturation or cj.hue:
            if in_channels == 3:
                ops.append(v2.ColorJitter(cj.brightness, cj.contrast, cj.saturation, cj.hue))
            elif cj.brightness or cj.contrast:
                ops.append(v2.ColorJitter(cj.brightness, cj.contrast))
        self.pipeline = v2.Compose(ops) if ops else None

    def __call__(self, image: torch.Tensor, mask: torch.Tensor | None):
        if self.base_scale != 1.0:
            h, w = image.shape[-2:]
            size = [max(1, round(h * self.base_scale)), max(1, round(w * self.base_scale))]
            image = F.resize(image, size, antialias=True)
            if mask is not None:
                mask = F.resize(mask[None], size, interpolation=v2.InterpolationMode.NEAREST)[0]
        if self.pipeline is None:
            return image, mask
        if mask is None:
            return self.pipeline(tv_tensors.Image(image)).as_subclass(torch.Tensor), None
        img, m = self.pipeline(tv_tensors.Image(image), tv_tensors.Mask(mask))
        return img.as_subclass(torch.Tensor), m.as_subclass(torch.Tensor)
