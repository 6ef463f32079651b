"""A tabular replay of search strategies on the trained corpus (NAS-Bench style): every training a search would
pay for is looked up in ``benchmarks/results/corpus/`` instead of run, so ten seeds of six strategies on two
tasks take minutes, not days.

For a task the replay holds every corpus genome with seed-0 runs at both fidelities (``short``, 3 epochs;
``long``, 12) and finite training-free scores; the corpus is still growing, so the figures say how many. The
truth is the long accuracy, seed 0, or with ``--truth seeds`` its mean over the seeds the genome was trained
with at the long fidelity (0, 1 and 2 on the whole tiny corpus: a third of one seed's variance); the target is
the corpus's top 5% by it (the ceil(5% of n) best genomes, ties included). A training in the replay returns seed
0's accuracy either way, as a search's one training would.

Cost axis: trainings paid for, in long-training equivalents, a short training costing 3/12 = 0.25 (and
continuing a long run from its epoch 3, 9/12 = 0.75). A search's
answer at a cost is the genome of the best long accuracy among those it has trained long by then; its regret is
the corpus's best truth minus the answer's (minus the corpus's worst before any long training).

Strategies, each from its own seeded rng:

- ``random``: genomes in a random order, each trained long.
- ``tpe``, ``nsga2``, ``evolution`` and ``snapped`` (Optuna's random sampler, the control for the snapping
  below): ``make_sampler(name, seed, trials=n)`` behind a single-objective (maximise) Optuna study that asks
  over the corpus's space (``--space``, the tiny one by default) through ``trial_picker``. The proposal is
  snapped to the nearest genome of the replay not yet evaluated: squared Euclidean distance between ``Encoder``
  rows without the cost columns, ties broken
  by an rng of the seed that the four samplers share. The study must record what was evaluated, so the
  proposal trial is told FAIL (TPE, NSGA-II and the evolution sampler all ignore failed trials) and the
  snapped genome's params are enqueued and asked for again through ``trial_picker``, and told the genome's
  long accuracy. A trial whose params are all enqueued never reaches the sampler's relative step, where NSGA-II
  gives a trial its generation (without one it is never a parent, and NSGA-II stays random): the replay runs
  that step on each such trial, so it passes the sampler's hooks like any other.
- ``cascade``: successive halving steered by a surrogate, as ``nas search`` runs it: the first stage is the
  first 3 epochs of the long schedule (the long run's recorded epoch-3 accuracy, cost 0.25) and a promotion
  trains on from there (cost 0.75). ``cascade-restart`` is the same with the first stage a whole 3-epoch
  schedule (the ``short`` run) and a promotion training 12 epochs afresh (cost 1): the cascade before
  2026-12-02, kept beside it as the measure of that change. Free features: the ``Encoder`` row (choices, log
  params, log FLOPs, structural score) and the zero-cost scores on the default batch, seed 0 (as the terms
  ``objective_fit.feature_rows`` makes of them). The first 4 picks are random; after that a ``Surrogate``
  refitted on every genome trained so far picks the untrained genome of highest ``ucb``. A pick has its first
  stage, then the promotions due are made (``Ladder``: asynchronous successive halving as ``nas search``'s
  ``Promotion`` runs it, over the rungs ``RUNGS``: the top third, floor(n/3), of those at a rung train on to
  the next, the highest rung first, a genome left behind being promoted later as the rung fills). The
  surrogate's target is ``nas.search.cascade.rung_targets``, as in the search: the long accuracy where known,
  else the genome's highest rung's accuracy plus the median gain from that rung to the long schedule over the
  genomes that reached both (a shift, so it never reorders a rung's ranking). Once
  every genome has had its first stage, the rest are promoted, the highest rung and accuracy first. The forest has
  ``--trees`` trees, 32 by default rather than the search's 100 (``surrogate.TREES``): it is refitted after
  every result of every seed, and 100 trees make ten seeds take many minutes once the corpus is complete.
- ``cascade-data-free``: ``cascade`` with the ``Encoder`` row alone as the surrogate's features, no zero-cost
  scores: ``nas search --objective train --shortlist 0``. ``cascade`` is what a zero-cost stage over the whole
  pool would give.
- ``cascade-shortlist``: what ``nas search --objective train`` runs: a zero-cost stage keeps ``SHORTLIST``
  genomes scored (``SCREEN_SCORES`` on a batch of the task) and untrained, each picked by a surrogate of the
  ``Encoder`` row alone, and each training is picked among them by a surrogate that also reads their scores.
  Scoring is free here (only trainings are counted); in a search it costs a fraction of a second a genome.
  No pruner: ``nas search --objective train --pruner none``.
- ``cascade-shortlist-prior`` and ``cascade-shortlist-prior-new-task``: ``cascade-shortlist`` steered by the
  corpus's prior, which ``nas search`` does not do: the shipped objective's data-free part (structural score,
  params, FLOPs, descriptors) as the search's fit would give it for a genome it never saw (``held_out_priors``:
  fitted on the other folds of genomes, or on the other task alone, a new task). Its first ``FIRST_PICKS``
  picks of each kind are the genomes of the highest prior, and the surrogate is a line in the prior plus the
  forest (``PriorLine``).
- ``cascade-shortlist-scored`` and ``cascade-shortlist-scored-new-task``: ``cascade-shortlist`` whose training
  stage also reads the objective's value, as ``nas search --objective train --data`` does (its zero-cost stage
  records ``score``, the space's ``--data`` twin, ``nas.search.cascade.ZERO_COST_FEATURES``): the twin's fit
  (``TWIN_TERMS`` on the task's batch) refitted on the other folds of genomes (a task it was fitted on, as the
  corpus's digits is for the shipped ``tiny.data.json``), or on the other task alone (a new task, as a user's own
  data set is) (``held_out_objectives``). Nothing else changes: the search's forest, its random start.
- ``cascade-shortlist-pruned``: the same with the search's default median pruner on the first stage
  (``pruned_at``): at epochs 1 and 2 of the 3, a training whose best accuracy so far is below the median of the
  completed first stages' at that epoch stops there, costing 1/12 or 2/12.

Snapping is not a uniform pick: a genome with a large neighbourhood in the choice space is the nearest one to
more proposals, so ``snapped`` differs from ``random`` by the replay's own bias, and the samplers are read
against ``snapped``. All four samplers get the same seed, so their first proposals coincide: each starts from
Optuna's random sampler with that seed (TPE's 10 start-up trials, NSGA-II's first generation, evolution's first
population).

A replay stops when every genome is evaluated, or once it has both trained a top-5% genome long and spent the
largest budget of the regret table.

Figures per task and strategy: the median over seeds of the cost of training a top-5% genome long; the median
regret at 5, 10, 20 and 40 trainings; random's median cost over the cascade's (target: at least 3), and beside
it random's exact median, which ten seeds of a uniform order only estimate (the first k at which a top-5%
genome is among the first k trainings with probability 1/2: 1 - C(n - t, k) / C(n, k) >= 1/2). And how
well the surrogate ranks: fitted on 20 random genomes (the features above, target long accuracy), the Kendall
tau of its predictions on the other genomes, beside the out-of-bag tau ``held_out_tau`` reports on the 20,
and beside the best single training-free score on the same held-out genomes, picked by its tau on the 20 (what
a search could know) and in hindsight (the best on the held-out genomes themselves, an upper bound).

    python benchmarks/replay.py                  # writes benchmarks/results/replay/{replay.json,SECTION.md}
    python benchmarks/replay.py --seeds 20 --tasks digits --corpus /elsewhere/corpus
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import re
import statistics
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import sklearn
import yaml
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# nas first: objective_fit puts benchmarks/ at the head of sys.path, where benchmarks/runners.py would hide the
# top-level runners package that nas.search.samplers imports.
from nas.errors import GenomeError  # noqa: E402
from nas.genome import Genome  # noqa: E402
from nas.graph import check_genome  # noqa: E402
from nas.search.cascade import (  # noqa: E402
    FIRST_PICKS,
    OBJECTIVE_WEIGHT,
    first_rung_order,
    first_rung_ranks,
    rung_targets,
)
from nas.search.params import random_params, trial_picker  # noqa: E402
from nas.search.samplers import make_sampler  # noqa: E402
from nas.search.surrogate import COST_FEATURES, MIN_FIT, Encoder, Line, Surrogate, held_out_tau, ucb  # noqa: E402
from nas.space import choices, instantiate  # noqa: E402

# isort: split
sys.path.insert(0, str(ROOT / "benchmarks"))
from corpus import LONG_EPOCHS, SAMPLE_SEED, SHORT_EPOCHS, SPACES, corpus_dir, read_genomes, read_jsonl  # noqa: E402
from objective_fit import (  # noqa: E402
    DATA_FEATURES,
    DEFAULT_FEATURES,
    KERNEL_MODEL,
    MODELS,
    TRUTHS,
    accuracy,
    default_fit_data,
    feature_rows,
    held_out_genomes,
    held_out_task,
    long_truth,
    tau,
)

RESULTS = ROOT / "benchmarks" / "results" / "replay"
STRATEGIES = ("random", "snapped", "tpe", "nsga2", "evolution", "cascade", "cascade-data-free", "cascade-shortlist",
              "cascade-shortlist-prior", "cascade-shortlist-prior-new-task", "cascade-shortlist-scored",
              "cascade-shortlist-scored-new-task", "cascade-shortlist-pruned", "cascade-restart")
# The prior a cascade-shortlist strategy reads (a kind of ``held_out_priors``), or none: the search's; and the
# objective's value its training stage reads (a kind of ``held_out_objectives``), or none.
SHORTLIST_PRIOR = {"cascade-shortlist-prior": "genomes", "cascade-shortlist-prior-new-task": "task"}
SHORTLIST_SCORE = {"cascade-shortlist-scored": "genomes", "cascade-shortlist-scored-new-task": "task"}
# The terms of each corpus space's shipped --data twin (tiny.data.json; hybrid32 is the default space's model,
# metaformer_hybrid.data.json)
TWIN_TERMS = {"tiny": DATA_FEATURES, "hybrid32": DEFAULT_FEATURES}
# The spaces whose shipped twin adds a kernel to its ridge (``objective_fit.py --model kernel``: tiny.data.json
# since 2026-12-05 08:40); the replay refits the twin the same way.
TWIN_KERNEL = {"tiny"}
SAMPLER_OF = {"snapped": "random", "tpe": "tpe", "nsga2": "nsga2", "evolution": "evolution"}  # make_sampler's name
SHORT_COST = SHORT_EPOCHS / LONG_EPOCHS
BUDGETS = (5, 10, 20, 40)
TOP_FRACTION = 0.05
RANDOM_START = 4  # the cascade's random picks before its surrogate chooses
REPLAY_TREES = 32  # the cascade's forest: refitted after every result, so its size sets the replay's time
FIT_SIZE = 20  # genomes the held-out surrogate figure is fitted on
TARGET_RATIO = 3.0  # random's cost to the top 5% over the cascade's
ZERO_COST = ("naswot", "synflow", "grad_norm", "snip", "zico", "meco")
# cascade-shortlist: the scores a search's zero-cost stage computes on a batch of the task (nas.search.trial.
# SCREEN_SCORES; the objective's own value, also a feature there, is left out: it was fitted on these genomes),
# and how many genomes it keeps scored ahead of training (the search keeps 50 of a pool of thousands).
SCREEN_SCORES = ("grad_norm", "meco")
SHORTLIST = 10


# --------------------------------------------------------------------------------------------------------------
# The corpus as a table

@dataclass
class Task:
    """One task's replay table; genomes are positions 0..n-1 in corpus order."""

    name: str
    indexes: list[int]  # corpus index (genomes.jsonl) of each position
    short: np.ndarray  # a whole 3-epoch schedule
    long: np.ndarray  # seed 0: what a training returns
    truth: np.ndarray  # what the target and the figures are read against: ``long``, or its mean over seeds 0-2
    early: np.ndarray  # the long run's accuracy after its first 3 epochs: the truncated first stage
    epochs: np.ndarray  # the long run's accuracy after each of its 12 epochs (genomes x 12): the rungs
    params: list[dict[str, Any]]  # Optuna params, by YAML path
    choice_rows: np.ndarray  # Encoder columns of the choices only: the snapping distance
    features: np.ndarray  # Encoder row + zero-cost terms: what the cascade's surrogate sees
    data_free: int  # how many leading columns of ``features`` are the Encoder row and the prior slot
    scores: dict[str, np.ndarray]  # training-free score -> raw value per genome
    screen_scores: np.ndarray  # SCREEN_SCORES on a batch of the task (NaN where not finite)
    priors: dict[str, np.ndarray]  # "genomes" / "task" -> the held-out prior per genome (``held_out_priors``)
    objectives: dict[str, np.ndarray]  # the same kinds -> the --data twin's held-out value (``held_out_objectives``)
    top: set[int] = field(default_factory=set)

    @property
    def n(self) -> int:
        return len(self.indexes)

    @property
    def prior_column(self) -> int:
        return self.data_free - 1  # the replay's prior slot, after the Encoder row


