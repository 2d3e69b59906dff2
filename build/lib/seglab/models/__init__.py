"""Models: the registry (name -> builder) and the SegModel wrapper."""

from seglab.models.registry import MODELS, SegModel, build_model, register

__all__ = ["MODELS", "SegModel", "build_model", "register"]
