"""A trial, split where runners need it: ``prepare`` samples a genome, costs it analytically and settles it
at once when it is invalid, already evaluated or over budget; ``evaluate`` builds it, scores it and costs its
second objective, anywhere. ``runners`` move the one to the other.

Whatever goes wrong inside a trial (an invalid genome, an exception, a NaN score, CUDA running out of memory)
is recorded on that trial as user attribute ``failure`` and the search goes on. Phase times are stored in ``seconds``
(``sample``, ``cost``, ``build``, ``score``, ``latency``), the proxy's component scores in ``scores``.
"""
from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from nas.compiler import compile_model
from nas.cost import Cost, analytic_cost
from nas.errors import GenomeError
from nas.evaluate.proxy import canonical_graph, data_free_score, structural_score
from nas.genome import Genome
from nas.io import parse_genome
from nas.search.options import SearchOptions
from nas.search.params import genome_data, trial_picker
from runners.base import FINISHED, Outcome, Report, is_screening, is_void
from runners.optuna_internals import stored_user_attrs
from runners.slots import device_slot

Evaluate = Callable[[Genome, torch.nn.Module], float]
INVALID = "invalid genome"  # the failure of a sample that is no genome: never built, nothing to score
# The cascade stage each objective's trials are at (nas.search.cascade): what a trial paid for its value. A
# trial the cascade promotes to the end of the long schedule is at PROMOTED, one it promotes to a middle rung of
# it at ``rung_stage(epochs)``.
STAGES = {"proxy": "zero-cost", "train": "train", "supernet": "supernet", "custom": "custom"}
PROMOTED = "train-long"
RUNG_STAGE = "train-epoch-"
ZERO_COST = STAGES["proxy"]  # in a training run, the stage that scores genomes ahead of training them
# What a zero-cost trial of a training run scores besides the objective's own: the training-free scores the
# cascade's surrogate reads as features (nas.search.cascade.ZERO_COST_FEATURES).
SCREEN_SCORES = frozenset({"grad_norm", "meco"})
# ... and with a supernet, the genome's validation accuracy with the supernet's weights
INHERITED = "inherited"
SECOND_UNITS = {"latency": "ms", "params": "M params", "flops": "GFLOPs", "none": ""}


def rung_stage(epochs: int, long_epochs: int) -> str:
    """The stage of a promotion that trains on to ``epochs`` of a ``long_epochs`` schedule."""
    return PROMOTED if epochs >= long_epochs else f"{RUNG_STAGE}{epochs}"


def is_promotion(stage: str | None) -> bool:
    """Whether a trial at ``stage`` trains on from a genome's checkpoint (its first stage or a middle rung)."""
    return stage is not None and (stage == PROMOTED or stage.startswith(RUNG_STAGE))


def rung_order(stage: str) -> float:
    """Where a promotion's stage stands among the rungs: its epochs, ``train-long`` last (``rung_stage``'s
    inverse, for sorting)."""
    return math.inf if stage == PROMOTED else int(stage.removeprefix(RUNG_STAGE))


class TrialFailed(Exception):
    """A trial that cannot give a value; the message is stored as its failure reason."""


def constraint_values(options: SearchOptions, cost: Cost, latency_ms: float | None) -> dict[str, float]:
    """Relative excess per budget (``flops: 0.25`` is 25% over); <= 0 is feasible, as Optuna reads it."""
    out: dict[str, float] = {}
    if options.flops_budget:
        out["flops"] = cost.flops / options.flops_budget - 1
    if options.params_budget:
        out["params"] = cost.params / options.params_budget - 1
    if options.latency_budget_ms:
        out["latency"] = (latency_ms / options.latency_budget_ms - 1) if latency_ms is not None else 0.0
    return out


@dataclass
class Inputs:
    """What scoring needs besides the model: a proxy batch, or a data set to train on."""

    x: torch.Tensor | None = None
    y: torch.Tensor | None = None
    dataset: Any = None


