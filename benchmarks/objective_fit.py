"""How far to trust each objective, measured on the trained corpus; and the fit of the default training-free
objective.

Reads ``benchmarks/results/corpus/``: ``genomes.jsonl`` and ``runs.jsonl`` (``benchmarks/corpus.py``) and
``scores.jsonl`` (``benchmarks/corpus_scores.py``). The truth for a task is the validation accuracy after the
long schedule, seed 0, or with ``--truth seeds`` its mean over each genome's seeds (``long_truth``). Every
figure is Kendall's tau-b against it with a bootstrap 95% interval (genomes resampled, ``--bootstrap`` times),
beside the noise ceiling: the tau between seeds of the same genome.

The default objective is a ridge regression (scikit-learn's ``RidgeCV``, its penalty chosen by leave-one-out on
the fitting genomes) of the within-task rank of long accuracy on standardised terms: log-scores, log params and
log FLOPs, and the genome's descriptors (``nas.evaluate.proxy.genome_descriptors``: which mixer family holds the
blocks' FLOPs, the last block's family, depth and width; ``--features descriptors`` stands for all of those
found in the corpus). It is scored only on what it was not fitted on:

- *held-out genomes*: 5 folds over genomes; each fold's genomes are predicted by a model fitted on the other
  folds' genomes (both tasks), and the tau is taken over all out-of-fold predictions, per task;
- *held-out task*: fitted on every genome of one task, judged on the other task.

``--write`` refits on every genome of both tasks and writes the coefficients to
``nas/evaluate/objectives/any.json``, the objective for any space, which ``nas.evaluate.proxy.combine`` reads;
``--write SPACE`` writes ``SPACE.json``, the objective of a shipped space (fitted on that space's corpus). With
``--batch task`` (scores of the tasks' own images) they are ``any.data.json`` and ``SPACE.data.json``, the fits
that score a search given ``--data``.

    python benchmarks/objective_fit.py                 # the tables (markdown)
    python benchmarks/objective_fit.py --write         # and ship the refitted objective for any space
    python benchmarks/objective_fit.py --nested        # the choice among CANDIDATES, nested inside the folds

Because the shipped terms were chosen among ``CANDIDATES`` on the same corpus, ``--nested`` repeats that choice
inside each outer fold (the set with the best mean tau over both tasks on inner 5-fold CV of the outer fold's
fitting genomes), so the figure it prints has seen no genome it is judged on, not even to choose the terms.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections.abc import Callable, Collection
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import kendalltau, rankdata
from sklearn.ensemble import ExtraTreesRegressor, HistGradientBoostingRegressor, RandomForestRegressor
from sklearn.kernel_ridge import KernelRidge
from sklearn.linear_model import RidgeCV
from sklearn.svm import SVR

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from corpus import OUT, SEEDS, read_genomes, read_jsonl  # noqa: E402
from corpus_supernet import supernet_variant  # noqa: E402

from nas.evaluate.proxy import (  # noqa: E402
    GENERAL_OBJECTIVE,
    KERNEL,
    OBJECTIVES,
    ON_DATA,
    TERMS,
    combine,
    fitted_objective,
    genome_descriptors,
    objective_term,
)
from nas.genome import Genome  # noqa: E402
from nas.io import shipped_space_name  # noqa: E402

RIDGE_ALPHAS = np.logspace(-2, 3, 11)
DEFAULT_FEATURES = "structural,grad_norm,meco,params,flops,descriptors"
# The terms of the tiny space's and the shared fit's twins on the tasks' images (``--batch task``): nested CV
# chose them on both corpora (benchmarks/BENCHMARKS.md).
DATA_FEATURES = "structural,grad_norm,meco,snip,zico,synflow,naswot,params,flops,descriptors"
# The term sets the default was chosen among (``--nested``): a descriptor prefix stands for every descriptor
# in the corpus that starts with it.
CANDIDATES = {
    "scores, params, FLOPs": "structural,grad_norm,meco,params,flops",
    "all seven scores, params, FLOPs": "structural,grad_norm,meco,snip,zico,synflow,naswot,params,flops",
    "+ family FLOPs shares": "structural,grad_norm,meco,params,flops,flops_share:",
    "+ last family, blocks, widths": "structural,grad_norm,meco,params,flops,flops_share:,last:,blocks,"
                                     "log_mean_width,log_max_width",
    "+ mixer type per map size": "structural,grad_norm,meco,params,flops,flops_share:,last:,at_level:,blocks,"
                                 "log_mean_width,log_max_width,width_falls",
    "+ width per map size (shipped)": DEFAULT_FEATURES,
    "data-free: params, FLOPs, structural, descriptors": "params,flops,structural,descriptors",
    "all seven scores, descriptors": DATA_FEATURES,
}
# Other models on the same terms (``--models``): does anything but a linear fit rank held-out genomes better?
MODELS = {
    "random forest (500 trees, leaf 3, a third of the terms per split)": lambda: RandomForestRegressor(
        500, min_samples_leaf=3, max_features=0.33, random_state=0, n_jobs=2),
    "extra trees (the same)": lambda: ExtraTreesRegressor(
        500, min_samples_leaf=3, max_features=0.33, random_state=0, n_jobs=2),
    "gradient boosting (histogram, depth 3, 200 rounds at 0.05)": lambda: HistGradientBoostingRegressor(
        max_iter=200, learning_rate=0.05, max_depth=3, min_samples_leaf=10, random_state=0),
    "SVR (RBF, C 1, epsilon 0.05)": lambda: SVR(C=1.0, epsilon=0.05, gamma="scale"),
    "kernel ridge (RBF, alpha 0.1)": lambda: KernelRidge(alpha=0.1, kernel="rbf"),
    "kernel ridge (RBF, alpha 1)": lambda: KernelRidge(alpha=1.0, kernel="rbf"),
}


class RidgeAndKernel:
    """The ridge (``fit``) plus a kernel ridge (RBF, alpha 0.1) fitted on what the ridge leaves: the kernel adds
    the terms' interactions near the fitting genomes, and far from all of them it adds nothing, so the ridge's
    extrapolation stands (a kernel alone falls to 0 there: a zoo genome at 224x224 would score as nothing)."""

    def fit(self, z: np.ndarray, y: np.ndarray) -> RidgeAndKernel:
        self.ridge = RidgeCV(alphas=RIDGE_ALPHAS).fit(z, y)
        self.kernel = KernelRidge(alpha=0.1, kernel="rbf").fit(z, y - self.ridge.predict(z))
        return self

    def predict(self, z: np.ndarray) -> np.ndarray:
        return self.ridge.predict(z) + self.kernel.predict(z)


# The model ``--model kernel`` ships (``nas.evaluate.proxy.KERNEL``): with 480 genomes of the tiny space it ranks
# held-out genomes better than the ridge; on hybrid32's 200, and for the --data twins on a held-out task, it does
# not (BENCHMARKS.md).
KERNEL_MODEL = "ridge plus kernel ridge (RBF, alpha 0.1) on its residuals"
MODELS[KERNEL_MODEL] = RidgeAndKernel
# The data-free part of the objective, fitted alone for comparison.
DATA_FREE = ("params", "flops", "structural")
# The default objective before the corpus existed, for comparison.
HAND_SET = {"structural": 1.0, "synflow": 1.0, "grad_norm": 1.0}


def tau(x: list[float], y: list[float]) -> float:
    pairs = [(a, b) for a, b in zip(x, y) if a is not None and b is not None and math.isfinite(a)]
    if len(pairs) < 3:
        return math.nan
    return float(kendalltau([p[0] for p in pairs], [p[1] for p in pairs]).statistic)


def figure(value: float) -> str:
    """A tau as the tables print it; a task with no accuracy here (``--leave-out``) is not measured."""
    return "not measured" if math.isnan(value) else f"{value:+.3f}"


def bootstrap(x: list[float], y: list[float], reps: int, seed: int = 0) -> tuple[float, float]:
    """A 95% percentile interval of tau over genomes resampled with replacement."""
    rng, n, taus = random.Random(seed), len(x), []
    for _ in range(reps):
        idx = [rng.randrange(n) for _ in range(n)]
        t = tau([x[i] for i in idx], [y[i] for i in idx])
        if math.isfinite(t):
            taus.append(t)
    if not taus:
        return math.nan, math.nan
    taus.sort()
    return taus[int(0.025 * len(taus))], taus[min(len(taus) - 1, int(0.975 * len(taus)))]


def accuracy(runs: list[dict], task: str, fidelity: str, seed: int = 0) -> dict[str, float]:
    return {r["genome"]: r["accuracy"] for r in runs if r["task"] == task and r["fidelity"] == fidelity
            and r["seed"] == seed and r["accuracy"] is not None}


# What a figure is read against (``--truth``), in words: one seed's long accuracy, or its mean over seeds.
TRUTHS = {"seed0": "seed 0", "seeds": "the mean over each genome's seeds (`--truth seeds`)"}


def long_truth(runs: list[dict], task: str, truth: str = "seed0") -> dict[str, float]:
    """The truth for ``task``: the long accuracy of seed 0 (``seed0``), or (``seeds``) its mean over the seeds
    each genome was trained with at the long fidelity (0, 1 and 2 on the whole tiny corpus: a third of one
    seed's variance; 0 and 1 on hybrid32's first 120 genomes)."""
    if truth == "seed0":
        return accuracy(runs, task, "long")
    by_seed = [accuracy(runs, task, "long", seed) for seed in SEEDS]
    return {g: float(np.mean([s[g] for s in by_seed if g in s])) for g in by_seed[0]}


def noise_ceiling(runs: list[dict], task: str, fidelity: str, reps: int) -> tuple[float, tuple[float, float], int]:
    """Mean tau between two seeds' accuracies of the same genomes, over the seed pairs, and its interval: on
    the genomes run with every seed of 0, 1 and 2 that has runs (a corpus may replicate with seed 1 alone)."""
    by_seed = {s: accuracy(runs, task, fidelity, s) for s in (0, 1, 2)}
    seeds = [s for s in by_seed if by_seed[s]]
    common = sorted(set.intersection(*(set(by_seed[s]) for s in seeds)))
    if len(seeds) < 2 or len(common) < 3:
        return math.nan, (math.nan, math.nan), len(common)
    pairs = [(a, b) for a in seeds for b in seeds if a < b]
    taus = [tau([by_seed[a][g] for g in common], [by_seed[b][g] for g in common]) for a, b in pairs]
    lows, highs = zip(*(bootstrap([by_seed[a][g] for g in common], [by_seed[b][g] for g in common], reps)
                        for a, b in pairs))
    return sum(taus) / len(pairs), (sum(lows) / len(pairs), sum(highs) / len(pairs)), len(common)


def stability(runs: list[dict], task: str) -> tuple[float, int]:
    """Tau between the accuracies after the long schedule's last two epochs (seed 0)."""
    longs = [r for r in runs if r["task"] == task and r["fidelity"] == "long" and r["seed"] == 0 and r["history"]]
    return tau([r["history"][-2] for r in longs], [r["history"][-1] for r in longs]), len(longs)


