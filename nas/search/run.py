"""``nas.search``: the constrained multi-objective search loop, its run directory and resume."""
from __future__ import annotations

import math
import os
import sys
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
import torch
import yaml
from optuna.trial import TrialState

from nas.errors import InputError, NasError
from nas.io import parse_yaml, read_yaml
from nas.search.options import (
    DEFAULT_SPACE,
    DEFAULT_TRAIN_TRIALS,
    DEFAULT_TRIALS,
    SearchOptions,
    parse_duration,
)
from nas.search.progress import Progress, format_seconds
from nas.search.report import SearchResult, write_report
from nas.search.samplers import make_sampler
from nas.search.survey import check_reachable, survey
from nas.search.trial import SECOND_UNITS, Evaluate, Inputs, TrialWork
from nas.space import fit_space_to_data, space_resolution
from runners.base import counted
from runners.local import run_trials, start_workers, wait_workers, worker_command
from runners.storage import open_storage

RUN_FILE, SPACE_FILE, DB_FILE = "run.yaml", "space.yaml", "study.db"
# Stop when this many samples in a row are invalid genomes and nearly nothing else came out.
INVALID_STREAK = 50


def storage_url(run_dir: Path, options: SearchOptions) -> str:
    return options.storage or f"sqlite:///{(run_dir / DB_FILE).resolve()}"


def default_run_dir(options: SearchOptions) -> Path:
    """Workers given one ``--storage`` share one run directory: beside a SQLite file, else runs/STUDY."""
    if options.storage and options.storage.startswith("sqlite:///"):
        return Path(options.storage[len("sqlite:///"):]).parent
    if options.storage:
        return Path("runs") / options.study
    return Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")


def open_study(run_dir: Path, options: SearchOptions, sampler: optuna.samplers.BaseSampler | None = None,
               create: bool = False) -> optuna.Study:
    directions = ["maximize", "minimize"] if options.multi_objective else ["maximize"]
    pruner = {"median": optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
              "hyperband": optuna.pruners.HyperbandPruner(min_resource=1, max_resource=options.epochs),
              "none": optuna.pruners.NopPruner()}[options.pruner]
    url = open_storage(storage_url(run_dir, options))
    if create:
        return optuna.create_study(storage=url, study_name=options.study, directions=directions, sampler=sampler,
                                   pruner=pruner, load_if_exists=True)
    try:
        return optuna.load_study(storage=url, study_name=options.study, sampler=sampler, pruner=pruner)
    except KeyError:
        raise InputError(f"{run_dir}: no study {options.study!r} in {storage_url(run_dir, options)}") from None


def read_run(run_dir: Path) -> tuple[SearchOptions, dict[str, Any]]:
    """The options and the space a run directory was started with."""
    run_file = run_dir / RUN_FILE
    if not run_file.is_file():
        raise InputError(f"{run_dir}: not a search run directory (no {RUN_FILE})")
    options = SearchOptions.model_validate(yaml.safe_load(run_file.read_text()))
    space = parse_yaml((run_dir / SPACE_FILE).read_text(), str(run_dir / SPACE_FILE))
    return options, space


