"""tau selection on synthetic k distributions, the combine rules, and the detection metrics."""

import math

import numpy as np
import pytest
from scipy.stats import binom
from sklearn.metrics import roc_auc_score

from gaave_fast.pipeline.criterion import (
    combine_k,
    fit_gmm,
    select_candidates,
    select_tau,
)
from gaave_fast.pipeline.metrics import detection_metrics, roc_auc


def test_combine_rules_closed_form():
    k = np.array([[0, 9, 4], [2, 9, 1], [7, 8, 1]])
    np.testing.assert_allclose(combine_k(k, "mean"), [3, 26 / 3, 2])
    np.testing.assert_array_equal(combine_k(k, "last"), [7, 8, 1])
    np.testing.assert_array_equal(combine_k(k, "min"), [0, 8, 1])
    np.testing.assert_array_equal(combine_k(k, "median"), [2, 9, 1])
    with pytest.raises(ValueError, match="combine"):
        combine_k(k, "max")
    with pytest.raises(ValueError, match="k_epochs"):
        combine_k(np.zeros(3), "mean")


def bayes_boundary(w, m, s):
    """Root between the means of w0 N(m0, s0) = w1 N(m1, s1) (closed form of the quadratic)."""
    a = 1 / (2 * s[1] ** 2) - 1 / (2 * s[0] ** 2)
    b = m[0] / s[0] ** 2 - m[1] / s[1] ** 2
    c = m[1] ** 2 / (2 * s[1] ** 2) - m[0] ** 2 / (2 * s[0] ** 2) + math.log(w[0] * s[1] / (w[1] * s[0]))
    roots = [-c / b] if abs(a) < 1e-12 else [(-b + sg * math.sqrt(b * b - 4 * a * c)) / (2 * a) for sg in (1, -1)]
    return next(r for r in roots if m[0] < r < m[1])


@pytest.mark.parametrize("w0, m, s", [(0.3, (1.5, 7.0), (0.8, 1.0)), (0.1, (2.0, 6.0), (1.2, 0.6))])
def test_gmm_recovers_parameters(w0, m, s):
    rng = np.random.default_rng(0)
    n = 20000
    noisy = rng.random(n) < w0
    k = np.where(noisy, rng.normal(m[0], s[0], n), rng.normal(m[1], s[1], n))
    g = fit_gmm(k, tied=False)
    np.testing.assert_allclose(g.means, m, atol=0.1)
    np.testing.assert_allclose(g.stds, s, atol=0.1)
    np.testing.assert_allclose(g.weights, (w0, 1 - w0), atol=0.02)


@pytest.mark.parametrize("w0, m, sd", [(0.3, (1.5, 7.0), 1.0), (0.1, (2.0, 6.0), 0.8), (0.45, (3.0, 6.5), 1.2)])
def test_gmm_tau_near_bayes_boundary(w0, m, sd):
    rng = np.random.default_rng(0)
    n = 20000
    noisy = rng.random(n) < w0
    k = np.where(noisy, rng.normal(m[0], sd, n), rng.normal(m[1], sd, n))
    g = fit_gmm(k)
    np.testing.assert_allclose(g.stds, (sd, sd), atol=0.05)
    choice = select_tau(k)
    assert abs(choice.tau - bayes_boundary((w0, 1 - w0), m, (sd, sd))) < 0.15
    assert choice.flagged == (k <= choice.tau).sum() and choice.total == n


def test_gmm_tau_with_a_spike_of_clean_samples():
    # Mean k over 8 snapshots: most clean samples resist every attack (k = 9 exactly), the rest
    # spread below; noisy samples centre low. A free-variance fit makes the spike its own
    # component and flags nearly everything else; the shared variance must not.
    rng = np.random.default_rng(4)
    n_noisy, n_spike, n_spread = 300, 500, 200
    noisy_k = np.clip(rng.normal(3.5, 1.5, n_noisy), 0, 9)
    clean_k = np.concatenate([np.full(n_spike, 9.0), np.clip(rng.normal(7.5, 1.0, n_spread), 0, 9)])
    k = np.round(np.concatenate([noisy_k, clean_k]) * 8) / 8
    noisy = np.arange(k.size) < n_noisy
    m = detection_metrics(k <= select_tau(k).tau, noisy)
    assert m["precision"] > 0.85 and m["recall"] > 0.85
    g = fit_gmm(k, tied=False)
    free = k <= max(v for v in np.unique(k) if v <= g.means[1] and g.posterior_low(np.array([v]))[0] >= 0.5)
    assert detection_metrics(free, noisy)["precision"] < 0.7  # the failure the shared variance avoids


