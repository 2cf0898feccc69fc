"""The math of `pearl analyze`: pure functions over numpy arrays, no I/O.

* stages: equal slices of the generations of a search;
* the one-hot encoding of an architecture (one dimension per option of each decision of a
  `models.space.SearchSpace`) and the dimension names in words;
* PCA by SVD; the linear bounds ``a (lat - c) <= MMACs <= b (lat - c)`` (AKD sec. 5.3);
* separability of two groups of encodings: k-fold cross-validated accuracy of a shrunk linear
  discriminant, and the distance between the group means over the within-group spread;
* AKD Fig. 8: per-dimension means, standard deviations and significance of their difference;
* AKD eq. 1 and Table 4's winning ratio; search efficiency (candidates to reach a reward).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# -- stages -----------------------------------------------------------------------------------


def stage_of(generations: Sequence[int], stages: int, last_generation: int) -> np.ndarray:
    """Stage index (0..stages-1) of each generation: generations 0..last_generation cut into
    `stages` equal slices (early generations in stage 0)."""
    if stages < 1:
        raise ValueError("stages must be >= 1")
    span = last_generation + 1
    return np.minimum(np.asarray(generations, dtype=int) * stages // span, stages - 1)


def stage_ranges(stages: int, last_generation: int) -> list[tuple[int, int]]:
    """``(first, last)`` generation of each stage (an empty stage has first > last)."""
    span = last_generation + 1
    return [(-(-s * span // stages), -(-(s + 1) * span // stages) - 1) for s in range(stages)]


# -- one-hot encodings ------------------------------------------------------------------------

_FIELD_WORDS = {"op": "op", "kernel": "kernel", "se": "SE", "skip": "skip"}


def dimension_names(space) -> list[str]:
    """One name per one-hot dimension of `space`, in words: "block 3 kernel 5"."""
    names = []
    for decision in space.decisions():
        block, field = decision.name[1:].split(".")
        word = _FIELD_WORDS.get(field, field)
        names += [
            f"block {block} {word} {option:g}"
            if isinstance(option, float)
            else f"block {block} {word} {option}"
            for option in decision.options
        ]
    return names


def one_hot(choices: Sequence[Sequence[int]], option_counts: Sequence[int]) -> np.ndarray:
    """(n, sum(option_counts)) 0/1 matrix: row i has a 1 at each decision's chosen option."""
    offsets = np.concatenate([[0], np.cumsum(option_counts)[:-1]]).astype(int)
    matrix = np.zeros((len(choices), int(sum(option_counts))))
    if len(choices):
        picks = np.asarray(choices, dtype=int)
        if picks.shape[1] != len(option_counts) or (picks >= np.asarray(option_counts)).any():
            raise ValueError("choices do not fit the search space's decisions")
        rows = np.repeat(np.arange(len(picks)), len(option_counts))
        matrix[rows, (picks + offsets).ravel()] = 1.0
    return matrix


# -- PCA --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pca:
    mean: np.ndarray  # (D,)
    components: np.ndarray  # (k, D), rows of unit length
    explained: np.ndarray  # (k,) fraction of the total variance

    def project(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=float) - self.mean) @ self.components.T


def fit_pca(x: np.ndarray, components: int = 2) -> Pca:
    """PCA of the rows of `x` by SVD of the centred matrix; each component's sign is fixed so
    that its largest coefficient is positive (the same data always gives the same picture)."""
    x = np.asarray(x, dtype=float)
    mean = x.mean(axis=0)
    _, singular, vt = np.linalg.svd(x - mean, full_matrices=False)
    k = min(components, vt.shape[0])
    vt = vt[:k] * np.sign(vt[:k][np.arange(k), np.abs(vt[:k]).argmax(axis=1)])[:, None]
    total = float((singular**2).sum())
    explained = singular[:k] ** 2 / total if total > 0 else np.zeros(k)
    return Pca(mean, vt, explained)


# -- MACs vs latency bounds -------------------------------------------------------------------


