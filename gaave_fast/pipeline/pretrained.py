"""Pretrained backbones: a user's state dict file loaded into the trunk of every model of a run.

The file is what FER code bases distribute (e.g. a ResNet-18 trained on MS-Celeb-1M): a
``torch.save``'d state dict, possibly inside ``{"state_dict": ...}`` or ``{"model": ...}``,
with keys that may carry the ``module.`` (DataParallel), ``backbone.`` or ``model.`` prefixes.
It is read with ``torch.load(..., weights_only=True)`` (no code runs). Keys are matched with
those prefixes stripped; the file's classifier is never used (each model gets its own head).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .models import Trunk

PREFIXES = ("module.", "backbone.", "model.")
"""Key prefixes stripped (repeatedly, in any order) before matching."""
WRAPPERS = ("state_dict", "model", "model_state_dict", "net", "backbone")
"""Keys of a checkpoint dict that hold the state dict, tried in this order."""


class PretrainedError(ValueError):
    """The pretrained file cannot be read or does not fit the architecture (one line)."""


@dataclass
class Backbone:
    """The tensors of a pretrained file, keyed as the trunk's state dict names them.

    Attributes:
        path: the file.
        state: tensors by stripped key, in the file's order.
        sha1: SHA-1 of the file's bytes.
    """

    path: Path
    state: dict[str, torch.Tensor]
    sha1: str

    @classmethod
    def read(cls, path: str | Path) -> Backbone:
        """Read and unwrap a pretrained file.

        Raises:
            PretrainedError: missing file, not loadable with ``weights_only``, or no dict of tensors.
        """
        path = Path(path)
        if not path.is_file():
            raise PretrainedError(f"pretrained file not found: {path}")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # pickles with code, foreign formats: one line says which  # noqa: BLE001
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise PretrainedError(f"pretrained file {path} cannot be read as a state dict with weights_only=True "
                                  f"({type(err).__name__}: {first[:200]})") from None
        state = _unwrap(obj, path)
        return cls(path, _strip(state), hashlib.sha1(path.read_bytes()).hexdigest())

    def match(self, trunk: Trunk) -> dict[str, Any]:
        """Which of the file's tensors go where in ``trunk``.

        Returns:
            ``{"loaded": [key], "skipped": [key], "missing": [key], "adapted": [key]}``: keys
            loaded into the trunk; keys of the file not used (its classifier, layers the trunk
            lacks); trunk keys the file lacks (they keep their seeded initialisation); loaded
            3-channel first convolutions summed over their input channels for 1-channel images.

        Raises:
            PretrainedError: a matched key of another shape (the first one in file order), or
                no key of the file matches the trunk.
        """
        want = trunk.trunk_state()
        head = trunk.head + "."
        loaded, skipped, adapted = [], [], []
        for key, value in self.state.items():
            if key not in want:
                skipped.append(key)
                continue
            target = want[key]
            if tuple(value.shape) != tuple(target.shape):
                if not _grey_stem(value, target):
                    raise PretrainedError(f"pretrained file {self.path}: key {key!r} has shape {tuple(value.shape)}, "
                                          f"the model's has {tuple(target.shape)}")
                adapted.append(key)
            loaded.append(key)
        if not loaded:
            first = next(iter(self.state), None)
            model_first = next(iter(want), None)
            raise PretrainedError(f"pretrained file {self.path}: no key matches the model (first key {first!r}, "
                                  f"the model's first {model_first!r}; prefixes {', '.join(PREFIXES)} are stripped)")
        missing = [k for k in want if k not in self.state]
        # The classifier's keys are left out on purpose: list them first among the skipped.
        skipped.sort(key=lambda k: not k.startswith(head))
        return {"loaded": loaded, "skipped": skipped, "missing": missing, "adapted": adapted}

    def load_into(self, trunk: Trunk) -> dict[str, Any]:
        """Copy the matching tensors into ``trunk`` (see :meth:`match`); returns the match."""
        report = self.match(trunk)
        want = trunk.trunk_state()
        values = {}
        for key in report["loaded"]:
            value = self.state[key]
            if key in report["adapted"]:
                value = value.sum(dim=1, keepdim=True)
            values[key] = value.to(want[key].dtype)
        trunk.body.load_state_dict(values, strict=False)
        return report

    def summary(self, report: dict[str, Any]) -> dict[str, Any]:
        """pretrained.json: the file, its SHA-1, counts and the key lists of :meth:`match`."""
        return {"path": str(self.path), "sha1": self.sha1, "num_loaded": len(report["loaded"]),
                "num_skipped": len(report["skipped"]), "num_missing": len(report["missing"]), **report}


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    # Descend into {"state_dict": ...}-style wrappers until a dict of tensors is reached.
    while isinstance(obj, dict) and not _is_state(obj):
        inner = next((obj[k] for k in WRAPPERS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            keys = ", ".join(map(repr, list(obj)[:5]))
            raise PretrainedError(f"pretrained file {path} holds no state dict of tensors (top-level keys {keys}; "
                                  f"a wrapped one is looked for under {', '.join(WRAPPERS)})")
        obj = inner
    if not isinstance(obj, dict):
        raise PretrainedError(f"pretrained file {path} holds a {type(obj).__name__}, not a state dict")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _is_state(d: dict) -> bool:
    # A state dict maps names to tensors (optimizer state, epochs and the like may sit beside it).
    return bool(d) and all(isinstance(v, torch.Tensor) for v in d.values())


def _strip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    # A gaave_fast pipeline model: Normalize's buffers first ("0."), the network under "1.".
    pipeline = "0.mean" in state and "0.std" in state
    for key, value in state.items():
        if pipeline:
            if key.startswith("0."):
                continue
            key = key[2:]
        stripped = True
        while stripped:
            stripped = False
            for p in PREFIXES:
                if key.startswith(p):
                    key, stripped = key[len(p):], True
        out[key] = value
    return out


def _grey_stem(value: torch.Tensor, target: torch.Tensor) -> bool:
    # A 3-channel first convolution on a 1-channel model: summing over the input channels gives
    # exactly the responses to the grey image repeated on three channels.
    return (value.dim() == 4 and target.dim() == 4 and value.shape[1] == 3 and target.shape[1] == 1
            and value.shape[0] == target.shape[0] and value.shape[2:] == target.shape[2:])
