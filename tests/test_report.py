"""The HTML report: self-contained, scriptless, escaped, and its numbers match the run's table.

A run folder is written by hand here (table, metrics, config, run record), so the report is
tested without training anything; one image file is named ``<script>alert(1)<!--.jpg`` and a
class is named with markup and a ``$``, as hostile dataset text would be.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from gaave_fast.pipeline import PipelineConfig, TrainConfig
from gaave_fast.report import write_report
from gaave_fast.report.data import (
    class_summary,
    load_run,
    read_truth,
    stage_timings,
    transitions,
)

CLASSES = ["calm", 'a&b"<i>x', "$cost$"]
EVIL = "<script>alert(1)<!--.jpg"


@pytest.fixture
def run_dir(tmp_path) -> Path:
    d = tmp_path / "run"
    (d / "imgs").mkdir(parents=True)
    rng = np.random.default_rng(0)
    n = 30
    paths = []
    for i in range(n):
        name = EVIL if i == 0 else f"img{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(d / "imgs" / name)
        paths.append(str(d / "imgs" / name))
    label = np.arange(n) % 3
    k = rng.integers(0, 10, (2, n)) / 1.0
    k[:, 0] = 0  # the hostile file is the most suspicious sample
    cand = k.mean(0) <= 3
    new = np.where(cand, (label + 1) % 3, label)
    new[np.flatnonzero(cand)[::3]] = -1  # every third candidate discarded
    status = np.where(~cand, "clean", np.where(new >= 0, "relabeled", "discarded"))
    margin = rng.normal(0, 1, n)
    margin[0] = -5.0
    table = pd.DataFrame({"index": np.arange(n), "path": paths, "row": np.arange(n), "label": label,
                          "subset": np.where(label < 2, "head", "tail"), "k_e0": k[0], "k_e1": k[1], "k": k.mean(0),
                          "score": -(k.mean(0) + 1 / (1 + np.exp(-margin))), "margin": margin, "loss": margin ** 2,
                          "candidate": cand, "new_label": new, "status": status})
    table.to_parquet(d / "samples.parquet", index=False)
    test = {"accuracy": 0.5, "mean_class_accuracy": 0.45, "class_accuracy": [0.4, 0.5, None]}
    metrics = {"criterion": {"tau": {"head": {"tau": 3.0, "rule": "given", "flagged": 5, "total": 20},
                                     "tail": {"tau": 3.0, "rule": "gmm", "flagged": 3, "total": 10}}},
               "baseline": {"test": test}, "final_gaave": {"test": dict(test, accuracy=0.6)}}
    (d / "metrics.json").write_text(json.dumps(metrics))
    PipelineConfig(steps=8, gaave_epochs=2, base=TrainConfig(epochs=1)).save(d / "config.yaml")
    (d / "run.json").write_text(json.dumps({"dataset": {"spec": f"folder:{d}/imgs", "classes": CLASSES},
                                            "sessions": [{"started_unix": 0.0, "seconds": 12.5}]}))
    pd.DataFrame({"row": [99], "path": [str(d / EVIL)], "problem": ["truncated file"]}).to_csv(d / "excluded.csv",
                                                                                              index=False)
    return d


class Tags(HTMLParser):
    """Every start tag with its attributes, the page's text, and each table as rows of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def parse(html: str) -> Tags:
    t = Tags()
    t.feed(html)
    return t


def test_html_is_self_contained_scriptless_and_escaped(run_dir):
    html = write_report(run_dir, top=10).read_text()
    page = parse(html)
    names = [t for t, _ in page.tags]
    assert "script" not in names and "iframe" not in names and "link" not in names
    assert not any(a.startswith("on") for _, attrs in page.tags for a in attrs), "event handler attributes"
    imgs = [attrs["src"] for t, attrs in page.tags if t == "img"]
    assert len(imgs) == 10 + 4  # thumbnails + k, classes, transitions, accuracy plots
    for src in imgs:
        assert src.startswith("data:image/png;base64,")
        Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).verify()
    csp = [a for t, a in page.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0]["content"]
    assert "http://" not in html and "https://" not in html
    # Hostile text comes through as text: the parser sees it, the markup never contains it raw.
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;!--.jpg" in html
    assert '<i>x' not in html and any('a&b"<i>x' in s for s in page.text)
    titles = [a["title"] for t, a in page.tags if t == "figure"]
    assert str(run_dir / "imgs" / EVIL) in titles  # the most suspicious sample is the hostile file