@dataclass
class TrialWork:
    """The search's side of a trial, for any runner (``runners.base.Work``): ``prepare`` where the storage is,
    ``evaluate`` wherever the compute is. Picklable, so Ray can ship it to its workers."""

    space: dict[str, Any]
    options: SearchOptions
    device: str
    inputs: Inputs
    evaluate_fn: Evaluate | None = None
    latency_table: Any = None
    # Where a training cut short of its schedule (the cascade's first stage) leaves its state for a promotion
    # to train on from; None: a promotion trains afresh.
    checkpoints: Path | None = None

    # ------------------------------------------------------------------------------------------------------
    def prepare(self, study: optuna.Study, trial: optuna.Trial) -> dict[str, Any] | Outcome:
        """Sample and cost the genome. Settled here, with no model: an invalid genome, a genome already
        evaluated (its stored result), and one over an analytic budget (never built)."""
        tick = time.perf_counter()
        try:
            data = genome_data(self.space, trial_picker(trial))
            genome = parse_genome(data)
        except GenomeError as err:
            return Outcome(failure=f"{INVALID}: {err}", attrs=_times(sample=time.perf_counter() - tick))
        sample_s = time.perf_counter() - tick

        tick = time.perf_counter()
        cost = analytic_cost(genome)
        genome_hash = genome.content_hash()
        times = {"sample": sample_s, "cost": time.perf_counter() - tick}
        # What the sampler gave the trial (a cascade's promotion to longer training, its epochs) stands
        planned = stored_user_attrs(study, trial)
        stage = planned.get("stage") or STAGES[self.options.objective]
        canonical = canonical_graph(genome)
        structural = structural_score(genome, canonical)
        # the default objective's data-free part: what a proxy search's surrogate knows of the score before it is
        # measured (nas.search.cascade.known_parts)
        data_free = data_free_score(genome, cost, canonical, structural, self.options.objective_fit)
        attrs = {"genome_hash": genome_hash, "flops": cost.flops, "params": cost.params,
                 "structural": round(structural, 6), "data_free": round(data_free, 6), "stage": stage}
        for key, value in attrs.items():
            trial.set_user_attr(key, value)

        twin = _finished_twin(study, genome_hash, trial.number, stage)
        if twin is not None:
            return _reuse(twin, times)
        constraints = constraint_values(self.options, cost, None)
        if any(v > 0 for v in constraints.values()):
            return self._over_budget(study, structural, cost, constraints, times)
        return {"genome": data, "cost": [cost.params, cost.frozen_params, cost.flops], "seconds": times,
                "epochs": planned.get("epochs") or self.options.epochs, "stage": stage,
                # With promotions, a first-stage training is the start of the promotion's schedule, which the
                # promotion trains on from (successive halving over epochs, as Hyperband and ASHA run it).
                "schedule_epochs": self.options.first_schedule_epochs}

    def evaluate(self, payload: dict[str, Any], report: Report | None = None) -> Outcome:
        """Build, score and time the genome. A failure (exception, NaN, CUDA out of memory) is the outcome's;
        ``report`` raising ``optuna.TrialPruned`` stops a training early."""
        times = dict(payload.get("seconds", {}))
        start = time.perf_counter()
        device = self.device
        try:
            values, attrs, constraints = self._evaluate(payload, device, times, report)
            outcome = Outcome(values=values, attrs=attrs, constraints=constraints)
        except optuna.TrialPruned as pruned:
            outcome = Outcome(pruned=str(pruned))
        except Exception as err:  # noqa: BLE001 - any failure is the trial's, recorded, and the search goes on
            outcome = Outcome(failure=_reason(err))
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
        outcome.attrs.update(_times(**times))
        outcome.attrs["duration"] = round(time.perf_counter() - start + sum(payload.get("seconds", {}).values()),
                                          4)
        return outcome

    def _evaluate(self, payload: dict[str, Any], device: str, times: dict[str, float], report: Report | None
                  ) -> tuple[list[float], dict[str, Any], dict[str, float]]:
        genome = parse_genome(payload["genome"])
        cost = Cost(*payload["cost"])
        attrs: dict[str, Any] = {}
        with device_slot(device, exclusive=False):
            tick = time.perf_counter()
            model = self._build(genome)
            if device != "cpu":
                model.to(device)
            times["build"] = time.perf_counter() - tick

            tick = time.perf_counter()
            # A promoted genome earned its longer training by rank (successive halving): the pruner, which
            # compares epochs across trials of another length and schedule, does not stop it.
            if is_promotion(payload.get("stage")):
                report = None
            epochs = payload.get("epochs", self.options.epochs)
            schedule_epochs = payload.get("schedule_epochs")
            score = self._score(genome, model, device, attrs, report, epochs, schedule_epochs,
                                self._checkpoint(genome, payload.get("stage"), epochs, schedule_epochs),
                                payload.get("stage"))
            times["score"] = time.perf_counter() - tick
        if not math.isfinite(score):
            raise TrialFailed(f"score is {score} (not finite)")

        tick = time.perf_counter()
        kind = self.options.second
        latency_ms = None
        budget_ms = None  # what the latency budget is checked against, when that is not the latency itself
        if kind == "latency" or self.options.latency_budget_ms is not None:
            with device_slot(device, exclusive=True):
                latency_ms, budget_ms = self._latency(genome, model, device)
            attrs["latency_ms"] = latency_ms
            if budget_ms is not None:
                attrs["latency_budget_check_ms"] = budget_ms
        second = latency_ms if kind == "latency" else second_from_cost(kind, cost)
        times["latency"] = time.perf_counter() - tick

        constraints = constraint_values(self.options, cost, latency_ms if budget_ms is None else budget_ms)
        attrs.update(feasible=all(v <= 0 for v in constraints.values()), score=score)
        return ([score] if second is None else [score, second]), attrs, constraints

    # ------------------------------------------------------------------------------------------------------
    def _over_budget(self, study: optuna.Study, structural: float, cost: Cost, constraints: dict[str, float],
                     times: dict[str, float]) -> Outcome:
        """Never built. Its values are what is known without a model (documented as estimates), so that
        constraint-aware samplers still learn where the budget lies from it."""
        score = structural if self.options.objective == "proxy" else 0.0
        kind = self.options.second
        second = (_latency_estimate(study, cost) if kind == "latency" else second_from_cost(kind, cost))
        attrs: dict[str, Any] = {"estimated": "over budget, never built: score is the structural score, "
                                              "latency scaled from FLOPs", "feasible": False, "score": None}
        if kind == "latency":
            attrs["latency_ms"] = second
        attrs.update(_times(**times))
        return Outcome(values=[score] if second is None else [score, second], attrs=attrs, constraints=constraints)

    # ------------------------------------------------------------------------------------------------------
    def _build(self, genome: Genome) -> torch.nn.Module:
        if self.options.objective == "supernet":  # the genome with the supernet's weights
            from nas.supernet.supernet import cached_supernet

            return cached_supernet(self.options.supernet).extract(genome)
        return compile_model(genome, seed=self.options.seed)

    def _checkpoint(self, genome: Genome, stage: str | None, epochs: int, schedule_epochs: int | None
                    ) -> Path | None:
        """Where a trial's training waits between its first stage (cut short of its schedule) and its
        promotion. None without a stage: a reference or ``nas score`` is never promoted."""
        if self.checkpoints is None or stage is None:
            return None
        if not is_promotion(stage) and (schedule_epochs or 0) <= epochs:
            return None  # a whole schedule: nothing to train on from
        return self.checkpoints / f"{genome.content_hash()}-seed{self.options.seed}.pt"

    def _score(self, genome: Genome, model: torch.nn.Module, device: str, attrs: dict[str, Any],
               report: Report | None, epochs: int, schedule_epochs: int | None = None,
               checkpoint: Path | None = None, stage: str | None = None) -> float:
        if self.evaluate_fn is not None:
            return float(self.evaluate_fn(genome, model))
        if self.options.objective == "proxy":
            return self._zero_cost(genome, model, attrs)
        if stage == ZERO_COST:  # a training cascade's screening: the features its surrogate reads
            score = self._zero_cost(genome, model, attrs, SCREEN_SCORES)
            if self.options.supernet:
                attrs["scores"][INHERITED] = self._inherited(genome, device)
            return score
        if self.options.objective == "supernet":
            from nas.supernet.train import score_extracted

            return score_extracted(model, self.inputs.dataset, device=device, seed=self.options.seed)
        return self._train(model, device, attrs, report, epochs, schedule_epochs, checkpoint)

    def _zero_cost(self, genome: Genome, model: torch.nn.Module, attrs: dict[str, Any],
                   also: frozenset[str] = frozenset()) -> float:
        """The default training-free objective on the inputs' batch, its component scores in ``scores``."""
        from nas.evaluate.proxy import objective_scores, proxy_score

        # Only the scores the objective weighs (and ``also``): the others would cost passes and change nothing.
        scores = proxy_score(genome, model, self.inputs.x, self.inputs.y, seed=self.options.seed,
                             which=objective_scores(self.options.objective_fit) | also,
                             fit=self.options.objective_fit)
        attrs["scores"] = {k: v for k, v in scores.items() if k != "score"}
        return float(scores["score"])

    def _inherited(self, genome: Genome, device: str) -> float:
        """The genome's validation accuracy with the weights of the run's supernet (norms recalibrated)."""
        from nas.supernet.supernet import cached_supernet
        from nas.supernet.train import inherited_accuracy

        return inherited_accuracy(cached_supernet(self.options.supernet), genome, self.inputs.dataset,
                                  device=device, seed=self.options.seed)[0]

    def _train(self, model: torch.nn.Module, device: str, attrs: dict[str, Any], report: Report | None,
               epochs: int, schedule_epochs: int | None, checkpoint: Path | None) -> float:
        from nas.evaluate.train import train_model

        def on_epoch(epoch: int, accuracy: float) -> None:
            attrs[f"accuracy_epoch_{epoch}"] = accuracy
            if report is not None:
                report(epoch, accuracy)

        result = train_model(model, self.inputs.dataset, epochs=epochs, batch_size=self.options.batch_size,
                             device=device, seed=self.options.seed, on_epoch=on_epoch,
                             schedule_epochs=schedule_epochs, checkpoint=checkpoint)
        if schedule_epochs and schedule_epochs > epochs:
            attrs["schedule_epochs"] = schedule_epochs
        return float(result.accuracy)

    def _latency(self, genome: Genome, model: torch.nn.Module, device: str) -> tuple[float, float | None]:
        """The latency in ms, and for a calibrated prediction what a budget is checked against: the prediction
        raised by the calibration's held-out margin."""
        from nas.cost import measure_latency, predict_latency
        from nas.cost.calibration import calibrated_latency

        repeats = self.options.latency_repeats
        if self.options.latency_mode in ("lut", "predict"):
            prediction = predict_latency(genome, self.latency_table, device=device, warmup=2, repeats=repeats,
                                         seed=self.options.seed, runtime=self.options.runtime)
            if self.options.latency_mode == "lut":
                return prediction.total_ms, None
            calibrated = calibrated_latency(genome, prediction, self.latency_table)
            return calibrated.ms, calibrated.budget_ms
        res = genome.input
        return measure_latency(model, (res.channels, *res.resolution), device, warmup=2, repeats=repeats,
                               runtime=self.options.runtime).median_ms, None


