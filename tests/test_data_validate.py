"""Broken input: missing, empty, truncated, corrupt files and bad boxes never end an epoch."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from fixtures_data import corrupt_scan, make_affectnet, truncate, write_affectnet_csv

from gaave_fast.data import dali_available, make_loader, read_affectnet, validate
from gaave_fast.data import validation as validate_module

needs_dali = pytest.mark.skipif(not dali_available(), reason="nvidia.dali is not importable")


@pytest.fixture()
def damaged(tmp_path):
    """An AffectNet fixture (8 classes: codes 0..7 kept) with one kind of damage per row.

    Returns (dataset, {dataset row: expected problem prefix}, row of the scan-corrupted file).
    """
    records = make_affectnet(tmp_path, n=30, seed=3)
    images = tmp_path / "Manually_Annotated_Images"
    kept = [i for i, r in enumerate(records) if r["code"] < 8]  # csv rows -> dataset rows by position
    pos = {csv_row: k for k, csv_row in enumerate(kept)}
    damage = {0: "missing file", 1: "empty file", 2: "truncated file", 3: "unreadable", 4: "bad box", 5: "bad box"}
    (images / records[0]["rel"]).unlink()
    (images / records[1]["rel"]).write_bytes(b"")
    truncate(images / records[2]["rel"])
    (images / records[3]["rel"]).write_bytes(np.random.default_rng(0).bytes(3000))  # not an image at all
    records[4]["box"] = (10, 10, 0, 20)  # zero width
    records[5]["box"] = (500, 10, 20, 20)  # right of a 128-pixel-wide image
    records[6]["box"] = (120, 80, 30, 30)  # sticks out: clipped, not a problem
    corrupt_scan(images / records[7]["rel"])
    write_affectnet_csv(tmp_path / "Manually_Annotated_file_lists" / "training.csv", records)
    data = read_affectnet(tmp_path, "train", 8, image_size=32)
    return data, {pos[r]: p for r, p in damage.items()}, pos[7]


def _problems(report):
    return {int(r.row): r.problem for r in report.itertuples()}


def test_validate_reports_each_broken_sample(damaged):
    data, expected, corrupt_row = damaged
    report = validate(data, workers=0, progress=False)
    assert list(report.columns) == ["row", "path", "problem"]
    found = _problems(report)
    assert set(found) == set(expected) | {corrupt_row}
    for row, prefix in expected.items():
        assert found[row].startswith(prefix), (row, found[row])
        assert report.set_index("row").at[row, "path"] == data.paths[row]
    quick = _problems(validate(data, workers=0, decode=False, progress=False))
    assert set(quick) == set(expected)  # corrupt pixel data needs the full decode


def test_validate_in_worker_processes_matches(damaged, monkeypatch):
    data, _, _ = damaged
    monkeypatch.setattr(validate_module, "MIN_POOL_TASKS", 0)
    assert _problems(validate(data, workers=2, progress=False)) == _problems(validate(data, workers=0, progress=False))


def test_torch_loader_excludes_and_skips_with_named_warnings(damaged):
    data, expected, corrupt_row = damaged
    with pytest.warns(UserWarning, match="excluding 6 samples") as caught:
        loader = make_loader(data, "torch", batch_size=4, workers=0)
    message = str(caught[0].message)
    assert all(data.paths[row] in message for row in expected)
    assert sorted(loader.excluded["row"]) == sorted(expected)
    with pytest.warns(UserWarning, match=rf"skipped 1 unreadable samples:\n  row {corrupt_row} "):
        seen = torch.cat([b["index"] for b in loader]).tolist()
    good = set(range(len(data))) - set(expected) - {corrupt_row}
    assert sorted(seen) == sorted(good)  # every other row, exactly once


@needs_dali
def test_dali_loader_survives_after_validation(damaged):
    data, expected, corrupt_row = damaged
    report = validate(data, workers=0, progress=False)
    with pytest.warns(UserWarning, match="excluding 7 samples"):
        loader = make_loader(data, "dali", batch_size=4, workers=1, device="cpu", exclude=report, check="none")
    seen = [i for b in loader for i in b["index"].tolist()]
    assert sorted(seen) == sorted(set(range(len(data))) - set(expected) - {corrupt_row})
    with pytest.warns(UserWarning, match="excluding 7 samples"):
        full = make_loader(data, "dali", batch_size=4, workers=1, device="cpu", check="full")
    assert sorted(i for b in full for i in b["index"].tolist()) == sorted(seen)


@needs_dali
def test_dali_failure_names_the_remedy(damaged):
    data, expected, _ = damaged
    truncated = next(row for row, p in expected.items() if p == "truncated file")
    loader = make_loader(data, "dali", batch_size=4, workers=1, device="cpu", rows=[truncated], check="none")
    with warnings.catch_warnings(), pytest.raises(RuntimeError, match="validate"):
        warnings.simplefilter("ignore")
        list(loader)


def test_missing_rows_argument_errors(damaged):
    data, _, _ = damaged
    with pytest.raises(ValueError, match="rows must lie"):
        make_loader(data, "torch", rows=[len(data)], workers=0)
    with pytest.raises(ValueError, match="no rows left"), pytest.warns(UserWarning):
        make_loader(data, "torch", rows=[0, 1], workers=0)
