"""Model factories ``make_model(num_classes) -> nn.Module`` for the pipeline.

Every model takes images in [0, 1] pixel units and normalises them itself (a :class:`Normalize`
first layer), so ``gaave_fast.scan`` can run with ``mean=std=None`` and its epsilon is in pixel
units (1/255 = one grey level).

A model is built in two parts, in this order: the trunk (every layer but the classifier), then
the classifier with one output per class. The trunk draws its random initial weights first and
the same number of them whatever the class count, so every model a run builds from the same
seed starts from the same trunk weights, also when the class counts differ (the two
self-annotators of the paper). A pretrained backbone (:mod:`.pretrained`) is loaded into the
trunk before the classifier is built.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from .pretrained import Backbone

ModelFactory = Callable[[int], nn.Module]
ARCHS = ("resnet18", "small_cnn")
"""The built-in architectures; ``"torchvision:NAME"`` names any torchvision classification model."""
TORCHVISION = "torchvision:"

# The class count the trunk is built with before its classifier is replaced: fixed, so that the
# trunk's random draws do not depend on the real class count.
_TRUNK_CLASSES = 1
# Builders whose auxiliary classifiers would make training return tuples instead of logits.
_NO_AUX = ("googlenet", "inception_v3")


class Normalize(nn.Module):
    """``(x - mean_c) / std_c`` for x of shape [N, C, H, W] in [0, 1].

    With ``channels=3`` a 1-channel image comes out repeated on three channels (grey images for
    the 3-channel torchvision architectures).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], channels: int | None = None):
        super().__init__()
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"mean {list(mean)} and std {list(std)} need equal length and std > 0")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        return x if self.channels is None or x.shape[1] == self.channels else x.expand(-1, self.channels, -1, -1)


def torchvision_names() -> list[str]:
    """The torchvision classification architectures ``"torchvision:NAME"`` accepts."""
    import torchvision.models

    return torchvision.models.list_models(module=torchvision.models)


def check_arch(arch: str) -> None:
    """Raise ValueError unless ``arch`` is a built-in architecture or ``torchvision:NAME``."""
    if arch in ARCHS:
        return
    if arch.startswith(TORCHVISION):
        name = arch[len(TORCHVISION):]
        if name not in torchvision_names():
            raise ValueError(f"arch {arch!r}: {name!r} is no torchvision classification model; "
                             f"choose from {', '.join(torchvision_names())}")
        return
    raise ValueError(f"arch must be one of {ARCHS} or 'torchvision:NAME', got {arch!r}")


@dataclass
class Trunk:
    """A network without its classifier: ``body`` with the classifier module at ``head``
    (a dotted module path in ``body``) still of the placeholder size, to be replaced."""

    body: nn.Module
    head: str

    def head_module(self) -> nn.Module:
        """The classifier module at ``head``."""
        return self.body.get_submodule(self.head)

    def trunk_state(self) -> dict[str, torch.Tensor]:
        """The body's state without the classifier's entries (the keys a backbone file fills)."""
        prefix = self.head + "."
        return {k: v for k, v in self.body.state_dict().items() if not k.startswith(prefix)}

    def attach_head(self, num_classes: int) -> nn.Module:
        """Replace the classifier by a freshly drawn one with ``num_classes`` outputs; returns the body."""
        old = self.head_module()
        if isinstance(old, nn.Linear):
            new: nn.Module = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
        elif isinstance(old, nn.Conv2d):
            new = nn.Conv2d(old.in_channels, num_classes, old.kernel_size, old.stride, old.padding,
                            bias=old.bias is not None)
        else:  # _find_head only returns the two types above
            raise TypeError(f"classifier {self.head} is a {type(old).__name__}")
        parent, _, name = self.head.rpartition(".")
        setattr(self.body.get_submodule(parent) if parent else self.body, name, new)
        return self.body


def resnet18_trunk(in_channels: int = 3, image_size: int = 224) -> Trunk:
    """torchvision ResNet-18 from scratch, classifier ``fc`` still of the placeholder size.

    For ``image_size <= 64`` the stem is a 3x3 stride-1 convolution without max-pooling (the usual
    CIFAR adaptation: the 7x7/2 stem and pool would shrink a 32-px face to 8 px before the first
    block). ``in_channels`` sets the first convolution's input channels (1 for grey faces). A
    replaced stem is initialised as torchvision initialises its convolutions.
    """
    from torchvision.models import resnet18 as tv_resnet18

    m = tv_resnet18(weights=None, num_classes=_TRUNK_CLASSES)
    if image_size <= 64:
        m.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        m.maxpool = nn.Identity()
    elif in_channels != 3:
        m.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    if image_size <= 64 or in_channels != 3:
        nn.init.kaiming_normal_(m.conv1.weight, mode="fan_out", nonlinearity="relu")
    return Trunk(m, "fc")


