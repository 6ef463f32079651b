"""The cascade (DESIGN 9): many genomes screened for almost nothing, and only the promising ones paid for.

Stage ``screen`` (data-free, 2-4 ms a genome on the default space): ``--screen`` uniform draws of the space are
parsed and costed analytically; the distinct ones within the analytic budgets form the pool, each with its encoding,
its structural score (``nas.search.surrogate.Encoder``) and the default objective's data-free part
(``nas.evaluate.proxy.data_free_score``). The pool is a pure function of the space, the budgets and
the seed, so a resumed run or a worker rebuilds the same one (``screen.json.gz`` in the run directory caches it).

Stage of the objective (``zero-cost`` for ``--objective proxy``, ``train``, ``supernet``, ``custom``): the
``CascadeSampler`` picks each trial's genome from the pool. Its first picks are uniform; after that a
``Surrogate`` fitted on the stage's results so far (the trials' first objective) ranks the pool by its upper
confidence bound, and the best genome not yet in the study is the next trial. With ``--objective proxy`` each
result's data-free part is known before it is measured, so the surrogate learns only the rest of the score (the
zero-cost part) and adds the known part to every prediction: on the default search the data-free part alone
ranks the trials' scores at Kendall tau +0.93. With a second objective each pick
weighs the bound against the genome's data-free cost (FLOPs, or params when params are the second objective)
with a random weight, so the picks spread along the front rather than piling at its top. Every pick stores on
its trial the prediction it was picked on, and the surrogate's held-out Kendall tau over the results it was
fitted on: what the progress line and ``report.md`` show.

Stage ``zero-cost`` ahead of training (``--objective train``, ``--shortlist N``): the trainings are not picked
from the screen directly. The stage keeps N genomes scored zero-cost on a batch of the data and not yet trained,
and ``--shortlist-growth`` more per training so far (the default objective and ``ZERO_COST_FEATURES``, a fraction of
a second each on the tiny space, so that each training is picked among more as the run learns); it picks each
genome it scores from the screen by a surrogate of the trainings fitted on the data-free features alone, and each
training is picked among the scored genomes by a surrogate that also reads their scores. Its trials are tagged
``screening`` (``runners.base.SCREENING``): their values are zero-cost scores, not accuracies, so they do not
count toward ``--trials`` and are never a result (``nas.search.trial.is_result``). The replay of the corpus
measures what the scores add as features (benchmarks/BENCHMARKS.md, "Replay").

Stage ``train-long`` (``--objective train``): asynchronous successive halving. Before picking a new genome the sampler
promotes the best first-stage genome in the top fifth (``--reduction-factor``) of the results so far that has not been
promoted yet; the promotion is a trial of its own, trained for ``--long-epochs``. Where the zero-cost stage scored the
first stages, "best" is the mean of two ranks, the first-stage accuracy and the objective's value
(``first_rung_order``): each ranks the long accuracy loosely, with errors of different sources. A first-stage training
is the first ``--epochs`` of that long schedule, and leaves a checkpoint in the run directory (``checkpoints/``) from
which its promotion trains on, so a promotion costs ``--long-epochs`` minus ``--epochs``. On the corpus a long run's own
epoch 3 ranks the long results far better than a whole 3-epoch schedule does (patterns: Kendall tau +0.33 against +0.20;
benchmarks/BENCHMARKS.md, "Replay"). Without the checkpoint (another machine, a file lost) the promotion trains the long
schedule afresh, to the same result in distribution.

The screen is not stored as one trial per genome: ten thousand trials cost minutes of storage writes and would
flood the samplers and the report with values no other trial shares. Its counts are a study attribute
(``nas.screen``) and the pool is recomputed, never lost.
"""
from __future__ import annotations

import gzip
import json
import math
import multiprocessing
import os
import random
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState
from pydantic import ValidationError
from scipy.stats import kendalltau, rankdata

from nas.cost import analytic_cost
from nas.errors import GenomeError
from nas.genome import Genome
from nas.graph import build_graph
from nas.search.params import random_params
from nas.search.samplers import PlanningSampler
from nas.search.surrogate import MIN_FIT, Encoder, Surrogate, ucb
from nas.search.trial import INHERITED, SCREEN_SCORES, ZERO_COST, is_promotion, rung_order, rung_stage
from nas.space import choices, space_size
from runners.base import SCREENING, is_screening
from runners.optuna_internals import contains, is_enqueued, storage_id, storage_of

