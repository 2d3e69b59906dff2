"""Cross-entropy, Dice and CE + Dice, with class weights and the ignore index."""

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


class SegLoss(nn.Module):
    """``ce``, ``dice`` or ``ce+dice`` (CE + dice_weight * Dice) on float32 logits."""

    def __init__(self, cfg: LossConfig, ignore_index: int, weights: list[float] | None) -> None:
        super().__init__()
        w = torch.tensor(weights, dtype=torch.float32) if weights is not None else None
        self.register_buffer("weights", w)
        self.use_ce = cfg.name in ("ce", "ce+dice")
        self.dice = WeightedDiceLoss(ignore_index, w) if cfg.name != "ce" else None
        self.dice_weight = cfg.dice_weight if cfg.name == "ce+dice" else 1.0
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        loss = logits.new_zeros(())
        if self.use_ce:
            loss = loss + F.cross_entropy(
                logits, target, weight=self.weights, ignore_index=self.ignore_index
            )
        if self.dice is not None:
            loss = loss + self.dice_weight * self.dice(logits, target)
        return loss