def first_stages(runs: list[dict], task: str, epochs: int = 3) -> tuple[float, float, float, int]:
    """The two first stages a training cascade can pay ``epochs`` for, against the long accuracy of another
    seed (so neither shares the run's own noise with the truth), mean over the ordered seed pairs, on the
    genomes trained with more than one seed: a whole short schedule, the long schedule's first ``epochs``, and
    beside them the long accuracy itself (the noise ceiling). A seed pair with fewer than 3 such genomes (a
    corpus that replicated only the long schedule) is left out; ``n`` is the last pair's count."""
    def runs_of(fidelity: str, seed: int) -> dict[str, dict]:
        return {r["genome"]: r for r in runs if r["task"] == task and r["fidelity"] == fidelity
                and r["seed"] == seed and len(r["history"]) >= epochs}

    pairs = [(a, b) for a in (0, 1, 2) for b in (0, 1, 2) if a != b]
    short, early, ceiling, n = [], [], [], 0
    for a, b in pairs:
        first, long_a, long_b = runs_of("short", a), runs_of("long", a), runs_of("long", b)
        common = sorted(set(first) & set(long_a) & set(long_b))
        if len(common) < 3:
            continue
        truth = [long_b[g]["accuracy"] for g in common]
        short.append(tau([first[g]["accuracy"] for g in common], truth))
        early.append(tau([long_a[g]["history"][epochs - 1] for g in common], truth))
        ceiling.append(tau([long_a[g]["accuracy"] for g in common], truth))
        n = len(common)
    if not short:
        return math.nan, math.nan, math.nan, 0
    return (sum(short) / len(short), sum(early) / len(early), sum(ceiling) / len(ceiling), n)


def load(corpora: list[Path], first: int | None = None, extra: Collection[Path] = ()
         ) -> tuple[dict[str, dict], list[dict], list[dict], list[dict], dict[str, str]]:
    """The genomes, runs, scores and supernet records of ``corpora`` together (each corpus's first ``first``
    genomes by index, when given), and each genome's corpus (its directory's name). ``extra``: folders of more
    genomes of the first corpus's space (``corpus_fresh``, drawn after ``corpus``), read as part of it, so that
    accuracy is ranked among all of that space's genomes at once."""
    genomes: dict[str, dict] = {}
    space_of: dict[str, str] = {}
    runs, scores, inherited = [], [], []
    for corpus, name in [(c, c.name) for c in corpora] + [(e, corpora[0].name) for e in extra]:
        mine = {g["genome"]: g for g in read_genomes(corpus, first)}
        genomes.update(mine)
        space_of.update(dict.fromkeys(mine, name))
        runs += [r for r in read_jsonl(corpus / "runs.jsonl") if r["genome"] in mine]
        scores += [s for s in read_jsonl(corpus / "scores.jsonl") if s["genome"] in mine]
        inherited += [r for r in read_jsonl(corpus / "supernet.jsonl") if r["genome"] in mine]
    return genomes, runs, scores, inherited, space_of


def single_terms(genomes: dict[str, dict], scores: list[dict], tasks: list[str], batch: str
                 ) -> dict[str, dict[str, dict[str, float]]]:
    """Each score, params and FLOPs on its own: name -> task -> genome -> value (finite values only); on
    several batches (``A+B``), the mean over them, for the genomes scored on all."""
    if "+" in batch:
        per_batch = [single_terms(genomes, scores, tasks, one) for one in batch.split("+")]
        return {key: {task: mean_over([terms[key][task] for terms in per_batch]) for task in tasks}
                for key in per_batch[0]}
    names = sorted({k for s in scores for k in s["scores"] if k in TERMS and k != "score"}) + ["params", "flops"]
    out: dict[str, dict[str, dict[str, float]]] = {key: {task: {} for task in tasks} for key in names}
    for s in scores:
        if s["task"] in tasks and s["batch"] == batch and s["seed"] == 0:
            for key in names:
                value = s["scores"].get(key) if key not in ("params", "flops") else genomes[s["genome"]][key]
                if value is not None and math.isfinite(value):
                    out[key][s["task"]][s["genome"]] = value
    return out


