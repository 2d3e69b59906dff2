"""``seglab serve``: models behind an HTTP API, with a web page to try them."""

from __future__ import annotations

from pathlib import Path

from seglab.errors import SeglabError
from seglab.serve.app import create_app

__all__ = ["create_app", "model_name", "open_models"]


def model_name(source: Path) -> str:
    """A run folder -> its name; ``run/checkpoints/x.ckpt`` -> ``run``; ``run/export-openvino``
    -> ``run-openvino``."""
    p = Path(source).resolve()
    if p.is_file():
        return p.parent.parent.name if p.parent.name == "checkpoints" else p.stem
    if p.name.startswith("export-"):
        return f"{p.parent.name}-{p.name.removeprefix('export-')}"
    return p.name


def open_models(sources: list[str], backend: str | None = None) -> dict:
    """``[NAME=]PATH`` items -> {name: Predictor}, in order (the first is the default).
    ``task: instance`` runs open as :class:`~seglab.instance.run.InstancePredictor`."""
    from seglab.inference.predictor import Predictor
    from seglab.instance.run import InstancePredictor, is_instance_checkpoint

    models: dict = {}
    for item in sources:
        name, sep, path = str(item).partition("=")
        if not sep:
            name, path = "", item
        name = name or model_name(Path(path))
        if name in models:
            raise SeglabError(f"two models are named {name!r}; name them, e.g. {name}-a={path}")
        opener = InstancePredictor if is_instance_checkpoint(path) else Predictor
        models[name] = opener.open(path, backend=backend)
    return models
