"""PipelineConfig round trips, validation, and which stages a config change invalidates."""

import dataclasses

import pytest

from gaave_fast.pipeline.config import PipelineConfig
from gaave_fast.pipeline.store import _FIELD_STAGES, STAGES, stale_stages
from gaave_fast.pipeline.train import TrainConfig


def custom_config():
    return PipelineConfig(seed=7, ablation="no_annotator", head_classes=[3, 1], arch="small_cnn", width=16,
                          base=TrainConfig(epochs=3, batch_size=32, flip=False, crop_padding=2, oversample=True),
                          gaave_epochs=4, eps=2 / 255, alpha=0.001, steps=5, combine="median", tau_head=3.5,
                          tau_rule="fraction", tau_fraction=0.25, annotator=TrainConfig(schedule="cosine"),
                          final=TrainConfig(optimizer="sgd", lr=0.1, amp=False), baseline=False, device="cpu")


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_round_trip(tmp_path, suffix):
    for cfg in (PipelineConfig(), custom_config()):
        path = tmp_path / f"cfg{suffix}"
        cfg.save(path)
        back = PipelineConfig.load(path)
        assert back == cfg
        assert isinstance(back.base, TrainConfig)
        # Every field survives, nested ones included.
        assert dataclasses.asdict(back) == dataclasses.asdict(cfg)


def test_validation_names_the_field():
    for kwargs, name in [({"ablation": "nope"}, "ablation"), ({"arch": "vgg"}, "arch"),
                         ({"gaave_epochs": 0}, "gaave_epochs"), ({"combine": "max"}, "combine"),
                         ({"tau_rule": "fraction"}, "tau_fraction"), ({"eps": 0.0}, "eps"),
                         ({"scan_backend": "cuda"}, "scan_backend"), ({"base": {"lr_typo": 1}}, "base")]:
        with pytest.raises(ValueError, match=name):
            PipelineConfig(**kwargs)
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="unknown"):
        PipelineConfig.from_dict({"sead": 1})


def test_stale_stages():
    a = PipelineConfig()
    after = lambda s: set(STAGES[STAGES.index(s):6])
    assert stale_stages(a, PipelineConfig()) == set()
    assert stale_stages(a, PipelineConfig(seed=1)) == set(STAGES)
    assert stale_stages(a, PipelineConfig(tau_rule="fraction", tau_fraction=0.1)) == after("criterion")
    assert stale_stages(a, PipelineConfig(eps=4 / 255)) == after("record")
    assert stale_stages(a, PipelineConfig(final=TrainConfig(epochs=5))) == {"final", "baseline"}
    assert stale_stages(a, PipelineConfig(annotator=TrainConfig(progress=False, num_workers=2))) == set()
    assert stale_stages(a, PipelineConfig(arch="small_cnn")) == after("base") | {"baseline"}


def test_every_config_field_has_its_stages():
    # A field missing from the staleness map would let a changed setting reuse stale outputs.
    assert set(_FIELD_STAGES) == {f.name for f in dataclasses.fields(PipelineConfig)}
    assert all(set(stages) <= set(STAGES) for stages in _FIELD_STAGES.values())
