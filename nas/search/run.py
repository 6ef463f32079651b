"""``nas.search``: the constrained multi-objective search loop, its run directory and resume."""
from __future__ import annotations

import math
import os
import sqlite3
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
from nas.search.options import DEFAULT_SPACE, DEFAULT_TRAIN_TRIALS, DEFAULT_TRIALS, SearchOptions, parse_duration
from nas.search.progress import Progress, format_seconds
from nas.search.report import SearchResult, write_report
from nas.search.samplers import make_sampler
from nas.search.survey import check_reachable, survey
from nas.search.trial import INTERRUPTED, SECOND_UNITS, WORKER, Evaluate, Inputs, TrialRunner, counted

RUN_FILE, SPACE_FILE, DB_FILE = "run.yaml", "space.yaml", "study.db"
# Stop when this many samples in a row are invalid genomes and nearly nothing else came out.
INVALID_STREAK = 50


def storage_url(run_dir: Path, options: SearchOptions) -> str:
    return options.storage or f"sqlite:///{(run_dir / DB_FILE).resolve()}"


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """The run's own SQLite file in WAL mode with ``synchronous=NORMAL``: a commit survives SIGKILL (only an OS
    crash can lose the last ones) at a fraction of the fsyncs, and readers (``nas report``, other workers)
    do not block the writer. Other URLs are used as given."""
    if not url.startswith("sqlite:///"):
        return url
    path = url[len("sqlite:///"):]

    def connect() -> sqlite3.Connection:
        connection = sqlite3.connect(path, timeout=60, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        return connection

    return optuna.storages.RDBStorage(url, engine_kwargs={"creator": connect})


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


def recover_interrupted(study: optuna.Study) -> int:
    """Mark RUNNING trials whose process is gone (a SIGKILL, a crash) as FAIL 'interrupted', so they no
    longer count and new trials take their place. Trials of live workers (this host) or of other hosts are
    left alone: another worker may be running them."""
    host = WORKER.split(":")[0]
    storage, recovered = study._storage, 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = str(trial.user_attrs.get("worker", ""))
        worker_host, _, pid = worker.rpartition(":")
        if worker and (worker_host != host or (pid.isdigit() and _alive(int(pid)))):
            continue
        storage.set_trial_user_attr(trial._trial_id, "failure", f"{INTERRUPTED} (its process {worker or '?'} "
                                                                 f"died)")
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        recovered += 1
    return recovered


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process has just started: nothing of it is running yet
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _load_space(space: str | Path | dict[str, Any]) -> tuple[dict[str, Any], str, str]:
    if isinstance(space, dict):
        return space, yaml.safe_dump(space, sort_keys=False), "<mapping>"
    data, text, label = read_yaml(space)
    return data, text, label


def _adapt_to_data(space: dict[str, Any], dataset: Any) -> dict[str, Any]:
    """The classes and channels come from the data; the resolution stays the space's (data is loaded at it)."""
    space = dict(space)
    space["num_classes"] = dataset.num_classes
    space["input"] = {**space.get("input", {}), "channels": dataset.channels}
    return space


def _resolution(space: dict[str, Any]) -> int:
    res = (space.get("input") or {}).get("resolution", 224)
    return int(res[0] if isinstance(res, (list, tuple)) else res)


def _inputs(space: dict[str, Any], options: SearchOptions) -> tuple[Inputs, dict[str, Any]]:
    """The proxy batch (from the data, or seeded random images) or the training set."""
    if options.objective == "train" or (options.data and options.objective == "proxy"):
        from nas.data import load_data

        limit = options.data_limit if options.objective == "train" else max(options.proxy_batch, 16)
        dataset = load_data(options.data, resolution=_resolution(space), seed=options.seed, limit=limit)
        space = _adapt_to_data(space, dataset)
        if options.objective == "train":
            return Inputs(dataset=dataset), space
        return Inputs(dataset.train_x[:options.proxy_batch], dataset.train_y[:options.proxy_batch]), space
    generator = torch.Generator().manual_seed(options.seed)
    channels = int((space.get("input") or {}).get("channels", 3))
    res = _resolution(space)
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


def search(space: str | Path | dict[str, Any] = DEFAULT_SPACE, *, budget: str | None = "4GFLOPs",
           latency: str | None = None, params: str | None = None, device: str = "auto",
           objective: str = "proxy", data: str | None = None, trials: int | None = None,
           timeout: str | float | None = None, sampler: str = "tpe", seed: int = 0, out: str | Path | None = None,
           resume: bool | str | Path = False, storage: str | None = None, study: str | None = None,
           second: str | None = None, quiet: bool = False, evaluate: Evaluate | None = None,
           latency_mode: str = "measure", latency_repeats: int | None = None, proxy_batch: int | None = None,
           epochs: int | None = None, pruner: str | None = None, data_limit: int | None = None,
           threads: int | None = None, stream=None) -> SearchResult:
    """Search ``space`` under the budgets and return the Pareto front and the best feasible genome.

    Every trial is stored (``out``/study.db, or ``storage``) before and after it runs; ``resume=True`` (with
    ``out``) or ``resume="runs/NAME"`` continues a run with the options it was started with (``trials`` and
    ``timeout`` may be raised). ``evaluate(genome, model) -> float`` replaces the built-in score (maximised).
    Raises ``InfeasibleBudget`` (an ``InputError``) before any trial when no genome fits the budget, and
    ``KeyboardInterrupt`` after writing the report for what is done on Ctrl-C.
    """
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    stream = stream or sys.stderr
    if resume:
        run_dir = Path(resume) if isinstance(resume, (str, Path)) else Path(out) if out else latest_run()
        options, space_data = read_run(run_dir)
        overrides = {k: v for k, v in {"trials": trials, "timeout": parse_duration(timeout)}.items()
                     if v is not None}
        options = options.model_copy(update=overrides)
        if options.objective == "custom" and evaluate is None:
            raise InputError(f"{run_dir} was searched with a custom evaluate ({options.evaluate}); pass it again")
        label = str(run_dir / SPACE_FILE)
    else:
        given = dict(budget=budget, latency=latency, params=params, device=device, objective=objective, data=data,
                     trials=trials, timeout=timeout, sampler=sampler, seed=seed, storage=storage, study=study,
                     second=second, latency_mode=latency_mode, latency_repeats=latency_repeats,
                     proxy_batch=proxy_batch, epochs=epochs, pruner=pruner, data_limit=data_limit,
                     threads=threads)
        if evaluate is not None:
            given.update(objective="custom", evaluate=getattr(evaluate, "__qualname__", repr(evaluate)))
        options = _options(space, given)
        space_data, space_text, label = _load_space(space)
        run_dir = Path(out) if out else Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
        if (run_dir / RUN_FILE).exists():
            raise InputError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or pick "
                             f"another --out")

    from nas.cost.profile import resolve_device

    device_name = resolve_device(options.device)
    # One thread on CPU unless asked: steadier latency ranks, and a CPU shared with other jobs slows two
    # spinning OpenMP threads ~20x (benchmarks/BENCHMARKS.md, "Search")
    threads = options.threads or (1 if device_name == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)
    inputs, adapted = _inputs(space_data, options)
    if adapted is not space_data:  # the run's space is the one the data fixed classes and channels of
        space_data, space_text = adapted, yaml.safe_dump(adapted, sort_keys=False)
    progress = Progress(options.trials, quiet, stream)
    report = survey(space_data, options)
    check_reachable(report, options, label)

    if not resume:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / SPACE_FILE).write_text(space_text)
        (run_dir / RUN_FILE).write_text(yaml.safe_dump(options.model_dump(), sort_keys=False))

    sampler_ = make_sampler(options.sampler, options.seed, options.trials)
    study_ = open_study(run_dir, options, sampler_, create=True)
    recovered = recover_interrupted(study_)
    table = None
    if options.latency_mode == "lut" and (options.second == "latency" or options.latency):
        from nas.cost import LatencyTable
        from nas.cost.profile import default_table_path

        default_table_path().parent.mkdir(parents=True, exist_ok=True)
        table = LatencyTable(default_table_path())
    runner = TrialRunner(space_data, options, device_name, inputs, evaluate, table)
    runner.ms_per_gflop += [t.user_attrs["latency_ms"] / max(t.user_attrs["flops"] / 1e9, 1e-9)
                            for t in study_.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                            if "latency_ms" in t.user_attrs and "estimated" not in t.user_attrs]

    done = counted(study_.get_trials(deepcopy=False))
    progress.say(f"nas search: {label}, {options.objective} objective"
                 + (f" and {options.second}" if options.multi_objective else "")
                 + f", sampler {options.sampler}, device {device_name}; run directory {run_dir}")
    progress.say(f"  {report.feasible_share:.0%} of {report.sampled} random samples fit the budget"
                 + (f"; resuming at trial {done}/{options.trials}"
                    + (f", {recovered} interrupted trial(s) marked failed and re-sampled" if recovered else "")
                    if resume else ""))
    if not resume and report.median_params and done == 0:
        study_.enqueue_trial(report.median_params, user_attrs={"calibration": True})

    start = time.perf_counter()
    session = 0
    invalid_streak = 0
    try:
        while done < options.trials:
            if options.timeout is not None and time.perf_counter() - start >= options.timeout:
                progress.say(f"timeout of {format_seconds(options.timeout)} reached")
                break
            trial = runner.run(study_)
            session += 1
            failure = str(trial.user_attrs.get("failure", ""))
            invalid_streak = invalid_streak + 1 if failure.startswith("invalid genome") else 0
            if invalid_streak >= INVALID_STREAK:
                raise NasError(f"{invalid_streak} samples in a row were invalid genomes (last: {failure}); "
                               f"check the space with `nas validate {label}`")
            all_trials = study_.get_trials(deepcopy=False)
            done = counted(all_trials)
            if session == 1 and trial.state == TrialState.COMPLETE and not quiet:
                _say_estimate(progress, trial, report.feasible_share, options.trials - done)
            progress.update(done, _feasible(all_trials), _best_text(all_trials, options), session,
                            options.timeout)
    except KeyboardInterrupt:
        progress.close()
        write_report(run_dir)
        print(f"interrupted: the report for the {counted(study_.get_trials(deepcopy=False))} finished trials "
              f"is in {run_dir}", file=stream)
        raise
    progress.close()
    result = write_report(run_dir)
    print(result.summary(), file=stream)
    return result


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