def is_invalid(trial: FrozenTrial) -> bool:
    """A sample the space's choices made into no valid genome (a shape that does not fit, say)."""
    return trial.state == TrialState.FAIL and str(trial.user_attrs.get("failure", "")).startswith(INVALID)


def is_result(trial: FrozenTrial) -> bool:
    """A feasible result of the run's objective: complete, within the budgets, and no screening evaluation (a
    training run's zero-cost stage, whose value is a zero-cost score, not an accuracy)."""
    return (trial.state == TrialState.COMPLETE and bool(trial.user_attrs.get("feasible"))
            and not is_screening(trial))


def _times(**seconds: float) -> dict[str, Any]:
    return {"seconds": {phase: round(s, 4) for phase, s in seconds.items()}}


def second_from_cost(kind: str, cost: Cost) -> float | None:
    """The second objective a cost gives, in the unit trials store it in (``SECOND_UNITS``); None for latency."""
    return {"params": cost.params / 1e6, "flops": cost.flops / 1e9}.get(kind)


def _latency_estimate(study: optuna.Study, cost: Cost) -> float:
    """Latency of an unbuilt genome: its FLOPs at the median ms per GFLOP of the measured trials."""
    ratios = [t.user_attrs["latency_ms"] / max(t.user_attrs["flops"] / 1e9, 1e-9)
              for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if "latency_ms" in t.user_attrs and "estimated" not in t.user_attrs]
    return (statistics.median(ratios) if ratios else 10.0) * cost.flops / 1e9