@dataclass(frozen=True)
class LinearBounds:
    lower_slope: float  # a in a (lat - c) <= MMACs
    upper_slope: float  # b in MMACs <= b (lat - c)
    offset_ms: float  # c
    coverage: float  # fraction of the points meant to lie between the bounds

    def text(self, times: str = "") -> str:
        """``a(lat - c) <= MMACs <= b(lat - c)`` (``lat + |c|`` when c < 0)."""
        sign = "-" if self.offset_ms >= 0 else "+"
        shifted = f"(lat {sign} {abs(self.offset_ms):.3g})"
        return (
            f"{self.lower_slope:.3g}{times}{shifted} <= MMACs <= "
            f"{self.upper_slope:.3g}{times}{shifted}"
        )


def fit_linear_bounds(latency_ms, mmacs, coverage: float = 0.9) -> LinearBounds:
    """``a (lat - c) <= MMACs <= b (lat - c)``: c is where the least-squares line of MMACs on
    latency crosses zero MACs (kept below the fastest point, so every ``lat - c`` > 0); a and b
    are the (1 - coverage)/2 and (1 + coverage)/2 quantiles of ``MMACs / (lat - c)``, so
    `coverage` of the points lie between the two lines."""
    lat, macs = np.asarray(latency_ms, dtype=float), np.asarray(mmacs, dtype=float)
    if len(lat) < 2 or np.ptp(lat) == 0:
        raise ValueError("need at least two points with different latencies")
    slope, intercept = np.polyfit(lat, macs, 1)
    offset = -intercept / slope if slope > 0 else 0.0
    gap = 0.01 * np.ptp(lat)
    offset = min(offset, float(lat.min()) - gap)
    ratio = macs / (lat - offset)
    tail = (1 - coverage) / 2
    return LinearBounds(
        float(np.quantile(ratio, tail)), float(np.quantile(ratio, 1 - tail)), offset, coverage
    )


# -- separability -----------------------------------------------------------------------------


def _discriminant(a: np.ndarray, b: np.ndarray, shrinkage: float):
    """Fisher's linear discriminant with the pooled covariance shrunk towards its mean
    eigenvalue (one-hot encodings make it singular): ``(w, threshold)``, b on the > side."""
    mean_a, mean_b = a.mean(axis=0), b.mean(axis=0)
    centred = np.vstack([a - mean_a, b - mean_b])
    covariance = centred.T @ centred / max(len(centred) - 2, 1)
    level = np.trace(covariance) / len(covariance) or 1.0
    covariance = (1 - shrinkage) * covariance + shrinkage * level * np.eye(len(covariance))
    w = np.linalg.solve(covariance, mean_b - mean_a)
    return w, float(w @ (mean_a + mean_b) / 2)


