"""Model registry: an architecture name maps to a builder function.

Builders take ``(num_classes, in_channels, encoder, encoder_weights, **options)`` and return
an ``nn.Module`` mapping ``B x C x H x W`` to logits ``B x K x H x W``. ``build_model`` wraps
it in :class:`SegModel`, which normalises raw 0-255 pixels itself, so a checkpoint or an
exported model needs nothing but the image.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from seglab.errors import SeglabError

log = logging.getLogger("seglab")


@dataclass(frozen=True)
class ModelSpec:
    builder: Callable[..., nn.Module]
    stride: int
    summary: str
    smp_class: str | None = None  # the SMP architecture behind the builder, if any


MODELS: dict[str, ModelSpec] = {}


def register(name: str, stride: int, summary: str) -> Callable:
    """Decorator adding a builder to :data:`MODELS` under ``name``."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS[name] = ModelSpec(fn, stride, summary)
        return fn

    return deco


def _pretrained_error(encoder: str, err: Exception) -> SeglabError:
    reason = " ".join(str(err).split())[:160] or type(err).__name__
    return SeglabError(
        f"cannot get imagenet weights for encoder {encoder!r} ({reason}); without network, "
        "download them elsewhere and set model.encoder_weights: path/to/weights.safetensors "
        "(or .pth)"
    )


def smp_options(cls_name: str) -> list[str]:
    """The ``model.options`` keys SMP's architecture ``cls_name`` takes (its constructor's
    arguments but those seglab sets itself, plus the ``output_stride`` alias)."""
    import segmentation_models_pytorch as smp

    fixed = {"self", "encoder_name", "encoder_weights", "in_channels", "classes", "kwargs"}
    params = inspect.signature(getattr(smp, cls_name).__init__).parameters
    allowed = [p for p in params if p not in fixed]
    if "encoder_output_stride" in allowed:
        allowed.append("output_stride")
    return sorted(allowed)


