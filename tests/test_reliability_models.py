"""Reliability of model loading: no code from model files without --trust-model, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from reliability_fixtures import (
    SCAN,
    TinyImages,
    export_model,
    image_folder,
    one_thread,
    payload_bytes,
    rewrite_member,
    tiny_model,
)
from torch.utils.data import DataLoader

from gaave_fast.cli import CliError, main
from gaave_fast.cli.models import load_checkpoint
from gaave_fast.scan import scan

__all__ = ["one_thread"]  # the autouse fixture


@pytest.fixture
def evil_pt2(tmp_path):
    """A valid exported tiny model whose pickled sample inputs were replaced by a payload."""
    path = export_model(tiny_model(), tmp_path / "evil.pt2")
    marker = tmp_path / "payload-ran"
    rewrite_member(path, "sample_inputs/model.pt", lambda _: payload_bytes(marker))
    return path, marker


def test_crafted_pt2_runs_its_payload_with_torch_export_load(evil_pt2):
    # The threat is real: torch's own loader falls back to full unpickling of the sample inputs.
    path, marker = evil_pt2
    with pytest.raises(Exception):  # noqa: B017 -- whatever it raises after the payload ran
        torch.export.load(path)
    assert marker.exists()


def test_crafted_pt2_loads_without_running_code_and_scans_like_the_eager_model(evil_pt2):
    path, marker = evil_pt2
    loaded = load_checkpoint(path)
    assert not marker.exists()
    loader = DataLoader(TinyImages(), batch_size=5)
    eager = scan(tiny_model(), loader, backend="torch", **SCAN)
    exported = scan(loaded.model, loader, backend="torch", **SCAN)
    np.testing.assert_array_equal(exported.k, eager.k)
    np.testing.assert_allclose(exported.margin, eager.margin, rtol=1e-5, atol=1e-5)


def test_crafted_pt2_scans_from_the_command_line_without_running_code(evil_pt2, tmp_path, capsys):
    path, marker = evil_pt2
    data = image_folder(tmp_path / "faces", classes=("a", "b", "c"), per_class=2)
    code = main(["scan", f"folder:{data}", "--model", str(path), "--out", str(tmp_path / "s.csv"), "--image-size",
                 "8", "--steps", "2", "--device", "cpu", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert not marker.exists() and (tmp_path / "s.csv").exists()


def _edit_program(path, edit) -> None:
    def change(data: bytes) -> bytes:
        program = json.loads(data)
        edit(program)
        return json.dumps(program).encode()

    rewrite_member(path, "models/model.json", change)


def test_graph_calling_an_arbitrary_function_is_refused(tmp_path):
    path = export_model(tiny_model(), tmp_path / "m.pt2")

    def edit(program):
        program["graph_module"]["graph"]["nodes"][0]["target"] = "torch.save"

    _edit_program(path, edit)
    with pytest.raises(CliError, match="calls 'torch.save', which is not a registered operator.*--trust-model"):
        load_checkpoint(path)


def test_code_in_a_shape_expression_is_refused(tmp_path):
    path = export_model(tiny_model(), tmp_path / "m.pt2")
    marker = tmp_path / "ran"

    def edit(program):
        text = json.dumps(program)
        sym = text[text.index('"expr_str": "') + 13:].split('"', 1)[0]
        evil = f"__import__('pathlib').Path({str(marker)!r}).touch() or {sym}".replace("\\", "\\\\").replace('"', '\\"')
        program.clear()
        program.update(json.loads(text.replace(f'"expr_str": "{sym}"', f'"expr_str": "{evil}"', 1)))

    _edit_program(path, edit)
    with pytest.raises(CliError, match="shape expression .* not allowed"):
        load_checkpoint(path)
    assert not marker.exists()


def test_pickled_weights_need_trust(tmp_path):
    path = export_model(tiny_model(), tmp_path / "m.pt2")

    def change(data: bytes) -> bytes:
        config = json.loads(data)
        next(iter(config["config"].values()))["use_pickle"] = True
        return json.dumps(config).encode()

    rewrite_member(path, "model_weights_config.json", change)
    with pytest.raises(CliError, match="pickle.*--trust-model"):
        load_checkpoint(path)


def test_torchscript_and_pickled_models_load_only_with_trust(tmp_path):
    script = tmp_path / "m.ts"
    torch.jit.save(torch.jit.script(tiny_model()), script)
    pickled = tmp_path / "m.pkl"
    torch.save(tiny_model(), pickled)
    for path in (script, pickled):
        with pytest.raises(CliError, match="--trust-model"):
            load_checkpoint(path)
        model = load_checkpoint(path, trust=True).model
        x = torch.rand(2, 3, 8, 8)
        torch.testing.assert_close(model(x), tiny_model()(x))


def test_trust_model_is_documented_with_its_risk(capsys):
    assert main(["scan", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--trust-model" in text and "runs whatever code the file holds" in text


class _Tuple(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = tiny_model()

    def forward(self, x):
        return self.inner(x), x.mean()


class _Double(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = tiny_model()

    def forward(self, x):
        return self.inner(x).double()


@pytest.mark.parametrize("case,model,expected", [
    ("fixed batch", lambda p: export_model(tiny_model(), p, dynamic=False), "dynamic batch dimension"),
    ("1 channel", lambda p: export_model(tiny_model(channels=1), p, channels=1), "fails on one image"),
    ("tuple", lambda p: export_model(_Tuple().eval(), p), "returns a tuple"),
    ("corrupt", lambda p: p.write_bytes(b"PK\x03\x04 not really a zip"), "no exported program"),
])
def test_unusable_models_end_in_one_line_errors(tmp_path, capsys, case, model, expected):
    path = tmp_path / "m.pt2"
    model(path)
    data = image_folder(tmp_path / "faces", classes=("a", "b", "c"), per_class=1)
    code = main(["scan", f"folder:{data}", "--model", str(path), "--out", str(tmp_path / "s.csv"),
                 "--image-size", "8", "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("gaave scan: error: ") and expected in err and err.count("\n") == 1, err


def test_float64_logits_are_scanned(tmp_path, capsys):
    path = export_model(_Double().eval(), tmp_path / "m.pt2")
    data = image_folder(tmp_path / "faces", classes=("a", "b", "c"), per_class=1)
    code = main(["scan", f"folder:{data}", "--model", str(path), "--out", str(tmp_path / "s.csv"),
                 "--image-size", "8", "--steps", "2", "--device", "cpu", "--no-progress"])
    assert code == 0, capsys.readouterr().err
