"""Transfer learning: start a model from an earlier seglab run or checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path

from timm.models import adapt_input_conv

from seglab.errors import SeglabError
from seglab.inference.predictor import read_checkpoint, resolve_checkpoint
from seglab.models.registry import SegModel

log = logging.getLogger("seglab")


def init_from(model: SegModel, source: str | Path) -> dict:
    """Copy every tensor of ``source``'s model whose name and shape match ``model``'s.

    Layers that differ (typically the classification head when the class count changes)
    keep their fresh initialisation; the normalisation of the new data set is kept.
    Returns ``{"loaded": [...], "reinitialised": [...]}`` and logs it.
    """
    path = resolve_checkpoint(source)
    ckpt = read_checkpoint(path)
    theirs = {
        k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")
    }
    own = model.state_dict()
    keep_own = {"mean", "std"}
    loaded = {
        k: v
        for k, v in theirs.items()
        if k in own and k not in keep_own and own[k].shape == v.shape
    }
    adapted = []
    # the first conv of a model with other input channels: a conv that sees the image, whose
    # input channels are the two models' (any other conv that differs, e.g. in a decoder of
    # other widths, is re-initialised rather than tiled from unrelated weights)
    own_in, their_in = own["mean"].numel(), theirs["mean"].numel()
    for k, v in theirs.items():
        mine = own.get(k)
        if k in loaded or k in keep_own or mine is None or v.ndim != 4 or mine.ndim != 4:
            continue
        if (mine.shape[1], v.shape[1]) != (own_in, their_in):
            continue
        if mine.shape[0] == v.shape[0] and mine.shape[2:] == v.shape[2:]:
            loaded[k] = adapt_input_conv(mine.shape[1], v, base_chans=v.shape[1])
            adapted.append(k)
    if not loaded:
        raise SeglabError(
            f"model.init_from {path}: no layer matches this model (another "
            "architecture or encoder?); use a run of the same model"
        )
    model.load_state_dict(loaded, strict=False)
    reinit = sorted({k.rsplit(".", 1)[0] for k in own if k not in loaded and k not in keep_own})
    log.info(
        "init_from %s: %d of %d tensors loaded; input channels adapted: %s; re-initialised: %s",
        path,
        len(loaded),
        len(own) - len(keep_own),
        ", ".join(adapted) or "none",
        ", ".join(reinit) or "none",
    )
    return {"loaded": sorted(loaded), "adapted": adapted, "reinitialised": reinit}
