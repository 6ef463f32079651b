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

Where one column is an estimate of the result itself (``line_column``: the objective's value, which a training
stage reads beside the zero-cost scores), a forest fitted on 20 results uses it as one column among dozens and
ranks worse than the column alone (benchmarks/BENCHMARKS.md, "Replay"). So the surrogate also fits a line in that
column (slope kept at zero or above: an estimate that ranks against the results is not followed) plus a forest
on what the line leaves, weighed by that forest's out-of-bag R^2 (0 where it predicts the rest no better than
its mean, as over 20 results it mostly does), and keeps whichever of the two ranks the results better held out:
the forest's out-of-bag predictions, or the line's leave-one-out ones plus the weighed forest's out-of-bag ones.
Where the estimate was fitted on the task it ranks well and the line is kept; on a task it knows nothing of the
forest usually is. The held-out tau reported is the kept model's: the better of two, so a little optimistic.
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
    never saw it. ``line_column``: a column that estimates the result; the surrogate is then the forest or a
    line in that column plus a weighed forest on the rest, whichever ranks better held out (``uses_line``)."""

    def __init__(self, seed: int = 0, trees: int = TREES, line_column: int | None = None):
        self.seed, self.trees, self.line_column = seed, trees, line_column
        self._forest: RandomForestRegressor | None = None
        self._y: np.ndarray | None = None
        self._known: np.ndarray | float = 0.0
        self._line: Line | None = None  # set when the line is kept
        self._held_out: np.ndarray | None = None  # the kept model's held-out prediction of each result

    @property
    def uses_line(self) -> bool:
        """Whether the last ``fit`` kept the line in ``line_column`` (plus its weighed forest) over the forest."""
        return self._line is not None

    def fit(self, x: np.ndarray, y: np.ndarray, known: np.ndarray | None = None) -> Surrogate:
        """``known``: the part of each result known exactly (the model is fitted on ``y - known``)."""
        self._known = 0.0 if known is None else np.asarray(known, dtype=float)
        self._y = np.asarray(y, dtype=float)
        target = self._y - self._known
        self._forest, self._line = self._fitted_forest(x, target), None
        self._held_out = _out_of_bag(self._forest, len(target))
        if self.line_column is not None and len(target) >= MIN_FIT:
            value = x[:, self.line_column]
            line = Line.fitted(value, target)
            left = target - line(value)
            forest = self._fitted_forest(x, left)
            rest = _out_of_bag(forest, len(target))
            line.weight = _r_squared(rest, left)
            # a weight of 0 adds nothing, not the NaN of a result every tree saw
            held_out = line.left_out(value, target) + (line.weight * rest if line.weight else 0.0)
            if _ranks_better(held_out, self._held_out, target):
                self._forest, self._line, self._held_out = forest, line, held_out
        return self

    def predict(self, x: np.ndarray, known: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The mean and spread of the trees' predictions for ``x``, plus ``known`` (as for ``fit``) when given.
        Where the line is kept: the line's value plus the weighed trees' mean, with the trees' spread (what the
        line leaves unexplained)."""
        if self._forest is None:
            raise RuntimeError("Surrogate.predict before fit")
        per_tree = np.stack([tree.predict(x) for tree in self._forest.estimators_])
        mean = per_tree.mean(axis=0)
        if self._line is not None:
            mean = self._line(x[:, self.line_column]) + self._line.weight * mean
        return mean + (0.0 if known is None else np.asarray(known, dtype=float)), per_tree.std(axis=0)

    def _fitted_forest(self, x: np.ndarray, target: np.ndarray) -> RandomForestRegressor:
        # min_samples_leaf=2: a leaf of one result is that result again, which makes every tree agree on it.
        forest = RandomForestRegressor(n_estimators=self.trees, min_samples_leaf=2, max_features=0.5,
                                       oob_score=len(target) >= MIN_FIT, random_state=self.seed, n_jobs=1)
        with warnings.catch_warnings():  # a result in every tree's sample has no out-of-bag prediction: skipped
            warnings.simplefilter("ignore", UserWarning)
            forest.fit(x, target)
        return forest

    def held_out_tau(self) -> float | None:
        """Kendall tau between the results and their out-of-bag predictions (each by the trees fitted without
        it; where the line is kept, plus the line fitted without it): a held-out figure that costs no refit of a
        forest, unlike leave-one-out, which would refit once per result.
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
        """The held-out predictions and the results they predict, where there are enough to rank."""
        if self._held_out is None or self._y is None or len(self._y) < MIN_FIT or np.ptp(self._y) == 0:
            return None
        predicted = self._held_out + self._known
        seen = np.isfinite(predicted)
        if seen.sum() < MIN_FIT:
            return None
        return predicted[seen], self._y[seen]


class Line:
    """``slope * value + intercept`` fitted by least squares on the results whose value is finite, the slope kept
    at zero or above; a value that is not finite is read as the mean of the finite ones. ``weight``: how much of
    the forest on what the line leaves is added to it (``Surrogate.fit`` sets it)."""

    def __init__(self, slope: float, intercept: float, fill: float):
        self.slope, self.intercept, self.fill, self.weight = slope, intercept, fill, 0.0

    @classmethod
    def fitted(cls, value: np.ndarray, y: np.ndarray) -> Line:
        seen = np.isfinite(value)
        fill = float(value[seen].mean()) if seen.any() else 0.0
        if seen.sum() >= 2 and np.ptp(value[seen]) > 0:
            slope, intercept = np.polyfit(value[seen], y[seen], 1)
            if slope > 0:
                return cls(float(slope), float(intercept), fill)
        return cls(0.0, float(np.mean(y)), fill)

    def __call__(self, value: np.ndarray) -> np.ndarray:
        value = np.asarray(value, dtype=float)
        return self.slope * np.where(np.isfinite(value), value, self.fill) + self.intercept

    def left_out(self, value: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Each result predicted by the line fitted on the others."""
        out = np.empty(len(y))
        for i in range(len(y)):
            others = np.arange(len(y)) != i
            out[i] = Line.fitted(value[others], y[others])(value[i:i + 1])[0]
        return out


