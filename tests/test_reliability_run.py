"""Reliability of `gaave run`, `report`, `validate` and the argument checks: one-line errors, no lost work."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch
from reliability_fixtures import (
    TINY_RUN,
    TinyImages,
    corrupt_pixels,
    export_model,
    image_folder,
    one_thread,
    tiny_model,
)

from gaave_fast.cli import main
from gaave_fast.data import DatasetFormatError, read_rafdb
from gaave_fast.pipeline.train import TrainConfig, fit

__all__ = ["one_thread"]  # the autouse fixture


def one_line_error(capsys, code: int, command: str, *fragments: str) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith(f"gaave {command}: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and "np.int64" not in err and "np.float64" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.fixture
def faces(tmp_path):
    return image_folder(tmp_path / "faces", per_class=4, classes=("a", "b", "c"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run: (dataset folder, run folder)."""
    root = tmp_path_factory.mktemp("finished")
    faces = image_folder(root / "faces", per_class=4, classes=("a", "b", "c"))
    torch.set_num_threads(1)
    assert main(["run", f"folder:{faces}", "--out", str(root / "run"), *TINY_RUN]) == 0
    return faces, root / "run"


# --- unreadable files during training ---------------------------------------------------------


@pytest.mark.parametrize("check", ["quick", "none"])
def test_run_skips_and_records_a_file_its_check_missed(faces, tmp_path, check, capsys):
    corrupt_pixels(faces / "b" / "1.png")
    out = tmp_path / "run"
    assert main(["run", f"folder:{faces}", "--out", str(out), "--check", check, *TINY_RUN]) == 0, capsys.readouterr()
    excluded = pd.read_csv(out / "excluded.csv")
    assert excluded["path"].tolist() == [str(faces / "b" / "1.png")]
    assert excluded["problem"][0].startswith("unreadable during the run: ")
    assert len(pd.read_csv(out / "samples.csv")) == 11
    changes = pd.read_csv(out / "cleaned" / "changes.csv", keep_default_na=False)
    row = changes[changes["path"] == str(faces / "b" / "1.png")].iloc[0]
    assert row["old_label"] == "b" and row["status"].startswith("excluded: ")


def test_another_check_level_recomputes_the_excluded_files(faces, tmp_path, capsys):
    corrupt_pixels(faces / "b" / "1.png")
    out = tmp_path / "run"
    assert main(["run", f"folder:{faces}", "--out", str(out), "--check", "none", *TINY_RUN]) == 0
    (faces / "c" / "2.png").write_bytes(b"")  # broken between the sessions: only a new check sees it
    assert main(["run", f"folder:{faces}", "--out", str(out), "--check", "full", *TINY_RUN]) == 0
    excluded = pd.read_csv(out / "excluded.csv")
    assert excluded["path"].tolist() == [str(faces / "b" / "1.png"), str(faces / "c" / "2.png")]
    assert excluded["problem"].tolist()[1] == "empty file"
    assert len(pd.read_csv(out / "samples.csv")) == 10


def test_lone_last_sample_joins_the_batch_before_it():
    data = TinyImages(n=5)  # batches of 4: the fifth sample alone would break BatchNorm1d's training
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(),
                                torch.nn.Linear(8, 3))
    result = fit(model, data, data.labels.numpy(), TrainConfig(epochs=1, batch_size=4, progress=False),
                 seed=0, device="cpu")
    assert np.isfinite(result.history[0]["loss"])


# --- data the method cannot use -----------------------------------------------------------------


def test_single_class_and_single_sample_datasets(tmp_path, capsys):
    one = image_folder(tmp_path / "one", per_class=3, classes=("a",))
    one_line_error(capsys, main(["run", f"folder:{one}", "--out", str(tmp_path / "o1"), *TINY_RUN]), "run",
                   "at least two classes")
    single = image_folder(tmp_path / "single", per_class=1, classes=("a",))
    one_line_error(capsys, main(["run", f"folder:{single}", "--out", str(tmp_path / "o2"), *TINY_RUN]), "run",
                   "at least two classes")
    # One sample per class: the method runs out of data somewhere; it must say so in one line.
    for k, classes in enumerate((("a", "b"), ("a", "b", "c"))):
        tiny = image_folder(tmp_path / f"tiny{k}", per_class=1, classes=classes)
        err = one_line_error(capsys, main(["run", f"folder:{tiny}", "--out", str(tmp_path / f"t{k}"), *TINY_RUN]),
                             "run")
        assert "too high for this data" in err or "too small for this model" in err


def test_head_classes_naming_every_class(faces, tmp_path, capsys):
    code = main(["run", f"folder:{faces}", "--out", str(tmp_path / "o"), "--head-classes", "a,b,c", *TINY_RUN])
    one_line_error(capsys, code, "run", "--head-classes names every class")


# --- argument values -------------------------------------------------------------------------