def mean_over(values: list[dict[str, float]]) -> dict[str, float]:
    """Genome -> the mean of its values in every dict, for the genomes in all of them."""
    common = set.intersection(*(set(v) for v in values))
    return {g: float(np.mean([v[g] for v in values])) for g in values[0] if g in common}


def mean_rows(rows: list[dict[str, list[float]]]) -> dict[str, list[float]]:
    """Genome -> the term-by-term mean of its feature rows in every dict, for the genomes in all of them."""
    common = set.intersection(*(set(r) for r in rows))
    return {g: [float(np.mean(values)) for values in zip(*(r[g] for r in rows))] for g in rows[0] if g in common}


def stacked(data: dict[str, tuple[dict, dict]]) -> tuple[np.ndarray, np.ndarray]:
    """Every task's rows of the genomes with an accuracy, one under the other, and each one's rank of accuracy
    within its task (``rank_target``): what a fit on ``data`` is fitted on."""
    xs, ys = [], []
    for rows, acc in data.values():
        ids = sorted(set(rows) & set(acc))
        xs += [rows[g] for g in ids]
        ys += list(rank_target([acc[g] for g in ids]))
    return np.array(xs), np.array(ys)


def kernel_fit(data: dict[str, tuple[dict, dict]], ridge: tuple[np.ndarray, np.ndarray, np.ndarray]
               ) -> dict[str, Any]:
    """The kernel of ``KERNEL_MODEL`` fitted on every genome of every task, on what ``ridge`` (``fit_all``'s)
    leaves, as ``nas.evaluate.proxy`` reads it: ``gamma`` (scikit-learn's default for the RBF kernel: 1 / the
    number of terms), ``support`` (the standardised rows, rounded to 6 digits) and ``dual`` (their
    coefficients)."""
    x, y = stacked(data)
    # the ridge's own prediction, intercept included (on standardised terms it is the targets' mean)
    left = y - (predict(ridge, x) + y.mean())
    support = np.round(standardised(x)[0], 6)
    kernel = KernelRidge(alpha=0.1, kernel="rbf").fit(support, left)
    return {"gamma": 1.0 / support.shape[1], "support": support.tolist(),
            "dual": [float(c) for c in kernel.dual_coef_]}