def _out_of_bag(forest: RandomForestRegressor, n: int) -> np.ndarray | None:
    """Each result predicted by the trees fitted without it (NaN where every tree saw it); None below MIN_FIT."""
    return np.asarray(forest.oob_prediction_).reshape(n) if n >= MIN_FIT else None


def _r_squared(predicted: np.ndarray | None, y: np.ndarray) -> float:
    """The share of ``y``'s variance the held-out ``predicted`` explains, kept within [0, 1]."""
    if predicted is None:
        return 0.0
    seen = np.isfinite(predicted)
    spread = float(np.sum((y[seen] - y[seen].mean()) ** 2))
    if seen.sum() < MIN_FIT or spread == 0:
        return 0.0
    return float(np.clip(1 - np.sum((y[seen] - predicted[seen]) ** 2) / spread, 0.0, 1.0))


def _ranks_better(first: np.ndarray, second: np.ndarray | None, y: np.ndarray) -> bool:
    """Whether ``first`` ranks ``y`` at least as well as ``second`` (held-out predictions; NaN: none)."""
    first_tau = _tau(first[np.isfinite(first)], y[np.isfinite(first)])
    if second is None:
        return first_tau is not None
    second_tau = _tau(second[np.isfinite(second)], y[np.isfinite(second)])
    return first_tau is not None and (second_tau is None or first_tau >= second_tau)


def _tau(predicted: np.ndarray, y: np.ndarray) -> float | None:
    tau = kendalltau(predicted, y).statistic
    return None if math.isnan(tau) else float(tau)


def ucb(mean: np.ndarray, spread: np.ndarray, kappa: float = 1.0) -> np.ndarray:
    """Upper confidence bound: what a genome may score, optimistically by ``kappa`` spreads."""
    return mean + kappa * spread


def held_out_tau(x: np.ndarray, y: np.ndarray, seed: int = 0, known: np.ndarray | None = None) -> float | None:
    """The held-out Kendall tau of a surrogate fitted on ``x``, ``y`` (``Surrogate.held_out_tau``)."""
    return Surrogate(seed=seed).fit(x, y, known).held_out_tau()
