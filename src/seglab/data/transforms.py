"""Training augmentation on OpenCV.

Image and mask go through the same random geometry (masks with nearest interpolation,
areas outside the image filled with the ignore index); colour jitter touches the image only.
The random draws follow torchvision's ``RandomAffine``, ``RandomCrop``, ``RandomXFlip`` and
``ColorJitter``, and come from torch's generator, which the DataLoader seeds per worker (so
``--seed`` repeats a run). The work is OpenCV's on H x W x C uint8 arrays: the same
augmentation through torchvision.transforms.v2 on tensors cost about 1.7x the CPU per
CamVid sample (``benchmarks/augment_speed.py``), CPU that the loader process takes from the
training step on a small machine.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from seglab.config import AugmentConfig, ColorJitterConfig

#: ITU-R 601 luma, as torchvision's rgb_to_grayscale
_LUMA = np.array([0.2989, 0.587, 0.114], np.float32)


def _uniform(lo: float, hi: float) -> float:
    return float(torch.empty(()).uniform_(lo, hi)) if hi > lo else lo


def _chance(p: float) -> bool:
    return p > 0 and float(torch.rand(())) < p


def _randint(n: int) -> int:
    """Uniform in [0, n]."""
    return int(torch.randint(n + 1, ())) if n > 0 else 0


def _per_channels(fn, image: np.ndarray) -> np.ndarray:
    """``fn`` (an OpenCV call) on an H x W x C image, C of any size: OpenCV's warps take at
    most 4 channels and drop a single channel's axis."""
    parts = [fn(np.ascontiguousarray(image[..., i : i + 4])) for i in range(0, image.shape[2], 4)]
    parts = [p[..., None] if p.ndim == 2 else p for p in parts]
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=2)


def elastic_displacement(height: int, width: int, grid: int, sigma: float) -> np.ndarray:
    """The U-Net paper's elastic deformation (Ronneberger et al. 2015): displacements drawn
    from N(0, ``sigma`` pixels) on a coarse ``grid`` x ``grid`` lattice, interpolated
    bicubically to every pixel, so the warp is smooth at the scale of the image rather than
    of a few pixels. Returns 2 x H x W (dx, dy) in pixels."""
    d = torch.randn(1, 2, grid, grid) * sigma
    d = F.interpolate(d, size=(height, width), mode="bicubic", align_corners=True)
    return d[0].numpy()


def color_jitter(image: np.ndarray, cfg: ColorJitterConfig) -> np.ndarray:
    """torchvision's ColorJitter on an H x W x C uint8 image: brightness, contrast, saturation
    and hue factors drawn from the same ranges and applied in a random order (saturation and
    hue only with 3 channels)."""
    rgb = image.shape[2] == 3
    x = image.astype(np.float32)
    for op in torch.randperm(4).tolist():
        if op == 0 and cfg.brightness:
            x *= _uniform(max(0.0, 1 - cfg.brightness), 1 + cfg.brightness)
        elif op == 1 and cfg.contrast:
            f = _uniform(max(0.0, 1 - cfg.contrast), 1 + cfg.contrast)
            mean = float((x @ _LUMA).mean()) if rgb else float(x.mean())
            x = f * x + (1 - f) * mean
        elif op == 2 and cfg.saturation and rgb:
            f = _uniform(max(0.0, 1 - cfg.saturation), 1 + cfg.saturation)
            x = f * x + (1 - f) * (x @ _LUMA)[..., None]
        elif op == 3 and cfg.hue and rgb:
            hsv = cv2.cvtColor(x / 255.0, cv2.COLOR_RGB2HSV)  # float: H in degrees
            hsv[..., 0] = (hsv[..., 0] + 360.0 * _uniform(-cfg.hue, cfg.hue)) % 360.0
            x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0
        else:
            continue
        np.clip(x, 0, 255, out=x)
    return (x + 0.5).astype(np.uint8)


