"""FCN (Long et al. 2015) with FCN-32s / 16s / 8s skip fusion on any SMP or timm encoder.

Class scores are predicted from the stride-32 features and, for 16s and 8s, added to
scores from the stride-16 and stride-8 features after upsampling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seglab.errors import SeglabError


class FCN(nn.Module):
    def __init__(
        self, encoder: nn.Module, num_classes: int, variant: str = "8s", head_channels: int = 256
    ) -> None:
        super().__init__()
        if variant not in ("32s", "16s", "8s"):
            raise SeglabError(f"model.options.variant {variant!r}: use 32s, 16s or 8s")
        self.encoder = encoder
        self.variant = variant
        ch = encoder.out_channels  # (in, s2, s4, s8, s16, s32)
        self.head = nn.Sequential(
            nn.Conv2d(ch[-1], head_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(head_channels),
            nn.ReLU(inplace=True),
            nn.Dropout2d(0.1),
            nn.Conv2d(head_channels, num_classes, 1),
        )
        self.score16 = nn.Conv2d(ch[-2], num_classes, 1) if variant in ("16s", "8s") else None
        self.score8 = nn.Conv2d(ch[-3], num_classes, 1) if variant == "8s" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)
        out = self.head(feats[-1])
        for score, f in ((self.score16, feats[-2]), (self.score8, feats[-3])):
            if score is not None:
                out = F.interpolate(out, size=f.shape[-2:], mode="bilinear", align_corners=False)
                out = out + score(f)
        return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