def small_cnn_trunk(in_channels: int = 3, width: int = 32) -> Trunk:
    """A 4-block conv net for CPU runs: conv-BN-ReLU blocks of width w, 2w, 4w, 4w, max-pooling
    after the first three, global average pooling and a linear layer (the classifier).

    Pooling from the first block on keeps the cost low (about 13 M multiply-adds for a 32-px
    RGB image at ``width=32``), since the attack runs the network 2S + 1 times per sample.
    """
    w = width

    def block(cin: int, cout: int, pool: bool) -> list[nn.Module]:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                                   nn.ReLU(inplace=True)]
        return layers + ([nn.MaxPool2d(2)] if pool else [])

    layers = [*block(in_channels, w, True), *block(w, 2 * w, True), *block(2 * w, 4 * w, True),
              *block(4 * w, 4 * w, False), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    # The placeholder lives on the meta device: it draws nothing, so the classifier that replaces
    # it takes the same draws as when the net was built in one piece.
    placeholder = nn.Linear(4 * w, _TRUNK_CLASSES, device="meta")
    return Trunk(nn.Sequential(*layers, placeholder), str(len(layers)))


def torchvision_trunk(name: str, in_channels: int = 3) -> Trunk:
    """Any torchvision classification architecture ``name`` from scratch (no weights).

    The classifier is found as the one layer whose output width is the placeholder class count.
    The net takes 3-channel images (:class:`ArchFactory` repeats grey ones).
    """
    import torchvision.models

    check_arch(TORCHVISION + name)
    if in_channels not in (1, 3):
        raise ValueError(f"arch torchvision:{name} takes 1- or 3-channel images, got {in_channels} channels")
    kwargs = {"aux_logits": False, "init_weights": True} if name in _NO_AUX else {}
    net = torchvision.models.get_model(name, weights=None, num_classes=_TRUNK_CLASSES, **kwargs)
    return Trunk(net, _find_head(net, name))


def _find_head(net: nn.Module, name: str) -> str:
    found = [n for n, m in net.named_modules()
             if (isinstance(m, nn.Linear) and m.out_features == _TRUNK_CLASSES)
             or (isinstance(m, nn.Conv2d) and m.out_channels == _TRUNK_CLASSES)]
    if len(found) != 1:
        raise ValueError(f"arch torchvision:{name}: cannot tell its classifier layer (candidates {found})")
    return found[0]


def resnet18(num_classes: int, in_channels: int = 3, image_size: int = 224) -> nn.Module:
    """torchvision ResNet-18 from scratch with ``num_classes`` outputs (see :func:`resnet18_trunk`)."""
    return resnet18_trunk(in_channels, image_size).attach_head(num_classes)


def small_cnn(num_classes: int, in_channels: int = 3, width: int = 32) -> nn.Module:
    """The small CNN with ``num_classes`` outputs (see :func:`small_cnn_trunk`)."""
    return small_cnn_trunk(in_channels, width).attach_head(num_classes)


class ArchFactory:
    """``make_model(num_classes)`` for a named architecture with input normalisation.

    Each call builds the trunk from the current random state, loads the pretrained backbone
    into it (when given), then draws the classifier: seeded the same way, two calls give the
    same trunk weights whatever their class counts.

    Args:
        arch: ``"resnet18"``, ``"small_cnn"`` or ``"torchvision:NAME"``.
        in_channels: image channels (1 or 3).
        image_size: input side in pixels (selects the ResNet stem).
        mean, std: per-channel normalisation constants in [0, 1] pixel units (length in_channels).
        width: base width of ``small_cnn``.
        backbone: pretrained trunk weights (:class:`~.pretrained.Backbone`), or None.
    """

    def __init__(self, arch: str, in_channels: int, image_size: int, mean: Sequence[float], std: Sequence[float],
                 width: int = 32, backbone: Backbone | None = None):
        check_arch(arch)
        if len(mean) != in_channels:
            raise ValueError(f"mean has {len(mean)} values for in_channels={in_channels}")
        self.arch, self.in_channels, self.image_size, self.width = arch, in_channels, image_size, width
        self.mean, self.std = list(mean), list(std)
        self.backbone = backbone

    def trunk(self) -> Trunk:
        """A freshly initialised trunk (random draws from the current state of torch's RNG)."""
        if self.arch == "resnet18":
            return resnet18_trunk(self.in_channels, self.image_size)
        if self.arch == "small_cnn":
            return small_cnn_trunk(self.in_channels, self.width)
        return torchvision_trunk(self.arch[len(TORCHVISION):], self.in_channels)

    def pretrained_summary(self) -> dict[str, Any]:
        """What the backbone fills in this architecture (:meth:`~.pretrained.Backbone.summary`).

        Raises:
            ValueError: the factory has no backbone.
            PretrainedError: the backbone does not fit (see :meth:`~.pretrained.Backbone.match`).
        """
        if self.backbone is None:
            raise ValueError("this factory has no pretrained backbone")
        with torch.random.fork_rng(devices=[]):  # a trial trunk, leaving the caller's random state alone
            trunk = self.trunk()
        return self.backbone.summary(self.backbone.match(trunk))

    def __call__(self, num_classes: int) -> nn.Module:
        trunk = self.trunk()
        if self.backbone is not None:
            self.backbone.load_into(trunk)
        # torchvision's nets take 3 channels: grey images are repeated after normalisation.
        channels = 3 if self.arch.startswith(TORCHVISION) else None
        return nn.Sequential(Normalize(self.mean, self.std, channels), trunk.attach_head(num_classes))


def model_factory(arch: str, in_channels: int, image_size: int, mean: Sequence[float],
                  std: Sequence[float], width: int = 32, backbone: Backbone | None = None) -> ArchFactory:
    """A ``make_model(num_classes)`` for a named architecture (see :class:`ArchFactory`)."""
    return ArchFactory(arch, in_channels, image_size, mean, std, width, backbone)
