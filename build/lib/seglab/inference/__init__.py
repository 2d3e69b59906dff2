"""Inference: the one path from an image to a mask (Predictor), used everywhere."""

from seglab.inference.predictor import Predictor, load_checkpoint, resolve_precision

__all__ = ["Predictor", "load_checkpoint", "resolve_precision"]
