"""Speaker clustering for the offline diarizer, in plain numpy/scipy over unit embeddings.

- `estimate_clusters`: how many speakers and which piece belongs to whom, judged relative to the
  recording's own distances: weighted k-means proposes a partition for every k, and the
  weighted silhouette (how much closer each piece is to its own cluster than to the next,
  relative to those distances) picks k and decides whether the best split is two voices or one
  voice's natural variation. No absolute distance threshold: close voices (0.3 apart, with 0.24
  inside one) and far synthetic ones (0.6 apart) are split alike.
- `spherical_kmeans`: centroids refined on all embeddings, clusters never vanish.
- `viterbi`: the most likely speaker per step under a switch penalty that is cheap at pauses
  and dear inside continuous speech (a two-state-per-speaker-free HMM resegmentation).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class ClusterEstimate:
    labels: np.ndarray  # cluster per piece, 0..k-1
    k: int
    silhouette: float  # weighted silhouette of the chosen k (0 when k == 1)
    contrast: float  # centroid distance / within spread of the best two-way split
    best_split_silhouette: float  # silhouette of the best two-way split (-1: none balanced), even when k == 1


def unit(x: np.ndarray) -> np.ndarray:
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-8)


def centroids(emb: np.ndarray, labels: np.ndarray, k: int, weights: Optional[np.ndarray] = None) -> np.ndarray:
    w = np.ones(len(emb)) if weights is None else weights
    out = np.zeros((k, emb.shape[1]), dtype=np.float64)
    for c in range(k):
        m = labels == c
        if m.any():
            out[c] = (emb[m] * w[m, None]).sum(axis=0)
    return unit(out)


def weighted_silhouette(dist: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> float:
    """Silhouette (Rousseeuw) with each point's a/b averaged by the other points' weights, and the
    mean taken by weight: a 10 s piece counts ten times a 1 s piece."""
    ks = np.unique(labels)
    if len(ks) < 2:
        return 0.0
    n = len(labels)
    s = np.zeros(n)
    for i in range(n):
        own = labels == labels[i]
        own_w = weights * own
        own_w[i] = 0.0
        if own_w.sum() <= 0:
            continue  # a singleton's silhouette is 0 by convention
        a = float((dist[i] * own_w).sum() / own_w.sum())
        b = min(float((dist[i] * (weights * (labels == c))).sum() / weights[labels == c].sum())
                for c in ks if c != labels[i])
        s[i] = (b - a) / max(a, b, 1e-8)
    return float((s * weights).sum() / weights.sum())


def split_contrast(emb: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> float:
    """For the two heaviest clusters: cosine distance between their centroids over the mean
    (weighted) distance of members to their own centroid."""
    ids, _ = np.unique(labels, return_counts=True)
    mass = np.array([weights[labels == c].sum() for c in ids])
    top = ids[np.argsort(-mass)[:2]]
    if len(top) < 2:
        return 0.0
    cent = centroids(emb, labels, int(labels.max()) + 1, weights)
    between = 1.0 - float(cent[top[0]] @ cent[top[1]])
    m = np.isin(labels, top)
    within = float(((1.0 - np.sum(emb[m] * cent[labels[m]], axis=1)) * weights[m]).sum() / weights[m].sum())
    return between / max(within, 1e-6)


def estimate_clusters(
    emb: np.ndarray,
    weights: np.ndarray,
    *,
    min_k: int = 1,
    max_k: int = 8,
    min_silhouette: float = 0.225,
    min_contrast: float = 0.0,
    min_cluster_weight: float = 0.1,
    min_cluster_size: int = 2,
    min_cluster_seconds: float = 20.0,
    k_penalty: float = 0.03,
    seed: int = 0,
) -> ClusterEstimate:
    """Cluster unit embeddings `emb` (one per speech piece, weighted by its duration).

    For every k >= 2, weighted k-means (k-means++ starts, several of them, seeded) proposes a
    partition; partitions where a cluster holds fewer than `min_cluster_size` pieces, or less
    than `min_cluster_weight` of the speech and less than `min_cluster_seconds` (weights are
    seconds), are not candidates (a voice's odd sentence is not a speaker; a guest's three
    minutes of an hour are). The weighted silhouette picks k, a larger k having to beat a
    smaller one by `k_penalty` per extra speaker. k = 1 unless the chosen split reaches
    `min_silhouette` and `min_contrast`; `min_k`/`max_k` bound the answer (a known speaker
    count sets both)."""
    n = len(emb)
    max_k = max(1, min(max_k, n))
    min_k = max(1, min(min_k, max_k))
    if n == 0:
        return ClusterEstimate(np.zeros(0, dtype=int), 0, 0.0, 0.0, 0.0)
    one = ClusterEstimate(np.zeros(n, dtype=int), 1, 0.0, 0.0, 0.0)
    if n == 1 or max_k == 1:
        return one
    from scipy.spatial.distance import pdist, squareform

    dist = squareform(np.clip(pdist(emb, metric="cosine"), 0.0, 2.0))
    total = float(weights.sum())
    best: Optional[tuple[float, int, np.ndarray]] = None
    candidates: dict[int, tuple[float, np.ndarray]] = {}
    valid: set[int] = set()
    for k in range(2, max_k + 1):
        if k > min_k and k * min_cluster_size > n:
            break
        labels = weighted_kmeans(emb, weights, k, seed=seed)
        if len(np.unique(labels)) < k:
            continue
        sil = weighted_silhouette(dist, labels, weights)
        candidates[k] = (sil, labels)
        smallest = min(float(weights[labels == c].sum()) for c in range(k))
        fewest = int(np.bincount(labels, minlength=k).min())
        too_small = smallest < min_cluster_weight * total and smallest < min_cluster_seconds
        if (too_small or fewest < min_cluster_size) and k > min_k:
            continue
        valid.add(k)
        if best is None or sil - k_penalty * (k - best[1]) > best[0] + 1e-9:
            best = (sil, k, labels)
    if min_k > 1 and (best is None or best[1] < min_k):
        k = min_k if min_k in candidates else max(candidates, default=1)
        if k == 1:
            return one
        best = (candidates[k][0], k, candidates[k][1])
    if best is None:
        return one
    sil, k, labels = best
    contrast = split_contrast(emb, labels, weights)
    two_sil = candidates[2][0] if 2 in valid else -1.0
    if min_k == 1 and (sil < min_silhouette or contrast < min_contrast):
        return ClusterEstimate(np.zeros(n, dtype=int), 1, 0.0, contrast, two_sil)
    return ClusterEstimate(labels, k, sil, contrast, two_sil)


def weighted_kmeans(emb: np.ndarray, weights: np.ndarray, k: int, *, seed: int = 0, n_init: int = 10) -> np.ndarray:
    """Labels 0..k-1 (numbered by first appearance) of weighted k-means on unit vectors
    (Euclidean on the sphere orders like cosine), the best of `n_init` k-means++ starts."""
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(emb, sample_weight=weights)
    return _renumber_by_appearance(km.labels_)


def spherical_kmeans(emb: np.ndarray, labels: np.ndarray, k: int, weights: Optional[np.ndarray] = None,
                     iters: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(centroids, labels) after weighted spherical k-means from `labels`; no cluster vanishes."""
    w = np.ones(len(emb)) if weights is None else weights
    labels = labels.copy()
    for _ in range(iters):
        cent = centroids(emb, labels, k, w)
        new = np.argmax(emb @ cent.T, axis=1)
        if len(np.unique(new)) < k or np.array_equal(new, labels):
            break
        labels = new
    return centroids(emb, labels, k, w), labels


def viterbi(scores: np.ndarray, switch_cost: np.ndarray) -> np.ndarray:
    """Best state path. `scores`: (steps, states) log-likelihoods; `switch_cost[t]` >= 0 is paid
    for changing state between step t-1 and t (switch_cost[0] is unused)."""
    n, k = scores.shape
    if n == 0:
        return np.zeros(0, dtype=int)
    if k == 1:
        return np.zeros(n, dtype=int)
    back = np.zeros((n, k), dtype=np.int32)
    acc = scores[0].astype(np.float64).copy()
    for t in range(1, n):
        stay = acc
        best_prev = int(np.argmax(acc))
        move = acc[best_prev] - switch_cost[t]
        take_move = move > stay
        back[t] = np.where(take_move, best_prev, np.arange(k))
        acc = np.where(take_move, move, stay) + scores[t]
    path = np.zeros(n, dtype=int)
    path[-1] = int(np.argmax(acc))
    for t in range(n - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def _renumber_by_appearance(labels: np.ndarray) -> np.ndarray:
    order: dict[int, int] = {}
    for lab in labels.tolist():
        order.setdefault(lab, len(order))
    return np.array([order[lab] for lab in labels.tolist()], dtype=int)
