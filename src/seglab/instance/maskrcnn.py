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
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes

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


def _mobilenet_fpn(weights, pretrained: bool, trainable_layers: int) -> nn.Module:
    """MobileNetV3-Large features + FPN on the last block of strides 8, 16 and 32 (+ a
    max-pooled level). torchvision's ``mobilenet_backbone`` taps only strides 16 and 32,
    too coarse for objects of 10 pixels; trainable BatchNorm when training from scratch."""
    from torchvision.models import mobilenet_v3_large
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.ops import misc
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    norm = misc.FrozenBatchNorm2d if pretrained else nn.BatchNorm2d
    features = mobilenet_v3_large(weights=weights, norm_layer=norm).features
    taps = {"6": "0", "12": "1", "16": "2"}  # 40, 112 and 960 channels
    if pretrained:  # freeze all but the last ``trainable_layers`` stages
        stages = [0] + [i for i, b in enumerate(features) if getattr(b, "_is_cn", False)]
        stages.append(len(features) - 1)
        k = min(max(trainable_layers, 0), len(stages))
        first = len(features) if k == 0 else stages[len(stages) - k]
        for b in features[:first]:
            b.requires_grad_(False)
    channels = [features[int(i)].out_channels for i in taps]
    return BackboneWithFPN(features, taps, channels, 256, extra_blocks=LastLevelMaxPool())


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
    scale: float | None = None,
    load_weights: bool = True,
    proposals: int = 1000,
) -> nn.Module:
    """Mask R-CNN for ``num_classes`` classes including background; inputs are 0..1 images
    normalised inside the model by ``mean`` / ``std`` (0..255 scale). ``scale``: resize
    every image by this factor instead of torchvision's ``min_size`` / ``max_size`` rule
    (which would upscale a 256-pixel training crop and shrink a 1000-pixel image).
    ``proposals``: RPN proposals per image at inference, before and after its NMS; the box
    and mask heads run on each, so on a CPU they cost more than the backbone at 1000.
    ``load_weights`` False builds the same modules without loading weights (checkpoints)."""
    from torchvision.models import MobileNet_V3_Large_Weights, ResNet50_Weights
    from torchvision.models.detection import MaskRCNN, MaskRCNN_ResNet50_FPN_Weights
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
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
        "rpn_pre_nms_top_n_test": proposals,
        "rpn_post_nms_top_n_test": proposals,
        "image_mean": [m / 255 for m in mean] if mean else None,
        "image_std": [s / 255 for s in std] if std else None,
    }
    from torchvision.ops.misc import FrozenBatchNorm2d

    # ``pretrained`` decides the architecture (frozen BatchNorm, frozen early layers), so a
    # checkpoint rebuilds the same modules; ``load_weights`` False skips the download
    pretrained = encoder_weights in ("imagenet", "coco")
    fetch = encoder_weights == "imagenet" and load_weights
    try:
        if encoder == "resnet50":
            weights = ResNet50_Weights.IMAGENET1K_V1 if fetch else None
            norm = FrozenBatchNorm2d if pretrained else nn.BatchNorm2d
            body = resnet50(weights=weights, norm_layer=norm)
            trainable = trainable_backbone_layers if pretrained else 5
            backbone = _resnet_fpn_extractor(body, min(trainable, 5))
            anchors = _anchors(anchor_sizes, 5, per_level=True)
        else:
            weights = MobileNet_V3_Large_Weights.IMAGENET1K_V1 if fetch else None
            backbone = _mobilenet_fpn(weights, pretrained, trainable_backbone_layers)
            anchors = _anchors(anchor_sizes, 4, per_level=False)
    except SeglabError:
        raise
    except Exception as err:  # noqa: BLE001 - download failures come in many types
        if fetch:
            raise _pretrained_error(encoder, err) from None
        raise
    model = MaskRCNN(backbone, num_classes=num_classes, rpn_anchor_generator=anchors, **kw)
    if scale is not None:
        model.transform = FixedScaleTransform(
            scale, model.transform.image_mean, model.transform.image_std
        )
    if encoder_weights == "coco" and load_weights:
        try:
            state = MaskRCNN_ResNet50_FPN_Weights.COCO_V1.get_state_dict(progress=False)
        except Exception as err:  # noqa: BLE001
            reason = " ".join(str(err).split())[:160] or type(err).__name__
            raise SeglabError(
                f"cannot get the COCO weights of maskrcnn_resnet50_fpn ({reason}); without "
                "network set model.encoder_weights: null, or a backbone weights file"
            ) from None
        own = model.state_dict()
        same = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        model.load_state_dict(same, strict=False)
    if local and load_weights:
        load_encoder_weights(types.SimpleNamespace(encoder=model.backbone.body), encoder_weights)
    return model