def latest_run(root: Path = Path("runs")) -> Path:
    runs = sorted((p for p in root.glob("*") if (p / RUN_FILE).is_file()), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise InputError(f"--resume: no run directory with a {RUN_FILE} under {root}/; name one")
    return runs[-1]


def _load_space(space: str | Path | dict[str, Any]) -> tuple[dict[str, Any], str, str]:
    if isinstance(space, dict):
        return space, yaml.safe_dump(space, sort_keys=False), "<mapping>"
    data, text, label = read_yaml(space)
    return data, text, label


def _inputs(space: dict[str, Any], options: SearchOptions) -> tuple[Inputs, dict[str, Any]]:
    """The proxy batch (from the data, or seeded random images) or the training set."""
    if options.objective in ("train", "supernet") or (options.data and options.objective == "proxy"):
        from nas.data import load_data

        limit = options.data_limit if options.objective != "proxy" else max(options.proxy_batch, 16)
        dataset = load_data(options.data, resolution=space_resolution(space), seed=options.seed, limit=limit)
        space = fit_space_to_data(space, dataset)
        if options.objective in ("train", "supernet"):
            return Inputs(dataset=dataset), space
        return Inputs(dataset.train_x[:options.proxy_batch], dataset.train_y[:options.proxy_batch]), space
    generator = torch.Generator().manual_seed(options.seed)
    channels = int((space.get("input") or {}).get("channels", 3))
    res = space_resolution(space)
    x = torch.randn(options.proxy_batch, channels, res, res, generator=generator)
    y = torch.randint(0, int(space.get("num_classes", 1000)), (options.proxy_batch,), generator=generator)
    return Inputs(x, y), space


def _options(space: Any, given: dict[str, Any]) -> SearchOptions:
    values = {k: v for k, v in given.items() if v is not None}
    for key in ("budget", "latency", "params"):
        if str(values.get(key, "")).lower() == "none":
            values[key] = None
    if "timeout" in values:
        values["timeout"] = parse_duration(values["timeout"])
    if "second" not in values:  # pruning needs one objective: training searches accuracy under the budgets
        values["second"] = "none" if values.get("objective") == "train" else "latency"
    if "trials" not in values:
        values["trials"] = DEFAULT_TRAIN_TRIALS if values.get("objective") == "train" else DEFAULT_TRIALS
    label = space if isinstance(space, (str, Path)) else "<mapping>"
    return SearchOptions(space=str(label), **values).check()


def search(space: str | Path | dict[str, Any] | None = None, *, budget: str | None = "4GFLOPs",
           latency: str | None = None, params: str | None = None, device: str = "auto",
           objective: str = "proxy", data: str | None = None, trials: int | None = None,
           timeout: str | float | None = None, sampler: str = "tpe", seed: int = 0, out: str | Path | None = None,
           resume: bool | str | Path = False, storage: str | None = None, study: str | None = None,
           second: str | None = None, quiet: bool = False, evaluate: Evaluate | None = None,
           latency_mode: str = "measure", latency_repeats: int | None = None, proxy_batch: int | None = None,
           epochs: int | None = None, pruner: str | None = None, data_limit: int | None = None,
           threads: int | None = None, runner: str = "local", workers: int | None = None,
           address: str | None = None, cpus_per_trial: float | None = None, gpus_per_trial: float | None = None,
           heartbeat: float | None = None, supernet: str | Path | None = None, finetune_epochs: int | None = None,
           as_worker: bool = False, stream=None) -> SearchResult | None:
    """Search ``space`` under the budgets and return the Pareto front and the best feasible genome.

    Every trial is stored (``out``/study.db, or ``storage``) before and after it runs; ``resume=True`` (with
    ``out``) or ``resume="runs/NAME"`` continues a run with the options it was started with (``trials``,
    ``timeout`` and ``workers`` may change). A process given the ``storage`` and ``study`` of a search already
    under way joins it as a worker, with that search's options. ``runner="ray"`` runs the trials as Ray Tune
    trials (``address`` of a cluster, else a local Ray instance for the run). ``evaluate(genome, model) ->
    float`` replaces the built-in score (maximised). Raises ``InfeasibleBudget`` (an ``InputError``) before any
    trial when no genome fits the budget, and ``KeyboardInterrupt`` after writing the report on Ctrl-C.
    ``objective="supernet"`` scores each genome by its validation accuracy with the weights of a trained
    ``supernet`` (its space and data unless given), and writes the winner's weights (``best_weights.pt``),
    fine-tuned for ``finetune_epochs`` when asked. ``as_worker`` is for the processes ``workers`` starts: no
    report, no output, returns ``None``.
    """
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    stream = stream or sys.stderr
    quiet = quiet or as_worker
    joined = False
    if resume:
        run_dir = Path(resume) if isinstance(resume, (str, Path)) else Path(out) if out else latest_run()
        options, space_data = read_run(run_dir)
        overrides = {k: v for k, v in {"trials": trials, "timeout": parse_duration(timeout),
                                       "workers": 1 if as_worker else workers}.items() if v is not None}
        options = options.model_copy(update=overrides)
        if options.objective == "custom" and evaluate is None:
            raise InputError(f"{run_dir} was searched with a custom evaluate ({options.evaluate}); pass it again")
        space_text, label = yaml.safe_dump(space_data, sort_keys=False), str(run_dir / SPACE_FILE)
    else:
        own_space = objective == "supernet" and supernet is not None and space is None
        if objective == "supernet" and supernet is not None:
            supernet = Path(supernet).resolve()  # workers may start elsewhere
            if space is None or data is None:
                space, data, data_limit = _supernet_defaults(supernet, space, data, data_limit)
        space = DEFAULT_SPACE if space is None else space
        given = dict(budget=budget, latency=latency, params=params, device=device, objective=objective, data=data,
                     trials=trials, timeout=timeout, sampler=sampler, seed=seed, storage=storage, study=study,
                     second=second, latency_mode=latency_mode, latency_repeats=latency_repeats,
                     proxy_batch=proxy_batch, epochs=epochs, pruner=pruner, data_limit=data_limit,
                     threads=threads, runner=runner, workers=workers, address=address,
                     cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial, heartbeat=heartbeat,
                     supernet=None if supernet is None else str(supernet), finetune_epochs=finetune_epochs)
        if evaluate is not None:
            given.update(objective="custom", evaluate=getattr(evaluate, "__qualname__", repr(evaluate)))
        options = _options(space, given)
        space_data, space_text, label = _load_space(space)
        if own_space:
            label = f"the space of supernet {supernet}"
            options = options.model_copy(update={"space": label})
        run_dir = Path(out) if out else default_run_dir(options)
        under_way = _search_under_way(options)
        if under_way is not None:  # join it: its options and space are the search's
            (options, space_text), joined = under_way, True
            space_data = parse_yaml(space_text, f"{options.storage} ({options.study})")
            options = options.model_copy(update={k: v for k, v in {"workers": 1, "trials": trials, "timeout":
                                                 parse_duration(timeout)}.items() if v is not None})
        elif (run_dir / RUN_FILE).exists():
            raise InputError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or pick "
                             f"another --out")

    from nas.cost.profile import resolve_device

    device_name = resolve_device(options.device)
    if options.runner == "ray" and options.gpus_per_trial > 0 and options.device == "auto":
        device_name = "cuda"  # the trials' device, on the workers Ray gives GPUs to
    # One thread on CPU unless asked: steadier latency ranks, and a CPU shared with other jobs slows two
    # spinning OpenMP threads ~20x (benchmarks/BENCHMARKS.md, "Search")
    threads = options.threads or (1 if device_name == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)
    inputs, adapted = _inputs(space_data, options)
    if adapted != space_data:  # the run's space is the one the data fixed classes and channels of
        space_data, space_text = adapted, yaml.safe_dump(adapted, sort_keys=False)
    progress = Progress(options.trials, quiet, stream)
    report = survey(space_data, options)
    check_reachable(report, options, label)

    if not resume and not (joined and (run_dir / RUN_FILE).exists()):
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(run_dir / SPACE_FILE, space_text)
        _write_atomic(run_dir / RUN_FILE, yaml.safe_dump(options.model_dump(), sort_keys=False))

    # Each process on a shared study samples its own sequence: two with one seed would draw the same genomes.
    # So a run on a given --storage is not bit-reproducible; one in its own run directory is.
    shared = bool(options.storage) or joined or as_worker
    seed = options.seed + os.getpid() if shared else options.seed
    parallel = shared or (options.workers or 1) > 1 or options.runner == "ray"
    sampler_ = make_sampler(options.sampler, seed, options.trials, parallel=parallel)
    study_ = open_study(run_dir, options, sampler_, create=True)
    if "nas.run" not in study_.user_attrs:  # what a worker on another machine joins with
        study_.set_user_attr("nas.run", {"options": options.model_dump(), "space": space_text})
    table = None
    if options.latency_mode == "lut" and (options.second == "latency" or options.latency):
        from nas.cost import LatencyTable
        from nas.cost.profile import default_table_path

        default_table_path().parent.mkdir(parents=True, exist_ok=True)
        table = LatencyTable(default_table_path())
    work = TrialWork(space_data, options, device_name, inputs, evaluate, table)

    done = counted(study_.get_trials(deepcopy=False))
    workers_ = options.workers or 1
    progress.say(f"nas search: {label}, {options.objective} objective"
                 + (f" and {options.second}" if options.multi_objective else "")
                 + f", sampler {options.sampler}, device {device_name}, runner {options.runner}"
                 + (f" ({workers_} workers)" if options.runner == "local" and workers_ > 1 else "")
                 + f"; run directory {run_dir}")
    progress.say(f"  {report.feasible_share:.0%} of {report.sampled} random samples fit the budget"
                 + (f"; resuming at trial {done}/{options.trials}" if resume and not as_worker else "")
                 + (f"; joining study {options.study!r} at trial {done}/{options.trials}" if joined else ""))
    if not resume and report.median_params and done == 0:
        study_.enqueue_trial(report.median_params, user_attrs={"calibration": True}, skip_if_exists=True)

    prune = options.objective == "train" and not options.multi_objective and options.pruner != "none"
    state = _LoopState(progress, options, label, report.feasible_share, quiet)
    procs = []
    try:
        if options.runner == "ray":
            from runners.ray import RayOptions, run_ray

            run_ray(RayOptions(storage=storage_url(run_dir, options), study=options.study,
                               heartbeat=options.heartbeat, run_dir=run_dir.resolve(), target=options.trials,
                               multi_objective=options.multi_objective, train_epochs=options.epochs if prune
                               else None, workers=options.workers, address=options.address,
                               cpus_per_trial=options.cpus_per_trial, gpus_per_trial=options.gpus_per_trial,
                               threads=options.threads, timeout=options.timeout, resume=bool(resume)),
                    work, sampler_, on_trial=state.on_trial)
        else:
            if workers_ > 1 and not as_worker:
                procs = start_workers(workers_ - 1, worker_command(run_dir), run_dir / "workers")
            why = run_trials(study_, work, options.trials, prune=prune, heartbeat_s=options.heartbeat,
                             timeout=options.timeout,
                             on_trial=state.on_trial)
            if why == "timeout":
                progress.say(f"timeout of {format_seconds(options.timeout)} reached")
            failed = [code for code in wait_workers(procs) if code != 0]
            if failed:
                progress.say(f"  {len(failed)} worker process(es) exited with an error; their logs are in "
                             f"{run_dir / 'workers'}")
    except KeyboardInterrupt:
        progress.close()
        wait_workers(procs, stop=True)
        if not as_worker:
            write_report(run_dir)
            print(f"interrupted: the report for the {counted(study_.get_trials(deepcopy=False))} finished "
                  f"trials is in {run_dir}", file=stream)
        raise
    progress.close()
    if as_worker:
        return None
    result = write_report(run_dir)
    print(result.summary(), file=stream)
    if options.objective == "supernet" and result.best is not None:
        _write_winner_weights(run_dir, result.best.genome, options, inputs, device_name, stream)
    return result


