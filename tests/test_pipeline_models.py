"""Model construction: shared trunk initialisation, pretrained backbones, torchvision architectures.

The paper's two self-annotators must start from the same weights although they predict
different class counts; so must every other model of a run. Pretrained files are built here
from the architectures' own state dicts (under the wrappers and prefixes FER code bases use),
so the expected tensors are the file's own.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gaave_fast.cli import main
from gaave_fast.data.arrays import ArrayDataset
from gaave_fast.demo import DemoSpec, make_demo_dataset
from gaave_fast.pipeline import Pipeline, PipelineConfig, TrainConfig
from gaave_fast.pipeline.models import check_arch, model_factory
from gaave_fast.pipeline.pretrained import Backbone, PretrainedError

HEADS = {"small_cnn": "1.17.", "resnet18": "1.fc."}  # the classifier's keys in a pipeline model


def dataset(n: int = 60, size: int = 16, channels: int = 1, classes: int = 5, seed: int = 0) -> ArrayDataset:
    rng = np.random.default_rng(seed)
    shape = (n, size, size) if channels == 1 else (n, size, size, channels)
    # Long-tailed counts, so that the automatic split gives the head and tail subsets different class counts.
    labels = np.repeat(np.arange(classes), np.linspace(2 * n / classes, n / (2 * classes), classes).astype(int))[:n]
    labels = np.concatenate([labels, np.zeros(n - labels.size, np.int64)])
    return ArrayDataset(rng.integers(0, 256, shape, dtype=np.uint8), labels)


def tiny_config(**kw) -> PipelineConfig:
    t = {"epochs": 1, "batch_size": 32, "flip": False, "progress": False}
    base = {"arch": "small_cnn", "width": 4, "base": TrainConfig(**t), "gaave_epochs": 1, "steps": 1,
            "annotator": TrainConfig(**t), "final": TrainConfig(**t), "device": "cpu", "tau_head": 0.5,
            "tau_tail": 0.5, "seed": 3}
    base.update(kw)
    return PipelineConfig(**base)


def trunk(state: dict[str, torch.Tensor], arch: str) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.startswith(HEADS[arch])}


# ----------------------------------------------------------------------------- shared initialisation
@pytest.mark.parametrize("arch,size,channels", [("small_cnn", 16, 1), ("resnet18", 16, 3), ("resnet18", 96, 1),
                                                ("resnet18", 96, 3)])
def test_annotators_share_trunk_weights_whatever_their_class_counts(tmp_path, arch, size, channels):
    # The head and tail models (and the annotators trained after them) have C1 != C2 outputs.
    pipe = Pipeline(tiny_config(arch=arch), dataset(size=size, channels=channels), tmp_path)
    split = pipe._split()
    c1, c2 = split.subsets["head"].num_classes, split.subsets["tail"].num_classes
    assert c1 != c2
    a, b = pipe.new_model(c1).state_dict(), pipe.new_model(c2).state_dict()
    ta, tb = trunk(a, arch), trunk(b, arch)
    assert ta.keys() == tb.keys() and len(ta) == len(a) - 2
    different = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not different, different
    # Seeded: another seed gives other trunk weights (the comparison above can fail).
    other = Pipeline(tiny_config(arch=arch, seed=4), dataset(size=size, channels=channels), tmp_path / "o")
    other._norm = pipe._norm
    assert not torch.equal(trunk(other.new_model(c1).state_dict(), arch)["1.conv1.weight" if arch == "resnet18"
                                                                          else "1.0.weight"],
                           ta["1.conv1.weight" if arch == "resnet18" else "1.0.weight"])


def test_replaced_resnet_stem_is_initialised_like_torchvision_convolutions():
    # kaiming_normal_(fan_out, relu): std = sqrt(2 / (out_channels * 3 * 3)) for the 3x3 stem.
    torch.manual_seed(0)
    w = model_factory("resnet18", 3, 32, [0.5] * 3, [0.25] * 3)(4)[1].conv1.weight
    assert w.shape == (64, 3, 3, 3)
    assert abs(float(w.detach().std()) / (2 / (64 * 9)) ** 0.5 - 1) < 0.1


# ----------------------------------------------------------------------------- pretrained
def saved_backbone(path, arch="resnet18", size=96, channels=3, classes=1000, wrap=lambda s: s, seed=123):
    """A checkpoint as FER code bases ship it: the architecture's own tensors (another seed), wrapped."""
    torch.manual_seed(seed)
    body = model_factory(arch, channels, size, [0.5] * channels, [0.25] * channels, 4)(classes)[1]
    state = body.state_dict()
    torch.save(wrap(state), path)
    return state


