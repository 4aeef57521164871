"""Load the trained model ``gaave scan --model`` attacks.

Three kinds of checkpoint are accepted:

* a ``torch.export`` program (``torch.export.save``, usually ``.pt2``) with a dynamic batch
  dimension: self-contained, any architecture;
* a TorchScript archive (``torch.jit.save``): the same, for older code;
* a ``model.pt`` state dict written by ``gaave run`` (e.g. ``RUN/final_gaave/model.pt``): the
  architecture and input normalisation are rebuilt from the run folder's ``config.yaml`` and
  ``split/split.json``, found in the checkpoint's folder or the ones above it.

Both take images in [0, 1] unless ``--mean``/``--std`` say otherwise.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from gaave_fast.pipeline import PipelineConfig, RunStore, model_factory

from .common import CliError


@dataclass
class LoadedModel:
    """A model ready to scan.

    Attributes:
        model: the network in eval mode. source: ``"export"``, ``"torchscript"`` or ``"run"``.
        image_size: the input side it was trained on, when known (run checkpoints).
        run_dir: the run folder of a run checkpoint.
    """

    model: nn.Module
    source: str
    image_size: int | None = None
    run_dir: Path | None = None


def load_checkpoint(path: Path) -> LoadedModel:
    """Load an exported program, a TorchScript archive or a ``gaave run`` state dict (module docstring).

    Raises:
        CliError: a missing file, or a state dict without its run folder.
    """
    path = Path(path)
    if not path.is_file():
        raise CliError(f"model checkpoint not found: {path}")
    kind = _archive_kind(path)
    if kind == "export":
        return LoadedModel(FrozenMode(torch.export.load(path).module()), "export")
    if kind == "torchscript":
        return LoadedModel(torch.jit.load(str(path), map_location="cpu").eval(), "torchscript")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickles with code, foreign formats: tell the user what works
        raise CliError(f"{path} is no exported program, TorchScript archive or state dict ({type(err).__name__}); "
                       "save your model with torch.export.save") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CliError(f"{path} holds no state dict of tensors; save your model with torch.export.save")
    store = next((RunStore(d) for d in path.resolve().parents if RunStore(d).holds_run()), None)
    if store is None:
        raise CliError(f"{path} is a state dict outside a gaave run folder, so its architecture is unknown; "
                       "save the model with torch.export.save, or pass a model.pt from a 'gaave run' folder")
    run_dir = store.root
    cfg = PipelineConfig.load(store.file("config"))
    norm = store.load_split().info.get("normalization")
    if norm is None:
        raise CliError(f"{run_dir} was trained with a custom model factory; save its model with torch.export.save")
    make = model_factory(cfg.arch, norm["in_channels"], norm["image_size"], norm["mean"], norm["std"], cfg.width)
    model = make(_num_outputs(state, path))
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CliError(f"{path} does not fit the {cfg.arch} of {run_dir}: {str(err).splitlines()[0]}") from None
    return LoadedModel(model.eval(), "run", int(norm["image_size"]), run_dir)


class FrozenMode(nn.Module):
    """Wraps the module of an exported program, whose train/eval behaviour was fixed when it was
    exported: ``eval()`` and ``train()`` (which the scan calls) only set this wrapper's flag, as
    the inner graph refuses mode switches."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def train(self, mode: bool = True) -> FrozenMode:
        """Record the mode without touching the exported graph."""
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The exported program's output."""
        return self.inner(x)


@torch.no_grad()
def num_outputs(model: nn.Module, image: torch.Tensor) -> int:
    """The number of classes the model predicts (its output width on one image)."""
    return int(model(image[None].float()).shape[-1])


def _num_outputs(state: dict[str, torch.Tensor], path: Path) -> int:
    # The last 2-D weight is the classifier's [classes, features] matrix in every pipeline architecture.
    mats = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
    if not mats:
        raise CliError(f"{path}: no linear classifier weight in the state dict")
    return int(mats[-1].shape[0])


def _archive_kind(path: Path) -> str:
    # All three are zip files with one top folder; what sits in it tells them apart.
    if not zipfile.is_zipfile(path):
        return "other"
    with zipfile.ZipFile(path) as z:
        inner = [n.split("/", 1)[-1] for n in z.namelist()]
    if "archive_format" in inner:
        return "export"
    if any(n.startswith("code/") for n in inner):
        return "torchscript"
    return "state_dict"
