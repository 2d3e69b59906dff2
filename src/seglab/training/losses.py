"""Cross-entropy (optionally on the hard pixels only), Dice and CE + Dice, with class
weights and the ignore index."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses import DiceLoss
from torch import nn

from seglab.config import LossConfig


class WeightedDiceLoss(DiceLoss):
    """SMP's multiclass soft Dice, averaged over classes with ``weights`` (if given)."""

    def __init__(self, ignore_index: int, weights: torch.Tensor | None = None) -> None:
        super().__init__(mode="multiclass", from_logits=True, ignore_index=ignore_index)
        self.register_buffer("weights", weights)

    def aggregate_loss(self, loss: torch.Tensor) -> torch.Tensor:
        if self.weights is None:
            return loss.mean()
        return (loss * self.weights).sum() / self.weights.sum()


def ohem_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    ignore_index: int,
    thresh: float,
    min_kept: float,
) -> torch.Tensor:
    """Cross-entropy over the hard pixels, as MMSeg's ``OHEMPixelSampler`` chooses them.

    A labelled pixel is kept when the softmax probability of its true class is below
    ``max(thresh, p_(k+1))``, where ``p_(k+1)`` is the (k+1)-th smallest such probability
    in the batch and k = ``min_kept`` times the labelled pixels: never fewer than k pixels
    (ties aside), more when more are hard. The kept pixels' CE is averaged with the class
    weights, as ``F.cross_entropy`` averages all of them. Written here because neither SMP
    nor torchvision has OHEM, and MMSeg's sampler needs its whole registry.
    """
    valid = target != ignore_index
    safe = target.masked_fill(~valid, 0)
    with torch.no_grad():
        prob = logits.softmax(1).gather(1, safe.unsqueeze(1)).squeeze(1)
        prob = prob.masked_fill(~valid, 2.0)  # above any threshold: never kept
        n = int(valid.sum())
        threshold = thresh
        if n > 0:
            k = min(int(min_kept * n), n - 1)
            threshold = max(thresh, float(prob.flatten().kthvalue(k + 1).values))
        keep = prob < threshold
    pixel = F.cross_entropy(logits, safe, weight=weight, reduction="none")  # w[y] * nll
    w = weight[safe] if weight is not None else torch.ones_like(pixel)
    kept = keep.to(pixel.dtype)  # False wherever the label is ignored
    return (pixel * kept).sum() / (w * kept).sum().clamp_min(1e-12)


class SegLoss(nn.Module):
    """``ce``, ``dice`` or ``ce+dice`` (CE + dice_weight * Dice) on float32 logits; the CE
    term optionally over the hard pixels only (``ohem_thresh``)."""

    def __init__(self, cfg: LossConfig, ignore_index: int, weights: list[float] | None) -> None:
        super().__init__()
        w = torch.tensor(weights, dtype=torch.float32) if weights is not None else None
        self.register_buffer("weights", w)
        self.use_ce = cfg.name in ("ce", "ce+dice")
        self.dice = WeightedDiceLoss(ignore_index, w) if cfg.name != "ce" else None
        self.dice_weight = cfg.dice_weight if cfg.name == "ce+dice" else 1.0
        self.ignore_index = ignore_index
        self.ohem = (cfg.ohem_thresh, cfg.ohem_min_kept) if cfg.ohem_thresh else None

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        loss = logits.new_zeros(())
        if self.use_ce and self.ohem is not None:
            loss = loss + ohem_cross_entropy(
                logits, target, self.weights, self.ignore_index, *self.ohem
            )
        elif self.use_ce:
            loss = loss + F.cross_entropy(
                logits, target, weight=self.weights, ignore_index=self.ignore_index
            )
        if self.dice is not None:
            loss = loss + self.dice_weight * self.dice(logits, target)
        return loss


def distillation_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int,
    temperature: float,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Hinton et al.'s soft-target loss per pixel: T^2 * KL(teacher_T || student_T), averaged
    over labelled pixels (the ignore region is not distilled either). With class ``weights``
    each pixel counts with its label's weight, as ``F.cross_entropy`` weights the hard term:
    sum(w[y] * KL) / sum(w[y])."""
    t = temperature
    log_p_s = F.log_softmax(student.float() / t, dim=1)
    log_p_t = F.log_softmax(teacher.float() / t, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(1)  # B x H x W
    valid = target != ignore_index
    if not valid.any():
        return kl.sum() * 0.0
    if weights is None:
        return kl[valid].mean() * t * t
    w = weights.to(kl.dtype)[target[valid]]
    return (kl[valid] * w).sum() / w.sum().clamp_min(1e-12) * t * t