def corpus_params(space: dict[str, Any], ids: list[str]) -> dict[str, dict[str, Any]]:
    """Genome id -> Optuna params: ``sample_genomes``' draws replayed through ``random_params``, which consumes
    the rng as ``random_picker`` does, skipping invalid genomes and duplicates alike. Checked against the ids of
    genomes.jsonl (the hash of the space's genome, before ``for_task`` sets a task's channels)."""
    rng, found = random.Random(SAMPLE_SEED), {}
    for _ in range(200 * len(ids)):
        mapping, params = random_params(space, rng)
        try:
            genome = Genome.model_validate(mapping)
            check_genome(genome)
        except GenomeError:
            continue
        found.setdefault(genome.content_hash(), params)
        if len(found) == len(ids):
            break
    if list(found) != ids:
        raise SystemExit("replaying sample_genomes does not give genomes.jsonl's ids: was the corpus drawn with "
                         f"another space or seed than {space['name']}, seed {SAMPLE_SEED}?")
    return found


def load_task(name: str, genomes: list[dict], runs: list[dict], scores: list[dict], params: dict[str, dict],
              encoder: Encoder, priors: dict[str, dict[str, dict[str, float]]], truth: str = "seed0",
              objectives: dict[str, dict[str, dict[str, float]]] | None = None) -> Task:
    """The genomes with seed-0 runs at both fidelities and finite scores on the task, in corpus order, and their
    truth (``objective_fit.long_truth``). Each Encoder row is followed by a prior slot, 0 for every genome (no
    prior); ``with_prior`` sets it."""
    by_id = {g["genome"]: g for g in genomes}
    short, long, truths = accuracy(runs, name, "short"), accuracy(runs, name, "long"), long_truth(runs, name, truth)
    history = {r["genome"]: r["history"] for r in runs if r["task"] == name
               and r["fidelity"] == "long" and r["seed"] == 0 and len(r["history"]) == LONG_EPOCHS}
    early = {g: h[SHORT_EPOCHS - 1] for g, h in history.items()}
    raw = {s["genome"]: s["scores"] for s in scores
           if s["task"] == name and s["batch"] == "default" and s["seed"] == 0}
    terms = feature_rows(by_id, scores, name, "default", ["structural", *ZERO_COST])  # finite ones only
    ids = [g["genome"] for g in genomes if g["genome"] in short and g["genome"] in truths and g["genome"] in early
           and g["genome"] in terms and all(g["genome"] in p[name] for p in priors.values())
           and all(g["genome"] in o[name] for o in (objectives or {}).values())]
    rows = [encoder.row(params[g], by_id[g]["params"], by_id[g]["flops"], raw[g]["structural"]) + [0.0] for g in ids]
    on_task = {s["genome"]: s["scores"] for s in scores
               if s["task"] == name and s["batch"] == "task" and s["seed"] == 0}
    screen_scores = np.array([[_finite(on_task.get(g, {}).get(k)) for k in SCREEN_SCORES] for g in ids], dtype=float)
    task = Task(name=name, indexes=[by_id[g]["index"] for g in ids],
                short=np.array([short[g] for g in ids]), long=np.array([long[g] for g in ids]),
                truth=np.array([truths[g] for g in ids]),
                early=np.array([early[g] for g in ids]), epochs=np.array([history[g] for g in ids]),
                params=[params[g] for g in ids], choice_rows=np.array([choice_row(encoder, params[g]) for g in ids]),
                features=np.array([r + terms[g][1:] for r, g in zip(rows, ids)]), data_free=len(encoder.columns) + 1,
                scores={s: np.array([raw[g][s] for g in ids]) for s in ("structural", *ZERO_COST)},
                screen_scores=screen_scores.reshape(len(ids), len(SCREEN_SCORES)),
                priors={kind: np.array([p[name][g] for g in ids]) for kind, p in priors.items()},
                objectives={kind: np.array([o[name][g] for g in ids]) for kind, o in (objectives or {}).items()})
    task.top = top_genomes(task.truth)
    return task


