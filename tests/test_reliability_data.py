"""Reliability of the data layer: unusual image modes, odd manifest labels, label-file encodings."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image
from reliability_fixtures import one_thread

from gaave_fast.data import DatasetFormatError, read_manifest, validate
from gaave_fast.data.dataset import read_rgb

__all__ = ["one_thread"]  # the autouse fixture


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257 * 100, 257 * 200 + 128, 65535]], dtype=np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "I;16"
    rgb = read_rgb(str(path))
    expected = np.round(values / 257).astype(np.uint8)  # 0, 100, 200 (200.498 rounds down), 255
    np.testing.assert_array_equal(rgb[..., 0], expected)
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])


@pytest.mark.parametrize("mode,array", [("I", np.array([[0, 100, 300000]], np.int32)),
                                        ("F", np.array([[0, 0.5, 1.0]], np.float32))])
def test_32bit_modes_are_flagged_by_validate_and_refused_by_the_reader(tmp_path, mode, array):
    path = tmp_path / "img" / "a.tif"
    path.parent.mkdir()
    Image.fromarray(array).save(path)
    assert Image.open(path).mode == mode
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\nimg/a.tif,0\n")
    data = read_manifest(manifest, image_size=4)
    for decode in (True, False):
        report = validate(data, workers=0, decode=decode, progress=False)
        assert len(report) == 1
        assert report["problem"][0].startswith(f"unsupported pixel mode {mode}")
    with pytest.raises(ValueError, match="unsupported pixel mode"):
        read_rgb(str(path))


def test_palette_with_transparency_la_and_cmyk_convert_to_their_colours(tmp_path):
    rgb = np.array([[[200, 30, 40], [10, 220, 90]]], np.uint8)
    pal = Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=2)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "p.png", transparency=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL warns when P with transparency goes straight to RGB
        got = read_rgb(str(tmp_path / "p.png"))
    np.testing.assert_array_equal(got, np.asarray(pal.convert("RGB")))
    Image.fromarray(np.array([[[90, 255], [30, 0]]], np.uint8), "LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_rgb(str(tmp_path / "la.png"))[0], [[90] * 3, [30] * 3])
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.tif")
    np.testing.assert_array_equal(read_rgb(str(tmp_path / "c.tif")), rgb)


@pytest.mark.parametrize("odd,row", [("-1", 2), ("happy", 1), ("1.0", 3)])
def test_manifest_with_one_odd_label_names_the_row(tmp_path, odd, row):
    labels = ["0", "1", "0", "1", "0"]
    labels[row] = odd
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\n" + "".join(f"{i}.png,{lab}\n" for i, lab in enumerate(labels)))
    with pytest.raises(DatasetFormatError, match=rf"row {row} \(line {row + 2}\): label '{odd}' does not fit"):
        read_manifest(manifest)


def test_manifest_with_a_number_among_names_names_the_row(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\na.png,happy\nb.png,sad\nc.png,3\nd.png,happy\n")
    with pytest.raises(DatasetFormatError, match=r"row 2 \(line 4\): label '3' does not fit"):
        read_manifest(manifest)


def test_manifest_in_utf16_is_read_and_latin1_is_named(tmp_path):
    text = "path,label\na.png,happy\nb.png,sad\n"
    (tmp_path / "u16.csv").write_bytes(text.encode("utf-16"))
    assert read_manifest(tmp_path / "u16.csv").classes == ["happy", "sad"]
    (tmp_path / "l1.csv").write_bytes("path,label\na.png,café\n".encode("latin-1"))
    with pytest.raises(DatasetFormatError, match="l1.csv: not UTF-8 text"):
        read_manifest(tmp_path / "l1.csv")