def scale_input(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``B x C x H x W`` float pixels to the network's input scale (``inference.scale``),
    antialiased bilinear: what the Predictor feeds the network and training resizes with."""
    if scale == 1.0:
        return x
    h, w = x.shape[-2:]
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


class PairTransform:
    """Callable ``(image uint8 H x W x C, mask H x W or None) -> (image, mask)``, numpy in and
    out; the mask keeps its dtype."""

    def __init__(self, cfg: AugmentConfig, ignore_index: int, base_scale: float = 1.0) -> None:
        self.cfg = cfg
        self.ignore_index = ignore_index
        self.base_scale = base_scale  # the inference input scale: train at the size we infer at
        cj = cfg.color_jitter
        self.jitter = bool(cj.brightness or cj.contrast or cj.saturation or cj.hue)
        self.affine = bool(cfg.rotate or cfg.translate or cfg.scale != (1.0, 1.0))

    def _warp(self, image, mask, image_fn, mask_fn):
        image = _per_channels(image_fn, image)
        return image, None if mask is None else mask_fn(mask)

    def _resize(self, image, mask):
        """To the inference scale with the Predictor's own filter (antialiased bilinear, in
        torch), so the network trains on the pixels it will see: OpenCV's INTER_AREA is a
        sharper box filter."""
        t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
        t = scale_input(t, self.base_scale)
        image = t[0].permute(1, 2, 0).round_().clamp_(0, 255).to(torch.uint8).numpy()
        if mask is not None:
            size = (t.shape[-1], t.shape[-2])  # pixel centres aligned, as the image filter
            mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST_EXACT)
        return image, mask

    def _affine(self, image, mask):
        """torchvision's RandomAffine: angle, scale and shift (whole pixels) drawn uniformly,
        about the image centre."""
        cfg = self.cfg
        h, w = image.shape[:2]
        angle = _uniform(-cfg.rotate, cfg.rotate)  # torchvision's order of draws
        tx = round(_uniform(-cfg.translate * w, cfg.translate * w))
        ty = round(_uniform(-cfg.translate * h, cfg.translate * h))
        scale = _uniform(*cfg.scale)
        # torchvision turns positive angles clockwise, OpenCV counter-clockwise
        m = cv2.getRotationMatrix2D((w * 0.5, h * 0.5), -angle, scale)
        m[:, 2] += (tx, ty)
        const = cv2.BORDER_CONSTANT
        return self._warp(
            image,
            mask,
            lambda a: cv2.warpAffine(a, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=const),
            lambda a: cv2.warpAffine(
                a,
                m,
                (w, h),
                flags=cv2.INTER_NEAREST,
                borderMode=const,
                borderValue=self.ignore_index,
            ),
        )

    def _elastic(self, image, mask):
        h, w = image.shape[:2]
        dx, dy = elastic_displacement(h, w, self.cfg.elastic.grid, self.cfg.elastic.sigma)
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        mx, my = xs + dx, ys + dy
        const = cv2.BORDER_CONSTANT
        return self._warp(
            image,
            mask,
            lambda a: cv2.remap(a, mx, my, cv2.INTER_LINEAR, borderMode=const),
            lambda a: cv2.remap(
                a, mx, my, cv2.INTER_NEAREST, borderMode=const, borderValue=self.ignore_index
            ),
        )

    def _crop(self, image, mask):
        """torchvision's RandomCrop with ``pad_if_needed``; a smaller image lands at a random
        place in the crop."""
        ch, cw = self.cfg.crop
        h, w = image.shape[:2]
        if h < ch or w < cw:
            top, left = _randint(max(0, ch - h)), _randint(max(0, cw - w))
            pad = [(top, max(0, ch - h) - top), (left, max(0, cw - w) - left)]
            image = np.pad(image, [*pad, (0, 0)])
            if mask is not None:
                mask = np.pad(mask, pad, constant_values=self.ignore_index)
            h, w = image.shape[:2]
        y, x = _randint(h - ch), _randint(w - cw)
        image = image[y : y + ch, x : x + cw]
        return image, None if mask is None else mask[y : y + ch, x : x + cw]

    def __call__(self, image: np.ndarray, mask: np.ndarray | None):
        cfg = self.cfg
        if mask is not None and self.ignore_index > 255 and mask.dtype == np.uint8:
            mask = mask.astype(np.uint16)  # the fill value must fit the mask's type
        if self.base_scale != 1.0:
            image, mask = self._resize(image, mask)
        if self.affine:
            image, mask = self._affine(image, mask)
        if _chance(cfg.elastic.p):
            image, mask = self._elastic(image, mask)
        if cfg.crop:
            image, mask = self._crop(image, mask)
        if _chance(cfg.hflip):
            image, mask = image[:, ::-1], None if mask is None else mask[:, ::-1]
        if _chance(cfg.vflip):
            image, mask = image[::-1], None if mask is None else mask[::-1]
        if self.jitter:
            image = color_jitter(image, cfg.color_jitter)
        return image, mask