def _supernet_defaults(path: Path, space: Any, data: str | None, data_limit: int | None
                       ) -> tuple[Any, str | None, int | None]:
    """A supernet search runs on the supernet's own space and data unless told otherwise."""
    from nas.supernet import Supernet

    net, state = Supernet.load(path)
    trained_on = state.get("data", {})
    if data is None:
        data, data_limit = trained_on.get("spec"), data_limit or trained_on.get("limit")
    return (net.space if space is None else space), data, data_limit


WEIGHTS_FILE, WEIGHTS_INFO = "best_weights.pt", "best_weights.yaml"


def _write_winner_weights(run_dir: Path, genome: Any, options: SearchOptions, inputs: Inputs, device: str,
                          stream) -> None:
    """The winner as a standalone model with the supernet's weights (``best_model.py`` loads them with
    ``build_model(weights=...)``), fine-tuned on the search's data when ``finetune_epochs`` asks."""
    from nas.evaluate.train import train_model
    from nas.supernet import inherited_accuracy
    from nas.supernet.supernet import cached_supernet

    accuracy, model = inherited_accuracy(cached_supernet(options.supernet), genome, inputs.dataset, device=device,
                                         seed=options.seed)
    info: dict[str, Any] = {"genome_hash": genome.content_hash(), "supernet": options.supernet,
                            "inherited_accuracy": accuracy}
    if options.finetune_epochs:
        result = train_model(model, inputs.dataset, epochs=options.finetune_epochs, device=device,
                             seed=options.seed, lr=5e-4, warmup_epochs=0)
        info.update(finetune_epochs=options.finetune_epochs, finetuned_accuracy=result.accuracy)
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, run_dir / WEIGHTS_FILE)
    _write_atomic(run_dir / WEIGHTS_INFO, yaml.safe_dump(info, sort_keys=False))
    text = f"winner weights: {run_dir / WEIGHTS_FILE} (inherited validation accuracy {accuracy:.1%}"
    if options.finetune_epochs:
        text += f"; {info['finetuned_accuracy']:.1%} after {options.finetune_epochs} fine-tuning epochs"
    print(text + "); load them with best_model.build_model(weights=...)", file=stream)