def held_out_priors(genomes: list[dict], scores: list[dict], runs: list[dict], truth: str = "seed0"
                    ) -> dict[str, dict[str, dict[str, float]]]:
    """The shipped objective's data-free part (structural score, params, FLOPs, descriptors; every zero-cost
    term at its mean) as a search would have it for a genome it was not fitted on: the objective refitted as
    ``objective_fit.py --write`` fits it (its default terms, the default batch, the rank of long accuracy, both
    tasks), then read with its data-free terms alone (``objective_fit.restricted``). ``genomes``: each genome
    from the fit on the other 4 of 5 folds (a task the prior was fitted on); ``task``: from the fit on the other
    task (a new task). kind -> task -> genome id -> prior."""
    data, keep = default_fit_data({g["genome"]: g for g in genomes}, scores, runs, truth)
    return {"genomes": held_out_genomes(data, keep=keep), "task": held_out_task(data, keep=keep)}


def held_out_objectives(genomes: list[dict], scores: list[dict], runs: list[dict], space: str, truth: str = "seed0"
                        ) -> dict[str, dict[str, dict[str, float]]]:
    """The value of the space's ``--data`` twin (its terms ``TWIN_TERMS[space]`` on the task's batch, zero-cost
    scores and all) as a search given that data would have it for a genome the fit never saw: refitted on the
    other 4 of 5 folds of genomes (``genomes``), or on the other task (``task``), as the shipped twin is made: a
    ridge, plus a kernel on its residuals for the spaces of ``TWIN_KERNEL``. kind -> task -> genome -> value."""
    data, _ = default_fit_data({g["genome"]: g for g in genomes}, scores, runs, truth, batch="task",
                               terms=TWIN_TERMS[space])
    model = MODELS[KERNEL_MODEL] if space in TWIN_KERNEL else None
    return {"genomes": held_out_genomes(data, regressor=model), "task": held_out_task(data, regressor=model)}


def training_stage_features(task: Task, score: str | None = None) -> np.ndarray:
    """What the training stage's surrogate reads in ``nas search --objective train``: the Encoder row and the
    prior slot, the zero-cost stage's ``SCREEN_SCORES``, and with ``score`` (a kind of ``held_out_objectives``)
    the objective's value, as a search given ``--data`` has it."""
    columns = [task.features[:, :task.data_free], task.screen_scores]
    return np.column_stack(columns if score is None else [*columns, task.objectives[score]])


def with_prior(task: Task, kind: str) -> Task:
    """The task with the prior slot set to the held-out prior of ``kind``."""
    features = task.features.copy()
    features[:, task.prior_column] = task.priors[kind]
    return replace(task, features=features)