SCREEN_FILE = "screen.json.gz"
SCREEN_ATTR = "nas.screen"  # the study's record of the screen: its counts
# The data-free cost that stands for each second objective when picks weigh one against the other: 0 params, 1 FLOPs
SECOND_COST = {"latency": 1, "flops": 1, "params": 0}
# Uniform picks before the surrogate chooses: enough results for a forest to say something.
FIRST_PICKS = 6
# The zero-cost stage's scores a training surrogate reads beside the data-free features: the default objective
# and the scores it and the stage compute (trial.SCREEN_SCORES).
ZERO_COST_FEATURES = ("score", *sorted(SCREEN_SCORES))
# A promotion's user attribute: chosen by its first-stage accuracy beside the objective's value
RANKED_WITH_OBJECTIVE = "ranked_with_objective"


@dataclass
class Pool:
    """The screened genomes within budget: Optuna params, content hash and data-free features of each."""

    params: list[dict[str, Any]]
    hashes: list[str]
    costs: list[tuple[int, int]]  # (params, FLOPs)
    structural: list[float]
    data_free: list[float]  # nas.evaluate.proxy.data_free_score
    drawn: int = 0
    valid: int = 0
    seconds: float = 0.0
    index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index = {h: i for i, h in enumerate(self.hashes)}

    def __len__(self) -> int:
        return len(self.hashes)

    def counts(self) -> dict[str, Any]:
        return {"drawn": self.drawn, "valid": self.valid, "within_budget": len(self), "seconds": round(self.seconds, 1)}


def screen(space: dict[str, Any], size: int, seed: int, within_budget: Callable[[Any], bool],
           run_dir: Path | None = None, processes: int = 1, objective_fit: str | None = None) -> Pool:
    """``size`` uniform draws of ``space`` (``random.Random(seed)``); the distinct valid ones that
    ``within_budget(cost)`` keeps, with their structural scores and the data-free part of the objective
    ``objective_fit`` (the search's: ``SearchOptions.objective_fit``). Read from
    ``run_dir/screen.json.gz`` when that holds the same screen (same size and seed), written there otherwise.
    The draws are made here, in order, and ``processes`` share costing them (forked: the pool is the same for
    any number)."""
    cached = _read_cache(run_dir, size, seed)
    if cached is not None:
        return cached
    tick = time.perf_counter()
    rng = random.Random(seed)
    draws: list[tuple[dict[str, Any], dict[str, Any]]] = []
    distinct, drawn = space_size(space), set()
    for _ in range(size):
        if len(drawn) >= distinct:
            break  # a small space, all of it drawn: more draws would only repeat it
        data, params = random_params(space, rng)
        drawn.add(json.dumps(params, sort_keys=True))
        draws.append((data, params))
    assessed = _assess_all([data for data, _ in draws], within_budget, processes, objective_fit)
    pool = Pool([], [], [], [], [], drawn=len(draws))
    for (_, params), found in zip(draws, assessed):
        if found is None:
            continue
        pool.valid += 1
        digest, params_count, flops, structural, data_free = found
        if structural is None or digest in pool.index:
            continue  # over budget, or a genome already in the pool
        pool.index[digest] = len(pool.hashes)
        pool.params.append(params)
        pool.hashes.append(digest)
        pool.costs.append((params_count, flops))
        pool.structural.append(structural)
        pool.data_free.append(data_free)
    pool.seconds = time.perf_counter() - tick
    _write_cache(run_dir, size, seed, pool)
    return pool


# content hash, params, FLOPs, structural score and the objective's data-free part (None: over budget)
Assessed = tuple[str, int, int, float | None, float | None]
# the budget check and the objective's fit of the screen under way, for forked processes
_within_budget: Callable[[Any], bool] = bool
_objective_fit: str | None = None