def _check_options(cls_name: str, options: dict) -> None:
    """Refuse ``model.options`` keys that SMP would ignore, naming the allowed ones."""
    allowed = smp_options(cls_name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise SeglabError(
            f"model.options.{unknown[0]} is not an option of {cls_name}; "
            f"allowed: {', '.join(allowed)}"
        )


def _smp(cls_name: str) -> Callable[..., nn.Module]:
    """A builder for the segmentation-models-pytorch architecture ``cls_name``."""

    def build(
        num_classes: int,
        in_channels: int,
        encoder: str = "resnet18",
        encoder_weights: str | None = None,
        **options,
    ) -> nn.Module:
        import segmentation_models_pytorch as smp

        if not encoder.startswith("tu-"):
            # SMP passes unknown keys to timm encoders and drops them silently for its own
            _check_options(cls_name, options)
        if "output_stride" in options:  # friendlier name for DeepLab's encoder_output_stride
            options["encoder_output_stride"] = options.pop("output_stride")
        weights = "imagenet" if encoder_weights == "imagenet" else None
        if weights and encoder.startswith("tu-"):
            weights = True  # SMP's switch for timm's own pretrained weights
        try:
            return getattr(smp, cls_name)(
                encoder_name=encoder,
                encoder_weights=weights,
                in_channels=in_channels,
                classes=num_classes,
                **options,
            )
        except (KeyError, TypeError) as err:
            raise SeglabError(
                f"model: cannot build {cls_name} with encoder {encoder!r} and "
                f"options {options}: {err}; see seglab models"
            ) from None
        except Exception as err:  # noqa: BLE001 - hub download failures come in many types
            if weights:
                raise _pretrained_error(encoder, err) from None
            raise SeglabError(
                f"model: cannot build {cls_name} with encoder {encoder!r} and "
                f"options {options}: {err}"
            ) from None

    return build


for _name, _cls, _summary in (
    ("unet", "Unet", "U-Net: encoder + skip-connected decoder (SMP)"),
    ("unetplusplus", "UnetPlusPlus", "U-Net++: nested dense skip connections (SMP)"),
    ("fpn", "FPN", "Feature Pyramid Network decoder (SMP)"),
    ("pspnet", "PSPNet", "PSPNet: pyramid pooling module (SMP)"),
    ("deeplabv3", "DeepLabV3", "DeepLab v3: atrous convolution + ASPP (SMP)"),
    (
        "deeplabv3plus",
        "DeepLabV3Plus",
        "DeepLab v3+: ASPP + low-level decoder, output_stride 8 or 16 (SMP)",
    ),
):
    MODELS[_name] = ModelSpec(_smp(_cls), 32, _summary, smp_class=_cls)


@register("fcn", stride=32, summary="FCN-32s/16s/8s skip fusion on any SMP/timm encoder (ours)")
def fcn(
    num_classes: int,
    in_channels: int,
    encoder: str = "resnet18",
    encoder_weights: str | None = None,
    variant: str = "8s",
    **options,
) -> nn.Module:
    from segmentation_models_pytorch.encoders import get_encoder

    from seglab.models.fcn import FCN

    weights = "imagenet" if encoder_weights == "imagenet" else None
    try:
        enc = get_encoder(encoder, in_channels=in_channels, depth=5, weights=weights)
    except KeyError as err:
        raise SeglabError(
            f"model: unknown encoder {encoder!r} ({err}); see seglab models --encoders"
        ) from None
    except Exception as err:  # noqa: BLE001
        if weights:
            raise _pretrained_error(encoder, err) from None
        raise
    return FCN(enc, num_classes, variant=variant, **options)


def _adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """An RGB first convolution's weights for ``in_channels`` inputs (timm's
    adapt_input_conv, as SMP and timm encoders do it: grey sums RGB, more channels repeat)."""
    from timm.models import adapt_input_conv

    return adapt_input_conv(in_channels, weight.detach().clone())


@register("segnet", stride=32, summary="SegNet: VGG16-BN encoder, max-unpooling decoder (ours)")
def segnet(
    num_classes: int,
    in_channels: int,
    encoder: str = "vgg16_bn",
    encoder_weights: str | None = None,
    width: float = 1.0,
) -> nn.Module:
    from seglab.models.segnet import SegNet

    if encoder != "vgg16_bn":
        raise SeglabError("model.encoder: segnet has its own VGG16-BN encoder; set vgg16_bn")
    net = SegNet(num_classes, in_channels, width)
    if encoder_weights == "imagenet":
        if width != 1.0:  # no layer of a narrower VGG has the ImageNet shapes
            raise SeglabError(
                f"model.options.width {width}: segnet's ImageNet weights fit width 1.0 only; "
                "drop the width or set model.encoder_weights: null"
            )
        try:
            from torchvision.models import VGG16_BN_Weights, vgg16_bn

            vgg = vgg16_bn(weights=VGG16_BN_Weights.IMAGENET1K_V1).features
        except Exception as err:  # noqa: BLE001
            raise _pretrained_error("vgg16_bn", err) from None
        convs = [m for m in vgg if isinstance(m, nn.Conv2d | nn.BatchNorm2d)]
        mine = [m for m in net.encoder.modules() if isinstance(m, nn.Conv2d | nn.BatchNorm2d)]
        for a, b in zip(convs, mine, strict=True):
            if a.weight.shape != b.weight.shape:  # the first conv, other input channels
                a.weight.data = _adapt_first_conv(a.weight, in_channels)
            b.load_state_dict(a.state_dict(), strict=False)
    return net


@register("hrnet", stride=32, summary="HRNet-W18/W32 (timm), all resolutions fused by the head")
def hrnet(
    num_classes: int,
    in_channels: int,
    encoder: str = "hrnet_w18",
    encoder_weights: str | None = None,
) -> nn.Module:
    from seglab.models.hrnet import HRNetSeg

    widths = {"hrnet_w18": 18, "hrnet_w32": 32, "hrnet_w48": 48}
    if encoder not in widths:
        raise SeglabError(f"model.encoder {encoder!r}: hrnet takes {', '.join(widths)}")
    try:
        return HRNetSeg(
            num_classes, in_channels, widths[encoder], pretrained=encoder_weights == "imagenet"
        )
    except Exception as err:  # noqa: BLE001
        if encoder_weights == "imagenet":
            raise _pretrained_error(encoder, err) from None
        raise


@register(
    "lraspp",
    stride=32,
    summary="real-time LR-ASPP on MobileNetV3-Large (torchvision), output stride 16",
)
def lraspp(
    num_classes: int,
    in_channels: int,
    encoder: str = "mobilenet_v3_large",
    encoder_weights: str | None = None,
) -> nn.Module:
    from torchvision.models import MobileNet_V3_Large_Weights, mobilenet_v3_large
    from torchvision.models.segmentation.lraspp import _lraspp_mobilenetv3

    if encoder != "mobilenet_v3_large":
        raise SeglabError("model.encoder: lraspp uses mobilenet_v3_large")
    try:
        weights = (
            MobileNet_V3_Large_Weights.IMAGENET1K_V1 if encoder_weights == "imagenet" else None
        )
        backbone = mobilenet_v3_large(weights=weights, dilated=True)
    except Exception as err:  # noqa: BLE001
        raise _pretrained_error(encoder, err) from None
    if in_channels != 3:
        old = backbone.features[0][0]
        backbone.features[0][0] = nn.Conv2d(
            in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False
        )
        if weights is not None:  # ImageNet's first conv, summed or repeated over the channels
            backbone.features[0][0].weight.data = _adapt_first_conv(old.weight, in_channels)
    return LRASPPNet(_lraspp_mobilenetv3(backbone, num_classes))


class LRASPPNet(nn.Module):
    """torchvision's LR-ASPP returning a logits tensor instead of ``{"out": ...}``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.backbone, self.classifier = net.backbone, net.classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.classifier(self.backbone(x))
        return torch.nn.functional.interpolate(
            out, size=x.shape[-2:], mode="bilinear", align_corners=False
        )


def encoder_of(net: nn.Module) -> nn.Module:
    """The pretrained-able backbone of a network (``encoder`` or torchvision's ``backbone``)."""
    for name in ("encoder", "backbone"):
        if isinstance(getattr(net, name, None), nn.Module):
            return getattr(net, name)
    raise SeglabError(f"{type(net).__name__} has no encoder to load weights into")


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors or .pth/.pt file (``weights_only``: no pickled code runs)."""
    path = Path(path)
    if not path.is_file():
        raise SeglabError(
            f"weights file {path} not found; set model.encoder_weights to null, "
            "imagenet, or an existing .safetensors / .pth file"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise SeglabError(
            f"weights file {path} cannot be read ({str(err)[:120]}); "
            "give a .safetensors or .pth state dict"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise SeglabError(f"weights file {path} does not hold a state dict")
    return state


def load_encoder_weights(net: nn.Module, path: str | Path) -> dict:
    """Load a local weights file into the network's encoder; returns what was loaded.

    Keys are matched as they are, or after dropping a common prefix (``encoder.``,
    ``backbone.``, ``model.``, ``module.``); tensors of another shape are skipped.
    """
    enc = encoder_of(net)
    own = enc.state_dict()
    state = load_weights_file(path)
    matched: dict[str, torch.Tensor] = {}
    skipped_shape = []
    for k, v in state.items():
        for prefix in ("", "encoder.", "backbone.", "model.", "module.", "net.encoder."):
            name = k.removeprefix(prefix) if k.startswith(prefix) else None
            if name in own:
                if own[name].shape == v.shape:
                    matched[name] = v
                else:
                    skipped_shape.append(name)
                break
    if not matched:
        raise SeglabError(
            f"weights file {path} matches none of the encoder's {len(own)} "
            "tensors; is it for this encoder?"
        )
    enc.load_state_dict(matched, strict=False)
    report = {
        "loaded": len(matched),
        "missing": len(own) - len(matched),
        "unexpected": len(state) - len(matched) - len(skipped_shape),
        "shape_mismatch": skipped_shape,
    }
    log.info(
        "encoder weights from %s: %d tensors loaded, %d missing, %d unexpected, "
        "%d of another shape",
        path,
        report["loaded"],
        report["missing"],
        report["unexpected"],
        len(skipped_shape),
    )
    return report


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
    encoder: str | None = None,
    encoder_weights: str | None = None,
    options: dict | None = None,
) -> SegModel:
    """Build architecture ``name`` from the registry, wrapped with its normalisation.

    ``encoder`` None: the architecture's default. ``encoder_weights``: None (random),
    ``imagenet`` (the library's hub download) or a local .safetensors/.pth file.
    """
    if name not in MODELS:
        raise SeglabError(f"model.name {name!r} is unknown; available: {', '.join(sorted(MODELS))}")
    spec = MODELS[name]
    local = encoder_weights not in (None, "none", "null", "imagenet")
    kwargs = dict(options or {})
    if encoder is not None:
        kwargs["encoder"] = encoder
    try:
        net = spec.builder(
            num_classes, in_channels, encoder_weights=None if local else encoder_weights, **kwargs
        )
    except TypeError as err:
        raise SeglabError(f"model.options for {name}: {err}; see seglab models") from None
    if local:
        load_encoder_weights(net, encoder_weights)
    return SegModel(net, mean, std, spec.stride)
