"""Checkpoint and resume: a scan killed mid-way and rerun ends with the identical result."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import scan_fixture
from torch.utils.data import DataLoader

from gaave_fast import ops, scan

pytestmark = pytest.mark.skipif(ops.extension_error() is not None, reason="extension not built")
TESTS = Path(__file__).resolve().parent


def run_child(checkpoint: Path, crash_at: int) -> int:
    """Scan in a child process that hard-exits while loading sample `crash_at`.

    It runs in the checkpoint's folder so that `-c` does not put the source tree's
    gaave_fast (possibly unbuilt) ahead of the one under test.
    """
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        from torch.utils.data import DataLoader
        import scan_fixture
        from gaave_fast import scan
        loader = DataLoader(scan_fixture.IndexedImages(crash_at={crash_at}), batch_size=6)
        scan(scan_fixture.model(), loader, checkpoint={str(checkpoint)!r}, checkpoint_every=0,
             **scan_fixture.SCAN_KWARGS)
    """)
    return subprocess.run([sys.executable, "-c", code], env=scan_fixture.child_env(), cwd=checkpoint.parent,
                          timeout=300, check=False).returncode


def test_resume_after_hard_kill_is_identical(tmp_path):
    ckpt = tmp_path / "scan.npz"
    assert run_child(ckpt, crash_at=27) == 3  # killed while loading the 5th batch
    partial = np.load(ckpt)
    assert 0 < len(partial["index"]) < 40, "the checkpoint should hold the finished batches only"

    loader = DataLoader(scan_fixture.IndexedImages(), batch_size=6)
    resumed = scan(scan_fixture.model(), loader, checkpoint=ckpt, **scan_fixture.SCAN_KWARGS)
    fresh = scan(scan_fixture.model(), loader, **scan_fixture.SCAN_KWARGS)
    for name in ("index", "k", "label", "pred", "first_miss", "margin", "loss"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(fresh, name), err_msg=name)
    assert len(resumed) == 40


def test_resume_with_other_settings_is_refused(tmp_path):
    ckpt = tmp_path / "scan.npz"
    loader = DataLoader(scan_fixture.IndexedImages(), batch_size=8)
    scan(scan_fixture.model(), loader, checkpoint=ckpt, **scan_fixture.SCAN_KWARGS)
    other = dict(scan_fixture.SCAN_KWARGS, eps=2 / 255)
    with pytest.raises(ValueError, match="different scan .*eps"):
        scan(scan_fixture.model(), loader, checkpoint=ckpt, **other)
    changed = scan_fixture.model()
    changed[0].bias.data += 1
    with pytest.raises(ValueError, match="different scan .*model"):
        scan(changed, loader, checkpoint=ckpt, **scan_fixture.SCAN_KWARGS)
    smaller = DataLoader(scan_fixture.IndexedImages(n=30), batch_size=8)
    with pytest.raises(ValueError, match="different scan .*num_samples"):
        scan(scan_fixture.model(), smaller, checkpoint=ckpt, **scan_fixture.SCAN_KWARGS)


def test_finished_checkpoint_skips_all_work(tmp_path):
    ckpt = tmp_path / "scan.npz"
    loader = DataLoader(scan_fixture.IndexedImages(), batch_size=8)
    first = scan(scan_fixture.model(), loader, checkpoint=ckpt, **scan_fixture.SCAN_KWARGS)
    calls = []
    model = scan_fixture.model()
    model.register_forward_hook(lambda *a: calls.append(1))
    again = scan(model, loader, checkpoint=ckpt, **scan_fixture.SCAN_KWARGS)
    assert calls == []
    np.testing.assert_array_equal(first.k, again.k)