@pytest.mark.parametrize("flags,fragment", [
    (["--lr", "nan"], "--lr"), (["--tau", "nan"], "--tau"), (["--tau-head", "inf"], "--tau-head"),
    (["--image-size", "1"], "--image-size"), (["--device", "foo"], "--device 'foo'"),
])
def test_bad_run_values(faces, tmp_path, capsys, flags, fragment):
    code = main(["run", f"folder:{faces}", "--out", str(tmp_path / "o"), *TINY_RUN, *flags])
    err = capsys.readouterr().err
    assert code == 2 and fragment in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_bad_device_in_a_config_file(faces, tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("device: foo\n")
    code = main(["run", f"folder:{faces}", "--out", str(tmp_path / "o"), "--config", str(tmp_path / "c.yaml")])
    one_line_error(capsys, code, "run", "'foo' is not a device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu(faces, tmp_path, capsys):
    code = main(["run", f"folder:{faces}", "--out", str(tmp_path / "o"), *TINY_RUN, "--device", "cuda"])
    one_line_error(capsys, code, "run", "no CUDA GPU")
    code = main(["scan", f"folder:{faces}", "--model", "x.pt2", "--device", "cuda:0"])
    one_line_error(capsys, code, "scan", "no CUDA GPU")


def test_bad_scan_values(faces, tmp_path, capsys):
    model = export_model(tiny_model(), tmp_path / "m.pt2")
    base = ["scan", f"folder:{faces}", "--model", str(model), "--image-size", "8", "--no-progress"]
    for flags, fragment in ((["--tau", "nan"], "--tau"), (["--device", "foo"], "--device"),
                            (["--image-size", "1"], "--image-size")):
        code = main([*base, "--out", str(tmp_path / "s.csv"), *flags])
        err = capsys.readouterr().err
        assert code == 2 and fragment in err and err.count("\n") == 1, err


# --- output folders --------------------------------------------------------------------------


def test_out_that_is_a_file(faces, finished, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    one_line_error(capsys, main(["run", f"folder:{faces}", "--out", str(blocker), *TINY_RUN]), "run",
                   "is a file")
    model = export_model(tiny_model(), tmp_path / "m.pt2")
    code = main(["scan", f"folder:{faces}", "--model", str(model), "--out", str(blocker / "s.csv"), "--image-size", "8"])
    one_line_error(capsys, code, "scan", "cannot create")
    one_line_error(capsys, main(["report", str(finished[1]), "--out", str(blocker)]), "report", "is a file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_out_that_is_not_writable(faces, finished, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        model = export_model(tiny_model(), tmp_path / "m.pt2")
        code = main(["scan", f"folder:{faces}", "--model", str(model), "--out", str(locked / "s.csv"),
                     "--image-size", "8"])
        one_line_error(capsys, code, "scan", "not writable")
        one_line_error(capsys, main(["run", f"folder:{faces}", "--out", str(locked), *TINY_RUN]), "run",
                       "not writable")
        one_line_error(capsys, main(["report", str(finished[1]), "--out", str(locked / "r")]), "report",
                       "cannot create")
    finally:
        locked.chmod(0o755)


# --- damaged run folders ---------------------------------------------------------------------


@pytest.mark.parametrize("name,command", [("metrics.json", "report"), ("config.yaml", "run"),
                                          ("config.yaml", "report"), ("run.json", "run")])
def test_damaged_run_files(finished, tmp_path, capsys, name, command):
    faces, run = finished
    copy = tmp_path / "run"
    import shutil

    shutil.copytree(run, copy)
    (copy / name).write_text("{ not: [valid")
    args = ["report", str(copy)] if command == "report" else ["run", f"folder:{faces}", "--out", str(copy), *TINY_RUN]
    one_line_error(capsys, main(args), command, name)


# --- label files and folders -----------------------------------------------------------------


def _rafdb(root, text: bytes):
    (root / "EmoLabel").mkdir(parents=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_bytes(text)
    return root


def test_rafdb_label_file_with_bom_or_utf16_is_read(tmp_path):
    lines = "train_00001.jpg 5\ntrain_00002.jpg 1\n"
    for k, data in enumerate((b"\xef\xbb\xbf" + lines.encode(), lines.encode("utf-16"))):
        dataset = read_rafdb(_rafdb(tmp_path / str(k), data), "train", image_size=8)
        assert dataset.labels.tolist() == [4, 0]


def test_rafdb_label_file_with_odd_digits_or_encoding_names_the_problem(tmp_path, capsys):
    with pytest.raises(DatasetFormatError, match=r"line 2: unknown label code '²'"):
        read_rafdb(_rafdb(tmp_path / "a", "train_00001.jpg 5\ntrain_00002.jpg ²\n".encode()), "train")
    root = _rafdb(tmp_path / "b", "train_00001.jpg 5 é\n".encode("latin-1"))
    with pytest.raises(DatasetFormatError, match="not UTF-8 text"):
        read_rafdb(root, "train")
    one_line_error(capsys, main(["validate", f"rafdb:{root}"]), "validate", "not UTF-8")


def test_broken_symlinks_are_reported(faces, capsys):
    (faces / "a" / "gone.png").symlink_to(faces / "a" / "nowhere.png")
    assert main(["validate", f"folder:{faces}", "--workers", "0"]) == 1
    out = capsys.readouterr().out
    assert "gone.png: missing file" in out and "13 samples checked" in out


def test_scan_counts_every_skipped_file(faces, tmp_path, capsys):
    corrupt_pixels(faces / "b" / "1.png")  # passes the scan's quick check, fails to decode
    (faces / "c" / "0.png").write_bytes(b"")  # found by the quick check
    model = export_model(tiny_model(), tmp_path / "m.pt2")
    code = main(["scan", f"folder:{faces}", "--model", str(model), "--out", str(tmp_path / "s.csv"), "--image-size",
                 "8", "--steps", "1", "--device", "cpu", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "10 samples scanned (2 broken files skipped)" in out, out
    assert "drop --image-size" not in out