@pytest.mark.parametrize("wrap", [
    lambda s: s,
    lambda s: {"state_dict": {f"module.{k}": v for k, v in s.items()}, "epoch": 90},
    lambda s: {"model": {f"backbone.{k}": v for k, v in s.items()}},
    lambda s: {"state_dict": {f"module.model.{k}": v for k, v in s.items()}},
], ids=["plain", "state_dict+module", "model+backbone", "nested prefixes"])
@pytest.mark.parametrize("arch", ["resnet18", "small_cnn"])
def test_pretrained_trunk_is_the_files_and_the_head_is_new(tmp_path, wrap, arch):
    ckpt = saved_backbone(tmp_path / "b.pth", arch, wrap=wrap)
    backbone = Backbone.read(tmp_path / "b.pth")
    make = model_factory(arch, 3, 96, [0.5] * 3, [0.25] * 3, 4, backbone)
    torch.manual_seed(0)
    model = make(7).state_dict()
    head = HEADS[arch][2:]
    for k, v in ckpt.items():
        if not k.startswith(head):
            assert torch.equal(model[f"1.{k}"], v), k
    assert model[f"1.{head}weight"].shape[0] == 7
    report = make.pretrained_summary()
    assert report["num_loaded"] == len(ckpt) - 2 and not report["missing"] and not report["adapted"]
    assert report["skipped"] == [f"{head}weight", f"{head}bias"]  # the file's classifier
    assert report["sha1"] and report["path"] == str(tmp_path / "b.pth")


def test_grey_images_use_the_summed_rgb_stem(tmp_path):
    ckpt = saved_backbone(tmp_path / "b.pth", "resnet18", size=112, channels=3)
    grey = model_factory("resnet18", 1, 112, [0.5], [0.25], backbone=Backbone.read(tmp_path / "b.pth"))(5)
    rgb = model_factory("resnet18", 3, 112, [0.5] * 3, [0.25] * 3, backbone=Backbone.read(tmp_path / "b.pth"))(5)
    assert torch.allclose(grey[1].conv1.weight, ckpt["conv1.weight"].sum(1, keepdim=True))
    rgb[1].fc.load_state_dict(grey[1].fc.state_dict())
    x = torch.rand(2, 1, 112, 112)
    grey.eval(), rgb.eval()
    assert torch.allclose(grey(x), rgb(x.expand(-1, 3, -1, -1)), atol=1e-4)


def test_partial_file_lists_missing_keys_and_keeps_their_seeded_weights(tmp_path):
    ckpt = saved_backbone(tmp_path / "full.pth", "resnet18")
    part = {k: v for k, v in ckpt.items() if not k.startswith("layer4.")}
    part["projection.weight"] = torch.zeros(3, 3)
    torch.save(part, tmp_path / "part.pth")
    make = model_factory("resnet18", 3, 96, [0.5] * 3, [0.25] * 3, backbone=Backbone.read(tmp_path / "part.pth"))
    report = make.pretrained_summary()
    assert report["missing"] == [k for k in ckpt if k.startswith("layer4.")]
    assert report["skipped"] == ["fc.weight", "fc.bias", "projection.weight"]
    torch.manual_seed(0)
    seeded = model_factory("resnet18", 3, 96, [0.5] * 3, [0.25] * 3)(3).state_dict()
    torch.manual_seed(0)
    loaded = make(3).state_dict()
    assert torch.equal(loaded["1.layer4.0.conv1.weight"], seeded["1.layer4.0.conv1.weight"])
    assert torch.equal(loaded["1.layer1.0.conv1.weight"], ckpt["layer1.0.conv1.weight"])


def test_pretrained_errors_name_the_first_offending_key(tmp_path):
    saved_backbone(tmp_path / "stem7.pth", "resnet18", size=96)  # a 7x7 stem into the 3x3 stem of 32-px inputs
    make = model_factory("resnet18", 3, 32, [0.5] * 3, [0.25] * 3, backbone=Backbone.read(tmp_path / "stem7.pth"))
    with pytest.raises(PretrainedError, match=r"key 'conv1.weight' has shape \(64, 3, 7, 7\), the model's has "
                                              r"\(64, 3, 3, 3\)"):
        make(3)
    torch.save({"encoder.w": torch.zeros(2)}, tmp_path / "foreign.pth")
    make = model_factory("small_cnn", 3, 32, [0.5] * 3, [0.25] * 3, backbone=Backbone.read(tmp_path / "foreign.pth"))
    with pytest.raises(PretrainedError, match="no key matches the model.*'encoder.w'"):
        make.pretrained_summary()
    torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, tmp_path / "nostate.pth")
    with pytest.raises(PretrainedError, match="holds no state dict"):
        Backbone.read(tmp_path / "nostate.pth")
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(PretrainedError, match="cannot be read as a state dict"):
        Backbone.read(tmp_path / "text.pth")