class FixedScaleTransform(GeneralizedRCNNTransform):
    """torchvision's detection transform resizing every image by one fixed factor, so
    objects keep their size between training crops and whole images."""

    def __init__(self, scale: float, mean: list[float], std: list[float]) -> None:
        super().__init__(min_size=1, max_size=1, image_mean=mean, image_std=std)
        self.scale = scale

    def resize(self, image: torch.Tensor, target: dict | None = None):
        h, w = image.shape[-2:]
        size = (max(1, round(h * self.scale)), max(1, round(w * self.scale)))
        if size != (h, w):
            image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
        if target is not None and size != (h, w):
            target["boxes"] = resize_boxes(target["boxes"], (h, w), size)
            if "masks" in target:
                m = target["masks"][:, None].float()
                target["masks"] = F.interpolate(m, size=size)[:, 0].byte()
        return image, target


class MaskRCNNModel(nn.Module):
    """Mask R-CNN taking 0..255 images like every seglab model."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None):
        return self.net([im.float() / 255 for im in images], targets)


@torch.inference_mode()
def detect(model: MaskRCNNModel, image: torch.Tensor) -> dict:
    """Mask R-CNN inference on one ``C x H x W`` uint8 image without image-sized masks.

    torchvision's ``postprocess`` pastes every mask into a full-size float image (300
    detections on a 1388 x 1040 image: 1.7 GB); here each mask is pasted into its own box
    only, with the same arithmetic (``expand_masks``/``expand_boxes``, bilinear resize).
    Returns ``{"shape": (H, W), "dets": [{label, score, box, offset (y0, x0),
    prob: uint8 mask probability x 255 of the box}]}``."""
    from torchvision.models.detection.roi_heads import expand_boxes, expand_masks

    net = model.net
    h, w = image.shape[-2:]
    images, _ = net.transform([image.float() / 255])
    features = net.backbone(images.tensors)
    proposals, _ = net.rpn(images, features)
    out, _ = net.roi_heads(features, proposals, images.image_sizes)
    out = out[0]
    boxes = resize_boxes(out["boxes"], images.image_sizes[0], [h, w])
    dets = []
    if len(boxes):
        masks, scale = expand_masks(out["masks"], padding=1)
        ext = expand_boxes(boxes, scale).to(torch.int64)
        for box, eb, mask, label, score in zip(
            boxes, ext, masks[:, 0], out["labels"], out["scores"], strict=True
        ):
            bx0, by0, bx1, by1 = (int(v) for v in eb)
            bw, bh = max(bx1 - bx0 + 1, 1), max(by1 - by0 + 1, 1)
            m = F.interpolate(mask[None, None], size=(bh, bw), mode="bilinear")[0, 0]
            x0, y0 = max(bx0, 0), max(by0, 0)
            x1, y1 = min(bx1 + 1, w), min(by1 + 1, h)
            if x1 <= x0 or y1 <= y0:
                continue
            crop = m[y0 - by0 : y1 - by0, x0 - bx0 : x1 - bx0]
            dets.append(
                {
                    "label": int(label),
                    "score": float(score),
                    "box": [float(v) for v in box],
                    "offset": (y0, x0),
                    "prob": (crop * 255).round().to(torch.uint8).numpy(),
                }
            )
    return {"shape": (h, w), "dets": dets}