def test_pngs_written_beside_the_html(run_dir):
    write_report(run_dir, top=4)
    for name in ("k_histograms.png", "classes.png", "transitions.png", "accuracy.png", "vulnerable.png"):
        with Image.open(run_dir / "report" / name) as im:
            assert im.format == "PNG" and im.width > 200


def test_transition_and_class_numbers(run_dir):
    run = load_run(run_dir)
    t = run.table
    m = transitions(t, 3)
    for old in range(3):
        for new in range(3):
            assert m[old, new] == ((t["label"] == old) & (t["new_label"] == new) & t["candidate"]).sum()
        assert m[old, 3] == ((t["label"] == old) & (t["status"] == "discarded")).sum()
    assert m.sum() == t["candidate"].sum()
    s = class_summary(t, CLASSES)
    assert s["samples"].tolist() == [10, 10, 10]
    assert s["final"].sum() == (t["new_label"] >= 0).sum()
    assert (s["relabeled_into"].sum() == s["relabeled_away"].sum() == ((t["status"] == "relabeled")
                                                                       & (t["new_label"] != t["label"])).sum())
    tables = parse(write_report(run_dir).read_text()).tables
    shown = next(t for t in tables if t[0][0] == "original \\ new")
    assert shown[0][1:] == [*CLASSES, "discarded"] and [r[0] for r in shown[1:]] == CLASSES
    np.testing.assert_array_equal(np.array([r[1:] for r in shown[1:]], dtype=int), m)


def test_stage_timings_from_the_run_in_run_order(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["timings"] = {"criterion": 30.0, "split": 5.0, "base:head": 10.0, "record:head": 7.5}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    assert stage_timings(load_run(run_dir)) == [("split", 5.0), ("base head", 10.0), ("GAAVE scans head", 7.5),
                                               ("criterion", 30.0)]


def test_truth_file(run_dir, tmp_path):
    t = load_run(run_dir).table
    truth = pd.DataFrame({"path": [os.path.relpath(p, tmp_path) for p in t["path"][:5]],
                          "true_label": [CLASSES[2], "1", "0", "bogus", CLASSES[1]]})
    truth.to_csv(tmp_path / "truth.csv", index=False)
    got = read_truth(tmp_path / "truth.csv", t, CLASSES)
    np.testing.assert_array_equal(got, [2, 1, 0, -1, 1] + [-1] * (len(t) - 5))
    html = write_report(run_dir, truth=tmp_path / "truth.csv").read_text()
    assert "Detection against the true labels" in html and "(4 samples)" in html


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_renders_in_headless_chromium(run_dir, tmp_path):
    html = write_report(run_dir, top=6)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(["chromium", *flags, "--dump-dom", html.as_uri()], capture_output=True, text=True,
                         timeout=120, check=False).stdout
    page = parse(dom)
    assert [t for t, _ in page.tags].count("img") == 6 + 4
    assert [t for t, _ in page.tags].count("table") >= 5 and "script" not in [t for t, _ in page.tags]
    assert any("<script>alert(1)" in s for s in page.text)  # shown as text, not run
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", *flags, "--window-size=1200,2600", f"--screenshot={shot}", html.as_uri()],
                   capture_output=True, timeout=120, check=False)
    px = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3).astype(int)
    # The k histograms' orange candidate bars (#dd8452) are only there if the embedded PNGs were drawn.
    orange = (np.abs(px - [0xDD, 0x84, 0x52]).sum(1) < 30).sum()
    assert orange > 500, orange
