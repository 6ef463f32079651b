"""One trial, start to finish: sample a genome, cost it analytically, skip it if over budget or already seen,
build it, score it, cost its second objective, and tell Optuna what happened.

Whatever goes wrong inside a trial (an invalid genome, an exception, a NaN score, CUDA running out of memory)
is recorded on that trial as user attribute ``failure`` and the search goes on. Phase times are stored in ``seconds``
(``sample``, ``cost``, ``build``, ``score``, ``latency``), the proxy's component scores in ``scores``.
"""
from __future__ import annotations

import math
import os
import socket
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from nas.compiler import compile_model
from nas.cost import Cost, analytic_cost
from nas.errors import GenomeError
from nas.genome import Genome
from nas.io import parse_genome
from nas.search.options import SearchOptions
from nas.search.params import genome_data, trial_picker

WORKER = f"{socket.gethostname()}:{os.getpid()}"
INTERRUPTED = "interrupted"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
Evaluate = Callable[[Genome, torch.nn.Module], float]
SECOND_UNITS = {"latency": "ms", "params": "M params", "flops": "GFLOPs", "none": ""}


class TrialFailed(Exception):
    """A trial that cannot give a value; the message is stored as its failure reason."""


def is_interrupted(trial: FrozenTrial) -> bool:
    return trial.state == TrialState.FAIL and str(trial.user_attrs.get("failure", "")).startswith(INTERRUPTED)