def test_run_with_pretrained_lists_keys_in_metrics_and_pretrained_json(tmp_path):
    ckpt = saved_backbone(tmp_path / "b.pth", "small_cnn", size=16, channels=1, classes=9,
                          wrap=lambda s: {"state_dict": {f"module.{k}": v for k, v in s.items()}})
    pipe = Pipeline(tiny_config(pretrained=str(tmp_path / "b.pth"), baseline=False), dataset(), tmp_path / "run")
    report = pipe.run()
    saved = json.loads((tmp_path / "run" / "pretrained.json").read_text())
    assert report["pretrained"] == saved and saved["num_loaded"] == len(ckpt) - 2
    assert saved["loaded"][0] == "0.weight" and saved["skipped"] == ["17.weight", "17.bias"]
    for c in (2, 4):
        assert torch.equal(pipe.new_model(c).state_dict()["1.0.weight"], ckpt["0.weight"])
    with pytest.raises(ValueError, match="make_model"):
        Pipeline(tiny_config(pretrained=str(tmp_path / "b.pth")), dataset(), tmp_path / "x",
                 make_model=lambda c: torch.nn.Linear(1, c))


def test_cli_pretrained_errors_are_one_line(tmp_path, capsys):
    faces = make_demo_dataset(tmp_path / "faces", DemoSpec(image_size=16, train_counts={"happy": 8, "sad": 6},
                                                           test_per_class=2, seed=1))
    args = ["run", f"folder:{faces['train']}", "--test", "none", "--arch", "small_cnn", "--width", "4",
            "--base-epochs", "1", "--device", "cpu", "--image-size", "16", "--no-progress", "--check-workers", "0"]
    code = main([*args, "--out", str(tmp_path / "o1"), "--pretrained", str(tmp_path / "missing.pth")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--pretrained file not found" in err
    torch.save({"0.weight": torch.zeros(4, 5, 3, 3)}, tmp_path / "bad.pth")
    code = main([*args, "--out", str(tmp_path / "o2"), "--pretrained", str(tmp_path / "bad.pth")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("gaave") and "'0.weight' has shape (4, 5, 3, 3)" in err


# ----------------------------------------------------------------------------- torchvision architectures
def test_torchvision_architecture_by_name(tmp_path):
    check_arch("torchvision:convnext_tiny")
    with pytest.raises(ValueError, match="no torchvision classification model"):
        check_arch("torchvision:resnet19")
    with pytest.raises(ValueError, match="torchvision:NAME"):
        PipelineConfig(arch="vgg")
    # A cheap one end to end: grey 16-px images, C1 != C2 models share the trunk.
    pipe = Pipeline(tiny_config(arch="torchvision:squeezenet1_1"), dataset(size=32), tmp_path)
    report = pipe.run()
    assert report["final_gaave"]["train_samples"] > 0
    a, b = pipe.new_model(2).state_dict(), pipe.new_model(4).state_dict()
    assert a["1.classifier.1.weight"].shape[0] == 2 and b["1.classifier.1.weight"].shape[0] == 4
    assert all(torch.equal(a[k], b[k]) for k in a if not k.startswith("1.classifier.1."))
    x = torch.rand(3, 1, 32, 32)
    assert pipe.new_model(4).eval()(x).shape == (3, 4)
    # gaave scan --model rebuilds the run's model from its folder (squeezenet's classifier is a 1x1 conv).
    from gaave_fast.cli.models import load_checkpoint

    loaded = load_checkpoint(tmp_path / "final_gaave" / "model.pt").model
    saved = torch.load(tmp_path / "final_gaave" / "model.pt", weights_only=True)
    assert torch.equal(loaded.state_dict()["1.classifier.1.weight"], saved["1.classifier.1.weight"])
    assert loaded(x).shape == (3, saved["1.classifier.1.weight"].shape[0])


def test_cli_flags_reach_the_config(tmp_path, capsys):
    from gaave_fast.cli import build_parser
    from gaave_fast.cli.options import build_config

    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "b.pth")
    args = build_parser().parse_args(["run", "folder:x", "--out", "o", "--arch", "torchvision:mobilenet_v3_small",
                                      "--pretrained", str(tmp_path / "b.pth"), "--scan-amp", "bfloat16",
                                      "--scan-compile", "reduce-overhead"])
    cfg = build_config(args, [])
    assert (cfg.arch, cfg.pretrained, cfg.scan_amp, cfg.scan_compile) == (
        "torchvision:mobilenet_v3_small", str(tmp_path / "b.pth"), "bfloat16", "reduce-overhead")
    assert build_config(build_parser().parse_args(["run", "folder:x", "--out", "o", "--scan-compile"]), []).scan_compile
    assert main(["run", "folder:x", "--out", "o", "--arch", "torchvision:resnet19"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "resnet19" in err