def fit_all(data: dict[str, tuple[dict, dict]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ridge fitted on every genome of every task (what ``--write`` ships)."""
    return fit(*stacked(data))


def transform(name: str, values: dict[str, float], batch_size: int) -> float | None:
    """The term ``combine`` makes of a score or descriptor (``nas.evaluate.proxy.objective_term``); ``None``
    when a score is missing or not finite; NaN for a descriptor of a map the genome lacks, which ``fit`` and
    ``predict`` hold at the fitting genomes' mean, as ``combine`` does (``NEUTRAL_WHEN_ABSENT``)."""
    if name in TERMS and (values.get(name) is None or not math.isfinite(values[name])):
        return None
    term = objective_term(values, name, batch_size)
    if term is None:
        return math.nan
    return term if math.isfinite(term) else None


def descriptors(genomes: dict[str, dict]) -> dict[str, dict[str, float]]:
    """Genome -> its descriptors (``genome_descriptors``), read from its canonical form."""
    return {g: genome_descriptors(Genome.model_validate(record["canonical"])) for g, record in genomes.items()}


def feature_rows(genomes: dict[str, dict], scores: list[dict], task: str, batch: str, features: list[str],
                 described: dict[str, dict[str, float]] | None = None, seeds: Collection[int] = (0,)
                 ) -> dict[str, list[float]]:
    """Genome -> its feature vector (transformed), for the genomes with every feature finite; ``described``:
    each genome's descriptors, where ``features`` names any. Several ``seeds``: each term is the mean of its
    values under those scoring seeds (weights and the scores' randomness), for the genomes scored with all."""
    if "+" in batch:  # several batches' scores (batch draws), each term the mean over them
        return mean_rows([feature_rows(genomes, scores, task, one, features, described, seeds)
                          for one in batch.split("+")])
    if len(seeds) > 1:
        return mean_rows([feature_rows(genomes, scores, task, batch, features, described, (seed,))
                          for seed in seeds])
    rows = {}
    for s in scores:
        if s["task"] != task or s["batch"] != batch or s["seed"] != seeds[0]:
            continue
        g = s["genome"]
        values = {**s["scores"], "params": genomes[g]["params"], "flops": genomes[g]["flops"],
                  **(described or {}).get(g, {})}
        row = [transform(f, values, s["batch_size"]) for f in features]
        if all(v is not None for v in row):
            rows[g] = row
    return rows


def default_fit_data(genomes: dict[str, dict], scores: list[dict], runs: list[dict], truth: str = "seed0",
                     batch: str = "default", terms: str = DEFAULT_FEATURES
                     ) -> tuple[dict[str, tuple[dict, dict]], list[int]]:
    """What ``--write`` fits, for studies that refit it: per task, each genome's row of the default terms on the
    default batch (or ``terms`` on ``batch``: a ``--data`` twin) and its long accuracy (``long_truth``: seed 0,
    or the mean over seeds); and the indexes of the terms that run no network (the data-free part, for
    ``restricted``)."""
    described = descriptors(genomes)
    every = sorted({k for d in described.values() for k in d})
    present = {k for s in scores for k in s["scores"]} | {"params", "flops"} | set(every)
    features = [f for f in expand(terms, every) if f in present]
    keep = [i for i, f in enumerate(features) if f in DATA_FREE or f in every]
    data = {t: (feature_rows(genomes, scores, t, batch, features, described), long_truth(runs, t, truth))
            for t in sorted({r["task"] for r in runs})}
    return data, keep


def standardised(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x - mean) / std`` per column, over the values present, with an absent value (NaN: a map the genome
    lacks) at 0, the column's mean; and that mean and std. A column no row has is all 0."""
    present = ~np.isnan(x)
    counts = present.sum(axis=0)
    mean = np.where(counts > 0, np.nansum(x, axis=0) / np.maximum(counts, 1), 0.0)
    std = np.sqrt(np.where(present, (x - mean) ** 2, 0.0).sum(axis=0) / np.maximum(counts, 1)) + 1e-12
    return np.nan_to_num((x - mean) / std), mean, std


def fit(x: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None
        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ridge on standardised features (``standardised``), its penalty chosen by leave-one-out on ``x``: (mean,
    std, coefficients); ``weight``: each row's weight (a task's share, ``--tradeoff``)."""
    z, mean, std = standardised(x)
    model = RidgeCV(alphas=RIDGE_ALPHAS).fit(z, y, sample_weight=weight)
    return mean, std, model.coef_


def predict(model: tuple[np.ndarray, np.ndarray, np.ndarray], x: np.ndarray) -> np.ndarray:
    mean, std, coef = model
    return np.nan_to_num((x - mean) / std) @ coef


def rank_target(acc: list[float]) -> np.ndarray:
    return (rankdata(acc) - 0.5) / len(acc)


def within_corpus(acc: dict[str, float], space_of: dict[str, str]) -> dict[str, float]:
    """Each genome's accuracy as its rank within its own corpus (``rank_target``): spaces are searched one at
    a time, so a fit on several corpora learns the order within a space, not which space trains better."""
    out: dict[str, float] = {}
    for space in set(space_of.values()):
        ids = [g for g in acc if space_of[g] == space]
        if ids:
            out.update(zip(ids, map(float, rank_target([acc[g] for g in ids]))))
    return out


def fittable(data: dict[str, tuple[dict, dict]]) -> list[str]:
    """The genomes with every task's terms and at least one task's accuracy (``--leave-out`` may drop a task's
    accuracy for a whole corpus), sorted."""
    return sorted(set.intersection(*(set(rows) for rows, _ in data.values()))
                  & set.union(*(set(acc) for _, acc in data.values())))


def restricted(model: tuple[np.ndarray, np.ndarray, np.ndarray], keep: list[int] | None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The model with only the ``keep`` features weighed, every other at its mean: the objective's data-free
    part, when ``keep`` are its terms that run no network (``replay.held_out_priors``)."""
    if keep is None:
        return model
    mean, std, coef = model
    return mean, std, np.where(np.isin(np.arange(len(coef)), keep), coef, 0.0)


def held_out_genomes(data: dict[str, tuple[dict, dict]], folds: int = 5, seed: int = 0,
                     columns: list[int] | None = None, keep: list[int] | None = None,
                     regressor: Callable[[], Any] | None = None,
                     given: dict[str, dict[str, list[float]]] | None = None,
                     fitting: int | None = None, shares: dict[str, float] | None = None) -> dict[str, dict]:
    """Out-of-fold predictions per task: task -> genome -> prediction. ``columns``: fit on those features
    only; ``keep``: fit on all, predict with those only (``restricted``); ``regressor``: a scikit-learn
    regressor fitted on the standardised features instead of the shipped ridge (``--models``); ``given``: task
    -> genome -> the row to predict from, where not ``data``'s (the same terms on another batch's scores);
    ``fitting``: each fold fitted on that many of the other folds' genomes, drawn at random
    (``objective_saturation.py``); ``shares``: task -> the weight of its rows in the fit (equal when absent:
    the fit ranks by the mean of the tasks' ranks), for ``--tradeoff``."""
    ids = fittable(data)
    random.Random(seed).shuffle(ids)
    pick = (lambda row: row) if columns is None else (lambda row: [row[i] for i in columns])
    out: dict[str, dict] = {task: {} for task in data}
    for k in range(folds):
        test = set(ids[k::folds])
        others = [g for g in ids if g not in test]
        drawn = set(others if fitting is None else random.Random(100 + folds * seed + k).sample(others, fitting))
        xs, ys, ws = [], [], []
        for task, (rows, acc) in data.items():
            train = [g for g in others if g in drawn and g in acc]
            xs += [pick(rows[g]) for g in train]
            ys += list(rank_target([acc[g] for g in train]))
            ws += [1.0 if shares is None else shares[task]] * len(train)
        if regressor is None:
            model = restricted(fit(np.array(xs), np.array(ys), None if shares is None else np.array(ws)), keep)
            predicted = partial(predict, model)
        else:
            z, mean, std = standardised(np.array(xs))
            other = regressor().fit(z, np.array(ys))
            predicted = lambda row, m=mean, s=std, r=other: r.predict(np.nan_to_num((row - m) / s))  # noqa: E731
        for task, (rows, _) in data.items():
            rows = rows if given is None else given[task]
            for g in ids[k::folds]:  # the fold's order, not the set's: the bootstrap resamples reproduce
                if g in rows:
                    out[task][g] = float(predicted(np.array([pick(rows[g])]))[0])
    return out


def prediction_tau(data: dict[str, tuple[dict, dict]], predicted: dict[str, dict],
                   only: Collection[str] | None = None) -> dict[str, float]:
    """Kendall tau per task between ``predicted`` (task -> genome -> prediction) and the task's accuracy;
    ``only``: over those genomes alone."""
    def judged(t: str) -> list[str]:
        return [g for g in predicted[t] if g in data[t][1] and (only is None or g in only)]
    return {t: tau([p[g] for g in judged(t)], [data[t][1][g] for g in judged(t)]) for t, p in predicted.items()}


def shuffled_tau(data: dict[str, tuple[dict, dict]], shuffles: int, only: Collection[str] | None = None,
                 **held_out: Any) -> dict[str, float]:
    """``held_out_genomes``' tau per task (over the genomes ``only``, when given), the mean over ``shuffles``
    shufflings of the folds (seeds 0 up); ``held_out``: its other arguments."""
    taus = [prediction_tau(data, held_out_genomes(data, seed=k, **held_out), only) for k in range(shuffles)]
    return {t: float(np.mean([x[t] for x in taus])) for t in data}


def held_out_task(data: dict[str, tuple[dict, dict]], keep: list[int] | None = None,
                  regressor: Callable[[], Any] | None = None) -> dict[str, dict]:
    """Each task predicted by a model fitted on the other task(s); ``keep`` and ``regressor`` as for
    ``held_out_genomes``. A task whose other tasks have no accuracy to fit on (``--leave-out`` dropped them) is
    left out."""
    out = {}
    for task in data:
        others = {other: pair for other, pair in data.items() if other != task}
        x, y = stacked(others)
        if len(x) < 3:
            continue
        rows = data[task][0]
        if regressor is None:
            model = restricted(fit(x, y), keep)
            out[task] = {g: float(predict(model, np.array([rows[g]]))[0]) for g in rows}
        else:
            out[task] = fitted_and_predicted(others, {task: data[task]}, rows, regressor)[task]
    return out


def fitted_and_predicted(fitting: dict[str, tuple[dict, dict]], data: dict[str, tuple[dict, dict]],
                         judged: Collection[str], regressor: Callable[[], Any] | None) -> dict[str, dict]:
    """Task -> genome -> prediction for the ``judged`` genomes of ``data``, by the ridge (``regressor`` None) or
    ``regressor`` fitted on every genome of ``fitting`` (both tasks)."""
    x, y = stacked(fitting)
    if regressor is None:
        model = fit(x, y)
        # with the intercept the shipped sum leaves out (the targets' mean), as a regressor's prediction has it:
        # the nested choice pools folds predicted by either
        predicted = lambda row: predict(model, row) + float(np.mean(y))  # noqa: E731
    else:
        z, mean, std = standardised(x)
        other = regressor().fit(z, y)
        predicted = lambda row: other.predict(np.nan_to_num((row - mean) / std))  # noqa: E731
    judged = set(judged)
    return {task: {g: float(predicted(np.array([row]))[0]) for g, row in rows.items() if g in judged}
            for task, (rows, _) in data.items()}


def nested_model_choice(data: dict[str, tuple[dict, dict]], models: dict[str, Callable[[], Any] | None],
                        shuffles: int = 3, folds: int = 5) -> tuple[dict[str, float], dict[str, int]]:
    """The model (``None``: the shipped ridge) chosen inside each outer fold by its mean tau over the tasks on
    inner 5-fold CV of the fold's fitting genomes, then fitted on them and judged on the fold: the held-out tau
    per task (mean over ``shuffles`` shufflings of the outer folds) of a choice that saw no genome it is judged
    on, and how often each model was chosen."""
    ids = fittable(data)
    chosen = dict.fromkeys(models, 0)
    taus = []
    for shuffle in range(shuffles):
        order = list(ids)
        random.Random(shuffle).shuffle(order)
        predicted: dict[str, dict[str, float]] = {task: {} for task in data}
        for k in range(folds):
            test = set(order[k::folds])
            inner = {task: ({g: r for g, r in rows.items() if g not in test},
                            {g: a for g, a in acc.items() if g not in test}) for task, (rows, acc) in data.items()}
            scores = {name: float(np.nanmean(list(prediction_tau(inner, held_out_genomes(
                inner, seed=100 + k, regressor=make)).values()))) for name, make in models.items()}
            best = max(scores, key=lambda name: scores[name])
            chosen[best] += 1
            for task, found in fitted_and_predicted(inner, data, test, models[best]).items():
                predicted[task].update(found)
        taus.append(prediction_tau(data, predicted))
    return {task: float(np.mean([t[task] for t in taus])) for task in data}, chosen


def seed_means(data: dict[str, tuple[dict, dict]], runs: list[dict], tasks: list[str], shuffles: int) -> None:
    """How much of the shortfall is the truth's own noise: on the genomes trained at the long fidelity with
    seeds 0, 1 and 2, the held-out predictions (mean tau over ``shuffles`` fold shufflings) against one seed's
    accuracy (the mean over the three seeds of that tau), against the mean accuracy of two seeds (the mean over
    the three pairs) and of all three. Printed only where at least 10 genomes have all three seeds."""
    rows = []
    shuffled = [held_out_genomes(data, seed=k) for k in range(shuffles)]
    for task in tasks:
        by_seed = [accuracy(runs, task, "long", seed) for seed in (0, 1, 2)]
        common = sorted(set.intersection(*(set(s) for s in by_seed)))
        if len(common) < 10:
            continue
        predicted = [p[task] for p in shuffled]
        ids = [g for g in common if all(g in p for p in predicted)]

        def against(truth: dict[str, float]) -> float:
            return float(np.mean([tau([p[g] for g in ids], [truth[g] for g in ids]) for p in predicted]))

        one = np.mean([against(s) for s in by_seed])
        two = np.mean([against({g: a[g] + b[g] for g in ids}) for a, b in
                       ((by_seed[0], by_seed[1]), (by_seed[0], by_seed[2]), (by_seed[1], by_seed[2]))])
        three = against({g: sum(s[g] for s in by_seed) for g in ids})
        rows.append(f"| {task} | {len(ids)} | {one:+.3f} | {two:+.3f} | {three:+.3f} |")
    if rows:
        print(f"\nThe truth's own noise: the held-out predictions (mean over {shuffles} fold shufflings) against the "
              f"long accuracy of one seed, and of the mean of two and of three seeds, on the genomes trained with "
              f"all three:\n")
        print("| task | genomes | one seed (mean over seeds) | mean of two seeds | mean of three |")
        print("|---|---|---|---|---|")
        print("\n".join(rows))


def one_ranking_bound(data: dict[str, tuple[dict, dict]], reps: int) -> None:
    """What any one ranking of the genomes, the same for every task, can reach: the tau between the tasks'
    truths, and each task's tau with the mean of the tasks' true ranks, an oracle that knows every accuracy. A
    training-free objective is given no task, so it is one such ranking; no target above the oracle's figures
    can be met by one objective on every task at once."""
    tasks = sorted(data)
    ids = sorted(set.intersection(*(set(acc) for _, acc in data.values())))
    if len(tasks) < 2 or len(ids) < 10:
        return
    ranks = {t: rankdata([data[t][1][g] for g in ids]) for t in tasks}
    mean_rank = list(np.mean([ranks[t] for t in tasks], axis=0))
    print(f"\nOne ranking for every task (genomes with every task's truth, n={len(ids)}):\n")
    print("| | " + " | ".join(tasks) + " |")
    print("|---|" + "---|" * len(tasks))
    if len(tasks) == 2:
        first, second = (list(ranks[t]) for t in tasks)
        lo, hi = bootstrap(first, second, reps)
        print(f"| tau between the two tasks' truths | {tau(first, second):+.3f} ({lo:+.2f}, {hi:+.2f}) | |")
    cells = []
    for t in tasks:
        lo, hi = bootstrap(mean_rank, list(ranks[t]), reps)
        cells.append(f"{tau(mean_rank, list(ranks[t])):+.3f} ({lo:+.2f}, {hi:+.2f})")
    print("| oracle: the mean of the tasks' true ranks, against each task's truth | " + " | ".join(cells) + " |")


# The first task's share of the fit's rows in --tradeoff (the rest shared equally by the other tasks).
SHARES = (0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7)


def tradeoff(data: dict[str, tuple[dict, dict]], shuffles: int) -> None:
    """The held-out-genome tau per task (mean over ``shuffles`` fold shufflings) of the objective fitted with
    the first task's rows weighed at each of ``SHARES``: what leaning toward one task gains there and costs on
    the others."""
    tasks = sorted(data)
    if len(tasks) < 2:
        return
    print(f"\nLeaning the fit toward {tasks[0]}: held-out genomes, mean tau over {shuffles} shufflings of the 5 "
          f"folds, by {tasks[0]}'s share of the fit's weight:\n")
    print("| share of " + tasks[0] + " | " + " | ".join(tasks) + " | the lower |")
    print("|---|" + "---|" * (len(tasks) + 1))
    for share in SHARES:
        shares = {t: share if t == tasks[0] else (1 - share) / (len(tasks) - 1) for t in tasks}
        cells = shuffled_tau(data, shuffles, shares=shares)
        print(f"| {share:.2f} | " + " | ".join(figure(cells[t]) for t in tasks)
              + f" | {figure(min(cells.values()))} |", flush=True)


GATED = "in-place distillation once its largest genome beats chance"


def supernet_training(record: dict) -> str:
    """How a ``supernet.jsonl`` record's supernet was trained, in words."""
    how = supernet_variant(record)
    if not how["distill"]:
        return "the labels alone"
    return GATED if how["teacher_ready"] is not None else "in-place distillation from the first step"


def expand(spec: str, every_descriptor: list[str]) -> list[str]:
    """A comma list of terms as names: ``descriptors`` is every descriptor, a name ending in ``:`` every
    descriptor with that prefix."""
    out = []
    for name in spec.split(","):
        if name == "descriptors":
            out += every_descriptor
        elif name.endswith(":"):
            out += [d for d in every_descriptor if d.startswith(name)]
        else:
            out.append(name)
    return out


def nested_choice(data: dict[str, tuple[dict, dict]], features: list[str], candidates: dict[str, list[str]],
                  folds: int = 5, shuffles: int = 3) -> tuple[dict[str, float], dict[str, int]]:
    """Mean tau per task over ``shuffles`` of outer ``folds``-fold CV, the term set chosen inside each outer
    fold by inner CV on its fitting genomes; and how often each set was chosen."""
    ids = fittable(data)
    columns = {name: [features.index(f) for f in terms] for name, terms in candidates.items()}
    taus: dict[str, list[float]] = {task: [] for task in data}
    chosen: dict[str, int] = {name: 0 for name in candidates}
    for shuffle in range(shuffles):
        order = ids[:]
        random.Random(100 + shuffle).shuffle(order)
        out: dict[str, dict] = {task: {} for task in data}
        for k in range(folds):
            test = set(order[k::folds])
            inner = {task: ({g: r for g, r in rows.items() if g not in test},
                            {g: a for g, a in acc.items() if g not in test}) for task, (rows, acc) in data.items()}

            def inner_tau(name: str) -> float:
                pred = held_out_genomes(inner, folds, seed=shuffle, columns=columns[name])
                return float(np.nanmean(list(prediction_tau(inner, pred).values())))  # a left-out task: nan
            best = max(candidates, key=inner_tau)
            chosen[best] += 1
            xs, ys = [], []
            for rows, acc in inner.values():
                train = sorted(set(rows) & set(acc))
                xs += [[rows[g][i] for i in columns[best]] for g in train]
                ys += list(rank_target([acc[g] for g in train]))
            model = fit(np.array(xs), np.array(ys))
            for task, (rows, _) in data.items():
                for g in test:
                    out[task][g] = float(predict(model, np.array([[rows[g][i] for i in columns[best]]]))[0])
        for task, value in prediction_tau(data, out).items():
            taus[task].append(value)
    return {task: float(np.mean(v)) for task, v in taus.items()}, chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, action="append", default=None,
                        help="a corpus directory; repeat to fit on several spaces' corpora together (default: "
                             "benchmarks/results/corpus, the tiny space's)")
    parser.add_argument("--extra", type=Path, action="append", default=[], metavar="DIR",
                        help="more genomes of the first --corpus's space, read as part of it (the tiny space's "
                             "fresh corpus: benchmarks/results/corpus_fresh); repeatable")
    parser.add_argument("--judge", type=Path, default=None,
                        help="also fit on every --corpus genome and judge that fit on this other corpus's genomes "
                             "(another space: how far the objective carries beyond what it was fitted on)")
    parser.add_argument("--judge-from", type=int, default=0, metavar="INDEX",
                        help="judge on --judge's genomes from this index on: those drawn after the shipped "
                             "objective was fitted on its first INDEX (the fresh test of the shipped fit)")
    parser.add_argument("--leave-out", action="append", default=[], metavar="CORPUS:TASK",
                        help="fit and judge the pooled tables without that corpus's accuracy on that task (a task "
                             "the corpus cannot rank: its noise ceiling is below 0); repeatable")
    parser.add_argument("--truth", choices=sorted(TRUTHS), default="seed0",
                        help="what is ranked: the long accuracy of seed 0, or its mean over the seeds each genome "
                             "was trained with at the long fidelity (0-2)")
    parser.add_argument("--batch", default="default", help="which proxy batch's scores: default or task")
    parser.add_argument("--score-seeds", type=int, default=1, metavar="N",
                        help="each zero-cost term the mean over scoring seeds 0..N-1 (genomes scored with all N: "
                             "corpus_scores.py --replicated)")
    parser.add_argument("--features", default=DEFAULT_FEATURES,
                        help="comma list of terms; 'descriptors' stands for every genome descriptor in the corpus")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--shuffles", type=int, default=5,
                        help="also report the held-out-genome tau averaged over this many shufflings of the folds")
    parser.add_argument("--nested", action="store_true",
                        help="the term set chosen among CANDIDATES inside each fold (nested CV)")
    parser.add_argument("--models", nargs="?", const="all", choices=("all", "kernel"),
                        help="also rank held-out genomes with other regressors on the same terms (MODELS; "
                             "'--models kernel': the ridge and KERNEL_MODEL alone)")
    parser.add_argument("--tradeoff", action="store_true",
                        help="also fit with the first task's rows weighed more or less (SHARES): what leaning "
                             "toward one task gains there and costs on the other")
    parser.add_argument("--genomes", type=int, default=None,
                        help="each corpus's first N genomes only (by index): a figure of the corpus at that "
                             "size, while it grows")
    parser.add_argument("--model", choices=("ridge", "kernel"), default="ridge",
                        help=f"what --write fits and ships, and --judge judges: the ridge, or the {KERNEL_MODEL} on "
                             "the same standardised terms (nas.evaluate.proxy reads either)")
    parser.add_argument("--write", nargs="?", const=GENERAL_OBJECTIVE, metavar="SPACE",
                        help=f"refit on everything and write the objective of SPACE (a shipped space's name), or "
                             f"without it the one for any space: {OBJECTIVES}/SPACE.json or {GENERAL_OBJECTIVE}.json")
    args = parser.parse_args()
    if args.write not in (None, GENERAL_OBJECTIVE) and shipped_space_name(args.write) != args.write:
        parser.error(f"--write {args.write}: expected a shipped space's name or nothing (the objective for any space)")
    corpora = args.corpus or [OUT]
    genomes, runs, scores, inherited, space_of = load(corpora, args.genomes, args.extra)
    # How many genomes each folder gave, for the record a fit writes (an --extra folder's count apart).
    extra_counts = {e.name: len(read_genomes(e, args.genomes)) for e in args.extra}
    counts = {c.name: sum(1 for g in genomes if space_of[g] == c.name) for c in corpora}
    counts[corpora[0].name] -= sum(extra_counts.values())
    counts.update(extra_counts)
    described = descriptors(genomes)
    every_descriptor = sorted({k for d in described.values() for k in d})
    features = expand(args.features, every_descriptor)
    tasks = sorted({r["task"] for r in runs})
    present = {k for s in scores for k in s["scores"]} | {"params", "flops"} | set(every_descriptor)
    features = [f for f in features if f in present]
    data = {}
    left_out = {tuple(spec.split(":", 1)) for spec in args.leave_out}
    for spec in left_out:
        if len(spec) != 2 or spec[0] not in {c.name for c in corpora} or spec[1] not in tasks:
            parser.error(f"--leave-out {':'.join(spec)}: expected CORPUS:TASK with CORPUS one of "
                         f"{', '.join(c.name for c in corpora)} and TASK one of {', '.join(tasks)}")
    for task in tasks:
        truth = within_corpus({g: a for g, a in long_truth(runs, task, args.truth).items()
                               if (space_of[g], task) not in left_out}, space_of)
        rows = feature_rows(genomes, scores, task, args.batch, features, described, range(args.score_seeds))
        data[task] = (rows, truth)

    sizes = ", ".join(f"{n} of {name}" for name, n in counts.items())
    dropped = "".join(f"; {task} of {corpus} left out" for corpus, task in sorted(left_out))
    print(f"corpus: {len(genomes)} genomes ({sizes}){dropped}; features {', '.join(features)}; scores on the "
          f"{args.batch} batch" + (f", each the mean over seeds 0-{args.score_seeds - 1}" if args.score_seeds > 1
                                   else "") + "\n")
    data_free = [i for i, f in enumerate(features) if f in DATA_FREE or f in every_descriptor]
    print("| task | genomes (long) | noise ceiling: tau between seeds (95% CI, genomes) | tau of the last two "
          "epochs |")
    print("|---|---|---|---|")
    for task in tasks:
        ceiling, (lo, hi), n = noise_ceiling(runs, task, "long", args.bootstrap)
        stable, m = stability(runs, task)
        print(f"| {task} | {len(data[task][1])} | {ceiling:+.3f} ({lo:+.2f}, {hi:+.2f}; n={n}) | {stable:+.3f} "
              f"(n={m}) |")
    print()
    print("| task | whole 3-epoch schedule: tau against another seed's long accuracy | first 3 epochs of the long "
          "schedule (the cascade's first stage) | long accuracy (noise ceiling) | genomes |")
    print("|---|---|---|---|---|")
    for task in tasks:
        short, early, ceiling, n = first_stages(runs, task)
        print(f"| {task} | {figure(short)} | {figure(early)} | {figure(ceiling)} | {n} |")
    print()

    enough = all(len(d[0]) >= 10 for d in data.values())
    oof = held_out_genomes(data) if enough else {}
    oof_free = held_out_genomes(data, columns=data_free) if enough and data_free else {}
    cross = held_out_task(data) if len(tasks) > 1 else {}
    print("| predictor | " + " | ".join(f"tau on {t} (95% CI)" for t in tasks) + " |")
    print("|---|" + "---|" * len(tasks))

    def row(name: str, per_task: dict[str, dict[str, float]], truths: dict | None = None,
            only: str | None = None) -> None:
        """``only``: the genomes of that corpus alone; ``truths``: task -> genome -> accuracy, where not
        ``data``'s."""
        cells = []
        for task in tasks:
            truth = data[task][1] if truths is None else truths[task]
            ids = [g for g in per_task.get(task, {}) if g in truth and (only is None or space_of.get(g) == only)]
            if len(ids) < 3:
                cells.append(f"not measured ({len(ids)} genomes with both)")
                continue
            x, y = [per_task[task][g] for g in ids], [truth[g] for g in ids]
            t = tau(x, y)
            lo, hi = bootstrap(x, y, args.bootstrap)
            cells.append(f"{t:+.3f} ({lo:+.2f}, {hi:+.2f}; n={len(ids)})")
        print(f"| {name} | " + " | ".join(cells) + " |")

    for key, per_task in single_terms(genomes, scores, tasks, args.batch).items():
        row(key, per_task)
    hand = {}
    for task in tasks:
        per_batch = [{s["genome"]: value for s in scores if s["task"] == task and s["batch"] == one
                      and s["seed"] == 0
                      and math.isfinite(value := combine(s["scores"], s["batch_size"], weights=HAND_SET))}
                     for one in args.batch.split("+")]
        hand[task] = mean_over(per_batch)
    row("hand-set objective before the fit (log structural + log SynFlow + log grad-norm)", hand)
    row("short schedule (3 epochs)", {t: accuracy(runs, t, "short") for t in tasks})
    by_variant: dict[str, list[dict]] = {}
    for r in inherited:
        if r["inherited"] is not None:
            by_variant.setdefault(supernet_training(r), []).append(r)
    for label, records in sorted(by_variant.items()):
        row(f"supernet inherited accuracy (trained on {label})",
            {t: {r["genome"]: r["inherited"] for r in records if r["task"] == t} for t in tasks})
    if oof:
        row("fitted objective, held-out genomes (5-fold)", oof)
        for c in corpora if len(corpora) > 1 else ():
            row(f"  its {c.name} genomes alone", oof, only=c.name)
    if oof_free:
        row("its data-free part alone (params, FLOPs, structural, descriptors), held-out genomes (5-fold)",
            oof_free)
    if cross:
        row("fitted objective, held-out task", cross)
    gated = {(r["task"], r["genome"]): r["inherited"] for r in by_variant.get(GATED, [])}
    if oof and gated:
        with_supernet = {}
        for task, (rows, acc) in data.items():
            ids = [g for g in rows if (task, g) in gated]
            ranks = rank_target([gated[(task, g)] for g in ids])
            with_supernet[task] = ({g: rows[g] + [float(r)] for g, r in zip(ids, ranks)}, acc)
        row("fitted objective plus the supernet's inherited accuracy (its rank within the task; supernet "
            "distilling once its largest genome beats chance), held-out genomes (5-fold)",
            held_out_genomes(with_supernet))

    if oof and args.shuffles > 1:
        print(f"\nHeld-out genomes, mean tau over {args.shuffles} shufflings of the 5 folds (seeds 0-"
              f"{args.shuffles - 1}):\n")
        print("| objective | " + " | ".join(tasks) + " |")
        print("|---|" + "---|" * len(tasks))
        for name, columns in (("fitted objective", None), ("its data-free part alone", data_free)):
            cells = shuffled_tau(data, args.shuffles, columns=columns)
            print(f"| {name} | " + " | ".join(figure(cells[t]) for t in tasks) + " |")
            for c in corpora if len(corpora) > 1 else ():
                cells = shuffled_tau(data, args.shuffles, {g for g in genomes if space_of[g] == c.name},
                                     columns=columns)
                print(f"|   its {c.name} genomes alone | " + " | ".join(figure(cells[t]) for t in tasks) + " |")
    if oof and args.shuffles > 1:
        # What the fit on the other batch gives when handed these scores: before each shipped fit had a twin on
        # the tasks' images, a search given --data scored its real-image scores with the structured batch's fit.
        other = "default" if args.batch == "task" else "task"
        given = {task: feature_rows(genomes, scores, task, other, features, described, range(args.score_seeds))
                 for task in tasks}
        if all(len(rows) >= 10 for rows in given.values()):
            mine = {task: rows for task, (rows, _) in data.items()}
            cells = shuffled_tau({t: (given[t], acc) for t, (_, acc) in data.items()}, args.shuffles, given=mine)
            print(f"| the same terms fitted on the {other} batch's scores, then given these | "
                  + " | ".join(figure(cells[t]) for t in tasks) + " |")
    if oof and args.shuffles:
        seed_means(data, runs, tasks, args.shuffles)
    one_ranking_bound(data, args.bootstrap)
    if oof and args.tradeoff:
        tradeoff(data, max(args.shuffles, 1))
    if oof and args.models:
        print(f"\nOther models on the same terms: held-out genomes (mean tau over {args.shuffles} shufflings of the "
              f"5 folds), and held-out task (fitted on the other task):\n")
        print("| model | " + " | ".join(tasks) + " | " + " | ".join(f"held-out task: {t}" for t in tasks) + " |")
        print("|---|" + "---|" * 2 * len(tasks))
        compared = MODELS if args.models == "all" else {KERNEL_MODEL: MODELS[KERNEL_MODEL]}
        for name, make in {"ridge": None, **compared}.items():
            cells = shuffled_tau(data, args.shuffles, regressor=make)
            other_task = prediction_tau(data, held_out_task(data, regressor=make))
            print(f"| {name} | " + " | ".join(figure(cells[t]) for t in tasks) + " | "
                  + " | ".join(figure(other_task.get(t, math.nan)) for t in tasks) + " |", flush=True)
        if args.nested:
            choice = {"ridge": None, KERNEL_MODEL: MODELS[KERNEL_MODEL]}
            taus, chosen = nested_model_choice(data, choice)
            print(f"| ridge or {KERNEL_MODEL}, chosen inside each outer fold (nested 5-fold CV, 3 shufflings; "
                  + "; ".join(f"{name} {n}x" for name, n in chosen.items()) + ") | "
                  + " | ".join(figure(taus[t]) for t in tasks) + " |" + " |" * len(tasks))
    if args.nested:
        named = {name: [f for f in expand(spec, every_descriptor) if f in present]
                 for name, spec in CANDIDATES.items()}
        union = sorted({f for terms in named.values() for f in terms})
        every_term = {task: (feature_rows(genomes, scores, task, args.batch, union, described,
                                           range(args.score_seeds)), data[task][1])
                      for task in tasks}
        taus, chosen = nested_choice(every_term, union, named)
        print("\nThe term set chosen among CANDIDATES inside each outer fold (nested 5-fold CV, 3 shufflings):\n")
        print("| | " + " | ".join(tasks) + " |")
        print("|---|" + "---|" * len(tasks))
        print("| nested choice, held-out genomes | " + " | ".join(figure(taus[t]) for t in tasks) + " |")
        print("\nChosen: " + "; ".join(f"{name} {n}x" for name, n in chosen.items() if n))

    if args.judge:
        # Judged from an index on, the judged corpus is read whole: with --genomes N and --judge-from N on the
        # same corpus, the fit saw its first N genomes and is judged on the rest, drawn after them.
        judge(args.judge, None if args.judge_from else args.genomes, data, features, tasks, args.batch,
              list(counts), row, args.judge_from,
              fitted_before=args.genomes is not None and args.judge_from >= args.genomes, truth=args.truth,
              regressor=MODELS[KERNEL_MODEL] if args.model == "kernel" else None)

    if args.write:
        mean, std, coef = fit_all(data)
        regressor = MODELS[KERNEL_MODEL] if args.model == "kernel" else None
        written = OBJECTIVES / f"{args.write}{ON_DATA if args.batch == 'task' else ''}.json"
        written.write_text(json.dumps({
            "about": "The default training-free objective: a ridge regression of the rank of trained accuracy "
                     + ("(the long accuracy's mean over each genome's seeds) " if args.truth == "seeds" else "")
                     + "among the genomes of the same corpus and task, on standardised terms (scores through "
                     "nas.evaluate.proxy.TERMS, and the genome "
                     "descriptors of nas.evaluate.proxy.genome_descriptors). Fitted by "
                     "benchmarks/objective_fit.py on the corpora in benchmarks/results/: "
                     + ", ".join(counts) + "."
                     + (" Its zero-cost scores are of each task's own first training images: it scores a search "
                        "given --data." if args.batch == "task" else ""),
            "space": args.write,
            "command": " ".join(["python benchmarks/objective_fit.py", *sys.argv[1:]]),
            "genomes": len(fittable(data)), "tasks": tasks, "batch": args.batch,
            "corpora": counts,
            "left_out": sorted(args.leave_out),
            # how well the method ranks genomes it did not see: the mean over fold shufflings, per task measured
            "held_out_tau": {t: round(v, 3) for t, v in shuffled_tau(data, max(args.shuffles, 1),
                                                                      regressor=regressor).items()
                             if math.isfinite(v)},
            "features": [{"name": f, "mean": float(m), "std": float(s), "weight": float(c)}
                         for f, m, s, c in zip(features, mean, std, coef)],
            **({"model": KERNEL_MODEL, KERNEL: kernel_fit(data, (mean, std, coef))} if args.model == "kernel"
               else {}),
        }, indent=1) + "\n")
        print(f"\nwrote {written}")


