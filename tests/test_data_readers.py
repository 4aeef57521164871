"""Readers of the publishers' layouts: counts, labels, crops, metadata and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures_data import (
    FERPLUS_CASES,
    coordinate_image,
    make_affectnet,
    make_ferplus,
    make_rafdb,
    write_affectnet_csv,
    write_image,
)
from PIL import Image

from gaave_fast.data import (
    AFFECTNET_CLASSES,
    FERPLUS_CLASSES,
    RAFDB_CLASSES,
    ArrayDataset,
    DatasetFormatError,
    DatasetNotFoundError,
    FaceDataset,
    ferplus_targets,
    read_affectnet,
    read_fer2013_csv,
    read_ferplus,
    read_image_folder,
    read_manifest,
    read_rafdb,
)

# RAF-DB -------------------------------------------------------------------------------------

def test_rafdb_splits_labels_and_paths(tmp_path):
    lines = make_rafdb(tmp_path, n_train=6, n_test=4)
    train, test = read_rafdb(tmp_path, "train", image_size=48), read_rafdb(tmp_path, "test")
    assert (len(train), len(test), len(read_rafdb(tmp_path, "all"))) == (6, 4, 10)
    assert train.classes == ["surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"]
    assert tuple(train.classes) == RAFDB_CLASSES
    assert train.labels.tolist() == [code - 1 for _, code in lines[:6]]
    assert test.samples["row"].tolist() == [6, 7, 8, 9]  # line numbers in the label file
    assert test.paths[0] == str(tmp_path / "Image" / "aligned" / "test_0001_aligned.jpg")
    image, label, index = train[2]
    assert image.shape == (3, 48, 48) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert (label, index) == (lines[2][1] - 1, 2)


def test_rafdb_errors_name_file_and_line(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="list_patition_label.txt"):
        read_rafdb(tmp_path)
    make_rafdb(tmp_path, 3, 1)
    label_file = tmp_path / "EmoLabel" / "list_patition_label.txt"
    label_file.write_text(label_file.read_text() + "train_00009.jpg 8\n")
    with pytest.raises(DatasetFormatError, match=r"line 5: unknown label code '8'"):
        read_rafdb(tmp_path)
    label_file.write_text("train_00001.jpg\n")
    with pytest.raises(ValueError, match="line 1"):  # DatasetFormatError is a ValueError
        read_rafdb(tmp_path)


# FERPlus / FER2013 --------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["majority", "distribution"])
def test_ferplus_vote_rules(tmp_path, mode):
    written = make_ferplus(tmp_path)
    data = read_ferplus(tmp_path, "train", mode, image_size=48)
    case = 1 if mode == "majority" else 2
    kept = [i for i, c in enumerate(FERPLUS_CASES) if c[case] is not None]
    assert data.samples["row"].tolist() == kept  # the empty-name row (10) is dropped too
    expected = np.zeros((len(kept), 8))
    for k, i in enumerate(kept):
        if mode == "majority":
            expected[k, FERPLUS_CASES[i][1]] = 1.0
        else:
            expected[k] = FERPLUS_CASES[i][2]
    np.testing.assert_allclose(data.soft_labels, expected, atol=1e-6)
    assert data.labels.tolist() == expected.argmax(axis=1).tolist()
    assert tuple(data.classes) == FERPLUS_CLASSES and len(data.classes) == 8
    # a grayscale PNG comes out as 3 equal channels holding the fixture's pixels
    image, _, _ = data[0]
    np.testing.assert_allclose(image[0].numpy() * 255, written["pixels"][kept[0]], atol=1e-3)
    assert torch.equal(image[0], image[2])


def test_ferplus_splits_and_pixels_from_fer2013_csv(tmp_path):
    written = make_ferplus(tmp_path)
    valid, test = read_ferplus(tmp_path, "valid"), read_ferplus(tmp_path, "test")
    assert valid.labels.tolist() == [2] and test.labels.tolist() == [3]  # surprise (stray dropped), sadness
    assert valid.paths[0].endswith("FER2013Valid/fer0000011.png")
    arrays = read_ferplus(tmp_path, "train", fer2013_csv=tmp_path / "fer2013.csv")
    assert isinstance(arrays, ArrayDataset)
    rows = arrays.samples["row"].to_numpy()
    np.testing.assert_array_equal(arrays.images, written["pixels"][rows])
    assert arrays[0][0].shape == (1, 48, 48)


def test_fer2013_csv_original_labels(tmp_path):
    written = make_ferplus(tmp_path)
    train = read_fer2013_csv(tmp_path / "fer2013.csv", "train")
    usages = [u for u, _, _ in written["rows"]]
    rows = [i for i, u in enumerate(usages) if u == "Training"]
    assert train.samples["row"].tolist() == rows
    assert train.labels.tolist() == written["emotions"][rows].tolist()
    np.testing.assert_array_equal(train.images, written["pixels"][rows])
    assert len(read_fer2013_csv(tmp_path / "fer2013.csv", "all")) == len(usages)


def test_ferplus_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="fer2013new.csv"):
        read_ferplus(tmp_path)
    make_ferplus(tmp_path)
    vote_file = tmp_path / "fer2013new.csv"
    lines = vote_file.read_text().splitlines()
    vote_file.write_text("\n".join([lines[0].replace("contempt", "contemp"), *lines[1:]]) + "\n")
    with pytest.raises(DatasetFormatError, match=r"fer2013new.csv: missing columns \['contempt'\]"):
        read_ferplus(tmp_path)
    vote_file.write_text("\n".join([lines[0], lines[1], lines[2].replace("Training", "Trainig")]) + "\n")
    with pytest.raises(DatasetFormatError, match=r"row 1 \(line 3\): unknown Usage 'Trainig'"):
        read_ferplus(tmp_path)
    pixel_file = tmp_path / "fer2013.csv"
    lines = pixel_file.read_text().splitlines()
    pixel_file.write_text("\n".join([lines[0], lines[1], "9," + lines[2].split(",", 1)[1]]) + "\n")
    with pytest.raises(DatasetFormatError, match=r"fer2013.csv row 1 .*unknown emotion code"):
        read_fer2013_csv(pixel_file)
    pixel_file.write_text("\n".join([lines[0], "0,1 2 3,Training"]) + "\n")
    with pytest.raises(DatasetFormatError, match=r"row 0 .*2304"):
        read_fer2013_csv(pixel_file)


def test_ferplus_targets_direct():
    votes = np.array([c[0] for c in FERPLUS_CASES], dtype=np.float64)
    out = ferplus_targets(votes, "majority")
    unknown = [c[1] is None for c in FERPLUS_CASES]
    assert (out.argmax(axis=1) >= 8).tolist() == unknown


# AffectNet ----------------------------------------------------------------------------------

@pytest.mark.parametrize("num_classes", [7, 8])
def test_affectnet_codes_boxes_and_crops(tmp_path, num_classes):
    records = make_affectnet(tmp_path, n=22)
    data = read_affectnet(tmp_path, "train", num_classes, image_size=32)
    kept = [i for i, r in enumerate(records) if r["code"] < num_classes]
    assert data.samples["row"].tolist() == kept
    assert data.labels.tolist() == [records[i]["code"] for i in kept]
    assert tuple(data.classes) == AFFECTNET_CLASSES[:num_classes]
    np.testing.assert_array_equal(data.boxes, [records[i]["box"] for i in kept])
    k = 3
    x, y, w, h = records[kept[k]]["box"]
    full = np.asarray(Image.open(tmp_path / "Manually_Annotated_Images" / records[kept[k]]["rel"]).convert("RGB"))
    np.testing.assert_array_equal(data.read_crop(k), full[y:y + h, x:x + w])
    assert data[k][0].shape == (3, 32, 32)
    np.testing.assert_allclose(data.samples["valence"], [records[i]["valence"] for i in kept])


def test_affectnet_headerless_validation_and_errors(tmp_path):
    records = make_affectnet(tmp_path, n=12, header=False, split_file="validation.csv")
    val = read_affectnet(tmp_path, "val", 8)
    assert val.samples["row"].tolist() == [i for i, r in enumerate(records) if r["code"] < 8]
    with pytest.raises(DatasetNotFoundError, match="training.csv"):
        read_affectnet(tmp_path, "train")
    bad = [dict(r) for r in records]
    bad[5]["code"] = 11
    write_affectnet_csv(tmp_path / "Manually_Annotated_file_lists" / "training.csv", bad)
    with pytest.raises(DatasetFormatError, match=r"training.csv row 5: unknown expression code"):
        read_affectnet(tmp_path, "train")
    path = tmp_path / "Manually_Annotated_file_lists" / "training.csv"
    path.write_text(path.read_text().replace("face_width", "face_w", 1))
    with pytest.raises(DatasetFormatError, match=r"missing \['face_width'\]"):
        read_affectnet(tmp_path, "train")


# Generic folder and manifest ----------------------------------------------------------------

def test_image_folder(tmp_path):
    for cls, n in (("sad", 2), ("angry", 3)):
        for i in range(n):
            write_image(tmp_path / cls / f"{i}.JPG", np.full((20, 20, 3), 10 * i, np.uint8))
    (tmp_path / "angry" / "notes.txt").write_text("not an image")
    data = read_image_folder(tmp_path, image_size=None)
    assert data.classes == ["angry", "sad"]
    assert data.labels.tolist() == [0, 0, 0, 1, 1]
    assert data[4][0].shape == (3, 20, 20)
    with pytest.raises(DatasetNotFoundError):
        read_image_folder(tmp_path / "nope")


def test_manifest_boxes_crop_where_the_box_says(tmp_path):
    write_image(tmp_path / "img" / "a.png", coordinate_image(60, 80))
    (tmp_path / "m.csv").write_text("path,label,x,y,w,h,source\n"
                                    "img/a.png,happy,10,20,30,15,web\n"
                                    "img/a.png,sad,,,,,web\n"
                                    "img/a.png,happy,70,50,30,30,web\n")  # sticks out: clipped
    data = read_manifest(tmp_path / "m.csv", image_size=None)
    assert data.classes == ["happy", "sad"] and data.labels.tolist() == [0, 1, 0]
    crop = data.read_crop(0)
    assert crop.shape == (15, 30, 3) and tuple(crop[0, 0]) == (10, 20, 7) and tuple(crop[-1, -1]) == (39, 34, 7)
    assert data.read_crop(1).shape == (60, 80, 3)  # no box: whole image
    assert data.read_crop(2).shape == (10, 10, 3) and tuple(data.read_crop(2)[0, 0]) == (70, 50, 7)
    assert data.metadata(0)["source"] == "web"
    image = data[0][0]
    np.testing.assert_allclose(image[0, 0, 0].item() * 255, 10, atol=1e-3)


def test_manifest_labels_and_errors(tmp_path):
    (tmp_path / "ints.csv").write_text("path,label\na.jpg,2\nb.jpg,0\n")
    data = read_manifest(tmp_path / "ints.csv")
    assert data.classes == ["0", "1", "2"] and data.labels.tolist() == [2, 0]
    assert data.paths[0] == str(tmp_path / "a.jpg")
    named = read_manifest(tmp_path / "ints.csv", classes=["x", "y", "z", "w"])
    assert named.classes == ["x", "y", "z", "w"]
    (tmp_path / "names.csv").write_text("path,label\na.jpg,happy\nb.jpg,gloomy\n")
    with pytest.raises(DatasetFormatError, match=r"names.csv row 1 \(line 3\): unknown label 'gloomy'"):
        read_manifest(tmp_path / "names.csv", classes=["happy", "sad"])
    (tmp_path / "cols.csv").write_text("file,label\na.jpg,1\n")
    with pytest.raises(DatasetFormatError, match=r"missing columns \['path'\]"):
        read_manifest(tmp_path / "cols.csv")
    (tmp_path / "box.csv").write_text("path,label,x,y\na.jpg,1,0,0\n")
    with pytest.raises(DatasetFormatError, match="box needs all of columns"):
        read_manifest(tmp_path / "box.csv")
    (tmp_path / "num.csv").write_text("path,label,x,y,w,h\na.jpg,1,0,0,ten,5\n")
    with pytest.raises(DatasetFormatError, match=r"row 0 .*'w' is not a number"):
        read_manifest(tmp_path / "num.csv")
    with pytest.raises(DatasetNotFoundError, match="manifest not found"):
        read_manifest(tmp_path / "missing.csv")


def test_face_dataset_normalization_and_transform(tmp_path):
    write_image(tmp_path / "a.png", np.full((8, 8, 3), (51, 102, 204), np.uint8))
    (tmp_path / "m.csv").write_text("path,label\na.png,0\n")
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.125)
    data = read_manifest(tmp_path / "m.csv", image_size=4, mean=mean, std=std,
                         transform=lambda x: x * 0 + 0.5)  # the transform sees [0, 1] pixels
    image = data[0][0]
    expected = [(0.5 - m) / s for m, s in zip(mean, std)]
    np.testing.assert_allclose(image[:, 0, 0].numpy(), expected, rtol=1e-6)
    plain = read_manifest(tmp_path / "m.csv", image_size=4)[0][0]
    np.testing.assert_allclose(plain[:, 2, 3].numpy(), [0.2, 0.4, 0.8], atol=1e-6)
    with pytest.raises(ValueError, match="image_size"):
        read_manifest(tmp_path / "m.csv", image_size=(0, 4))
    assert isinstance(data, FaceDataset)
