"""A surrogate learned during a run: cheap features of a genome -> the score of a costlier stage, with an
uncertainty, and the held-out figure that says how far to trust it in this very run.

Features (``Encoder``) are the genome's own choices, read from its Optuna params: a one-hot column per option
of each categorical choice (mixer family, width, kernel ...) and the value of each range (depth), so any
space encodes without code of its own; then the data-free costs (log params, log FLOPs and the structural
score). A choice a genome never made (a kernel under a mixer it did not take) is all zeros, or -1 for a range.

The model is scikit-learn's random forest: it handles one-hot and numeric columns alike, needs no scaling, and
the spread of its trees' predictions is the uncertainty an upper confidence bound (``ucb``) uses.
``held_out_tau`` is its out-of-bag Kendall tau over the stage's results so far: each result predicted by the
trees that were fitted without it; ``held_out_interval`` bootstraps that figure over the results, as over a few
results it says little.

Where part of each result is known exactly before it is measured (``known``: a proxy score's data-free part,
``nas.evaluate.proxy.data_free_score``), the forest learns only the rest, and every prediction is the known part
plus the forest's: nothing is spent learning what can be computed.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import kendalltau
from sklearn.ensemble import RandomForestRegressor

from nas.search.params import option_labels
from nas.space import Choice

COST_FEATURES = ("log10_params", "log10_flops", "structural")
TREES = 100
# Below this many results a forest says nothing a random pick would not; held_out_tau needs at least as many.
MIN_FIT = 4
INTERVAL_RESAMPLES = 200  # bootstrap resamples of the held-out tau: a few ms at a hundred results


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
    """A random forest refitted on every call to ``fit``; ``predict`` gives the mean and the spread of its trees,
    ``held_out_tau`` how well it ranks the results it was fitted on when each is predicted by the trees that
    never saw it."""

    def __init__(self, seed: int = 0, trees: int = TREES):
        self.seed, self.trees = seed, trees
        self._forest: RandomForestRegressor | None = None
        self._y: np.ndarray | None = None
        self._known: np.ndarray | float = 0.0

    def fit(self, x: np.ndarray, y: np.ndarray, known: np.ndarray | None = None) -> Surrogate:
        """``known``: the part of each result known exactly (the forest is fitted on ``y - known``)."""
        self._known = 0.0 if known is None else np.asarray(known, dtype=float)
        # min_samples_leaf=2: a leaf of one result is that result again, which makes every tree agree on it.
        self._forest = RandomForestRegressor(n_estimators=self.trees, min_samples_leaf=2, max_features=0.5,
                                             oob_score=len(y) >= MIN_FIT, random_state=self.seed, n_jobs=1)
        with warnings.catch_warnings():  # a result in every tree's sample has no out-of-bag prediction: skipped
            warnings.simplefilter("ignore", UserWarning)
            self._forest.fit(x, np.asarray(y, dtype=float) - self._known)
        self._y = np.asarray(y, dtype=float)
        return self

    def predict(self, x: np.ndarray, known: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The mean and spread of the trees' predictions for ``x``, plus ``known`` (as for ``fit``) when given."""
        if self._forest is None:
            raise RuntimeError("Surrogate.predict before fit")
        per_tree = np.stack([tree.predict(x) for tree in self._forest.estimators_])
        return per_tree.mean(axis=0) + (0.0 if known is None else np.asarray(known, dtype=float)), per_tree.std(axis=0)

    def held_out_tau(self) -> float | None:
        """Kendall tau between the results and their out-of-bag predictions (each by the trees fitted without
        it): a held-out figure that costs no refit, unlike leave-one-out, which would refit once per result.
        None below ``MIN_FIT`` results or when every result is equal (no ranking to match)."""
        pairs = self._held_out_pairs()
        return None if pairs is None else _tau(*pairs)

    def held_out_interval(self, resamples: int = INTERVAL_RESAMPLES, level: float = 0.95
                          ) -> tuple[float, float] | None:
        """A bootstrap interval of ``held_out_tau``: the results resampled with their out-of-bag predictions.
        A tau over a few results moves a lot from one result to the next; the interval says how much."""
        pairs = self._held_out_pairs()
        if pairs is None:
            return None
        predicted, y = pairs
        rng = np.random.default_rng(self.seed)
        taus = [_tau(predicted[i], y[i]) for i in rng.integers(0, len(y), size=(resamples, len(y)))]
        taus = [t for t in taus if t is not None]
        if len(taus) < resamples // 2:
            return None
        low, high = np.quantile(taus, [(1 - level) / 2, (1 + level) / 2])
        return float(low), float(high)

    def _held_out_pairs(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The out-of-bag predictions and the results they predict, where there are enough to rank."""
        if self._forest is None or self._y is None or len(self._y) < MIN_FIT or np.ptp(self._y) == 0:
            return None
        predicted = np.asarray(self._forest.oob_prediction_).reshape(len(self._y)) + self._known
        seen = np.isfinite(predicted)
        if seen.sum() < MIN_FIT:
            return None
        return predicted[seen], self._y[seen]


def _tau(predicted: np.ndarray, y: np.ndarray) -> float | None:
    tau = kendalltau(predicted, y).statistic
    return None if math.isnan(tau) else float(tau)


def ucb(mean: np.ndarray, spread: np.ndarray, kappa: float = 1.0) -> np.ndarray:
    """Upper confidence bound: what a genome may score, optimistically by ``kappa`` spreads."""
    return mean + kappa * spread


def held_out_tau(x: np.ndarray, y: np.ndarray, seed: int = 0, known: np.ndarray | None = None) -> float | None:
    """The held-out Kendall tau of a surrogate fitted on ``x``, ``y`` (``Surrogate.held_out_tau``)."""
    return Surrogate(seed=seed).fit(x, y, known).held_out_tau()


def held_out(x: np.ndarray, y: np.ndarray, seed: int = 0, known: np.ndarray | None = None
             ) -> tuple[float | None, tuple[float, float] | None]:
    """The held-out Kendall tau of a surrogate fitted on ``x``, ``y`` and its bootstrap interval."""
    surrogate = Surrogate(seed=seed).fit(x, y, known)
    return surrogate.held_out_tau(), surrogate.held_out_interval()
