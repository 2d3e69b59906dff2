"""SegLoss: plain CE, and CE over the hard pixels (OHEM) checked against a direct count."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seglab.config import LossConfig
from seglab.training.losses import SegLoss, ohem_cross_entropy

IGNORE = 255


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 4, 9, 11, generator=g) * 3
    target = torch.randint(0, 4, (2, 9, 11), generator=g)
    target[0, :2] = IGNORE
    return logits, target


def test_ce_is_torch_cross_entropy_with_weights_and_ignore():
    logits, target = _batch()
    w = [1.0, 2.0, 0.5, 3.0]
    loss = SegLoss(LossConfig(name="ce"), IGNORE, w)(logits, target)
    want = F.cross_entropy(logits, target, weight=torch.tensor(w), ignore_index=IGNORE)
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)


@pytest.mark.parametrize("weights", [None, [1.0, 2.0, 0.5, 3.0]])
def test_ohem_keeps_the_pixels_below_the_threshold(weights):
    logits, target = _batch(1)
    valid = target != IGNORE
    p_true = logits.softmax(1).gather(1, target.clamp(max=3).unsqueeze(1)).squeeze(1)
    hard = valid & (p_true < 0.7)
    assert 0 < hard.sum() < valid.sum()  # the threshold separates something
    cfg = LossConfig(name="ce", ohem_thresh=0.7, ohem_min_kept=0.0)
    loss = SegLoss(cfg, IGNORE, weights)(logits, target)
    # the same CE with every easy pixel relabelled as ignored
    only_hard = target.masked_fill(~hard, IGNORE)
    w = torch.tensor(weights) if weights else None
    want = F.cross_entropy(logits, only_hard, weight=w, ignore_index=IGNORE)
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)
    plain = F.cross_entropy(logits, target, weight=w, ignore_index=IGNORE)
    assert loss.item() > plain.item()  # hard pixels have the larger losses


def test_ohem_keeps_at_least_min_kept_hardest_and_only_they_get_gradients():
    logits, target = _batch(2)
    logits = logits.detach().requires_grad_()
    valid = target != IGNORE
    n = int(valid.sum())
    # a threshold nothing is below: min_kept alone decides, the 25% hardest pixels
    loss = ohem_cross_entropy(logits, target, None, IGNORE, thresh=1e-9, min_kept=0.25)
    loss.backward()
    touched = logits.grad.abs().sum(1) > 0
    k = int(0.25 * n)
    assert int(touched.sum()) == k
    assert not (touched & ~valid).any()
    p_true = logits.softmax(1).gather(1, target.clamp(max=3).unsqueeze(1)).squeeze(1)
    assert p_true[touched].max() < p_true[valid & ~touched].min()  # the hardest ones


def test_ohem_without_labelled_pixels_is_zero_with_a_gradient():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    target = torch.full((1, 4, 4), IGNORE)
    loss = ohem_cross_entropy(logits, target, None, IGNORE, thresh=0.7, min_kept=0.1)
    loss.backward()
    assert loss.item() == 0 and logits.grad is not None


def test_ohem_config_is_validated():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        LossConfig(ohem_thresh=1.5)
    with pytest.raises(ValidationError):
        LossConfig(ohem_min_kept=-0.1)
    with pytest.raises(ValidationError, match="dice has none"):
        LossConfig(name="dice", ohem_thresh=0.7)
    assert LossConfig(name="ce+dice", ohem_thresh=0.7).ohem_thresh == 0.7