class _LoopState:
    """What the driver shows and checks after each trial it sees finish."""

    def __init__(self, progress: Progress, options: SearchOptions, label: str, feasible_share: float,
                 quiet: bool):
        self.progress, self.options, self.label = progress, options, label
        self.feasible_share, self.quiet = feasible_share, quiet
        self.session = 0
        self.invalid_streak = 0
        self.start = time.perf_counter()

    def on_trial(self, trial: optuna.trial.FrozenTrial, all_trials: list[optuna.trial.FrozenTrial]) -> None:
        self.session += 1
        failure = str(trial.user_attrs.get("failure", ""))
        self.invalid_streak = self.invalid_streak + 1 if failure.startswith("invalid genome") else 0
        if self.invalid_streak >= INVALID_STREAK:
            raise NasError(f"{self.invalid_streak} samples in a row were invalid genomes (last: {failure}); "
                           f"check the space with `nas validate {self.label}`")
        done = counted(all_trials)
        if self.session == 1 and trial.state == TrialState.COMPLETE and not self.quiet:
            _say_estimate(self.progress, trial, self.feasible_share, self.options.trials - done)
        self.progress.update(done, _feasible(all_trials), _best_text(all_trials, self.options), self.session,
                             self.options.timeout)


def _search_under_way(options: SearchOptions) -> tuple[SearchOptions, str] | None:
    """The options and space of the search a shared ``--storage`` already holds under ``--study``, if any."""
    if not options.storage:
        return None
    try:
        stored = optuna.load_study(storage=open_storage(options.storage), study_name=options.study)
    except KeyError:
        return None
    run = stored.user_attrs.get("nas.run")
    if not run:
        raise InputError(f"study {options.study!r} in {options.storage} was not made by nas search; name "
                         f"another --study")
    return SearchOptions.model_validate(run["options"]), run["space"]


