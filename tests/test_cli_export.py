"""Cleaned label files (gaave_fast.export) in each publisher's format, read back with the same reader.

Each test takes a tiny dataset in the publisher's exact layout (tests/fixtures_data.py), marks
one sample relabelled and one discarded, exports, and reads the cleaned file with the original
reader: the expected labels are worked out here from the reader's view of the original data.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fixtures_data import (
    face_like,
    make_affectnet,
    make_ferplus,
    make_rafdb,
    write_image,
)

from gaave_fast.data import (
    AFFECTNET_CLASSES,
    FER2013_CLASSES,
    FERPLUS_CLASSES,
    RAFDB_CLASSES,
    read_affectnet,
    read_fer2013_csv,
    read_ferplus,
    read_image_folder,
    read_manifest,
    read_rafdb,
)
from gaave_fast.export import export_cleaned


def plan(ds, num_classes: int, relabel: int = 0, discard: int = 1) -> pd.DataFrame:
    """A run table over the dataset: sample `relabel` gets the next class, `discard` is dropped, and
    the one after both (when the dataset has it) is a candidate that keeps its label: written unchanged."""
    n = len(ds)
    labels = np.asarray(ds.labels, np.int64)
    new = labels.copy()
    status = np.array(["clean"] * n, dtype=object)
    new[relabel], status[relabel] = (labels[relabel] + 1) % num_classes, "relabeled"
    new[discard], status[discard] = -1, "discarded"
    kept = max(relabel, discard) + 1
    if kept < n:
        status[kept] = "kept"
    paths = ds.samples["path"].astype(str) if "path" in ds.samples else [""] * n
    return pd.DataFrame({"row": ds.samples["row"].to_numpy(), "path": paths, "label": labels, "new_label": new,
                         "status": status})


def expected(table: pd.DataFrame) -> np.ndarray:
    kept = table[table["status"] != "discarded"]
    return kept["new_label"].to_numpy()


def test_rafdb(tmp_path):
    make_rafdb(tmp_path / "raf", n_train=6, n_test=4)
    train = read_rafdb(tmp_path / "raf", "train", image_size=8)
    table = plan(train, 7)
    paths = export_cleaned("rafdb", tmp_path / "raf", table, RAFDB_CLASSES, tmp_path / "out")
    back = read_rafdb(tmp_path / "out", "train", image_size=8)
    np.testing.assert_array_equal(back.labels, expected(table))
    names = [p.split("/")[-1] for p, s in zip(train.paths, table["status"]) if s != "discarded"]
    assert [p.split("/")[-1] for p in back.paths] == names
    assert back[0][0].shape == (3, 8, 8)  # the link to Image/ lets the images load
    before, after = (read_rafdb(tmp_path / d, "test") for d in ("raf", "out"))  # other splits are left as they were
    np.testing.assert_array_equal(after.labels, before.labels)
    changes = pd.read_csv(paths["changes"], keep_default_na=False)
    assert changes["status"].tolist() == ["relabeled", "discarded"]
    assert changes["new_label"].tolist() == [RAFDB_CLASSES[table["new_label"][0]], ""]


def test_rafdb_label_file_changed_since(tmp_path):
    make_rafdb(tmp_path / "raf", n_train=3, n_test=1)
    table = plan(read_rafdb(tmp_path / "raf", "train"), 7)
    table.loc[0, "path"] = "/elsewhere/train_09999_aligned.jpg"
    with pytest.raises(ValueError, match="changed since"):
        export_cleaned("rafdb", tmp_path / "raf", table, RAFDB_CLASSES, tmp_path / "out")


def test_ferplus(tmp_path):
    make_ferplus(tmp_path / "fp")
    train = read_ferplus(tmp_path / "fp", "train", image_size=8)
    table = plan(train, 8, relabel=2, discard=0)
    paths = export_cleaned("ferplus", tmp_path / "fp", table, FERPLUS_CLASSES, tmp_path / "out")
    back = read_ferplus(tmp_path / "out", "train", image_size=8)
    np.testing.assert_array_equal(back.labels, expected(table))
    assert back[0][0].shape == (3, 8, 8)
    pd.testing.assert_series_equal(read_ferplus(tmp_path / "out", "valid").samples["label"],
                                   read_ferplus(tmp_path / "fp", "valid").samples["label"])
    marks = pd.read_csv(paths["labels"], keep_default_na=False)
    assert marks.loc[table["row"], "gaave_status"].tolist() == table["status"].tolist()
    assert marks.loc[table["row"][2], "gaave_old_label"] == FERPLUS_CLASSES[table["label"][2]]


def test_fer2013_csv(tmp_path):
    make_ferplus(tmp_path / "fp")
    src = tmp_path / "fp" / "fer2013.csv"
    train = read_fer2013_csv(src, "train")
    table = plan(train, 7)
    paths = export_cleaned("fer2013", src, table, FER2013_CLASSES, tmp_path / "out")
    back = read_fer2013_csv(paths["labels"], "train")
    np.testing.assert_array_equal(back.labels, expected(table))
    keep = (table["status"] != "discarded").to_numpy()
    np.testing.assert_array_equal(back.images, train.images[keep])
    rows = pd.read_csv(paths["labels"])["gaave_row"]
    assert 1 not in set(rows) and len(rows) == len(pd.read_csv(src)) - 1


def test_affectnet(tmp_path):
    make_affectnet(tmp_path / "an", n=24)
    train = read_affectnet(tmp_path / "an", "train", 7, image_size=8)
    table = plan(train, 7, relabel=3, discard=5)
    export_cleaned("affectnet", tmp_path / "an", table, AFFECTNET_CLASSES[:7], tmp_path / "out", split="train")
    back = read_affectnet(tmp_path / "out", "train", 7, image_size=8)
    np.testing.assert_array_equal(back.labels, expected(table))
    keep = (table["status"] != "discarded").to_numpy()
    np.testing.assert_array_equal(back.boxes, train.boxes[keep])
    assert back[0][0].shape == (3, 8, 8)
    # The rows the reader drops (codes 7..10) are still there: the 8-class view differs only by the changes.
    assert len(read_affectnet(tmp_path / "out", "train", 8)) == len(read_affectnet(tmp_path / "an", "train", 8)) - 1


@pytest.mark.parametrize("named", [True, False])
def test_manifest(tmp_path, named):
    classes = ["neutral", "happy", "sad"]
    rows = []
    for i in range(6):
        write_image(tmp_path / "img" / f"{i}.png", face_like(12, 12, i))
        rows.append({"path": f"img/{i}.png", "label": classes[i % 3] if named else str(i % 3), "extra": f"x{i}"})
    pd.DataFrame(rows).to_csv(tmp_path / "faces.csv", index=False)
    data = read_manifest(tmp_path / "faces.csv", classes=classes, image_size=8)
    table = plan(data, 3, relabel=4, discard=0)
    paths = export_cleaned("csv", tmp_path / "faces.csv", table, classes, tmp_path / "out")
    back = read_manifest(paths["labels"], classes=classes, image_size=8)
    np.testing.assert_array_equal(back.labels, expected(table))
    written = pd.read_csv(paths["labels"], dtype=str)
    assert written["label"].str.isdigit().all() == (not named)
    assert written["extra"].tolist() == [f"x{i}" for i in range(1, 6)]
    assert back.paths == data.paths[1:]


def test_folder_to_manifest(tmp_path):
    for i, name in enumerate(["sad", "happy", "sad", "calm", "happy"]):
        write_image(tmp_path / "faces" / name / f"{i}.jpg", face_like(12, 12, i))
    data = read_image_folder(tmp_path / "faces", image_size=8)
    table = plan(data, 3, relabel=2, discard=4).iloc[1:]  # row 0 is broken: excluded from the run
    excluded = pd.DataFrame({"row": [0], "path": [data.paths[0]], "problem": ["truncated file"]})
    paths = export_cleaned("folder", tmp_path / "faces", table, data.classes, tmp_path / "out", excluded=excluded)
    back = read_manifest(paths["labels"], classes=data.classes, image_size=8)
    assert back.paths == [data.paths[i] for i in (0, 1, 2, 3)]
    np.testing.assert_array_equal(back.labels, [data.labels[0], *expected(table)])
    assert back.samples["gaave_status"].tolist() == ["excluded", "clean", "relabeled", "clean"]
    changes = pd.read_csv(paths["changes"], keep_default_na=False)
    assert changes["status"].tolist() == ["excluded: truncated file", "relabeled", "discarded"]


def test_unknown_kind_and_bad_table(tmp_path):
    table = pd.DataFrame({"row": [0], "path": ["a"], "label": [0], "new_label": [-1], "status": ["relabeled"]})
    with pytest.raises(ValueError, match="kind"):
        export_cleaned("imagenet", tmp_path, table, ["a", "b"], tmp_path / "o")
    with pytest.raises(ValueError, match="relabeled row has no new label"):
        export_cleaned("csv", tmp_path, table, ["a", "b"], tmp_path / "o")