def _finite(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else math.nan


@dataclass
class Corpus:
    """The trained corpus as the replays read it: the space it was drawn from, its genomes (by index), runs,
    training-free scores, and each genome's Optuna params."""

    space: dict[str, Any]
    encoder: Encoder
    genomes: list[dict]
    runs: list[dict]
    scores: list[dict]
    params: dict[str, dict[str, Any]]
    priors: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # ``held_out_priors``
    truth: str = "seed0"  # ``objective_fit.long_truth``
    objectives: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # ``held_out_objectives``

    def task(self, name: str) -> Task:
        return load_task(name, self.genomes, self.runs, self.scores, self.params, self.encoder, self.priors,
                         self.truth, self.objectives)


def seeds_command_line(doc: str) -> argparse.Namespace:
    """The command line of a script that varies this replay (``--seeds``), with library warnings off."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore")
    return parser.parse_args()


def read_corpus(space_name: str = "tiny", truth: str = "seed0", extra: Sequence[Path] = ()) -> Corpus:
    """The corpus of the space named ``space_name`` (``corpus.SPACES``), read against ``truth``: the long
    accuracy of seed 0, or its mean over seeds 0-2 (``seeds``). ``extra``: folders of the same space's genomes
    drawn after it (``corpus.py --from``: the fresh corpus), read as part of it."""
    space = yaml.safe_load(SPACES[space_name].read_text())
    folders = [corpus_dir(space_name), *extra]
    genomes = sorted((g for folder in folders for g in read_genomes(folder)), key=lambda g: g["index"])
    ids = {g["genome"] for g in genomes}  # with $NAS_CORPUS_GENOMES, a folder holds runs of genomes past it
    runs = [r for folder in folders for r in read_jsonl(folder / "runs.jsonl") if r["genome"] in ids]
    scores = [s for folder in folders for s in read_jsonl(folder / "scores.jsonl") if s["genome"] in ids]
    return Corpus(space, Encoder(choices(space)), genomes, runs, scores,
                  corpus_params(space, [g["genome"] for g in genomes]), held_out_priors(genomes, scores, runs, truth),
                  truth, held_out_objectives(genomes, scores, runs, space_name, truth))


def choice_row(encoder: Encoder, params: dict[str, Any]) -> list[float]:
    """The Encoder row without its cost columns: a proposal has no costs, and snapping compares choices only."""
    return encoder.row(params, 1.0, 1.0, 0.0)[:len(encoder.columns) - len(COST_FEATURES)]


def top_genomes(long: np.ndarray) -> set[int]:
    """The top 5% by long accuracy, ties at the threshold included."""
    if len(long) == 0:
        return set()
    k = max(1, math.ceil(TOP_FRACTION * len(long)))
    threshold = np.sort(long)[::-1][k - 1]
    return {int(i) for i in np.flatnonzero(long >= threshold)}


# --------------------------------------------------------------------------------------------------------------
# What a search paid for

@dataclass
class Trace:
    """The trainings of one replay in order: (cost so far, genome, fidelity, accuracy)."""

    steps: list[tuple[float, int, str, float]] = field(default_factory=list)
    cost: float = 0.0
    scorings: int = 0  # genomes scored zero-cost (free here; the cascade with a short-list counts them)

    def train(self, genome: int, fidelity: str, acc: float, cost: float | None = None) -> None:
        self.cost += (1.0 if fidelity == "long" else SHORT_COST) if cost is None else cost
        self.steps.append((self.cost, genome, fidelity, float(acc)))

    def answer(self, budget: float = math.inf) -> int | None:
        """The genome of the best long accuracy trained within ``budget``: the search's answer."""
        longs = [(a, g) for c, g, f, a in self.steps if f == "long" and c <= budget + 1e-9]
        return max(longs)[1] if longs else None

    def cost_to(self, genomes: set[int]) -> float:
        """The cost when one of ``genomes`` was first trained long; inf if never."""
        return next((c for c, g, f, _ in self.steps if f == "long" and g in genomes), math.inf)


def finished(trace: Trace, task: Task) -> bool:
    return trace.cost >= max(BUDGETS) and math.isfinite(trace.cost_to(task.top))


def regret(trace: Trace, task: Task, budget: float) -> float:
    answer = trace.answer(budget)
    reached = task.truth.min() if answer is None else task.truth[answer]
    return float(task.truth.max() - reached)


def strategy_rng(task: Task, strategy: str, seed: int) -> random.Random:
    return random.Random(f"{task.name}/{strategy}/{seed}")  # str seeds are stable across processes


def pick_max(values: np.ndarray, candidates: list[int], rng: random.Random) -> int:
    """The candidate of the highest value, ties broken by the rng."""
    return candidates[rng.choice(np.flatnonzero(values == values.max()).tolist())]


# --------------------------------------------------------------------------------------------------------------
# The strategies

def replay_random(task: Task, seed: int) -> Trace:
    order = list(range(task.n))
    strategy_rng(task, "random", seed).shuffle(order)
    trace = Trace()
    for i in order:
        if finished(trace, task):
            break
        trace.train(i, "long", task.long[i])
    return trace


def nearest(row: np.ndarray, task: Task, left: list[int], rng: random.Random) -> int:
    """The genome of ``left`` closest to ``row`` on the choice columns."""
    return pick_max(-((task.choice_rows[left] - row) ** 2).sum(axis=1), left, rng)


def replay_sampler(task: Task, strategy: str, seed: int, space: dict[str, Any], encoder: Encoder) -> Trace:
    # One tie-breaking rng for all samplers: on a seed, their shared random start snaps to the same genomes.
    rng, sampler = strategy_rng(task, "snap", seed), make_sampler(SAMPLER_OF[strategy], seed, trials=task.n)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    left, trace = list(range(task.n)), Trace()
    while left and not finished(trace, task):
        proposal = study.ask()
        instantiate(space, trial_picker(proposal))
        i = nearest(np.array(choice_row(encoder, proposal.params)), task, left, rng)
        study.tell(proposal, state=TrialState.FAIL)  # not evaluated: the snapped genome is, as its own trial
        study.enqueue_trial(task.params[i])
        trial = study.ask()
        trial.relative_params  # noqa: B018 -- the sampler's relative step: NSGA-II assigns the generation there
        instantiate(space, trial_picker(trial))
        if trial.params != task.params[i]:
            raise RuntimeError(f"enqueued params not replayed: {trial.params} != {task.params[i]}")
        study.tell(trial, float(task.long[i]))
        left.remove(i)
        trace.train(i, "long", task.long[i])
    return trace


class PriorLine(Surrogate):
    """A line in the prior slot plus the search's forest on what the line leaves: the prior already ranks the
    corpus's held-out genomes at tau +0.5 (digits) and +0.38 (patterns), which a forest of 20 results alone does
    not reach, and a forest given the prior as one column among dozens uses it too seldom. The slope is fitted on
    the results and kept at zero or above (a prior that ranks against them is not followed). Measured here, not
    in ``nas search`` (BENCHMARKS.md, "the corpus prior in the training cascade")."""

    def __init__(self, seed: int, trees: int, prior_column: int):
        super().__init__(seed=seed, trees=trees)
        self.prior_column, self.prior_line = prior_column, Line(0.0, 0.0, 0.0)

    def fit(self, x: np.ndarray, y: np.ndarray) -> PriorLine:
        y = np.asarray(y, dtype=float)
        self.prior_line = Line.fitted(x[:, self.prior_column], y)
        super().fit(x, y - self.prior_line(x[:, self.prior_column]))
        return self

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, spread = super().predict(x)
        return mean + self.prior_line(x[:, self.prior_column]), spread


RUNGS = (SHORT_EPOCHS, LONG_EPOCHS)  # nas search's: the first stage, then the promotion to the long schedule


class Ladder:
    """Asynchronous successive halving over the long schedule's epochs, as ``nas search``'s ``Promotion`` runs it:
    a genome's first stage is the long run's first ``rungs[0]`` epochs; a genome in the top ``1 / rate`` of
    those at a rung (``floor(n / rate)`` of them, the best first) that has not gone further trains on to the
    next rung, from the rung it reached (cost: the epochs between, over 12). After every first stage the
    promotions are made, highest rung first, until none is due, so a genome left behind when few had reached its
    rung is promoted later as their number grows. An accuracy at rung ``e`` is the long run's recorded epoch
    ``e``: training on from a checkpoint reaches it. ``fresh``: the cascade before 2026-12-02, whose first stage
    was a whole 3-epoch schedule (the ``short`` run) and whose promotion trained 12 epochs afresh (cost 1)."""

    def __init__(self, task: Task, trace: Trace, rate: int, rungs: tuple[int, ...] = RUNGS, fresh: bool = False,
                 across_rungs: bool = True, objective: np.ndarray | None = None,
                 weight: float | str | None = OBJECTIVE_WEIGHT):
        if rungs[-1] != LONG_EPOCHS or list(rungs) != sorted(set(rungs)) or (fresh and rungs != RUNGS):
            raise ValueError(f"rungs must rise to the long schedule's {LONG_EPOCHS} epochs: {rungs}")
        self.task, self.trace, self.rate, self.rungs, self.fresh = task, trace, rate, rungs, fresh
        self.across_rungs = across_rungs
        # The objective's value per genome, read beside the first-stage accuracy when promoting from the first
        # rung (``first_rung_order`` at ``weight``, None: ``agreement_weight``), as ``nas search`` does at its
        # weight; ``objective`` None: the accuracy alone.
        self.objective, self.weight = objective, weight
        self.levels: list[dict[int, float]] = [{} for _ in rungs]  # rung -> genome -> accuracy there

    @property
    def first(self) -> dict[int, float]:
        return self.levels[0]

    @property
    def long(self) -> dict[int, float]:
        return self.levels[-1]

    def _reach(self, i: int, rung: int, since: int) -> None:
        last = rung == len(self.rungs) - 1
        if last:
            acc = self.task.long[i]
        else:
            acc = self.task.short[i] if self.fresh else self.task.epochs[i, self.rungs[rung] - 1]
        self.levels[rung][i] = float(acc)
        self.trace.train(i, "long" if last else "short" if rung == 0 else f"epoch {self.rungs[rung]}", float(acc),
                         (self.rungs[rung] - (0 if self.fresh else since)) / LONG_EPOCHS)

    def start(self, i: int) -> None:
        """Genome ``i``'s first stage, then every promotion due."""
        self._reach(i, 0, 0)
        while (due := self._due()) is not None:
            self._reach(due[0], due[1], self.rungs[due[1] - 1])

    def train_long(self, i: int) -> None:
        """No first stage: genome ``i`` trained long at once (cost 1), its long accuracy its only result."""
        self.levels[0][i] = self.levels[-1][i] = float(self.task.long[i])
        self.trace.train(i, "long", self.task.long[i])

    def _due(self) -> tuple[int, int] | None:
        for rung in reversed(range(len(self.rungs) - 1)):
            ranked = self.ranked(rung)
            for i in ranked[:len(ranked) // self.rate]:
                if i not in self.levels[rung + 1]:
                    return i, rung + 1
        return None

    def ranked(self, rung: int) -> list[int]:
        """The genomes at ``rung``, best first: by accuracy, and at the first rung beside the objective's value."""
        level = self.levels[rung]
        if rung == 0 and self.objective is not None:
            objective = {i: float(self.objective[i]) for i in level}
            return first_rung_order(level, objective, self._weight(objective))
        return sorted(level, key=lambda i: -level[i])

    def _weight(self, objective: dict[int, float]) -> float:
        """The objective's weight at the first rung: fixed, the run's agreement (None), or fitted ("fitted")."""
        if self.weight is None:
            return agreement_weight(self.first, objective)
        if self.weight == "fitted":
            return fitted_weight(self.levels, objective)
        return float(self.weight)

    def reached(self, i: int) -> int:
        return max(r for r, level in enumerate(self.levels) if i in level)

    def finish(self) -> None:
        """Every genome had its first stage: the rest go to the long schedule, the highest rung and accuracy
        first, until the replay is finished."""
        rest = [i for i in self.first if i not in self.long]
        for i in sorted(rest, key=lambda i: (-self.reached(i), -self.levels[self.reached(i)][i])):
            if finished(self.trace, self.task):
                break
            self._reach(i, len(self.rungs) - 1, self.rungs[self.reached(i)])

    def targets(self) -> dict[int, float]:
        """What the surrogate is fitted on: the search's ``rung_targets`` of the rungs so far; without
        ``across_rungs``, the first stage's results alone (``nas search`` before 2026-12-04)."""
        return rung_targets(self.levels) if self.across_rungs else dict(self.first)


def agreement_weight(accuracy: dict[int, float], objective: dict[int, float], most: float = 0.5) -> float:
    """The objective's weight in ``first_rung_order`` taken from the run itself: the Kendall tau between its
    values and the first-stage accuracies, 0 where they disagree or below ``MIN_FIT`` genomes, at most ``most``.
    Measured beside the fixed weight (``replay_promotion_order.py``) and not adopted."""
    keys = list(accuracy)
    if len(keys) < MIN_FIT:
        return 0.0
    agreement = _tau(np.array([objective[k] for k in keys]), np.array([accuracy[k] for k in keys]))
    return min(most, max(0.0, agreement)) if math.isfinite(agreement) else 0.0


WEIGHTS = np.linspace(0.0, 1.0, 11)  # the objective's weights a fit chooses among (also surrogate_curve.py)


def fitted_weight(levels: list[dict[int, float]], objective: dict[int, float],
                  default: float = OBJECTIVE_WEIGHT) -> float:
    """The objective's weight in ``first_rung_order`` fitted on the run's own results: of 0, 0.1, ..., 1, the one
    whose blend of the two ranks (over the whole first rung, as ``first_rung_order`` ranks) best ranks the
    genomes promoted past it by their result at the highest rung (``rung_targets``); ties go to the weight
    nearest ``default``, and so does a run with fewer than ``MIN_FIT`` such genomes. Those genomes are the top
    of an earlier order, a narrow sample: the replay measures whether that still tells the weight."""
    first = levels[0]
    later = [k for k in first if any(k in level for level in levels[1:])]
    if len(later) < MIN_FIT:
        return default
    keys, acc, prior = first_rung_ranks(first, objective)
    where = {k: j for j, k in enumerate(keys)}
    rows = [where[k] for k in later]
    target = rung_targets(levels)
    truth = np.array([target[k] for k in later])
    taus = [_tau(w * prior[rows] + (1 - w) * acc[rows], truth) for w in WEIGHTS]
    taus = [t if math.isfinite(t) else -math.inf for t in taus]
    best = max(taus)
    return float(min((w for w, t in zip(WEIGHTS, taus) if t == best), key=lambda w: abs(w - default)))


def surrogate_pick(task: Task, ladder: Ladder, left: list[int], model: Surrogate, rng: random.Random) -> int:
    target = ladder.targets()
    trained = list(ladder.first)  # in the order of their first stages, as the search's stage_results has them
    model.fit(task.features[trained], np.array([target[i] for i in trained]))
    mean, std = model.predict(task.features[left])
    return pick_max(ucb(mean, std), left, rng)


def replay_cascade(task: Task, seed: int, trees: int, restart: bool = False, data_free: bool = False) -> Trace:
    """The search's cascade over the whole pool (no shortlist): each pick's first stage, then the ``Ladder``'s
    promotions. ``restart``: the first stage a whole 3-epoch schedule, a promotion 12 epochs afresh."""
    rng = strategy_rng(task, "cascade-restart" if restart else "cascade", seed)  # data_free: the same draws
    if data_free:
        task = replace(task, features=task.features[:, :task.data_free])
    model = Surrogate(seed=seed, trees=trees)
    left, trace = list(range(task.n)), Trace()
    ladder = Ladder(task, trace, 3, fresh=restart)
    while left and not finished(trace, task):
        i = rng.choice(left) if len(ladder.first) < RANDOM_START else surrogate_pick(task, ladder, left, model, rng)
        left.remove(i)
        ladder.start(i)
    ladder.finish()
    return trace


def pruned_at(task: Task, i: int, completed: list[int]) -> int | None:
    """The epoch at which Optuna's median pruner (``nas search``'s default: 3 trainings that reached the epoch
    at least) stops genome ``i``'s first stage, or None: at each epoch before the stage's last, the genome's best
    accuracy so far below the median of the completed first stages' accuracy at that epoch."""
    if len(completed) < 3:
        return None
    for epoch in range(1, SHORT_EPOCHS):
        best = float(task.epochs[i, :epoch].max())
        if best < statistics.median(float(task.epochs[j, epoch - 1]) for j in completed):
            return epoch
    return None


def replay_shortlist(task: Task, seed: int, trees: int, size: int = SHORTLIST, prune: bool = False,
                     prior: str | None = None, prior_first: str = "all", rate: int | None = 3,
                     score: str | None = None, rungs: tuple[int, ...] = RUNGS, across_rungs: bool = True,
                     promote_by_score: bool = True, weight: float | str | None = OBJECTIVE_WEIGHT,
                     stop_at_top: bool = False, grow: int = 0) -> Trace:
    """The cascade as ``nas search --objective train`` runs it with its zero-cost stage: ``size`` genomes are
    kept scored zero-cost and untrained, each picked by a surrogate of the data-free features, and each
    training is picked among them by a surrogate that also reads their scores. Scoring costs nothing here: only
    trainings are counted. ``prior`` (a kind of ``held_out_priors``; ``nas search`` has none): the surrogate is
    ``PriorLine``, and the first ``FIRST_PICKS`` picks of each kind are, by ``prior_first``, the genomes of the
    highest prior ("all"), uniform ("none"), or one and the other by the parity of the trainings so far
    ("alternate"); None: the search's forest alone, and the first ``RANDOM_START`` picks uniform. ``prune``: the
    median pruner stops first stages early (``pruned_at``); a stopped one costs its epochs, gives the surrogate
    nothing and is never promoted, as in the search. ``rate`` and ``rungs``: the ``Ladder``'s (3, the search's);
    rate None: no first stage, every pick is trained long at once (``replay_promotion.py`` compares them).
    ``score`` (a kind of ``held_out_objectives``): the training stage's surrogate also reads the objective's
    value, as a search given ``--data`` does. ``across_rungs``: the ``Ladder``'s. ``promote_by_score``: with
    ``score``, promotion from the first rung also reads that value (``first_rung_order`` at ``weight``, None:
    ``agreement_weight``, "fitted": ``fitted_weight``), as ``nas search`` does since 2026-12-04 14:00; False: the
    accuracy alone, as before. ``stop_at_top``: stop once a top genome is trained long (its ``cost_to`` is the
    same; the regret at the larger budgets is not measured). ``grow``: the short-list holds ``size`` plus this
    many per first stage so far (``nas search --shortlist-growth``); each genome scored is counted in
    ``Trace.scorings``."""
    rng = strategy_rng(task, "cascade-shortlist", seed)  # the same draws with and without the pruner
    if prior is not None:
        task = with_prior(task, prior)
    data_free = replace(task, features=task.features[:, :task.data_free])
    with_scores = replace(task, features=training_stage_features(task, score))
    model = Surrogate(seed=seed, trees=trees) if prior is None else PriorLine(seed, trees, task.prior_column)
    # the training stage's surrogate, as nas search's: with the objective's value, a line in it where that ranks
    # the results better held out (nas.search.cascade.objective_column)
    training = model if score is None or prior is not None else Surrogate(
        seed=seed, trees=trees, line_column=with_scores.features.shape[1] - 1)
    start = RANDOM_START if prior is None else FIRST_PICKS

    def first_pick(candidates: list[int]) -> int:
        if prior is None or prior_first == "none" or (prior_first == "alternate" and len(ladder.first) % 2):
            return rng.choice(candidates)
        return pick_max(task.priors[prior][candidates], candidates, rng)

    unscored, scored, trace = list(range(task.n)), [], Trace()
    ladder = Ladder(task, trace, rate or 1, rungs, across_rungs=across_rungs, weight=weight,
                    objective=task.objectives[score] if promote_by_score and score is not None else None)
    while (unscored or scored) and not finished(trace, task):
        if stop_at_top and math.isfinite(trace.cost_to(task.top)):
            return trace
        while unscored and len(scored) < size + grow * len(ladder.first):
            if len(ladder.first) < start:
                j = first_pick(unscored)
            else:
                j = surrogate_pick(data_free, ladder, unscored, model, rng)
            unscored.remove(j)
            scored.append(j)
            trace.scorings += 1
        i = first_pick(scored) if len(ladder.first) < start else surrogate_pick(with_scores, ladder, scored,
                                                                                training, rng)
        scored.remove(i)
        stopped = pruned_at(task, i, list(ladder.first)) if prune else None
        if stopped is not None:
            trace.train(i, "pruned", float(task.epochs[i, stopped - 1]), stopped / LONG_EPOCHS)
            continue
        if rate is None:
            ladder.train_long(i)
        else:
            ladder.start(i)
    ladder.finish()
    return trace


def replay(task: Task, strategy: str, seed: int, space: dict[str, Any], encoder: Encoder, trees: int) -> Trace:
    if strategy == "random":
        return replay_random(task, seed)
    if strategy.startswith("cascade-shortlist"):
        return replay_shortlist(task, seed, trees, prune=strategy == "cascade-shortlist-pruned",
                                prior=SHORTLIST_PRIOR.get(strategy), score=SHORTLIST_SCORE.get(strategy))
    if strategy.startswith("cascade"):
        return replay_cascade(task, seed, trees, restart=strategy == "cascade-restart",
                              data_free=strategy == "cascade-data-free")
    return replay_sampler(task, strategy, seed, space, encoder)


# --------------------------------------------------------------------------------------------------------------
# How well the surrogate ranks

def _tau(x: np.ndarray, y: np.ndarray) -> float:
    return tau(x.tolist(), y.tolist())


def _best(taus: dict[str, float]) -> str:
    return max(taus, key=lambda s: taus[s] if math.isfinite(taus[s]) else -math.inf)


def held_out_split(task: Task, seed: int) -> tuple[list[int], list[int]]:
    """The ``FIT_SIZE`` genomes a held-out figure fits on for ``seed``, and the rest it is judged on."""
    rng = random.Random(f"{task.name}/held-out/{seed}")
    fit = sorted(rng.sample(range(task.n), FIT_SIZE))
    return fit, sorted(set(range(task.n)) - set(fit))


def held_out(task: Task, seed: int, trees: int) -> dict[str, Any]:
    """The surrogate fitted on FIT_SIZE random genomes, judged on the rest, beside the single scores.
    ``surrogate``: the search's forest on the Encoder row and the six zero-cost terms; ``surrogate_prior`` and
    ``surrogate_new_task``: ``PriorLine`` on the Encoder row, the held-out prior and the zero-cost stage's
    scores, with the prior of a task it was fitted on or of a new one."""
    fit, rest = held_out_split(task, seed)
    model = Surrogate(seed=seed, trees=trees).fit(task.features[fit], task.long[fit])
    predicted, _ = model.predict(task.features[rest])
    live = {}
    for kind, key in (("genomes", "surrogate_prior"), ("task", "surrogate_new_task")):
        x = training_stage_features(with_prior(task, kind))
        fitted = PriorLine(seed, trees, task.prior_column).fit(x[fit], task.long[fit])
        live[key] = _tau(fitted.predict(x[rest])[0], task.truth[rest])
        live[f"{key}_prior_alone"] = _tau(task.priors[kind][rest], task.truth[rest])
    # The training stage's forest as nas search --objective train fits it: the shortlist's scores, and with
    # --data the objective's value (its --data twin, fitted on the task or on the other task)
    shortlisted = training_stage_features(task)
    fitted = Surrogate(seed=seed, trees=trees).fit(shortlisted[fit], task.long[fit])
    live["surrogate_shortlist"] = _tau(fitted.predict(shortlisted[rest])[0], task.truth[rest])
    for kind, key in (("genomes", "surrogate_scored"), ("task", "surrogate_scored_new_task")):
        x = training_stage_features(task, kind)
        fitted = Surrogate(seed=seed, trees=trees, line_column=x.shape[1] - 1).fit(x[fit], task.long[fit])
        live[key] = _tau(fitted.predict(x[rest])[0], task.truth[rest])
        live[f"{key}_alone"] = _tau(task.objectives[kind][rest], task.truth[rest])
    on_fit = {s: _tau(v[fit], task.long[fit]) for s, v in task.scores.items()}
    on_rest = {s: _tau(v[rest], task.truth[rest]) for s, v in task.scores.items()}
    picked, hindsight = _best(on_fit), _best(on_rest)
    return {"seed": seed, "surrogate": _tau(predicted, task.truth[rest]), **live,
            "out_of_bag": held_out_tau(task.features[fit], task.long[fit], seed=seed),
            "picked": picked, "picked_tau": on_rest[picked], "hindsight": hindsight,
            "hindsight_tau": on_rest[hindsight], "held_out_genomes": len(rest)}


# --------------------------------------------------------------------------------------------------------------
# Figures

def median(values: list[float | None]) -> float:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(finite) if finite else math.nan


def seed_record(trace: Trace, task: Task, seed: int) -> dict[str, Any]:
    return {"seed": seed, "cost_to_top": trace.cost_to(task.top),
            "regret": {str(b): regret(trace, task, b) for b in BUDGETS},
            "long_trainings": sum(f == "long" for _, _, f, _ in trace.steps),
            "short_trainings": sum(f == "short" for _, _, f, _ in trace.steps),
            "pruned_trainings": sum(f == "pruned" for _, _, f, _ in trace.steps),
            # the per-seed curve: (cost so far, corpus index, fidelity, accuracy) of every training; the regret
            # after each is the corpus's best_long minus the best long accuracy so far
            "steps": [[c, task.indexes[g], f, round(a, 5)] for c, g, f, a in trace.steps]}


def quartiles(values: list[float]) -> tuple[float, float]:
    """25th and 75th percentiles by nearest rank (costs may be inf, which interpolation would make nan)."""
    ordered = sorted(values)
    return ordered[int(0.25 * (len(ordered) - 1))], ordered[math.ceil(0.75 * (len(ordered) - 1))]


def median_cell(costs: list[float]) -> tuple[float, str]:
    """The median of per-seed costs, and the cell the replay scripts print for it: median (quartiles)."""
    low, high = quartiles(costs)
    cost = statistics.median(costs)
    return cost, f"{cost:.2f} ({low:.2f} - {high:.2f})"


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    costs = [r["cost_to_top"] for r in records]
    return {"median_cost_to_top": statistics.median(costs), "quartiles_cost_to_top": quartiles(costs),
            "reached": sum(math.isfinite(c) for c in costs), "seeds": len(records),
            "median_regret": {str(b): median([r["regret"][str(b)] for r in records]) for b in BUDGETS}}


def random_exact_median(n: int, targets: int) -> int:
    """The median cost of the random strategy without sampling noise: the first k with P(a target among the
    first k of a uniform order) >= 1/2, where P = 1 - C(n - t, k) / C(n, k)."""
    return next(k for k in range(1, n + 1) if 2 * math.comb(n - targets, k) <= math.comb(n, k))


def corpus_summary(task: Task) -> dict[str, Any]:
    return {"genomes": task.n, "top_genomes": len(task.top), "top_threshold": float(min(task.truth[list(task.top)])),
            "best_long": float(task.truth.max()), "worst_long": float(task.truth.min()),
            "tau_short_long": _tau(task.short, task.truth), "tau_early_long": _tau(task.early, task.truth),
            "random_exact_median": random_exact_median(task.n, len(task.top))}


def replay_task(task: Task, seeds: int, space: dict[str, Any], encoder: Encoder, trees: int) -> dict[str, Any]:
    per_seed = {s: [seed_record(replay(task, s, seed, space, encoder, trees), task, seed) for seed in range(seeds)]
                for s in STRATEGIES}
    figures = {s: summarise(records) for s, records in per_seed.items()}
    cascade = figures["cascade-shortlist"]["median_cost_to_top"]  # what nas search --objective train runs
    ratio = figures["random"]["median_cost_to_top"] / cascade
    taus = [held_out(task, seed, trees) for seed in range(seeds)] if task.n >= FIT_SIZE + 3 else []
    surrogate = {}
    if taus:
        picks = [t["picked"] for t in taus]
        surrogate = {"fit_genomes": FIT_SIZE, "median_surrogate": median([t["surrogate"] for t in taus]),
                     **{f"median_{key}": median([t[key] for t in taus])
                        for key in ("surrogate_prior", "surrogate_prior_prior_alone", "surrogate_new_task",
                                    "surrogate_new_task_prior_alone", "surrogate_shortlist", "surrogate_scored",
                                    "surrogate_scored_alone", "surrogate_scored_new_task",
                                    "surrogate_scored_new_task_alone")},
                     "median_out_of_bag": median([t["out_of_bag"] for t in taus]),
                     "median_picked_score": median([t["picked_tau"] for t in taus]),
                     "most_picked": max(sorted(set(picks)), key=picks.count),
                     "median_hindsight_score": median([t["hindsight_tau"] for t in taus]), "per_seed": taus}
    corpus = corpus_summary(task)
    return {"corpus": corpus, "strategies": figures, "random_over_cascade": ratio,
            "exact_random_over_cascade": corpus["random_exact_median"] / cascade,
            "target_met": ratio >= TARGET_RATIO, "surrogate_tau": surrogate, "per_seed": per_seed}


def cost_cell(summary: dict[str, Any]) -> str:
    cost = summary["median_cost_to_top"]
    return "not reached" if math.isinf(cost) else f"{cost:.2f}"


def spread_cell(summary: dict[str, Any]) -> str:
    return " - ".join("never" if math.isinf(c) else f"{c:.2f}" for c in summary["quartiles_cost_to_top"])


def tables(results: dict[str, dict[str, Any]]) -> str:
    lines = ["| task | genomes in the replay | top 5% (genomes; long accuracy at least) | best / worst long accuracy "
             "| tau(short, long) | tau(long run's epoch 3, long) | random's exact median cost to the top 5% |",
             "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        c = r["corpus"]
        lines.append(f"| {name} | {c['genomes']} | {c['top_genomes']}; {c['top_threshold']:.3f} | "
                     f"{c['best_long']:.3f} / {c['worst_long']:.3f} | {c['tau_short_long']:+.3f} | "
                     f"{c['tau_early_long']:+.3f} | "
                     f"{c['random_exact_median']} |")
    budgets = " | ".join(f"regret at {b}" for b in BUDGETS)
    lines += ["", f"| task | strategy | median trainings to a top-5% genome (quartiles) | seeds reaching it "
              f"| {budgets} |", "|---|---|---|---|" + "---|" * len(BUDGETS)]
    for name, r in results.items():
        for s, f in r["strategies"].items():
            regrets = " | ".join(f"{f['median_regret'][str(b)]:.3f}" for b in BUDGETS)
            lines.append(f"| {name} | {s} | {cost_cell(f)} ({spread_cell(f)}) | {f['reached']}/{f['seeds']} "
                         f"| {regrets} |")
    lines += ["", "| task | random (median over seeds) | random (exact median) | `cascade-shortlist`, as `nas search "
              "--objective train` runs it (median over seeds) | random / it | exact random / it | target (at least "
              "3) | steered by the prior of the task | random / that | by the prior of a new task | random / that | "
              "data-free cascade | random / that |", "|---" * 13 + "|"]
    for name, r in results.items():
        f = r["strategies"]
        random_cost = f["random"]["median_cost_to_top"]
        cells = " | ".join(f"{cost_cell(f[s])} | {random_cost / f[s]['median_cost_to_top']:.2f}" for s in
                           ("cascade-shortlist-prior", "cascade-shortlist-prior-new-task", "cascade-data-free"))
        lines.append(f"| {name} | {cost_cell(f['random'])} | {r['corpus']['random_exact_median']} | "
                     f"{cost_cell(f['cascade-shortlist'])} | {r['random_over_cascade']:.2f} | "
                     f"{r['exact_random_over_cascade']:.2f} | {'met' if r['target_met'] else 'not met'} | {cells} |")
    lines += ["", f"| task | the search's forest fitted on {FIT_SIZE}, tau on the rest | its out-of-bag tau on the "
              f"{FIT_SIZE} | line in the prior of the task plus forest | that prior alone | line in the prior of a "
              f"new task plus forest | that prior alone | best single score picked on the {FIT_SIZE}, "
              "tau on the rest (most picked) | best single score in hindsight, tau on the rest |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        t = r["surrogate_tau"]
        if t:
            lines.append(f"| {name} | {t['median_surrogate']:+.3f} | {t['median_out_of_bag']:+.3f} | "
                         f"{t['median_surrogate_prior']:+.3f} | {t['median_surrogate_prior_prior_alone']:+.3f} | "
                         f"{t['median_surrogate_new_task']:+.3f} | {t['median_surrogate_new_task_prior_alone']:+.3f} | "
                         f"{t['median_picked_score']:+.3f} ({t['most_picked']}) | "
                         f"{t['median_hindsight_score']:+.3f} |")
        else:
            lines.append(f"| {name} | too few genomes | | | | | | | |")
    lines += ["", "With `--data`, the training stage also reads the objective's value (its `--data` twin, fitted on "
              "the other folds of the task's genomes or on the other task alone):", "",
              "| task | `cascade-shortlist` | random / it (exact) | `-scored`, the task known | random / it (exact) "
              "| `-scored-new-task` | random / it (exact) | the training stage's forest fitted on "
              f"{FIT_SIZE}, tau on the rest | with the objective of the task | that objective alone | with the "
              "objective of a new task | that objective alone |", "|---" * 12 + "|"]
    for name, r in results.items():
        f, t, exact = r["strategies"], r["surrogate_tau"], r["corpus"]["random_exact_median"]
        random_cost = f["random"]["median_cost_to_top"]
        cells = " | ".join(f"{cost_cell(f[s])} | {random_cost / f[s]['median_cost_to_top']:.2f} "
                           f"({exact / f[s]['median_cost_to_top']:.2f})"
                           for s in ("cascade-shortlist", "cascade-shortlist-scored",
                                     "cascade-shortlist-scored-new-task"))
        taus = " | ".join(f"{t[f'median_{k}']:+.3f}" for k in (
            "surrogate_shortlist", "surrogate_scored", "surrogate_scored_alone", "surrogate_scored_new_task",
            "surrogate_scored_new_task_alone")) if t else "too few genomes | | | |"
        lines.append(f"| {name} | {cells} | {taus} |")
    return "\n".join(lines)


def tied(figures: dict[str, dict[str, Any]], key: str, best: float, budget: str | None = None) -> str:
    """The strategies whose figure equals ``best``."""
    return ", ".join(s for s in STRATEGIES
                     if (figures[s][key] if budget is None else figures[s][key][budget]) == best)


def reading(results: dict[str, dict[str, Any]]) -> list[str]:
    """Plain statements of the figures, written from them so that they stay true as the corpus grows."""
    out = []
    for name, r in results.items():
        f, c = r["strategies"], r["corpus"]
        verdict = "meets" if r["target_met"] else "does not meet"
        out.append(f"- {name}: the cascade as `nas search --objective train` runs it (`cascade-shortlist`) reaches a "
                   f"top-5% genome after a median {cost_cell(f['cascade-shortlist'])} "
                   f"trainings against random's {cost_cell(f['random'])}, a ratio of {r['random_over_cascade']:.2f}: "
                   f"it {verdict} the target of {TARGET_RATIO:.0f}. Against random's exact median "
                   f"({c['random_exact_median']}, free of the seeds' luck) the ratio is "
                   f"{r['exact_random_over_cascade']:.2f}. Short accuracy ranks long accuracy with tau "
                   f"{c['tau_short_long']:+.2f}; the long run's own epoch 3, which is what the cascade's "
                   f"promotions rest on, with tau {c['tau_early_long']:+.2f}. Median regret at "
                   f"{BUDGETS[0]} trainings: cascade-shortlist "
                   f"{f['cascade-shortlist']['median_regret'][str(BUDGETS[0])]:.3f}, random "
                   f"{f['random']['median_regret'][str(BUDGETS[0])]:.3f}.")
        fewest = min(f[s]["median_cost_to_top"] for s in STRATEGIES)
        lowest = min(f[s]["median_regret"]["20"] for s in STRATEGIES)
        out.append(f"- {name}: fewest trainings to the top 5%: {tied(f, 'median_cost_to_top', fewest)} "
                   f"({fewest:.2f}); lowest median regret at 20 trainings: "
                   f"{tied(f, 'median_regret', lowest, '20')} ({lowest:.3f}).")
        t = r["surrogate_tau"]
        if t:
            out.append(f"- {name}: fitted on {FIT_SIZE} genomes, the search's forest ranks the others with tau "
                       f"{t['median_surrogate']:+.2f} (median over seeds); a line in the prior plus the forest "
                       f"{t['median_surrogate_prior']:+.2f} with the prior of the task, "
                       f"{t['median_surrogate_new_task']:+.2f} with that of a new task; the best single score "
                       "picked on the "
                       f"same {FIT_SIZE} gets {t['median_picked_score']:+.2f}, the best in hindsight "
                       f"{t['median_hindsight_score']:+.2f}; the out-of-bag tau a run would see on its "
                       f"{FIT_SIZE} is {t['median_out_of_bag']:+.2f}.")
    snapped = ", ".join(f"{cost_cell(r['strategies']['snapped'])} against random's "
                        f"{cost_cell(r['strategies']['random'])} on {name}" for name, r in results.items())
    out.append("- tpe, nsga2 and evolution share their first proposals with snapped on each seed (Optuna's random "
               "sampler with that seed), so a median within their random start (TPE's first 10 trials) is one "
               "measurement of random proposals snapped to the corpus, not four, and says nothing of the samplers' "
               f"models. Snapping alone gives a median of {snapped}: the replay's bias, against which the samplers "
               "are to be read.")
    sizes = ", ".join(f"{r['corpus']['top_genomes']} of {r['corpus']['genomes']} on {name}"
                      for name, r in results.items())
    out.append(f"- The top 5% is {sizes}: one lucky or unlucky pick moves a median, so these figures are "
               "coarse.")
    return out


def section(results: dict[str, dict[str, Any]], command: str, seeds: int, runs: list[dict], seconds: float,
            curves: Path, truth: str = "seed0") -> str:
    latest = max((r.get("finished", "") for r in runs), default="")
    machine = (f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
               f"optuna {optuna.__version__}, scikit-learn {sklearn.__version__}")
    sizes = ", ".join(f"{name} {r['corpus']['genomes']}" for name, r in results.items())
    return "\n".join([
        "## Replay: search strategies on the trained corpus", "",
        f"Command: `{command}` "
        f"({time.strftime('%Y-%m-%d %H:%M')}; {seconds:.0f} s wall; {machine}).", "",
        f"Corpus used: {len(runs)} runs, the latest finished {latest}; genomes in the replay (seed-0 runs at "
        f"both fidelities and finite scores): {sizes}. Costs are trainings in long-training equivalents (a short "
        f"one is {SHORT_COST:g}); the truth is the long accuracy of {TRUTHS[truth]}; regret is the corpus's best "
        f"truth minus the answer's; medians over "
        f"{seeds} seeds. Method: the docstring of `benchmarks/replay.py`; per-seed curves in "
        f"`{curves.relative_to(ROOT) if curves.is_relative_to(ROOT) else curves}`.", "",
        tables(results), "", "Reading:", *reading(results), ""])


def dump(data: dict[str, Any]) -> str:
    """Indented JSON with each list of scalars (a training step, a pair of quartiles) on one line."""
    def one_line(match: re.Match) -> str:
        return "[" + " ".join(line.strip() for line in match.group(1).splitlines()) + "]"

    return re.sub(r"\[\n([^\[\]{}]*?)\n *\]", one_line, json.dumps(jsonable(data), indent=1)) + "\n"


def jsonable(value: Any) -> Any:
    """inf and nan as strings: JSON has neither."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--space", choices=sorted(SPACES), default="tiny",
                        help="whose corpus to replay (benchmarks/corpus.py --space; default: tiny)")
    parser.add_argument("--tasks", default="digits,patterns")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: benchmarks/results/replay, or replay_SPACE for another space")
    parser.add_argument("--trees", type=int, default=REPLAY_TREES, help="trees of the surrogate's forest")
    parser.add_argument("--truth", choices=sorted(TRUTHS), default="seed0",
                        help="the target and the figures read against the long accuracy of seed 0, or its mean "
                             "over the seeds each genome was trained with at the long fidelity (0-2); a training "
                             "returns seed 0's")
    args = parser.parse_args()
    args.out = args.out or (RESULTS if args.space == "tiny" else RESULTS.with_name(f"replay_{args.space}"))
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    start = time.perf_counter()

    corpus = read_corpus(args.space, args.truth)
    space, encoder, runs = corpus.space, corpus.encoder, corpus.runs
    results = {}
    for name in args.tasks.split(","):
        task = corpus.task(name)
        if task.n < 2 * RANDOM_START:
            print(f"{name}: {task.n} genomes in the replay, too few; skipped", file=sys.stderr)
            continue
        results[name] = replay_task(task, args.seeds, space, encoder, args.trees)
        print(f"{name}: {task.n} genomes replayed ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    if not results:
        raise SystemExit("no task has enough genomes to replay")
    seconds = time.perf_counter() - start
    command = "python benchmarks/replay.py " + " ".join(sys.argv[1:])

    print(tables(results))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "replay.json").write_text(dump({
        "command": command, "seconds": round(seconds, 1), "corpus_runs": len(runs), "short_cost": SHORT_COST,
        "budgets": list(BUDGETS), "top_fraction": TOP_FRACTION, "trees": args.trees,
        "strategies": list(STRATEGIES), "tasks": results}))
    (args.out / "SECTION.md").write_text(section(results, command.strip(), args.seeds, runs, seconds,
                                                       args.out / "replay.json", args.truth))
    print(f"\nwrote {args.out / 'replay.json'} and {args.out / 'SECTION.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
