"""Load the trained model ``gaave scan --model`` attacks.

By default nothing is loaded in a way that runs code from the file:

* a ``torch.export`` program (``torch.export.save``, usually ``.pt2``) with a dynamic batch
  dimension: self-contained, any architecture; read by :mod:`.safe_export` (no unpickling);
* a ``model.pt`` state dict written by ``gaave run`` (e.g. ``RUN/final_gaave/model.pt``): the
  architecture and input normalisation are rebuilt from the run folder's ``config.yaml`` and
  ``split/split.json``, found in the checkpoint's folder or the ones above it; read with
  ``torch.load(weights_only=True)``.

With ``trust=True`` (``--trust-model``) also: TorchScript archives (``torch.jit.save``), whole
pickled models (``torch.save(model)``) and ``.pt2`` archives the safe reader refuses (pickled
weights, custom objects), loaded with torch's own loaders, which run code from the file.

All take images in [0, 1] unless ``--mean``/``--std`` say otherwise.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from gaave_fast.pipeline import PipelineConfig, RunStore, model_factory

from .common import CliError, one_line
from .safe_export import UnsafeArchiveError, load_exported_module

TRUST_HINT = ("re-run with --trust-model only if you trust the file (loading it can run any code it holds), or save "
              "the model with torch.export.save")


@dataclass
class LoadedModel:
    """A model ready to scan.

    Attributes:
        model: the network in eval mode. source: ``"export"``, ``"torchscript"``, ``"pickle"`` or ``"run"``.
        image_size: the input side it was trained on, when known (run checkpoints).
        run_dir: the run folder of a run checkpoint.
    """

    model: nn.Module
    source: str
    image_size: int | None = None
    run_dir: Path | None = None


def load_checkpoint(path: Path, trust: bool = False) -> LoadedModel:
    """Load an exported program, a ``gaave run`` state dict, or with ``trust`` code-carrying formats (module docstring).

    Raises:
        CliError: a missing, corrupt or unsupported file, a format that needs ``trust``, or a
            state dict without its run folder.
    """
    path = Path(path)
    if not path.is_file():
        raise CliError(f"model checkpoint not found: {path}")
    kind = _archive_kind(path)
    if kind == "export":
        return LoadedModel(FrozenMode(_load_export(path, trust)), "export")
    if kind == "torchscript":
        if not trust:
            raise CliError(f"{path} is a TorchScript archive, whose loading runs code from the file; {TRUST_HINT}")
        try:
            return LoadedModel(torch.jit.load(str(path), map_location="cpu").eval(), "torchscript")
        except Exception as err:  # corrupt archives raise RuntimeError, ValueError, ...  # noqa: BLE001
            raise CliError(f"{path}: TorchScript archive does not load ({type(err).__name__}: {one_line(err)})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickles with code, foreign formats: tell the user what works  # noqa: BLE001
        if not trust:
            raise CliError(f"{path} is no exported program or state dict of tensors ({type(err).__name__}); "
                           f"if it is a pickled model, {TRUST_HINT}") from None
        state = _load_pickle(path)
    if trust and isinstance(state, nn.Module):
        return LoadedModel(state.eval(), "pickle")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CliError(f"{path} holds no state dict of tensors; save your model with torch.export.save")
    store = next((RunStore(d) for d in path.resolve().parents if RunStore(d).holds_run()), None)
    if store is None:
        raise CliError(f"{path} is a state dict outside a gaave run folder, so its architecture is unknown; "
                       "save the model with torch.export.save, or pass a model.pt from a 'gaave run' folder")
    run_dir = store.root
    try:
        cfg = PipelineConfig.load(store.file("config"))
        norm = store.load_split().info.get("normalization")
    except Exception as err:  # YAML/JSON errors, unknown keys, a missing split: the run folder is damaged  # noqa: BLE001
        raise CliError(f"run folder {run_dir} of {path} is damaged ({type(err).__name__}: {one_line(err)}); "
                       "re-run 'gaave run' there to repair it") from None
    if norm is None:
        raise CliError(f"{run_dir} was trained with a custom model factory; save its model with torch.export.save")
    make = model_factory(cfg.arch, norm["in_channels"], norm["image_size"], norm["mean"], norm["std"], cfg.width)
    model = make(_num_outputs(state, f"1.{make.trunk().head}.weight", path))
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CliError(f"{path} does not fit the {cfg.arch} of {run_dir}: {one_line(err)}") from None
    return LoadedModel(model.eval(), "run", int(norm["image_size"]), run_dir)


def _load_export(path: Path, trust: bool) -> nn.Module:
    try:
        return load_exported_module(path)
    except UnsafeArchiveError as err:
        if not trust:
            raise CliError(f"{one_line(err)}; {TRUST_HINT}") from None
    except Exception as err:  # a graph torch cannot rebuild: the trusted loader would fail alike  # noqa: BLE001
        raise CliError(f"{path}: exported program does not load ({type(err).__name__}: {one_line(err)})") from None
    try:
        return torch.export.load(path).module()
    except Exception as err:  # corrupt or incompatible archives raise many types  # noqa: BLE001
        raise CliError(f"{path}: exported program does not load ({type(err).__name__}: {one_line(err)})") from None


def _load_pickle(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # whatever the pickle raises  # noqa: BLE001
        raise CliError(f"{path} does not load as a pickle ({type(err).__name__}: {one_line(err)})") from None


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
    """The number of classes the model predicts (its output width on one image, checked on three).

    Raises:
        CliError: the model returns something else than float logits [N, K] (a tuple, a vector).
        Exception: the model's own error on these inputs (wrong channels, a fixed batch size).
    """
    widths = []
    for n in (1, 3):
        out = model(image[None].float().expand(n, *image.shape))
        if not isinstance(out, torch.Tensor):
            raise CliError(f"the model returns a {type(out).__name__}; it must return one logits tensor [N, K]")
        if out.dim() != 2 or out.shape[0] != n or not out.is_floating_point():
            raise CliError(f"the model must return float logits [N, K]; on {n} images it returns "
                           f"{out.dtype} of shape {list(out.shape)}")
        widths.append(int(out.shape[1]))
    return widths[0]


def _num_outputs(state: dict[str, torch.Tensor], key: str, path: Path) -> int:
    # The classifier's weight (linear [classes, features] or 1x1 conv [classes, features, 1, 1]).
    if key not in state:
        raise CliError(f"{path}: no classifier weight {key!r} in the state dict")
    return int(state[key].shape[0])


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
