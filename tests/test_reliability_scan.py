"""Reliability of gaave_fast.scan: checkpoints of other data, non-finite logits, module modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reliability_fixtures import SCAN, TinyImages, one_thread, tiny_model
from torch.utils.data import DataLoader

from gaave_fast.scan import scan

__all__ = ["one_thread"]  # the autouse fixture


def _loader(data: TinyImages, batch_size: int = 4) -> DataLoader:
    return DataLoader(data, batch_size=batch_size)


def test_checkpoint_of_other_labels_same_size_is_refused(tmp_path):
    ckpt = tmp_path / "scan.npz"
    scan(tiny_model(), _loader(TinyImages(seed=0)), checkpoint=ckpt, **SCAN)
    with pytest.raises(ValueError, match="different scan .*data"):
        scan(tiny_model(), _loader(TinyImages(seed=1)), checkpoint=ckpt, **SCAN)


def test_checkpoint_of_other_images_is_refused_without_dataset_labels(tmp_path):
    # Same size and labels, other pixels; the dataset has no .labels to hash, so the per-sample
    # image checksums must catch it.
    ckpt = tmp_path / "scan.npz"
    first = TinyImages(seed=0, with_labels=False)
    scan(tiny_model(), _loader(first), checkpoint=ckpt, **SCAN)
    other = TinyImages(seed=1, with_labels=False, labels=first._labels)
    with pytest.raises(ValueError, match=r"other data: batch 0, dataset index 0 has another image"):
        scan(tiny_model(), _loader(other), checkpoint=ckpt, **SCAN)


def test_checkpoint_of_other_labels_is_refused_without_dataset_labels(tmp_path):
    ckpt = tmp_path / "scan.npz"
    first = TinyImages(seed=0, with_labels=False)
    scan(tiny_model(), _loader(first), checkpoint=ckpt, **SCAN)
    relabeled = TinyImages(seed=0, with_labels=False, labels=(first._labels + 1) % 3)
    with pytest.raises(ValueError, match="other data: .*has another label"):
        scan(tiny_model(), _loader(relabeled), checkpoint=ckpt, **SCAN)


def test_checkpoint_of_the_same_data_still_resumes(tmp_path):
    ckpt = tmp_path / "scan.npz"
    data = TinyImages(seed=0, with_labels=False)
    first = scan(tiny_model(), _loader(data), checkpoint=ckpt, **SCAN)
    # Another batch size regroups the images: the checksums must still match.
    again = scan(tiny_model(), _loader(data, batch_size=5), checkpoint=ckpt, **SCAN)
    np.testing.assert_array_equal(first.k, again.k)


class _NanForBright(torch.nn.Module):
    """Logits of a tiny model, NaN for images whose first pixel is above 0.9."""

    def __init__(self):
        super().__init__()
        self.inner = tiny_model()

    def forward(self, x):
        logits = self.inner(x)
        return torch.where((x[:, 0, 0, 0] > 0.9)[:, None], torch.full_like(logits, float("nan")), logits)


def test_nan_logits_stop_the_scan_naming_batch_and_index():
    data = TinyImages(seed=0)
    data.images[6, 0, 0, 0] = 0.95  # dataset index 6: batch 1 with batches of 4
    with pytest.raises(ValueError, match=r"batch 1: the model's logits for dataset index 6 are NaN or Inf"):
        scan(_NanForBright(), _loader(data), **SCAN)


def test_every_submodule_mode_is_restored():
    model = tiny_model().train()
    model[1].eval()  # BatchNorm frozen on purpose (fine-tuning style)
    scan(model, _loader(TinyImages()), **SCAN)
    assert model.training and model[0].training and not model[1].training


def test_cli_refuses_a_checkpoint_of_other_data_in_one_line(tmp_path, capsys):
    from reliability_fixtures import export_model, image_folder

    from gaave_fast.cli import main

    model = export_model(tiny_model(), tmp_path / "m.pt2")
    first = image_folder(tmp_path / "a", per_class=2, classes=("x", "y", "z"))
    other = image_folder(tmp_path / "b", per_class=2, classes=("x", "y", "z"))
    (other / "x" / "0.png").write_bytes((first / "y" / "1.png").read_bytes())  # same size, other pixels
    args = ["--model", str(model), "--image-size", "8", "--steps", "1", "--device", "cpu", "--no-progress",
            "--checkpoint", str(tmp_path / "ck.npz")]
    assert main(["scan", f"folder:{first}", "--out", str(tmp_path / "a.csv"), *args]) == 0
    code = main(["scan", f"folder:{other}", "--out", str(tmp_path / "b.csv"), *args])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("gaave scan: error: checkpoint ") and err.count("\n") == 1, err
    assert "written by a different scan" in err or "other data" in err
