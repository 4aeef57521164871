"""The ``"estimate"`` tau rule: confident learning's off-diagonal count from a record's margins,
losses and predictions, against a loop reference on full probability matrices and on a
simulated noisy problem whose noise rate is known."""

import numpy as np
import pytest

from gaave_fast.pipeline import PipelineConfig
from gaave_fast.pipeline.criterion import (
    Evidence,
    confident_off_diagonal,
    estimate_candidates,
    select_candidates,
    select_tau,
)
from gaave_fast.result import suspicion_score


def record_of(probs: np.ndarray, labels: np.ndarray) -> Evidence:
    """What a scan records of full softmax outputs [T', n, C]: margin, loss, prediction."""
    rows = np.arange(labels.size)
    own = probs[:, rows, labels]
    others = probs.copy()
    others[:, rows, labels] = -1.0
    return Evidence(labels, probs.shape[2], np.log(own) - np.log(others.max(axis=2)), -np.log(own),
                    probs.argmax(axis=2))


def reference_off_diagonal(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The documented rule, written out sample by sample on the full probabilities."""
    scans, n, c = probs.shape
    p_label = np.array([np.mean([probs[t, i, labels[i]] for t in range(scans)]) for i in range(n)])
    thresholds = np.array([p_label[labels == j].mean() if (labels == j).any() else np.nan for j in range(c)])
    thresholds[np.isnan(thresholds)] = np.nanmean(thresholds)
    out = np.zeros(n, bool)
    for i in range(n):
        votes = [int(np.argmax(probs[t, i])) for t in range(scans)]
        other = max(range(c), key=lambda j: (votes.count(j), -j))
        if other == labels[i]:
            continue
        # the largest other class's probability, averaged over the scans
        p_other = np.mean([max(probs[t, i, j] for j in range(c) if j != labels[i]) for t in range(scans)])
        out[i] = p_other >= thresholds[other]
    return out


@pytest.mark.parametrize("scans", [1, 3])
def test_off_diagonal_matches_the_reference(scans):
    rng = np.random.default_rng(scans)
    n, c = 400, 5
    labels = rng.integers(0, c - 1, n)  # class c-1 carries no sample, like the head subset's extra class
    probs = rng.dirichlet(np.full(c, 0.7), size=(scans, n))
    got = confident_off_diagonal(record_of(probs, labels))
    want = reference_off_diagonal(probs, labels)
    assert 0.05 < want.mean() < 0.95
    np.testing.assert_array_equal(got, want)


def test_estimate_reads_the_first_scan():
    # Later scans that fit every label (memorised) do not hide the first scan's off-diagonals.
    probs, labels, _ = simulated(0.3, n=600)
    memorised = np.full_like(probs[0], 0.05)
    memorised[np.arange(labels.size), labels] = 0.85
    both = np.concatenate([probs, memorised[None], memorised[None]])
    k = np.full(labels.size, 5.0)
    flagged, _ = estimate_candidates(k, record_of(both, labels))
    assert flagged.sum() == confident_off_diagonal(record_of(probs, labels)).sum() > 0.2 * labels.size
    assert not confident_off_diagonal(record_of(both, labels)).any()


def simulated(rate: float, n: int = 3000, c: int = 4, seed: int = 0):
    """A model that knows the true classes (it has not memorised the noisy labels): probability
    0.8-0.95 on the true class, the rest spread; labels flipped uniformly with ``rate``."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, c, n)
    flip = rng.random(n) < rate
    labels = np.where(flip, (true + rng.integers(1, c, n)) % c, true)
    top = rng.uniform(0.8, 0.95, n)
    rest = rng.dirichlet(np.ones(c - 1), n) * (1 - top)[:, None]
    probs = np.zeros((1, n, c))
    for i in range(n):
        probs[0, i, true[i]] = top[i]
        probs[0, i, [j for j in range(c) if j != true[i]]] = rest[i]
    return probs, labels, flip


@pytest.mark.parametrize("rate", [0.1, 0.3])
def test_estimate_lands_on_the_noise_rate(rate):
    probs, labels, flip = simulated(rate)
    ev = record_of(probs, labels)
    k = np.where(probs[0].argmax(1) == labels, 9.0, 0.0)
    flagged, rates = estimate_candidates(k, ev)
    assert abs(flagged.mean() - rate) < 0.25 * rate, (flagged.mean(), rate)
    assert (flagged & flip).sum() / flagged.sum() > 0.9
    for c, r in rates.items():  # per class: the share flagged is the class's estimate
        assert flagged[labels == c].mean() == pytest.approx(r)


def test_estimate_flags_the_most_suspicious_of_each_class():
    rng = np.random.default_rng(3)
    probs, labels, _ = simulated(0.3, n=600)
    ev = record_of(probs, labels)
    k = rng.integers(0, 10, labels.size).astype(float)
    flagged, _ = estimate_candidates(k, ev)
    score = suspicion_score(k, ev.margin.mean(axis=0))
    off = confident_off_diagonal(ev)  # one scan: the first
    for c in np.unique(labels):
        rows = labels == c
        assert flagged[rows].sum() == off[rows].sum()
        if flagged[rows].any() and (~flagged[rows]).any():
            assert score[rows & flagged].min() >= score[rows & ~flagged].max()


def test_select_candidates_estimate_and_its_errors():
    probs, labels, _ = simulated(0.2, n=500)
    ev = record_of(probs, labels)
    k = np.where(probs[0].argmax(1) == labels, 9.0, 0.0)[None]
    index = np.arange(labels.size) * 2  # every other dataset position
    crit = select_candidates({"all": (index, k)}, 1000, combine="mean", taus={}, rule="estimate", fraction=None,
                             evidence={"all": ev})
    flagged, rates = estimate_candidates(k[0], ev)
    np.testing.assert_array_equal(crit.candidate[index], flagged)
    assert not crit.candidate[1::2].any()
    assert crit.taus["all"]["rule"] == "estimate" and set(crit.taus["all"]["noise_rate"]) == {str(c) for c in rates}
    given = select_candidates({"all": (index, k)}, 1000, combine="mean", taus={"all": 4.0}, rule="estimate",
                              fraction=None)
    assert given.candidate.sum() == (k[0] <= 4).sum()
    with pytest.raises(ValueError, match="margins, losses and predictions"):
        select_candidates({"all": (index, k)}, 1000, combine="mean", taus={}, rule="estimate", fraction=None)
    with pytest.raises(ValueError, match="integer tau"):
        select_candidates({"all": (index, k)}, 1000, combine="vote", taus={}, rule="estimate", fraction=None,
                          evidence={"all": ev})
    with pytest.raises(ValueError, match="select_candidates"):
        select_tau(k[0], "estimate")


def test_presets_pick_the_tau_rule():
    assert PipelineConfig().setting("tau_rule") == "estimate"
    assert PipelineConfig(preset="paper").setting("tau_rule") == "gmm"
    assert PipelineConfig(tau_rule="fraction", tau_fraction=0.2).setting("tau_rule") == "fraction"
    # a decided record chooses tau before it scans: the default preset falls back to gmm there
    assert PipelineConfig(record="decided", combine="vote").setting("tau_rule") == "gmm"
    with pytest.raises(ValueError, match="tau_rule 'estimate'"):
        PipelineConfig(record="decided", combine="vote", tau_rule="estimate")
