"""stages/analysis/diarize/clustering.py: the speaker count judged relative to a recording's own distances,
and the Viterbi resegmentation, on constructed embeddings whose distances are those measured on
real and synthetic speech (cosine distance 0.2-0.25 inside a voice, 0.3-0.35 between two close
voices)."""
from __future__ import annotations

import numpy as np
import pytest

from stages.analysis.diarize.clustering import estimate_clusters, unit, viterbi, weighted_silhouette

DIM = 256


def voices(n_per: list[int], between: float, within: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit embeddings of len(n_per) voices: each piece is its voice's direction plus isotropic
    noise scaled so the mean pairwise cosine distance inside a voice is `within`, and the
    voices' directions are `between` - `within` further apart on average."""
    rng = np.random.default_rng(seed)
    base = unit(rng.normal(size=DIM))
    # Noise of squared norm s2 puts two pieces of a voice 1 - 1/(1 + s2) = within apart; voices'
    # directions d_c apart put their pieces within + d_c * (1 - within) apart.
    s2 = within / (1 - within)
    d_c = (between - within) / (1 - within)
    # Directions whose mutual cosine distance is d_c: a shared base plus private parts.
    centres = [unit(np.sqrt(1 - d_c) * base + np.sqrt(d_c) * unit(rng.normal(size=DIM))) for _ in n_per]
    sigma = np.sqrt(s2 / DIM)
    emb, lab = [], []
    for v, n in enumerate(n_per):
        for _ in range(n):
            emb.append(unit(centres[v] + rng.normal(0, sigma, DIM)))
            lab.append(v)
    return np.array(emb), np.array(lab)


def mean_distances(emb: np.ndarray, lab: np.ndarray) -> tuple[float, float]:
    d = 1 - emb @ emb.T
    iu = np.triu_indices(len(lab), 1)
    same = (lab[:, None] == lab[None, :])[iu]
    return float(d[iu][same].mean()), float(d[iu][~same].mean()) if (~same).any() else float("nan")


@pytest.mark.parametrize("seed", range(5))
def test_two_close_voices_are_two_and_one_voice_stays_one(seed):
    emb, lab = voices([8, 7], between=0.33, within=0.24, seed=seed)
    w_in, w_between = mean_distances(emb, lab)
    assert 0.2 < w_in < 0.28 and 0.3 < w_between < 0.38  # the real call's figures
    est = estimate_clusters(emb, np.ones(len(emb)))
    assert est.k == 2
    agree = (est.labels == lab).mean()
    assert max(agree, 1 - agree) == 1.0
    # One voice with the same spread inside: its best two-way split is not good enough.
    one, _ = voices([15], between=0.33, within=0.24, seed=seed)
    est1 = estimate_clusters(one, np.ones(len(one)))
    assert est1.k == 1 and est1.best_split_silhouette < 0.225


def test_no_absolute_threshold_far_voices_and_tight_voices():
    # Far synthetic voices (0.6 apart) and very consistent ones (0.1 inside, 0.2 between): both two.
    for between, within in ((0.6, 0.2), (0.2, 0.1)):
        emb, lab = voices([10, 10], between=between, within=within, seed=3)
        est = estimate_clusters(emb, np.ones(len(emb)))
        assert est.k == 2, (between, within, est)


def test_three_voices_a_known_count_and_bounds():
    emb, lab = voices([6, 6, 6], between=0.45, within=0.2, seed=1)
    assert estimate_clusters(emb, np.ones(18)).k == 3
    assert estimate_clusters(emb, np.ones(18), max_k=2).k == 2
    one, _ = voices([12], between=0.3, within=0.24, seed=2)
    assert estimate_clusters(one, np.ones(12), min_k=2, max_k=2).k == 2  # a known count is obeyed


def test_an_outlier_piece_is_not_a_speaker():
    emb, _ = voices([12], between=0.3, within=0.2, seed=4)
    odd = unit(np.random.default_rng(9).normal(size=DIM))  # one piece far from everything
    emb = np.vstack([emb, odd])
    est = estimate_clusters(emb, np.ones(len(emb)))
    assert est.k == 1


def test_weights_count_long_pieces_more():
    emb, lab = voices([6, 6], between=0.4, within=0.2, seed=5)
    d = np.clip(1 - emb @ emb.T, 0, 2)
    even = weighted_silhouette(d, lab, np.ones(12))
    # Mislabel one piece: it hurts more when that piece is long.
    bad = lab.copy()
    bad[0] = 1 - bad[0]
    short = weighted_silhouette(d, bad, np.r_[0.1, np.ones(11)])
    long = weighted_silhouette(d, bad, np.r_[10.0, np.ones(11)])
    assert even > short > long


def test_empty_and_single_inputs():
    assert estimate_clusters(np.zeros((0, DIM)), np.zeros(0)).k == 0
    one = estimate_clusters(unit(np.ones((1, DIM))), np.ones(1))
    assert one.k == 1 and one.labels.tolist() == [0]


def test_viterbi_switch_costs():
    # Evidence for speaker 1 in steps 3-4 only, one unit per step.
    scores = np.zeros((8, 2))
    scores[:, 0] = 1.0
    scores[3:5] = [0.0, 1.0]
    cheap = np.full(8, 0.1)
    assert viterbi(scores, cheap).tolist() == [0, 0, 0, 1, 1, 0, 0, 0]
    # Two switches inside continuous speech cost more than the evidence: no change.
    dear = np.full(8, 3.0)
    assert viterbi(scores, dear).tolist() == [0] * 8
    # ... unless the changes fall where speech pauses (cheap there).
    at_pauses = dear.copy()
    at_pauses[[3, 5]] = 0.1
    assert viterbi(scores, at_pauses).tolist() == [0, 0, 0, 1, 1, 0, 0, 0]
    assert viterbi(np.zeros((0, 2)), np.zeros(0)).tolist() == []
    assert viterbi(np.ones((3, 1)), np.zeros(3)).tolist() == [0, 0, 0]
