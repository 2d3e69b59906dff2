"""HRNet (Wang et al. 2020) for segmentation: timm's HRNet-W18/W32 backbone keeps four
resolutions in parallel; the head upsamples all four to stride 4, concatenates them and
classifies every pixel (the "HRNetV2" representation)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class HRNetSeg(nn.Module):
    def __init__(
        self, num_classes: int, in_channels: int = 3, width: int = 18, pretrained: bool = False
    ) -> None:
        super().__init__()
        import timm

        self.encoder = timm.create_model(
            f"hrnet_w{width}",
            pretrained=pretrained,
            features_only=True,
            feature_location="",
            out_indices=(1, 2, 3, 4),
            in_chans=in_channels,
        )
        channels = sum(self.encoder.feature_info.channels())
        self.head = nn.Sequential(
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, num_classes, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)
        size = feats[0].shape[-2:]
        fused = torch.cat(
            [feats[0]]
            + [
                F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in feats[1:]
            ],
            1,
        )
        return F.interpolate(
            self.head(fused), size=x.shape[-2:], mode="bilinear", align_corners=False
        )