def judge(corpus: Path, first: int | None, data: dict[str, tuple[dict, dict]], features: list[str], tasks: list[str],
          batch: str, fitted_on: list[str], row: Callable[..., None], start: int = 0, fitted_before: bool = False,
          truth: str = "seed0", regressor: Callable[[], Any] | None = None) -> None:
    """The table of ``--judge``: the objective fitted on every genome of ``data`` (its terms ``features``),
    and the shipped ones, params, FLOPs and each score, judged on ``corpus``'s genomes (those of index ``start``
    on), against ``truth`` (``long_truth``) as the fit was; ``regressor``: that model fitted instead of the ridge
    (``--model``). A fit on ``corpus`` itself would be judged on genomes it saw, and its row is left out, unless
    ``fitted_before``: it saw only genomes before ``start``."""
    genomes, runs, scores, _, _ = load([corpus], first)
    # A folder's genomes are indexed on from where the space's sequence stood when it was drawn (the fresh
    # corpus's from 360): a fit that read its first n saw indexes below first + n.
    first_index = min((record["index"] for record in genomes.values()), default=0)
    genomes = {g: record for g, record in genomes.items() if record["index"] >= start}
    runs = [r for r in runs if r["genome"] in genomes]
    scores = [s for s in scores if s["genome"] in genomes]
    described = descriptors(genomes)
    model = fit_all(data) if corpus.name not in fitted_on or fitted_before else None
    truths = {task: long_truth(runs, task, truth) for task in tasks}
    fitted: dict[str, dict[str, float]] = {}
    # A shipped objective fitted on genomes judged here is no test of it: left out; so is one fitted on the
    # other batch's scores.
    def unseen(name: str) -> bool:
        seen = fitted_objective(name)["corpora"].get(corpus.name, 0)
        return seen == 0 or first_index + seen <= start

    fits = [name for name in shipped_objectives() if unseen(name) and fitted_objective(name)["batch"] == batch]
    shipped: dict[str, dict[str, dict[str, float]]] = {name: {task: {} for task in tasks} for name in fits}
    if model is not None:
        judged = {task: (feature_rows(genomes, scores, task, batch, features, described), {}) for task in tasks}
        fitted = {task: {g: float(predict(model, np.array([r]))[0]) for g, r in rows.items()}
                  for task, (rows, _) in judged.items()} if regressor is None else \
            fitted_and_predicted(data, judged, set().union(*(rows for rows, _ in judged.values())), regressor)
    for s in scores:
        if s["task"] in tasks and s["batch"] == batch and s["seed"] == 0:
            terms = {**s["scores"], "params": genomes[s["genome"]]["params"],
                     "flops": genomes[s["genome"]]["flops"], **described[s["genome"]]}
            for name in fits:
                value = combine(terms, s["batch_size"], fit=name)
                if math.isfinite(value):
                    shipped[name][s["task"]][s["genome"]] = value
    after = f", those from index {start} on" if start else ""
    print(f"\nJudged on {corpus.name} ({len(genomes)} genomes{after}), fitted on {' + '.join(fitted_on)}; truth "
          f"{TRUTHS[truth]}:\n")
    print("| task | noise ceiling: tau between seeds (95% CI, genomes) | tau of the last two epochs |")
    print("|---|---|---|")
    for task in tasks:
        ceiling, (lo, hi), n = noise_ceiling(runs, task, "long", 1000)
        stable, m = stability(runs, task)
        measured = "no genome here has a second seed" if math.isnan(ceiling) else f"{ceiling:+.3f} ({lo:+.2f}, " \
            f"{hi:+.2f}; n={n})"
        print(f"| {task} | {measured} | {stable:+.3f} (n={m}) |")
    print()
    print("| predictor | " + " | ".join(f"tau on {t} (95% CI)" for t in tasks) + " |")
    print("|---|" + "---|" * len(tasks))
    if model is not None:
        row(f"{'the ' + KERNEL_MODEL if regressor else 'ridge'} fitted on {' + '.join(fitted_on)}", fitted, truths)
    for name, per_task in shipped.items():
        row(f"shipped objective {name}.json (fitted on {fitted_objective_corpora(name)})", per_task, truths)
    for key, per_task in single_terms(genomes, scores, tasks, batch).items():
        row(key, per_task, truths)
    row("short schedule (3 epochs)", {t: accuracy(runs, t, "short") for t in tasks}, truths)
    one_ranking_bound({t: ({}, truths[t]) for t in tasks}, 1000)


def shipped_objectives() -> list[str]:
    """Each shipped objective's name (``nas.evaluate.proxy.objective_name``)."""
    return sorted(p.stem for p in OBJECTIVES.glob("*.json"))


def fitted_objective_corpora(fit: str) -> str:
    """The corpora the shipped objective ``fit`` was fitted on, with how many of each one's genomes."""
    return " + ".join(f"{name} {n}" for name, n in fitted_objective(fit)["corpora"].items())


if __name__ == "__main__":
    main()
