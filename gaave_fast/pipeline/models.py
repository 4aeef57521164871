"""Model factories ``make_model(num_classes) -> nn.Module`` for the pipeline.

Every model takes images in [0, 1] pixel units and normalises them itself (a :class:`Normalize`
first layer), so ``gaave_fast.scan`` can run with ``mean=std=None`` and its epsilon is in pixel
units (1/255 = one grey level).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

ModelFactory = Callable[[int], nn.Module]
ARCHS = ("resnet18", "small_cnn")


class Normalize(nn.Module):
    """``(x - mean_c) / std_c`` for x of shape [N, C, H, W] in [0, 1]."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"mean {list(mean)} and std {list(std)} need equal length and std > 0")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def resnet18(num_classes: int, in_channels: int = 3, image_size: int = 224) -> nn.Module:
    """torchvision ResNet-18 from scratch.

    For ``image_size <= 64`` the stem is a 3x3 stride-1 convolution without max-pooling (the usual
    CIFAR adaptation: the 7x7/2 stem and pool would shrink a 32-px face to 8 px before the first
    block). ``in_channels`` sets the first convolution's input channels (1 for grey faces).
    """
    from torchvision.models import resnet18 as tv_resnet18

    m = tv_resnet18(weights=None, num_classes=num_classes)
    if image_size <= 64:
        m.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        m.maxpool = nn.Identity()
    elif in_channels != 3:
        m.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return m


def small_cnn(num_classes: int, in_channels: int = 3, width: int = 32) -> nn.Module:
    """A 4-block conv net for CPU runs: conv-BN-ReLU blocks of width w, 2w, 4w, 4w, max-pooling
    after the first three, global average pooling and a linear layer.

    Pooling from the first block on keeps the cost low (about 13 M multiply-adds for a 32-px
    RGB image at ``width=32``), since the attack runs the network 2S + 1 times per sample.
    """
    w = width

    def block(cin: int, cout: int, pool: bool) -> list[nn.Module]:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                                   nn.ReLU(inplace=True)]
        return layers + ([nn.MaxPool2d(2)] if pool else [])

    return nn.Sequential(*block(in_channels, w, True), *block(w, 2 * w, True), *block(2 * w, 4 * w, True),
                         *block(4 * w, 4 * w, False), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4 * w, num_classes))


def model_factory(arch: str, in_channels: int, image_size: int, mean: Sequence[float],
                  std: Sequence[float], width: int = 32) -> ModelFactory:
    """A ``make_model(num_classes)`` for a named architecture with input normalisation.

    Args:
        arch: ``"resnet18"`` or ``"small_cnn"``.
        in_channels: image channels (1 or 3).
        image_size: input side in pixels (selects the ResNet stem).
        mean, std: per-channel normalisation constants in [0, 1] pixel units (length in_channels).
        width: base width of ``small_cnn``.
    """
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    if len(mean) != in_channels:
        raise ValueError(f"mean has {len(mean)} values for in_channels={in_channels}")

    def make_model(num_classes: int) -> nn.Module:
        if arch == "resnet18":
            body = resnet18(num_classes, in_channels, image_size)
        else:
            body = small_cnn(num_classes, in_channels, width)
        return nn.Sequential(Normalize(mean, std), body)

    return make_model