def cv_accuracy(a, b, folds: int = 5, seed: int = 0, shrinkage: float = 0.2) -> float:
    """Mean held-out accuracy of a linear classifier (`_discriminant`) telling group `a` from
    group `b`, by k-fold cross-validation balanced over the two groups (0.5: inseparable; 1.0:
    fully separable).  Folds are drawn over the distinct rows, so an arch sampled by both
    groups (or twice) is held out of the training of both at once: a group compared with
    itself scores exactly 0.5, not below it."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if min(len(a), len(b)) < 2:
        raise ValueError("each group needs at least 2 samples")
    distinct, inverse = np.unique(np.vstack([a, b]), axis=0, return_inverse=True)
    inverse = inverse.ravel()
    in_a = np.isin(np.arange(len(distinct)), inverse[: len(a)])
    in_b = np.isin(np.arange(len(distinct)), inverse[len(a) :])
    folds = min(folds, int(in_a.sum()), int(in_b.sum()))
    if folds < 2:
        raise ValueError("too few distinct samples to cross-validate")
    # stratified: rows of a only, of b only and of both are dealt round the folds in turn
    order = np.random.default_rng(seed).permutation(len(distinct))
    kind = (in_a.astype(int) + 2 * in_b.astype(int))[order]
    fold_of = np.empty(len(distinct), dtype=int)
    dealt = np.concatenate([order[kind == k] for k in (1, 2, 3)])
    fold_of[dealt] = np.arange(len(distinct)) % folds
    fold_a, fold_b = fold_of[inverse[: len(a)]], fold_of[inverse[len(a) :]]
    scores = []
    for k in range(folds):
        test_a, test_b = fold_a == k, fold_b == k
        train_a, train_b = a[~test_a], b[~test_b]
        if not (test_a.any() and test_b.any()) or min(len(train_a), len(train_b)) < 1:
            continue
        w, threshold = _discriminant(train_a, train_b, shrinkage)
        right_a = (a[test_a] @ w <= threshold).mean()
        right_b = (b[test_b] @ w > threshold).mean()
        scores.append((right_a + right_b) / 2)  # balanced: unequal group sizes do not count
    if not scores:
        raise ValueError("too few distinct samples to cross-validate")
    return float(np.mean(scores))


def mean_distance_ratio(a, b) -> float:
    """Distance between the group means over the within-group spread (the root mean squared
    distance of a sample to its own group's mean, over both groups): ~0 for one distribution,
    large when the groups sit apart."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if min(len(a), len(b)) < 1:
        raise ValueError("each group needs at least 1 sample")
    spread = math.sqrt(
        (((a - a.mean(axis=0)) ** 2).sum() + ((b - b.mean(axis=0)) ** 2).sum()) / (len(a) + len(b))
    )
    distance = float(np.linalg.norm(a.mean(axis=0) - b.mean(axis=0)))
    return distance / spread if spread > 0 else (0.0 if distance == 0 else math.inf)


# -- Fig. 8 -----------------------------------------------------------------------------------


def top_k_in_range(accuracy, latency_ms, k: int, low_ms: float, high_ms: float) -> np.ndarray:
    """Indices of the `k` most accurate points with low_ms <= latency <= high_ms (best first;
    ties: the faster, then the first)."""
    accuracy, latency = np.asarray(accuracy, dtype=float), np.asarray(latency_ms, dtype=float)
    inside = np.flatnonzero((latency >= low_ms) & (latency <= high_ms))
    order = sorted(inside, key=lambda i: (-accuracy[i], latency[i], i))
    return np.asarray(order[:k], dtype=int)


def operator_differences(a, b, names: Sequence[str]) -> list[dict]:
    """AKD Fig. 8: for each one-hot dimension, the frequency (mean) and std in groups `a` and
    `b`, the difference a - b, its standard error sqrt(var_a/n_a + var_b/n_b) and the
    significance |diff| / s.e.; sorted by significance, then |diff| (most different first).
    A dimension with no spread in either group and a nonzero difference is infinitely
    significant; one with no difference has significance 0."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    mean_a, mean_b = a.mean(axis=0), b.mean(axis=0)
    std_a, std_b = a.std(axis=0), b.std(axis=0)
    error = np.sqrt(std_a**2 / len(a) + std_b**2 / len(b))
    diff = mean_a - mean_b
    rows = []
    for i, name in enumerate(names):
        if error[i] > 0:
            significance = abs(diff[i]) / error[i]
        else:
            significance = 0.0 if diff[i] == 0 else math.inf
        rows.append(
            {
                "dimension": name,
                "mean_a": float(mean_a[i]),
                "std_a": float(std_a[i]),
                "mean_b": float(mean_b[i]),
                "std_b": float(std_b[i]),
                "diff": float(diff[i]),
                "se": float(error[i]),
                "significance": float(significance),
            }
        )
    return sorted(rows, key=lambda r: (-r["significance"], -abs(r["diff"]), r["dimension"]))


# -- Table 4 and search efficiency -----------------------------------------------------------


def relative_gains(kd_searched, ce_searched) -> list[float]:
    """AKD eq. 1 per pair: [KD(A) - CE(A)] - [KD(N) - CE(N)], from ``(kd, ce)`` accuracy
    pairs of the KD-searched students A and the CE-searched students N (same order)."""
    return [
        (ka - ca) - (kn - cn) for (ka, ca), (kn, cn) in zip(kd_searched, ce_searched, strict=True)
    ]


def winning_ratio(gains: Sequence[float]) -> tuple[int, int]:
    """``(wins, counted)``: pairs where the KD-searched student gains more (ties count as no
    win; AKD's "10 / (20-2)" leaves out pairs it could not score, as `counted` does)."""
    return sum(1 for g in gains if g > 0), len(gains)


def candidates_to_reach(rewards: Sequence[float | None], threshold: float) -> int | None:
    """How many candidates (in proposal order, unscored ones included) until a reward >=
    `threshold` first appears; None if never."""
    for count, reward in enumerate(rewards, start=1):
        if reward is not None and reward >= threshold:
            return count
    return None
