"""torchvision's Mask R-CNN with a ResNet-50-FPN or a MobileNetV3-Large-FPN backbone.

``model.encoder_weights``: null (from scratch), ``imagenet`` (the backbone's ImageNet
weights through torchvision's weights enums), ``coco`` (the whole ResNet-50 Mask R-CNN
trained on COCO; heads re-initialised when the class count differs) or a local
.safetensors / .pth file of backbone weights. Downloads that fail (offline) stop with one
line saying how to use a local file, as for the semantic encoders.
"""

from __future__ import annotations

import types

import torch
from torch import nn

from seglab.errors import SeglabError
from seglab.models.registry import _pretrained_error, load_encoder_weights

BACKBONES = ("resnet50", "mobilenet_v3_large")


def _anchors(sizes: list[int] | None, levels: int, per_level: bool):
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    sizes = list(sizes or [32, 64, 128, 256, 512])
    if per_level:  # one size per FPN level (ResNet-50-FPN: 5 levels)
        if len(sizes) != levels:
            raise SeglabError(
                f"instance.anchor_sizes: the ResNet-50-FPN has {levels} levels; give "
                f"{levels} sizes, e.g. [8, 16, 32, 64, 128] for small objects"
            )
        return AnchorGenerator(tuple((s,) for s in sizes), ((0.5, 1.0, 2.0),) * levels)
    return AnchorGenerator((tuple(sizes),) * levels, ((0.5, 1.0, 2.0),) * levels)


def build_maskrcnn(
    num_classes: int,
    encoder: str | None = "resnet50",
    encoder_weights: str | None = None,
    min_size: int = 800,
    max_size: int = 1333,
    anchor_sizes: list[int] | None = None,
    detections_per_image: int = 100,
    trainable_backbone_layers: int = 3,
    mean: list[float] | None = None,
    std: list[float] | None = None,
) -> nn.Module:
    """Mask R-CNN for ``num_classes`` classes including background; inputs are 0..1 images
    normalised inside the model by ``mean`` / ``std`` (0..255 scale)."""
    from torchvision.models import MobileNet_V3_Large_Weights, ResNet50_Weights
    from torchvision.models.detection import MaskRCNN, MaskRCNN_ResNet50_FPN_Weights
    from torchvision.models.detection.backbone_utils import (
        _resnet_fpn_extractor,
        mobilenet_backbone,
    )
    from torchvision.models.resnet import resnet50

    encoder = encoder or "resnet50"
    if encoder not in BACKBONES:
        raise SeglabError(f"model.encoder {encoder!r}: maskrcnn takes {', '.join(BACKBONES)}")
    local = encoder_weights not in (None, "none", "null", "imagenet", "coco")
    if encoder_weights == "coco" and encoder != "resnet50":
        raise SeglabError("model.encoder_weights: coco weights exist for resnet50 only")
    kw = {
        "min_size": min_size,
        "max_size": max_size,
        "box_detections_per_img": detections_per_image,
        "image_mean": [m / 255 for m in mean] if mean else None,
        "image_std": [s / 255 for s in std] if std else None,
    }
    try:
        if encoder == "resnet50":
            weights = ResNet50_Weights.IMAGENET1K_V1 if encoder_weights == "imagenet" else None
            trainable = trainable_backbone_layers if weights or encoder_weights == "coco" else 5
            frozen = nn.BatchNorm2d
            if weights or encoder_weights == "coco":
                from torchvision.ops import misc

                frozen = misc.FrozenBatchNorm2d
            body = resnet50(weights=weights, norm_layer=frozen)
            backbone = _resnet_fpn_extractor(body, min(trainable, 5))
            anchors = _anchors(anchor_sizes, 5, per_level=True)
        else:
            weights = (
                MobileNet_V3_Large_Weights.IMAGENET1K_V1 if encoder_weights == "imagenet" else None
            )
            trainable = trainable_backbone_layers if weights else 6
            backbone = mobilenet_backbone(
                backbone_name="mobilenet_v3_large",
                weights=weights,
                fpn=True,
                trainable_layers=min(trainable, 6),
            )
            anchors = _anchors(anchor_sizes, 3, per_level=False)
    except SeglabError:
        raise
    except Exception as err:  # noqa: BLE001 - download failures come in many types
        if encoder_weights == "imagenet":
            raise _pretrained_error(encoder, err) from None
        raise
    model = MaskRCNN(backbone, num_classes=num_classes, rpn_anchor_generator=anchors, **kw)
    if encoder_weights == "coco":
        try:
            state = MaskRCNN_ResNet50_FPN_Weights.COCO_V1.get_state_dict(progress=False)
        except Exception as err:  # noqa: BLE001
            raise _pretrained_error("maskrcnn_resnet50_fpn (coco)", err) from None
        own = model.state_dict()
        same = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        model.load_state_dict(same, strict=False)
    if local:
        load_encoder_weights(types.SimpleNamespace(encoder=model.backbone.body), encoder_weights)
    return model


class MaskRCNNModel(nn.Module):
    """Mask R-CNN taking 0..255 images like every seglab model."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None):
        return self.net([im.float() / 255 for im in images], targets)
