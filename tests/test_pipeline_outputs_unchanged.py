"""A run's outputs are what the recorded reference run produced (tests/data/run_digest.json).

The digest was recorded before the pipeline was restructured into stage functions over a
RunStore; equal digests show the restructuring changed no output. Float results differ across
torch builds and processors, so the comparison runs where the digest was recorded (same torch
version and machine type) and is skipped elsewhere. Regenerate it with
``python tests/run_digest.py`` only when a change alters the outputs on purpose.
"""

import json

import pytest
from run_digest import DIGEST, digest_run, environment, reference_runs


def test_outputs_equal_the_reference_digest(tmp_path):
    recorded = json.loads(DIGEST.read_text())
    if recorded["environment"] != environment():
        pytest.skip(f"digest recorded with {recorded['environment']}, this is {environment()}")
    for name, path in reference_runs(tmp_path).items():
        got, want = digest_run(path), recorded["runs"][name]
        assert sorted(got) == sorted(want), f"{name}: files differ: {sorted(set(got) ^ set(want))}"
        changed = [f for f in want if got[f] != want[f]]
        assert not changed, f"{name}: these outputs changed: {changed}"
