"""Transfer learning: start a model from an earlier seglab run or checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path

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
    if not loaded:
        raise SeglabError(
            f"model.init_from {path}: no layer matches this model (another "
            "architecture or encoder?); use a run of the same model"
        )
    model.load_state_dict(loaded, strict=False)
    reinit = sorted({k.rsplit(".", 1)[0] for k in own if k not in loaded and k not in keep_own})
    log.info(
        "init_from %s: %d of %d tensors loaded; re-initialised: %s",
        path,
        len(loaded),
        len(own) - len(keep_own),
        ", ".join(reinit) or "none",
    )
    return {"loaded": sorted(loaded), "reinitialised": reinit}
