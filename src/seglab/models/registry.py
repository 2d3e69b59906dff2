"""Model registry: an architecture name maps to a builder function.

Builders take ``(num_classes, in_channels, encoder, encoder_weights, **options)`` and return
an ``nn.Module`` mapping ``B x C x H x W`` to logits ``B x K x H x W``. ``build_model`` wraps
it in :class:`SegModel`, which normalises raw 0-255 pixels itself, so a checkpoint or an
exported model needs nothing but the image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from seglab.errors import SeglabError


@dataclass(frozen=True)
class ModelSpec:
    builder: Callable[..., nn.Module]
    stride: int
    summary: str


MODELS: dict[str, ModelSpec] = {}


def register(name: str, stride: int, summary: str) -> Callable:
    """Decorator adding a builder to :data:`MODELS` under ``name``."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS[name] = ModelSpec(fn, stride, summary)
        return fn

    return deco


def _smp_weights(encoder_weights: str | None) -> str | None:
    if encoder_weights in (None, "none", "null"):
        return None
    if encoder_weights != "imagenet":
        raise SeglabError(
            f"model.encoder_weights {encoder_weights!r}: use null or imagenet "
            "(local weight files arrive with the model zoo)"
        )
    return encoder_weights


@register("unet", stride=32, summary="U-Net (SMP): encoder + skip-connected decoder")
def unet(
    num_classes: int,
    in_channels: int,
    encoder: str = "resnet18",
    encoder_weights: str | None = None,
    **options,
) -> nn.Module:
    import segmentation_models_pytorch as smp

    try:
        return smp.Unet(
            encoder_name=encoder,
            encoder_weights=_smp_weights(encoder_weights),
            in_channels=in_channels,
            classes=num_classes,
            **options,
        )
    except (KeyError, ValueError, TypeError) as err:
        raise SeglabError(
            f"model: cannot build unet with encoder {encoder!r} and options {options}: {err}"
        ) from None


class SegModel(nn.Module):
    """A segmentation network with its input normalisation.

    Input: float ``B x C x H x W`` in 0..255, any H and W divisible by ``stride``.
    Output: logits ``B x K x H x W``.
    """

    def __init__(self, net: nn.Module, mean: list[float], std: list[float], stride: int) -> None:
        super().__init__()
        self.net = net
        self.stride = stride
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def build_model(
    name: str,
    num_classes: int,
    in_channels: int,
    mean: list[float],
    std: list[float],
    encoder: str = "resnet18",
    encoder_weights: str | None = None,
    options: dict | None = None,
) -> SegModel:
    """Build architecture ``name`` from the registry, wrapped with its normalisation."""
    if name not in MODELS:
        raise SeglabError(f"model.name {name!r} is unknown; available: {', '.join(sorted(MODELS))}")
    spec = MODELS[name]
    net = spec.builder(
        num_classes,
        in_channels,
        encoder=encoder,
        encoder_weights=encoder_weights,
        **(options or {}),
    )
    return SegModel(net, mean, std, spec.stride)