def _assess(data: dict[str, Any]) -> Assessed | None:
    """One draw: None when it is no valid genome, else its hash and costs, and its structural score and the
    objective's data-free part when it is within the budget."""
    from nas.evaluate.proxy import canonical_graph, data_free_score, structural_score

    try:  # parse_genome's checks, with the graph they build kept for the cost
        genome = Genome.model_validate(data)
        graph = build_graph(genome)
    except (ValidationError, GenomeError):
        return None
    cost = analytic_cost(genome, graph)
    if not _within_budget(cost):
        return genome.content_hash(), cost.params, cost.flops, None, None
    canonical = canonical_graph(genome)  # what both data-free scores read
    structural = structural_score(genome, canonical)
    return (genome.content_hash(), cost.params, cost.flops, structural,
            data_free_score(genome, cost, canonical, structural, _objective_fit))


def _assess_all(draws: list[dict[str, Any]], within_budget: Callable[[Any], bool], processes: int,
                objective_fit: str | None = None) -> list[Assessed | None]:
    global _within_budget, _objective_fit
    _within_budget, _objective_fit = within_budget, objective_fit
    if processes <= 1 or len(draws) < 1000:
        return [_assess(data) for data in draws]
    # fork: the children inherit the budget check and the imported engine, and run no torch op (costs are
    # analytic), so nothing of torch's thread pools is carried into them
    workers = multiprocessing.get_context("fork").Pool(processes, initializer=_quiet_child)
    try:
        found = workers.map(_assess, draws, chunksize=max(1, len(draws) // (4 * processes)))
        workers.close()
        return found
    finally:
        workers.terminate()
        workers.join()


def _quiet_child() -> None:
    """A forked screener leaves Ctrl-C and SIGTERM to its parent (which stops it), not to the command's handlers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _read_cache(run_dir: Path | None, size: int, seed: int) -> Pool | None:
    path = run_dir / SCREEN_FILE if run_dir else None
    if path is None or not path.exists():
        return None
    try:
        with gzip.open(path, "rt") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None  # a damaged cache is screened again
    if data.get("size") != size or data.get("seed") != seed or "data_free" not in data:
        return None  # another screen, or one from before the data-free part was kept
    return Pool(data["params"], data["hashes"], [tuple(c) for c in data["costs"]], data["structural"],
                data["data_free"], data["drawn"], data["valid"], data["seconds"])


def _write_cache(run_dir: Path | None, size: int, seed: int, pool: Pool) -> None:
    if run_dir is None or not run_dir.is_dir():
        return
    tmp = run_dir / f"{SCREEN_FILE}.{os.getpid()}.tmp"  # workers screening at once each write their own
    try:
        with gzip.open(tmp, "wt") as f:
            json.dump({"size": size, "seed": seed, "params": pool.params, "hashes": pool.hashes,
                       "costs": pool.costs, "structural": pool.structural, "data_free": pool.data_free,
                       "drawn": pool.drawn, "valid": pool.valid, "seconds": pool.seconds}, f)
        tmp.replace(run_dir / SCREEN_FILE)
    except OSError:  # only a cache: the run goes on, and the next process screens again
        tmp.unlink(missing_ok=True)


@dataclass
class Pick:
    digest: str  # the genome's content hash
    params: dict[str, Any]
    attrs: dict[str, Any]


@dataclass(frozen=True)
class Promotion:
    """Asynchronous successive halving over the epochs of one long schedule: a genome whose result at a rung (its
    first stage, then each of ``rungs`` but the last) ranks in the top ``1 / rate`` of those there so far, and
    that has not gone further, trains on from its checkpoint to the next rung's epochs. ``rungs`` rise to the
    long schedule's end. ``rate``: ``SearchOptions.reduction_factor``."""

    rungs: tuple[int, ...]
    rate: int

    @property
    def stages(self) -> tuple[str, ...]:
        """The stage of a promotion to each rung (``nas.search.trial.rung_stage``)."""
        return tuple(rung_stage(epochs, self.rungs[-1]) for epochs in self.rungs)


class CascadeSampler(PlanningSampler):
    """Picks each trial's genome from a screened ``Pool`` by a surrogate of the trials' first objective.

    ``second_cost``: which data-free cost stands for the second objective (0 params, 1 FLOPs), None for a single
    objective. ``stage`` names the stage its new picks are at; with ``promote``, a pick may instead promote a
    genome of that stage to longer training (``Promotion``; stage ``train-long``, the epochs on the trial), before
    any new genome is picked. ``shortlist``: with a stage other than ``zero-cost``, a zero-cost stage ahead of it
    keeps that many genomes scored and not yet picked for the stage, and ``shortlist_growth`` more per genome
    picked for it so far; the stage's picks are made among them.
    Past the pool (every genome taken), it samples uniformly, and the search's twin check reuses any genome
    already evaluated.
    """

    def __init__(self, pool: Pool, space: dict[str, Any], seed: int = 0, second_cost: int | None = None,
                 first_picks: int = FIRST_PICKS, stage: str = ZERO_COST, promote: Promotion | None = None,
                 shortlist: int = 0, shortlist_growth: int = 0):
        self.pool, self.second_cost, self.first_picks = pool, second_cost, first_picks
        self.stage, self.promote, self.shortlist, self.shortlist_growth = stage, promote, shortlist, shortlist_growth
        self.encoder = Encoder(choices(space))
        self._features = np.array([self.encoder.row(p, c[0], c[1], s) for p, c, s in
                                   zip(pool.params, pool.costs, pool.structural)]).reshape(len(pool), -1)
        super().__init__(seed)
        self._seed = seed
        self._picks: dict[int, Pick] = {}
        self._fitted: tuple[tuple, Surrogate] | None = None  # the last fit and its data (``_surrogate``)
        self._pool_prediction: tuple[Surrogate, np.ndarray, np.ndarray] | None = None  # (``_predicted``)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if is_enqueued(trial):  # it brings its own genome (the calibration trial, a replayed one)
            return
        storage = storage_of(study)
        for _ in range(3):
            pick = self._pick(study)
            if pick is None:
                return
            self._picks[trial.number] = pick
            # The genome is claimed at once, so other processes' picks leave it alone; two that chose it at the
            # same moment see each other, and the later trial picks again.
            for key, value in {**pick.attrs, "genome_hash": pick.digest, "stage": self._stage_of(pick)}.items():
                storage.set_trial_user_attr(storage_id(trial), key, value)
            if not self._claimed_earlier(study, trial.number, pick.digest, self._stage_of(pick)):
                return
        self._picks.pop(trial.number, None)  # still contested: a uniform draw, whose twin the search reuses

    @staticmethod
    def _claimed_earlier(study: optuna.Study, number: int, digest: str, stage: str) -> bool:
        """Whether an earlier trial under way claimed the same genome at the same stage."""
        return any(t.number < number and t.user_attrs.get("genome_hash") == digest
                   and t.user_attrs.get("stage") == stage
                   for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))

    def _stage_of(self, pick: Pick) -> str:
        return pick.attrs.get("stage", self.stage)

    def sample_independent(self, study, trial, param_name: str, param_distribution: BaseDistribution) -> Any:
        pick = self._picks.get(trial.number)
        if pick is not None and param_name in pick.params and contains(param_distribution, pick.params[param_name]):
            return pick.params[param_name]
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._picks.pop(trial.number, None)

    # ------------------------------------------------------------------------------------------------------
    def _pick(self, study: optuna.Study) -> Pick | None:
        trials = study.get_trials(deepcopy=False)
        if self.promote is not None:
            promoted = self._promotion(trials)
            if promoted is not None:
                return promoted
        pending = list(self._picks.values())  # asked here, not yet prepared
        taken = {t.user_attrs.get("genome_hash") for t in trials} | {p.digest for p in pending}
        free = [i for i, h in enumerate(self.pool.hashes) if h not in taken]
        if not self.shortlist:
            if not free:
                return None
            x, y = self.results(trials)
            parts = known_parts(trials, self.stage)
            known = None if parts is None else (parts, np.asarray(self.pool.data_free)[free])
            return self._choose(free, None, x, y, {}, known)
        # The zero-cost stage keeps ``shortlist`` genomes scored (or being scored) and not yet trained, and
        # ``shortlist_growth`` more per training so far; each training is picked among the scored ones, with
        # their scores as features.
        zero_cost = zero_cost_features(trials)
        scored = zero_cost[1]
        trained = {t.user_attrs.get("genome_hash") for t in trials if t.user_attrs.get("stage", self.stage)
                   == self.stage} | {p.digest for p in pending if self._stage_of(p) == self.stage}
        trained.discard(None)  # the trial being asked for, not yet tagged
        waiting = [self.pool.index[h] for h in scored if h not in trained and h in self.pool.index]
        # by hash: a pick of this process stays pending while its trial, already tagged, runs
        scoring = {t.user_attrs.get("genome_hash") for t in trials
                   if t.state == TrialState.RUNNING and t.user_attrs.get("stage") == ZERO_COST} | {
            p.digest for p in pending if self._stage_of(p) == ZERO_COST}
        kept = self.shortlist + self.shortlist_growth * len(trained)
        if free and (len(waiting) + len(scoring) < kept or not waiting):
            x, y = self.results(trials)
            return self._choose(free, None, x, y, {"stage": ZERO_COST, SCREENING: True})
        if not waiting:
            return None
        x, y = self.results(trials, zero_cost)
        rows = np.column_stack([self._features[waiting], [scored[self.pool.hashes[i]] for i in waiting]])
        line_column = objective_column(self._features.shape[1], zero_cost[0])
        return self._choose(waiting, rows, x, y, {}, line_column=line_column)

    def _choose(self, candidates: list[int], rows: np.ndarray | None, x: np.ndarray, y: np.ndarray,
                attrs: dict[str, Any], known: tuple[np.ndarray, np.ndarray] | None = None,
                line_column: int | None = None) -> Pick:
        """One of ``candidates`` (pool positions; ``rows`` their features, None: the pool's data-free
        features, whose predictions are kept while the surrogate is): uniform while there are too few
        results, then the best by a surrogate fitted on ``x``, ``y`` (its upper confidence bound, weighed
        against the data-free cost with a second objective). ``known``: the part of each result, and of each
        candidate's score, known before it is measured (``known_parts``). ``line_column``: the column of the
        objective's value (``objective_column``), which the surrogate may follow through a line."""
        attrs = dict(attrs)
        if len(y) < max(self.first_picks, MIN_FIT) or np.ptp(y) == 0:
            chosen = self._rng.choice(candidates)
            attrs["picked_by"] = "uniform"
        else:
            known_results, known_candidates = (None, None) if known is None else known
            surrogate = self._surrogate(x, y, known_results, line_column)
            mean, spread = self._predicted(surrogate, candidates, rows, known_candidates)
            tau = surrogate.held_out_tau()
            # the interval only where the progress line shows it: a training, not a zero-cost pick ahead of one
            interval = None if attrs.get(SCREENING) else surrogate.held_out_interval()
            gain = ucb(mean, spread)
            if self.second_cost is not None:
                weight = self._rng.random()
                cost = np.log10(np.array([max(self.pool.costs[i][self.second_cost], 1) for i in candidates]))
                gain = weight * _standard(gain) - (1 - weight) * _standard(cost)
            best = int(np.argmax(gain))
            chosen = candidates[best]
            attrs.update(picked_by="surrogate", predicted=round(float(mean[best]), 6),
                         spread=round(float(spread[best]), 6), surrogate_results=len(y),
                         surrogate_tau=None if tau is None else round(tau, 4), surrogate_line=surrogate.uses_line,
                         surrogate_interval=None if interval is None else [round(v, 4) for v in interval])
        return Pick(self.pool.hashes[chosen], dict(self.pool.params[chosen]), attrs)

    def _surrogate(self, x: np.ndarray, y: np.ndarray, known: np.ndarray | None, line_column: int | None
                   ) -> Surrogate:
        """The surrogate fitted on these results: the last one again when nothing changed since (the zero-cost
        stage picks several genomes between two trainings; a refit of the same data with the same seed is the same
        forest, and took half of each zero-cost trial's time)."""
        data = (x, y, known, line_column)
        if self._fitted is not None and _same(self._fitted[0], data):
            return self._fitted[1]
        surrogate = Surrogate(seed=self._seed, line_column=line_column).fit(x, y, known)
        self._fitted = (data, surrogate)
        return surrogate

    def _predicted(self, surrogate: Surrogate, candidates: list[int], rows: np.ndarray | None,
                   known: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """``surrogate``'s mean and spread for the candidates: of ``rows``, or (None) of the pool's data-free
        features, predicted once for the whole pool per surrogate (half of the rest of a zero-cost trial's time)."""
        if rows is not None:
            return surrogate.predict(rows, known)
        if self._pool_prediction is None or self._pool_prediction[0] is not surrogate:
            self._pool_prediction = (surrogate, *surrogate.predict(self._features))
        _, mean, spread = self._pool_prediction
        return mean[candidates] + (0.0 if known is None else np.asarray(known, dtype=float)), spread[candidates]

    def _promotion(self, trials: list[FrozenTrial]) -> Pick | None:
        """The best genome in the top ``1 / rate`` of a rung that has not gone further (nor is going), the highest
        rung first: a genome left behind when few had reached its rung is promoted later, as their number grows
        (asynchronous successive halving)."""
        assert self.promote is not None
        sources = (self.stage, *self.promote.stages[:-1])
        for rung in reversed(range(len(self.promote.rungs))):
            stage, further = self.promote.stages[rung], self.promote.stages[rung:]
            pending = {p.digest for p in self._picks.values() if p.attrs.get("stage") in further}
            # at this rung or past it (a run begun before its middle rungs, resumed with them)
            promoted = {t.user_attrs.get("genome_hash") for t in trials if t.user_attrs.get("stage") in further}
            ranked, beside = self._ranked(trials, sources[rung], first=rung == 0)
            for t in ranked[:len(ranked) // self.promote.rate]:
                digest = t.user_attrs.get("genome_hash")
                if digest not in promoted | pending:
                    attrs = {"stage": stage, "epochs": self.promote.rungs[rung], "picked_by": "promotion",
                             "promoted_from": t.number}
                    if beside:
                        attrs[RANKED_WITH_OBJECTIVE] = True
                    return Pick(digest, dict(t.params), attrs)
        return None

    @staticmethod
    def _ranked(trials: list[FrozenTrial], stage: str, first: bool) -> tuple[list[FrozenTrial], bool]:
        """The measured trials at ``stage``, best first, and whether an objective's value was read: at the
        first rung beside it where the zero-cost stage scored them (``first_rung_order``), at a later rung (or
        where that stage scored none of them) by their accuracy alone."""
        measured = _measured(trials, stage)
        if not first or not any(map(is_screening, trials)):
            return sorted(measured, key=lambda t: t.values[0], reverse=True), False
        names, scored = zero_cost_features(trials)
        column = names.index("score")
        objective = {t.number: scored[t.user_attrs["genome_hash"]][column] for t in measured
                     if t.user_attrs.get("genome_hash") in scored}
        by_number = {t.number: t for t in measured}
        order = first_rung_order({t.number: t.values[0] for t in measured}, objective)
        return [by_number[n] for n in order], bool(objective)

    def results(self, trials: list[FrozenTrial], zero_cost: ZeroCostFeatures | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        """The surrogate's data: the stage's results, with ``zero_cost`` (``zero_cost_features``) as features
        when given."""
        return stage_results(self.encoder, trials, self.stage, zero_cost)


def _same(a: tuple, b: tuple) -> bool:
    """Whether two tuples of arrays (or None, or numbers) hold the same values."""
    return all(x is y or (x is not None and y is not None and np.array_equal(x, y, equal_nan=True))
               for x, y in zip(a, b, strict=True))


def _measured(trials: list[FrozenTrial], stage: str) -> list[FrozenTrial]:
    """The finished, measured trials at ``stage`` (not the estimates of over-budget ones, not reused twins)."""
    out = []
    for t in trials:
        attrs = t.user_attrs
        if (t.state == TrialState.COMPLETE and t.values and "estimated" not in attrs and "duplicate_of" not in attrs
                and math.isfinite(t.values[0]) and "structural" in attrs and attrs.get("stage", stage) == stage):
            out.append(t)
    return out


def known_parts(trials: list[FrozenTrial], stage: str) -> np.ndarray | None:
    """The part of each measured result at ``stage`` (in ``stage_results``' order) known before it was measured:
    at the zero-cost stage of a proxy search, the score's data-free part (``data_free_score``, stored on each
    trial). None at any other stage, or when a trial lacks it (a run from before it was stored)."""
    if stage != ZERO_COST:
        return None
    parts = [t.user_attrs.get("data_free") for t in _measured(trials, stage)]
    return None if any(p is None for p in parts) else np.array(parts, dtype=float)


Key = TypeVar("Key")  # what identifies a genome in rung_targets: a hash here, a corpus position in the replay
ZeroCostFeatures = tuple[tuple[str, ...], dict[str, list[float]]]  # names, and genome hash -> values


def zero_cost_features(trials: list[FrozenTrial]) -> ZeroCostFeatures:
    """The zero-cost stage's features in a training run: their names (``ZERO_COST_FEATURES``, and the inherited
    accuracy when the run has a supernet) and, per genome hash, their values (NaN where a score is not finite:
    the forest routes missing values)."""
    scoring = [t for t in _measured(trials, ZERO_COST) if is_screening(t)]
    inherited = any(INHERITED in t.user_attrs.get("scores", {}) for t in scoring)
    names = ZERO_COST_FEATURES + ((INHERITED,) if inherited else ())
    out = {}
    for t in scoring:
        found = {"score": t.values[0], **t.user_attrs.get("scores", {})}
        out[t.user_attrs["genome_hash"]] = [_finite(found.get(name)) for name in names]
    return names, out


def _finite(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else math.nan


def rung_targets(levels: list[dict[Key, float]]) -> dict[Key, float]:
    """What a training stage's surrogate is fitted on, per genome with a first-stage result (``levels``: per
    rung of the long schedule, the first stage first, genome -> result there): its result at the highest rung any
    genome reached where it got there, else its own highest rung's result plus the median gain from that rung
    to the highest over the genomes that reached both. A shift per rung, so it never reorders a rung's ranking,
    and the surrogate learns the long schedule's accuracy from the first result on."""
    top = max((rung for rung, level in enumerate(levels) if level), default=0)
    out: dict[Key, float] = {}
    for rung in range(top, -1, -1):
        gains = [levels[top][k] - levels[rung][k] for k in levels[top] if k in levels[rung]]
        gain = float(np.median(gains)) if gains else 0.0
        for key, value in levels[rung].items():
            out.setdefault(key, value + gain)
    return out


# The objective's weight beside the first-stage accuracy when promoting from the first rung: a mean of the two
# ranks, the simplest rule. The run's own agreement between the two as the weight, and the accuracy alone, were
# replayed beside it and cost the same (benchmarks/BENCHMARKS.md, "Replay", 2026-12-04 14:00).
OBJECTIVE_WEIGHT = 0.5


def first_rung_order(accuracy: dict[Key, float], objective: dict[Key, float] | None = None,
                     weight: float = OBJECTIVE_WEIGHT) -> list[Key]:
    """The genomes of the first stage, best first, as promotion reads them: by their first-stage ``accuracy``
    beside the ``objective``'s value (the zero-cost stage's ``score``), a mean of the two ranks with the objective
    at ``weight``. A short training ranks the long one only loosely (on the corpus's held-out genomes a long run's
    epoch 3 reads its end at Kendall tau +0.55 / +0.41, digits / patterns), and the objective fitted on the task
    at +0.52 / +0.52, with errors of another source; their mean rank reads it at +0.63 / +0.56
    (``benchmarks/surrogate_curve.py``). A genome without an objective's value reads its median rank; ties go to
    the accuracy."""
    keys, by_accuracy, by_objective = first_rung_ranks(accuracy, objective)
    acc = [accuracy[k] for k in keys]
    blended = (1 - weight) * by_accuracy + weight * by_objective
    order = sorted(range(len(keys)), key=lambda j: (-blended[j], -acc[j]))
    return [keys[j] for j in order]


def first_rung_ranks(accuracy: dict[Key, float], objective: dict[Key, float] | None = None
                     ) -> tuple[list[Key], np.ndarray, np.ndarray]:
    """The genomes of ``accuracy``, their ranks by it, and their ranks by the ``objective``'s value on the same
    scale (1 to the number of genomes; the median rank where a genome has no value): what ``first_rung_order``
    blends."""
    keys = list(accuracy)
    found = np.array([_finite((objective or {}).get(k)) for k in keys], dtype=float)
    seen = np.isfinite(found)
    ranks = np.full(len(keys), (len(keys) + 1) / 2.0)
    if seen.any():
        ranks[seen] = 1 + (rankdata(found[seen]) - 1) * (len(keys) - 1) / max(seen.sum() - 1, 1)
    return keys, rankdata([accuracy[k] for k in keys]), ranks


def promotion_stages(trials: list[FrozenTrial]) -> list[str]:
    """The stages of the promotions among ``trials``, in the order of their epochs (``train-long`` last)."""
    return sorted({t.user_attrs["stage"] for t in trials if is_promotion(t.user_attrs.get("stage"))},
                  key=rung_order)


def objective_column(encoded: int, zero_cost_names: Sequence[str]) -> int:
    """The column of the objective's value (the zero-cost stage's ``score``) in a training stage's rows: the
    Encoder's ``encoded`` columns, then the zero-cost features (``zero_cost_features``' names)."""
    return encoded + list(zero_cost_names).index("score")


def stage_results(encoder: Encoder, trials: list[FrozenTrial], stage: str,
                  zero_cost: ZeroCostFeatures | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Features and first objective of the measured trials at ``stage``: what the surrogate is fitted on, and
    its held-out tau measured over. ``zero_cost`` (``zero_cost_features`` of the run): each row ends with the
    genome's zero-cost features (NaN for a genome that stage did not score). Where the cascade promoted some to
    longer training, a genome's objective is read across rungs (``rung_targets``)."""
    measured = _measured(trials, stage)
    rows = [encoder.row(t.params, t.user_attrs["params"], t.user_attrs["flops"], t.user_attrs["structural"])
            for t in measured]
    width = len(encoder.columns)
    if zero_cost is not None:
        names, scored = zero_cost
        missing = [math.nan] * len(names)
        rows = [r + scored.get(t.user_attrs["genome_hash"], missing) for r, t in zip(rows, measured)]
        width += len(names)
    values = [t.values[0] for t in measured]
    rungs = promotion_stages(trials)
    if rungs:
        levels = [{t.user_attrs["genome_hash"]: t.values[0] for t in at}
                  for at in (measured, *(_measured(trials, s) for s in rungs))]
        targets = rung_targets(levels)
        values = [targets[t.user_attrs["genome_hash"]] for t in measured]
    return np.array(rows).reshape(len(rows), width), np.array(values, dtype=float)


def surrogate_summary(space: dict[str, Any], trials: list[FrozenTrial], stage: str, seed: int = 0
                      ) -> dict[str, Any]:
    """For the report: the stage's results, how many of its trials the surrogate picked, and its held-out tau
    over all the results (the figure the progress line showed, brought up to the last trial)."""
    zero_cost = zero_cost_features(trials) if stage != ZERO_COST and any(map(is_screening, trials)) else None
    encoder = Encoder(choices(space))
    x, y = stage_results(encoder, trials, stage, zero_cost)
    names = zero_cost[0] if zero_cost else ()
    picked = sum(t.user_attrs.get("picked_by") == "surrogate" and t.user_attrs.get("stage") == stage
                 for t in trials)
    known = known_parts(trials, stage)
    beside = sum(bool(t.user_attrs.get(RANKED_WITH_OBJECTIVE)) for t in trials)
    line_column = None if zero_cost is None else objective_column(len(encoder.columns), names)
    surrogate = Surrogate(seed=seed, line_column=line_column).fit(x, y, known) if len(y) else None
    return {"results": len(y), "surrogate_picks": picked,
            "held_out_tau": surrogate and surrogate.held_out_tau(),
            "held_out_interval": surrogate and surrogate.held_out_interval(),
            "follows_objective": bool(surrogate and surrogate.uses_line), "zero_cost_features": names,
            "single_taus": _single_taus(x[:, x.shape[1] - len(names):], y, names),
            "knows_data_free": known is not None, "across_rungs": bool(promotion_stages(trials)),
            "ranked_with_objective": beside}


def _single_taus(columns: np.ndarray, y: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """Each zero-cost feature's own Kendall tau against the results, over the genomes it scored (at least
    ``MIN_FIT``): what the surrogate must beat to be worth its fitting. Nothing is fitted, but the best of them
    is only known in hindsight."""
    out = {}
    for j, name in enumerate(names):
        seen = np.isfinite(columns[:, j])
        if seen.sum() >= MIN_FIT and np.ptp(y[seen]) > 0 and np.ptp(columns[seen, j]) > 0:
            tau = kendalltau(columns[seen, j], y[seen]).statistic
            if math.isfinite(tau):
                out[name] = float(tau)
    return out


def _standard(values: np.ndarray) -> np.ndarray:
    spread = values.std()
    return (values - values.mean()) / spread if spread > 0 else values * 0.0
