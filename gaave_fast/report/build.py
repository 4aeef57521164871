"""Builds the run report: the sections of report.html and their PNG plots."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from gaave_fast import files
from gaave_fast.attack import default_alpha
from gaave_fast.data.dataset import to_rgb
from gaave_fast.pipeline import PipelineConfig, detection_metrics

from . import html as H
from . import plots
from .data import (
    RunOutputs,
    class_summary,
    load_run,
    read_truth,
    session_seconds,
    stage_timings,
    transitions,
)

ImageSource = Callable[[int], np.ndarray]
_THUMB = 96


def write_report(run_dir: str | Path, out_dir: str | Path | None = None, *, images: Any = None,
                 truth: str | Path | None = None, top: int = 48) -> Path:
    """Write the report of a finished run.

    Args:
        run_dir: the run folder.
        out_dir: where to write (default ``<run_dir>/report``).
        images: the run's training dataset (items ``(image, label, index)``, positions = the
            table's ``index``) to draw thumbnails from; None = open the table's ``path``
            column's files; unreadable images get a grey square.
        truth: csv with ``path, true_label`` to score the detection (default: the one in
            run.json, if any).
        top: how many of the most suspicious samples to show.

    Returns:
        The path of ``report.html``.
    """
    run = load_run(run_dir)
    out = Path(out_dir) if out_dir is not None else run.store.file("report")
    out.mkdir(parents=True, exist_ok=True)
    cfg = PipelineConfig.load(run.store.file("config")) if run.store.file("config").exists() else PipelineConfig()
    truth = truth if truth is not None else run.run.get("truth")
    pngs: dict[str, bytes] = {}
    sections = [_summary(run)]
    sections.append(_accuracy(run, pngs))
    sections.append(_k_section(run, cfg, pngs))
    sections.append(_classes(run, pngs))
    sections.append(_vulnerable(run, _image_source(images, run.table), top, pngs))
    if truth:
        sections.append(_detection(run, Path(truth)))
    if len(run.excluded):
        sections.append(_excluded(run))
    sections.append(_config_and_timings(run))
    sections.append(_files(run))
    ds = run.run.get("dataset", {})
    split = f" (split {ds['split']})" if ds.get("split") else ""
    subtitle = (f"{ds.get('spec', run.dir)}{split} · run folder {run.dir} · generated "
                f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}")
    for name, data in pngs.items():
        files.write_bytes(out / name, data)
    return files.write_text(out / "report.html", H.page("GAAVE report", subtitle, sections))


# ----------------------------------------------------------------------------- sections
def _summary(run: RunOutputs) -> str:
    t = run.table
    items = [("samples", len(t)), ("broken files excluded", len(run.excluded)),
             ("noise candidates", int(t["candidate"].sum())), ("relabeled", int((t["status"] == "relabeled").sum())),
             ("discarded", int((t["status"] == "discarded").sum()))]
    items += [(f"τ {name}", f"{tau:g}") for name, tau in run.taus.items()]
    for key, name in (("baseline", "baseline"), ("final_gaave", "final"), ("final_drop", "final (drop)")):
        if "test" in run.metrics.get(key, {}):
            items.append((f"{name} test accuracy", f"{run.metrics[key]['test']['accuracy']:.3f}"))
    return H.section("summary", "Summary", H.cards(items))


def _accuracy(run: RunOutputs, pngs: dict[str, bytes]) -> str:
    rows = {name: run.metrics[key]["test"] for key, name in
            (("baseline", "baseline (raw labels)"), ("final_gaave", "final (GAAVE labels)"),
             ("final_drop", "final (candidates dropped)")) if "test" in run.metrics.get(key, {})}
    if not rows:
        return H.section("accuracy", "Accuracy", "<p>No test set was given, so no model was evaluated.</p>")
    pngs["accuracy.png"] = plots.accuracy_bars(rows, run.classes)
    header = ["model", "accuracy", "mean class accuracy", *run.classes]
    body = [[name, m["accuracy"], m["mean_class_accuracy"],
             *["-" if v is None else float(v) for v in m.get("class_accuracy", [])]] for name, m in rows.items()]
    return H.section("accuracy", "Accuracy on the test set",
                     H.table(header, body) + H.img_tag(pngs["accuracy.png"], "test accuracy per class"))


def _k_section(run: RunOutputs, cfg: PipelineConfig, pngs: dict[str, bytes]) -> str:
    pngs["k_histograms.png"] = plots.k_histograms(run.table, run.taus, cfg.steps, cfg.gaave_epochs)
    crit = run.metrics.get("criterion", {}).get("tau", {})
    body = [[name, c["tau"], c["rule"], c["flagged"], c["total"], c.get("flagged_fraction", 0.0)]
            for name, c in crit.items()]
    text = (f"<p>k counts the attack points x(0)..x({cfg.steps}) that keep the given label (ε = {_pixels(cfg.eps)}, "
            f"α = {_pixels(default_alpha(cfg.eps, cfg.alpha))}), combined over {cfg.gaave_epochs} scans by "
            f"{H.esc(cfg.combine)}. Samples with k ≤ τ are the noise candidates.</p>")
    if cfg.record == "decided":
        text += ("<p>Decided record: each scan stopped attacking a sample once k ≤ τ or k &gt; τ was certain, so k "
                 "is exact only where the attack ran to the end; the hatched bars count the samples whose k is "
                 "known only as &gt; τ or ≤ τ. The candidates are those of a full record at the same τ.</p>")
    return H.section("k", "Attack counts k per subset", text + H.img_tag(pngs["k_histograms.png"], "k histograms")
                     + H.table(["subset", "τ", "rule", "candidates", "samples", "fraction"], body))


def _classes(run: RunOutputs, pngs: dict[str, bytes]) -> str:
    summary = class_summary(run.table, run.classes)
    matrix = transitions(run.table, len(run.classes))
    pngs["classes.png"] = plots.class_bars(summary)
    pngs["transitions.png"] = plots.transition_heatmap(matrix, run.classes)
    per_class = H.table([c.replace("_", " ") for c in summary.columns], summary.itertuples(index=False))
    trans = H.table(["original \\ new", *run.classes, "discarded"],
                    ([name, *row] for name, row in zip(run.classes, matrix.tolist())))
    return H.section("classes", "Candidates and relabels per class",
                     per_class + H.img_tag(pngs["classes.png"], "candidates per class")
                     + "<h3>Transition matrix of the candidates (original label → outcome)</h3>"
                     + trans + H.img_tag(pngs["transitions.png"], "transition matrix"))


def _vulnerable(run: RunOutputs, load: ImageSource, top: int, pngs: dict[str, bytes]) -> str:
    t = run.table.sort_values("score", ascending=False, na_position="last", kind="stable").head(top)
    names = run.classes
    figs, thumbs, captions = [], [], []
    for r in t.itertuples(index=False):
        img = load(int(r.index))
        thumbs.append(img)
        old = names[int(r.label)]
        new = int(r.new_label)
        if r.status == "relabeled":
            outcome = f'<span class="old">{H.esc(old)}</span> → <span class="new">{H.esc(names[new])}</span>'
            short = f"{old} → {names[new]}"
        elif r.status == "discarded":
            outcome = f'<span class="old">{H.esc(old)}</span> → <span class="drop">discarded</span>'
            short = f"{old} → discarded"
        else:
            outcome, short = f"{H.esc(old)} (kept)", f"{old} (kept)"
        stats = f"k {r.k:.2f} · score {r.score:.2f}"
        title = str(getattr(r, "path", "") or f"sample {r.index}")
        figs.append(H.figure(_png(img), f"sample {r.index}", [f"#{int(r.index)}", outcome, H.esc(stats)], title))
        captions.append(f"{short}\nk {r.k:.2f}")
    pngs["vulnerable.png"] = plots.thumbnail_sheet(thumbs, captions)
    text = (f"<p>The {len(t)} samples with the highest suspicion score −(k + sigmoid(margin)): the attack "
            "took their label away soonest. Hover a thumbnail for its file.</p>")
    return H.section("vulnerable", "Most vulnerable samples", text + f'<div class="grid">{"".join(figs)}</div>')


def _detection(run: RunOutputs, truth: Path) -> str:
    t = run.table
    true = read_truth(truth, t, run.classes)
    known = true >= 0
    if not known.any():
        return H.section("detection", "Detection against the true labels",
                         f"<p>{H.esc(truth)} names none of the run's samples.</p>")
    lab, new = t["label"].to_numpy()[known], t["new_label"].to_numpy()[known]
    noisy = lab != true[known]
    d = detection_metrics(t["candidate"].to_numpy(bool)[known], noisy, t["score"].to_numpy()[known])
    relab = (t["status"].to_numpy() == "relabeled")[known]
    kept = new >= 0
    rows = [["noise rate of the given labels", float(noisy.mean())],
            ["candidates: precision", d["precision"]], ["candidates: recall", d["recall"]], ["candidates: F1", d["f1"]],
            ["AUROC of the score", d["auroc"]],
            ["relabels that are right", float((new[relab] == true[known][relab]).mean()) if relab.any() else "-"],
            ["noise rate of the cleaned labels (kept samples)", float((new[kept] != true[known][kept]).mean())],
            ["samples kept", int(kept.sum())]]
    return H.section("detection", "Detection against the true labels",
                     f"<p>True labels from {H.esc(truth)} ({int(known.sum())} samples).</p>"
                     + H.table(["", "value"], rows))


def _excluded(run: RunOutputs) -> str:
    # The row of the publisher's label file where known (the dataset position otherwise).
    rows = [[getattr(r, "publisher_row", r.row), r.path, r.problem] for r in run.excluded.itertuples(index=False)]
    return H.section("excluded", "Broken files left out",
                     H.table(["row", "path", "problem"], rows, text_columns=(1, 2)))


def _config_and_timings(run: RunOutputs) -> str:
    times = stage_timings(run)
    rows = [[name, round(s, 1)] for name, s in times]
    sessions = session_seconds(run)
    rows += [[f"gaave run session {i + 1}", "killed or failed" if s is None else round(s, 1)]
             for i, s in enumerate(sessions)]
    ds = run.run.get("dataset", {})
    info = [["dataset", ds.get("spec", "-")], ["split", ds.get("split") or "-"],
            ["image size", "x".join(map(str, ds.get("image_size") or [])) or "as stored"],
            ["classes", ", ".join(run.classes)], ["test set", run.run.get("test", "-")]]
    return H.section("config", "Run settings and timings",
                     H.table(["", ""], info, text_columns=(0, 1))
                     + H.table(["stage", "seconds"], rows) + f"<h3>config.yaml</h3><pre>{H.esc(run.config)}</pre>")


def _files(run: RunOutputs) -> str:
    wanted = [run.store.file(k) for k in ("table_csv", "table_parquet", "metrics", "config", "run", "excluded")]
    found = [p.name for p in wanted if p.exists()]
    cleaned = run.store.file("cleaned")
    # os.walk does not descend into the links to the original images.
    for folder, _, names in sorted(os.walk(cleaned)):
        found += sorted(str((Path(folder) / f).relative_to(run.dir)) for f in names)
    items = "".join(f"<li><code>{H.esc(p)}</code></li>" for p in found)
    return H.section("files", "Output files", f"<p>In {H.esc(run.dir)} (see docs/outputs.md):</p><ul>{items}</ul>")


def _pixels(v: float) -> str:
    """A pixel-unit value as ``n/255`` or ``n/2040`` when it is one (1/255 = one grey level)."""
    for d in (255, 2040):
        if abs(v * d - round(v * d)) < 1e-6 and round(v * d) > 0:
            return f"{round(v * d)}/{d}"
    return f"{v:.4g}"


# ----------------------------------------------------------------------------- images
def _image_source(images: Any, table: pd.DataFrame) -> ImageSource:
    paths = table["path"].astype(str).tolist() if "path" in table else None
    index_to_row = {int(i): j for j, i in enumerate(table["index"])}

    def load(index: int) -> np.ndarray:
        try:
            if images is not None:
                return _to_uint8(images[index][0])
            if paths is not None:
                with Image.open(paths[index_to_row[index]]) as im:
                    return to_rgb(im)
        except Exception:  # a thumbnail that cannot be read must not stop the report  # noqa: BLE001, S110
            pass
        return np.full((32, 32, 3), 200, np.uint8)

    return load


def _to_uint8(x: Any) -> np.ndarray:
    a = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float32)
    if a.ndim == 3 and a.shape[0] in (1, 3):
        a = a.transpose(1, 2, 0)
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return np.clip(a * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _png(img: np.ndarray) -> bytes:
    im = Image.fromarray(img)
    if max(im.size) > _THUMB * 2:
        im.thumbnail((_THUMB * 2, _THUMB * 2))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()
