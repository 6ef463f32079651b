"""A surrogate learned during a run: cheap features of a genome -> the score of a costlier stage, with an
uncertainty, and the held-out figure that says how far to trust it in this very run.

Features (``Encoder``) are the genome's own choices, read from its Optuna params: a one-hot column per option
of each categorical choice (mixer family, width, kernel ...) and the value of each range (depth), so any
space encodes without code of its own; then the data-free costs (log params, log FLOPs and the structural
score). A choice a genome never made (a kernel under a mixer it did not take) is all zeros, or -1 for a range.

The model is scikit-learn's random forest: it handles one-hot and numeric columns alike, needs no scaling, and
the spread of its trees' predictions is the uncertainty an upper confidence bound (``ucb``) uses.
``held_out_tau`` is the leave-one-out Kendall tau over the stage's results so far.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import kendalltau
from sklearn.ensemble import RandomForestRegressor

from nas.search.params import option_labels
from nas.space import Choice

COST_FEATURES = ("log10_params", "log10_flops", "structural")
# Trees in the forest that chooses, and in each leave-one-out refit (n refits per figure: fewer trees there).
TREES, LOO_TREES = 100, 24
# Below this many results a forest says nothing a random pick would not; held_out_tau needs at least as many.
MIN_FIT = 4


class Encoder:
    """Genome params (Optuna's, by YAML path) and data-free costs -> one row of numbers per genome."""

    def __init__(self, space_choices: Sequence[Choice]):
        self.columns: list[str] = []
        self._slots: list[tuple[str, Any]] = []  # (path, label) per one-hot column, (path, None) per range
        for choice in space_choices:
            if choice.kind == "choice":
                for label in option_labels(choice):
                    self.columns.append(f"{choice.path}={label}")
                    self._slots.append((choice.path, label))
            else:
                self.columns.append(choice.path)
                self._slots.append((choice.path, None))
        self.columns += COST_FEATURES

    def row(self, params: dict[str, Any], params_count: float, flops: float, structural: float) -> list[float]:
        out = []
        for path, label in self._slots:
            value = params.get(path)
            if label is None:
                out.append(-1.0 if value is None else float(value))
            else:
                out.append(1.0 if value == label else 0.0)
        return out + [math.log10(max(params_count, 1.0)), math.log10(max(flops, 1.0)), structural]


class Surrogate:
    """A random forest refitted on every call to ``fit``; ``predict`` gives the mean and the spread of its trees."""

    def __init__(self, seed: int = 0, trees: int = TREES):
        self.seed, self.trees = seed, trees
        self._forest: RandomForestRegressor | None = None

    def fit(self, x: np.ndarray, y: np.ndarray) -> Surrogate:
        self._forest = _forest(self.trees, self.seed).fit(x, y)
        return self

    @property
    def fitted(self) -> bool:
        return self._forest is not None

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._forest is None:
            raise RuntimeError("Surrogate.predict before fit")
        per_tree = np.stack([tree.predict(x) for tree in self._forest.estimators_])
        return per_tree.mean(axis=0), per_tree.std(axis=0)


def _forest(trees: int, seed: int) -> RandomForestRegressor:
    # min_samples_leaf=2: a leaf of one result is that result again, which makes every tree agree on it.
    return RandomForestRegressor(n_estimators=trees, min_samples_leaf=2, max_features=0.5, random_state=seed,
                                 n_jobs=1)


def ucb(mean: np.ndarray, std: np.ndarray, kappa: float = 1.0) -> np.ndarray:
    """Upper confidence bound: what a genome may score, optimistically by ``kappa`` spreads."""
    return mean + kappa * std


def held_out_tau(x: np.ndarray, y: np.ndarray, seed: int = 0) -> float | None:
    """Leave-one-out Kendall tau: each result predicted by a forest fitted on all the others, ranked against
    the results. None below ``MIN_FIT`` results or when every result is equal (no ranking to match)."""
    n = len(y)
    if n < MIN_FIT or np.ptp(y) == 0:
        return None
    predicted = np.empty(n)
    for i in range(n):
        keep = np.arange(n) != i
        predicted[i] = _forest(LOO_TREES, seed).fit(x[keep], y[keep]).predict(x[i:i + 1])[0]
    tau = kendalltau(predicted, y).statistic
    return None if math.isnan(tau) else float(tau)