def _finished_twin(study: optuna.Study, genome_hash: str, number: int, stage: str) -> FrozenTrial | None:
    """The same genome evaluated at the same stage (at another stage, a genome is evaluated anew: promoted)."""
    for other in study.get_trials(deepcopy=False, states=FINISHED):
        if (other.number != number and other.user_attrs.get("genome_hash") == genome_hash
                and other.user_attrs.get("stage", stage) == stage
                and not is_void(other) and "duplicate_of" not in other.user_attrs):
            return other
    return None


def _reuse(twin: FrozenTrial, times: dict[str, float]) -> Outcome:
    """The same genome again: its stored result, not a second evaluation."""
    keep = ("score", "scores", "latency_ms", "feasible", "estimated")
    attrs = {"duplicate_of": twin.number, **{k: twin.user_attrs[k] for k in keep if k in twin.user_attrs},
             **_times(**times)}
    outcome = Outcome(attrs=attrs, constraints=dict(twin.constraints))
    if twin.state == TrialState.COMPLETE:
        outcome.values = list(twin.values)
    elif twin.state == TrialState.PRUNED:
        outcome.pruned = str(twin.user_attrs.get("pruned_at", "as its twin"))
    else:
        outcome.failure = str(twin.user_attrs.get("failure", "failed as its twin"))
    return outcome


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    if isinstance(err, TrialFailed):
        return str(err)
    if isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in text.lower():
        return f"out of memory: {text[:300]}"
    return f"{type(err).__name__}: {text[:300]}"