def test_gmm_tau_on_discrete_k():
    # k in 0..9: noisy samples are easy to flip (Binomial(9, 0.2)), clean ones resist (9 - Binomial(9, 0.1)).
    rng = np.random.default_rng(1)
    n, w0 = 5000, 0.3
    noisy = rng.random(n) < w0
    k = np.where(noisy, rng.binomial(9, 0.2, n), 9 - rng.binomial(9, 0.1, n)).astype(float)
    vals = np.arange(10)
    bayes = max(v for v in vals if w0 * binom.pmf(v, 9, 0.2) >= (1 - w0) * binom.pmf(9 - v, 9, 0.1))
    choice = select_tau(k)
    assert abs(choice.tau - bayes) <= 1
    m = detection_metrics(k <= choice.tau, noisy)
    assert m["precision"] > 0.9 and m["recall"] > 0.9


def test_fraction_rule_and_degenerate_cases():
    rng = np.random.default_rng(2)
    k = rng.integers(0, 10, 1000).astype(float)
    for f in (0.05, 0.2, 0.5):
        c = select_tau(k, "fraction", f)
        assert (k < c.tau).sum() < f * k.size <= (k <= c.tau).sum()
    assert select_tau(k, "fraction", 0.0).flagged == 0
    assert select_tau(np.full(100, 9.0)).tau == -1  # one value: nothing to separate
    assert select_tau(rng.normal(5, 1, 5000)).flagged < 250  # one mode: the components do not separate
    with pytest.raises(ValueError, match="fraction"):
        select_tau(k, "fraction", 1.5)
    with pytest.raises(ValueError, match="rule"):
        select_tau(k, "otsu")


def test_roc_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(3)
    s = rng.integers(0, 6, 3000).astype(float)
    y = rng.random(3000) < 0.2 + 0.1 * s
    assert roc_auc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    d = detection_metrics(s >= 4, y, s)
    tp = (y & (s >= 4)).sum()
    assert d["precision"] == pytest.approx(tp / (s >= 4).sum()) and d["recall"] == pytest.approx(tp / y.sum())
    assert d["auroc"] == pytest.approx(roc_auc_score(y, s))


def test_vote_candidates_and_decided_tau():
    from gaave_fast.pipeline.criterion import vote_candidates

    k = np.array([[0, 3, 2, 9], [5, 1, 2, 9], [0, 4, 9, 0], [7, 0, 9, 9]])  # 4 scans, 4 samples
    np.testing.assert_array_equal(vote_candidates(k, 2, "vote"), [True, True, True, False])
    np.testing.assert_array_equal(vote_candidates(k, 2, "min"), [True, True, True, True])
    scans = {"head": (np.array([0, 2, 4, 6]), k)}
    c = select_candidates(scans, 8, combine="vote", taus={"head": None}, rule="gmm", fraction=None,
                          record_taus={"head": 2})
    np.testing.assert_array_equal(np.flatnonzero(c.candidate), [0, 2, 4])
    assert c.taus["head"]["tau"] == 2 and c.taus["head"]["rule"] == "gmm (pilot)"
    given = select_candidates(scans, 8, combine="vote", taus={"head": 2.7}, rule="gmm", fraction=None)
    np.testing.assert_array_equal(given.candidate, c.candidate)


def test_scan_decided_pilot_then_early_exit():
    from gaave_fast.pipeline.record import pilot_rows, scan_decided

    calls = []
    k_true = np.array([0, 9, 1, 9, 9, 2, 9, 0, 9, 9], np.int16)

    def fake_scan(positions, decide_tau):
        calls.append((positions.tolist(), decide_tau))
        k = k_true[positions]
        exact = np.ones(len(positions), bool) if decide_tau is None else k <= decide_tau
        return {"index": positions + 100, "k": k, "margin": np.zeros(len(positions), np.float32),
                "loss": np.zeros(len(positions), np.float32), "pred": np.zeros(len(positions), np.int64),
                "k_exact": exact}

    pilot = pilot_rows(10, 0.3, seed=0)
    assert len(pilot) == 3 and np.all(np.diff(pilot) > 0)
    np.testing.assert_array_equal(pilot, pilot_rows(10, 0.3, seed=0))
    out = scan_decided(fake_scan, 10, tau=None, pilot=pilot, choose=lambda k: 2)
    assert calls[0] == (pilot.tolist(), None) and calls[1][1] == 2
    assert sorted(calls[0][0] + calls[1][0]) == list(range(10))
    np.testing.assert_array_equal(out["index"], np.arange(10) + 100)
    np.testing.assert_array_equal(out["k"], k_true)
    assert out["k_exact"][pilot].all() and (out["decide_tau"] == 2).all()
    calls.clear()
    scan_decided(fake_scan, 10, tau=1, pilot=pilot, choose=lambda k: 5)
    assert calls == [(list(range(10)), 1)]