def _write_atomic(path: Path, text: str) -> None:
    """Workers starting together write the same file: readers see the old or the new, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _say_estimate(progress: Progress, trial: optuna.trial.FrozenTrial, feasible_share: float, left: int) -> None:
    built = trial.user_attrs.get("duration", 0.0)
    cheap = 0.002
    estimate = left * (feasible_share * built + (1 - feasible_share) * cheap)
    progress.say(f"  expected run time ~{format_seconds(estimate + built)}: trial 0 (a median-cost genome) took "
                 f"{built:.2f}s to build, score and time; {left} trials to go, "
                 f"~{feasible_share:.0%} of them built")


def _feasible(trials: list[optuna.trial.FrozenTrial]) -> int:
    return sum(t.state == TrialState.COMPLETE and bool(t.user_attrs.get("feasible")) for t in trials)


def _best_text(trials: list[optuna.trial.FrozenTrial], options: SearchOptions) -> str:
    feasible = [t for t in trials if t.state == TrialState.COMPLETE and t.user_attrs.get("feasible")]
    if not feasible:
        return "-"
    best = max(feasible, key=lambda t: t.values[0])
    text = f"{best.values[0]:.4g}"
    if options.multi_objective and len(best.values) > 1 and not math.isnan(best.values[1]):
        text += f" @ {best.values[1]:.3g} {SECOND_UNITS[options.second]}"
    return text + f" (#{best.number})"
