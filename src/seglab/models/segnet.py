"""SegNet (Badrinarayanan et al. 2017): a VGG16-BN encoder whose max-pooling indices drive
the decoder's unpooling, so boundaries are restored without learning to upsample."""

from __future__ import annotations

import torch
from torch import nn

# VGG16: convolutions per stage and their channels
VGG16_STAGES = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))


def _cbr(cin: int, cout: int) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class SegNetEncoder(nn.Module):
    """Five VGG16-BN stages, each followed by 2x2 max pooling that returns its indices."""

    def __init__(self, in_channels: int, width: float = 1.0) -> None:
        super().__init__()
        stages, cin = [], in_channels
        self.channels: list[int] = []
        for n, c in VGG16_STAGES:
            c = max(8, int(c * width))
            layers: list[nn.Module] = []
            for _ in range(n):
                layers += _cbr(cin, c)
                cin = c
            stages.append(nn.Sequential(*layers))
            self.channels.append(c)
        self.stages = nn.ModuleList(stages)
        self.pool = nn.MaxPool2d(2, 2, return_indices=True)

    def forward(self, x: torch.Tensor):
        indices, sizes = [], []
        for stage in self.stages:
            x = stage(x)
            sizes.append(x.shape[-2:])
            x, idx = self.pool(x)
            indices.append(idx)
        return x, indices, sizes


def max_unpool(x: torch.Tensor, indices: torch.Tensor, size) -> torch.Tensor:
    """``nn.MaxUnpool2d`` to ``size`` (H, W) as one scatter of each value to its pooling
    index: the same numbers, and unlike ``max_unpool2d`` it converts to ONNX, OpenVINO and
    TorchScript (their converters stop at the unpooling's size check)."""
    n, c = x.shape[:2]
    out = x.new_zeros(n, c, size[0] * size[1])
    return out.scatter(2, indices.flatten(2), x.flatten(2)).view(n, c, size[0], size[1])


class SegNet(nn.Module):
    """Encoder -> mirrored decoder (max-unpooling with the encoder's indices) -> classifier."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__()
        self.encoder = SegNetEncoder(in_channels, width)
        ch = self.encoder.channels
        stages = []
        for i in reversed(range(len(VGG16_STAGES))):
            n = VGG16_STAGES[i][0]
            cout = ch[i - 1] if i > 0 else ch[0]
            layers: list[nn.Module] = []
            for j in range(n):
                layers += _cbr(ch[i], ch[i] if j < n - 1 else cout)
            stages.append(nn.Sequential(*layers))
        self.decoder = nn.ModuleList(stages)
        self.classifier = nn.Conv2d(ch[0], num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, indices, sizes = self.encoder(x)
        for stage, idx, size in zip(self.decoder, reversed(indices), reversed(sizes), strict=True):
            x = stage(max_unpool(x, idx, size))
        return self.classifier(x)