def counted(trials: list[FrozenTrial]) -> int:
    """Trials that count toward the requested number: finished, except those a crash interrupted (re-run)."""
    return sum(t.state in FINISHED and not is_interrupted(t) for t in trials)


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
class TrialRunner:
    space: dict[str, Any]
    options: SearchOptions
    device: str
    inputs: Inputs
    evaluate: Evaluate | None = None
    latency_table: Any = None
    ms_per_gflop: list[float] = field(default_factory=list)  # measured trials, to estimate unbuilt ones

    # ------------------------------------------------------------------------------------------------------
    def run(self, study: optuna.Study) -> FrozenTrial:
        trial = study.ask()
        trial.set_user_attr("worker", WORKER)
        times: dict[str, float] = {}
        start = time.perf_counter()
        try:
            state, values = self._run(study, trial, times)
        except optuna.TrialPruned as pruned:
            trial.set_user_attr("pruned_at", str(pruned))
            state, values = TrialState.PRUNED, None
        except KeyboardInterrupt:
            trial.set_user_attr("failure", f"{INTERRUPTED} (Ctrl-C)")
            study.tell(trial, state=TrialState.FAIL)
            raise
        except Exception as err:  # noqa: BLE001 - any failure is the trial's, recorded, and the search goes on
            trial.set_user_attr("failure", _reason(err))
            state, values = TrialState.FAIL, None
            if self.device.startswith("cuda"):
                torch.cuda.empty_cache()
        trial.set_user_attr("seconds", {phase: round(seconds, 4) for phase, seconds in times.items()})
        trial.set_user_attr("duration", round(time.perf_counter() - start, 4))
        return study.tell(trial, values=values, state=state)

    def _run(self, study: optuna.Study, trial: optuna.Trial, times: dict[str, float]
             ) -> tuple[TrialState, list[float] | None]:
        tick = time.perf_counter()
        try:
            genome = parse_genome(genome_data(self.space, trial_picker(trial)))
        except GenomeError as err:
            times["sample"] = time.perf_counter() - tick
            raise TrialFailed(f"invalid genome: {err}") from None
        times["sample"] = time.perf_counter() - tick

        tick = time.perf_counter()
        cost = analytic_cost(genome)
        genome_hash = genome.content_hash()
        times["cost"] = time.perf_counter() - tick
        trial.set_user_attr("genome_hash", genome_hash)
        trial.set_user_attr("flops", cost.flops)
        trial.set_user_attr("params", cost.params)

        twin = self._finished_twin(study, genome_hash, trial.number)
        if twin is not None:
            return self._reuse(trial, twin)

        constraints = constraint_values(self.options, cost, None)
        if any(v > 0 for v in constraints.values()):
            return self._over_budget(trial, genome, cost, constraints)

        tick = time.perf_counter()
        model = compile_model(genome, seed=self.options.seed)
        if self.device != "cpu":
            model.to(self.device)
        times["build"] = time.perf_counter() - tick

        tick = time.perf_counter()
        score = self._score(trial, genome, model)
        times["score"] = time.perf_counter() - tick
        if not math.isfinite(score):
            raise TrialFailed(f"score is {score} (not finite)")

        tick = time.perf_counter()
        second, latency_ms = self._second(genome, model, cost)
        times["latency"] = time.perf_counter() - tick
        if latency_ms is not None:
            trial.set_user_attr("latency_ms", latency_ms)
            self.ms_per_gflop.append(latency_ms / max(cost.flops / 1e9, 1e-9))

        constraints = constraint_values(self.options, cost, latency_ms)
        return self._complete(trial, constraints, score, second)

    # ------------------------------------------------------------------------------------------------------
    def _complete(self, trial: optuna.Trial, constraints: dict[str, float], score: float, second: float | None
                  ) -> tuple[TrialState, list[float]]:
        for key, value in constraints.items():
            trial.set_constraint(key, value)
        feasible = all(v <= 0 for v in constraints.values())
        trial.set_user_attr("feasible", feasible)
        trial.set_user_attr("score", score)
        return TrialState.COMPLETE, [score] if second is None else [score, second]

    def _over_budget(self, trial: optuna.Trial, genome: Genome, cost: Cost, constraints: dict[str, float]
                     ) -> tuple[TrialState, list[float]]:
        """Never built. Its values are what is known without a model (documented as estimates), so that
        constraint-aware samplers still learn where the budget lies from it."""
        score = 0.0
        if self.options.objective == "proxy":
            from nas.evaluate.proxy import structural_score

            score = structural_score(genome)
        trial.set_user_attr("estimated", "over budget, never built: score is the structural score, "
                                         "latency scaled from FLOPs")
        second = self._second_estimate(cost)
        if self.options.second == "latency":
            trial.set_user_attr("latency_ms", second)
        state, values = self._complete(trial, constraints, score, second)
        trial.set_user_attr("score", None)
        return state, values

    def _second_estimate(self, cost: Cost) -> float | None:
        kind = self.options.second
        if kind == "none":
            return None
        if kind == "params":
            return cost.params / 1e6
        if kind == "flops":
            return cost.flops / 1e9
        ratio = statistics.median(self.ms_per_gflop) if self.ms_per_gflop else 10.0
        return ratio * cost.flops / 1e9

    def _finished_twin(self, study: optuna.Study, genome_hash: str, number: int) -> FrozenTrial | None:
        for other in study.get_trials(deepcopy=False, states=FINISHED):
            if (other.number != number and other.user_attrs.get("genome_hash") == genome_hash
                    and not is_interrupted(other) and "duplicate_of" not in other.user_attrs):
                return other
        return None

    def _reuse(self, trial: optuna.Trial, twin: FrozenTrial) -> tuple[TrialState, list[float] | None]:
        """The same genome again: its stored result, not a second evaluation."""
        trial.set_user_attr("duplicate_of", twin.number)
        for key in ("score", "scores", "latency_ms", "feasible", "estimated", "failure", "pruned_at"):
            if key in twin.user_attrs:
                trial.set_user_attr(key, twin.user_attrs[key])
        for key, value in twin.constraints.items():
            trial.set_constraint(key, value)
        if twin.state == TrialState.COMPLETE:
            return TrialState.COMPLETE, list(twin.values)
        return twin.state, None

    # ------------------------------------------------------------------------------------------------------
    def _score(self, trial: optuna.Trial, genome: Genome, model: torch.nn.Module) -> float:
        if self.evaluate is not None:
            return float(self.evaluate(genome, model))
        if self.options.objective == "proxy":
            from nas.evaluate.proxy import proxy_score

            scores = proxy_score(genome, model, self.inputs.x, self.inputs.y, seed=self.options.seed)
            trial.set_user_attr("scores", {k: v for k, v in scores.items() if k != "score"})
            return float(scores["score"])
        return self._train(trial, model)

    def _train(self, trial: optuna.Trial, model: torch.nn.Module) -> float:
        from nas.evaluate.train import train_model

        prune = not self.options.multi_objective and self.options.pruner != "none"

        def on_epoch(epoch: int, accuracy: float) -> None:
            trial.set_user_attr(f"accuracy_epoch_{epoch}", accuracy)
            if prune:  # Optuna reports and prunes single-objective studies only
                trial.report(accuracy, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"epoch {epoch}, val accuracy {accuracy:.3f}")

        result = train_model(model, self.inputs.dataset, epochs=self.options.epochs, device=self.device,
                             seed=self.options.seed, on_epoch=on_epoch)
        return float(result.accuracy)

    def _second(self, genome: Genome, model: torch.nn.Module, cost: Cost) -> tuple[float | None, float | None]:
        """(second objective value, latency in ms when it was measured)."""
        kind = self.options.second
        need_latency = kind == "latency" or self.options.latency_budget_ms is not None
        latency_ms = self._latency(genome, model) if need_latency else None
        if kind == "latency":
            return latency_ms, latency_ms
        return self._second_estimate(cost), latency_ms

    def _latency(self, genome: Genome, model: torch.nn.Module) -> float:
        from nas.cost import genome_latency, measure_latency

        repeats = self.options.latency_repeats
        if self.options.latency_mode == "lut":
            return genome_latency(genome, "lut", table=self.latency_table, device=self.device, warmup=2,
                                  repeats=repeats, seed=self.options.seed)
        res = genome.input
        return measure_latency(model, (res.channels, *res.resolution), self.device, warmup=2,
                               repeats=repeats).median_ms


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    if isinstance(err, TrialFailed):
        return str(err)
    if isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in text.lower():
        return f"out of memory: {text[:300]}"
    return f"{type(err).__name__}: {text[:300]}"
