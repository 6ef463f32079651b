"""``nas.search``: the constrained multi-objective search loop, its run directory and resume."""
from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
import yaml
from optuna.trial import TrialState
from pydantic import ValidationError

from nas.compiler import compile_model
from nas.errors import InputError, NasError, did_you_mean, printable
from nas.flags import flag_name, option_fields
from nas.io import parse_genome, parse_yaml
from nas.outputs import output_dir, replacing, write_atomic
from nas.search.cascade import SCREEN_ATTR, SCREEN_FILE, SECOND_COST, CascadeSampler, Promotion, screen
from nas.search.options import DEFAULT_SPACE, SearchOptions
from nas.search.progress import Progress, format_seconds
from nas.search.references import check_references, score_references
from nas.search.report import SearchResult, write_report
from nas.search.rundir import (
    OBJECTIVE_ATTR,
    RUN_FILE,
    SPACE_FILE,
    WEIGHTS_FILE,
    WEIGHTS_INFO,
    WINNER_LATENCY_FILE,
    NewRun,
    check_storage,
    connect,
    default_run_dir,
    dump_options,
    latest_run,
    open_study,
    read_run,
    refuse_results,
    shown,
    storage_file,
    storage_url,
)
from nas.search.samplers import make_sampler
from nas.search.scoring import (
    default_workers,
    latency_table,
    require_calibration,
    search_inputs,
    set_up_device,
    training_batch,
)
from nas.search.survey import check_reachable, survey
from nas.search.trial import (
    SECOND_UNITS,
    STAGES,
    Evaluate,
    Inputs,
    TrialWork,
    constraint_values,
    is_invalid,
    is_result,
)
from nas.space import read_space
from runners.base import StopSearch, counted, counts, is_duplicate, is_screening, is_void
from runners.local import run_trials, start_workers, wait_workers
from runners.slots import device_slot

# Stop when this many samples in a row are invalid genomes and nearly nothing else came out.
INVALID_STREAK = 50
# Stop when this many samples in a row are genomes already evaluated. They cost nothing and do not count toward
# --trials, so a small space, once exhausted, would otherwise be sampled forever.
DUPLICATE_STREAK = 50
# What a resumed run (or a worker joining a search) may change; any other option given must match the run's.
CHANGEABLE = ("trials", "timeout", "workers", "references")
BUDGETS = {"budget": "flops_budget", "params": "params_budget", "latency": "latency_budget_ms"}
# The user attribute of the median-cost genome a fresh run enqueues first (the run-time estimate names it).
CALIBRATION_ATTR = "calibration"


def _load_space(space: str | Path | dict[str, Any]) -> tuple[dict[str, Any], str, str]:
    if isinstance(space, dict):
        return space, yaml.safe_dump(space, sort_keys=False), "<mapping>"
    data, text, label = read_space(space)
    return data, text, label


def search(space: str | Path | dict[str, Any] | None = None, options: SearchOptions | None = None, *,
           out: str | Path | None = None, resume: bool | str | Path = False, quiet: bool = False,
           evaluate: Evaluate | None = None, stream=None, as_worker: bool = False,
           **overrides: Any) -> SearchResult | None:
    """Search ``space`` under the budgets and return the Pareto front and the best feasible genome.

    The options are the fields of ``SearchOptions`` (``nas search --help`` lists them with their defaults):
    ``options=SearchOptions(...)``, keywords of the same names (``budget="10MFLOPs", trials=20``), or both, the
    keywords winning; ``space`` (a shipped space's name, a YAML file or a mapping) wins over ``options.space``.
    A keyword left at ``None`` is not given and takes the default, so ``budget=None`` keeps the default FLOPs
    budget and ``budget="none"`` means none. An unknown keyword is a ``TypeError`` naming the nearest option.

    Every trial is stored (``out``/study.db, or ``storage``) before and after it runs; ``resume=True`` (with
    ``out``) or ``resume="runs/NAME"`` continues a run with the options it was started with: ``trials``,
    ``timeout``, ``workers`` and ``references`` may change, and any other option given that differs from the
    run's is refused (``InputError``), as is a run whose storage is missing or damaged. A process given the
    ``storage`` and ``study`` of a search already under way joins it as a worker, with that search's options.
    ``runner="ray"`` runs the trials as Ray Tune trials (``address`` of a cluster, else a local Ray instance for
    the run). The ``references`` (published architectures; ``nas.search.references``) are scored as a trial is,
    once per run directory (``references.json``), and the report shows them beside the winner: after the trials,
    or while the first trials run when ``workers`` processes share the run. ``evaluate(genome, model) -> float``
    replaces the built-in score (maximised). Raises
    ``InfeasibleBudget`` (an ``InputError``) before any trial when no genome fits the budget, and
    ``KeyboardInterrupt`` after writing the report on Ctrl-C; a run that fails before its first trial leaves no
    files behind.
    ``objective="supernet"`` scores each genome by its validation accuracy with the weights of a trained
    ``supernet`` (its space and data unless given), and writes the winner's weights (``best_weights.pt``),
    fine-tuned for ``finetune_epochs`` when asked. ``quiet`` prints only the final summary (to ``stream``,
    default stderr). ``as_worker`` is for the processes ``workers`` starts: no report, no output, returns
    ``None``.
    """
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    stream = stream or sys.stderr
    quiet = quiet or as_worker
    space, given, changes = _asked(space, options, overrides, as_worker)
    run = (_resumed(resume, out, space, given, changes, evaluate) if resume
           else _started(space, out, given, changes, evaluate))
    options, run_dir = run.options, run.run_dir
    if options.runner == "ray":
        _check_ray_address(options.address)
    device_name = set_up_device(options)
    inputs, adapted = search_inputs(run.space, options)
    if adapted != run.space:  # the run's space is the one the data fixed classes and channels of
        run.space, run.space_text = adapted, yaml.safe_dump(adapted, sort_keys=False)
    progress = Progress(options.trials, quiet, stream)
    report = survey(run.space, options)
    check_reachable(report, options, run.label)
    if options.workers is None and not (resume or run.joined or as_worker):
        run.options = options = options.model_copy(update={"workers": default_workers(
            options, device_name, evaluate is not None, report.median_flops)})
    memory_line = None
    if (options.objective == "train" or options.finetune_epochs) and report.largest and not as_worker:
        # before anything is written: a batch that cannot fit is bad input
        run.options, memory_line = training_batch(options, parse_genome(report.largest), inputs.dataset,
                                                  device_name, "the largest genome sampled within budget")
        options = run.options

    table = latency_table(options)
    if options.latency_mode == "predict" and table is not None:
        progress.say(f"  latency predicted by the calibrated table: "
                     f"{require_calibration(table, device_name, torch.get_num_threads(), options.runtime).describe()}")
    # Everything checked: only now is anything written, and all of it is removed if no trial gets to run.
    fresh = run.fresh
    if fresh is not None:
        fresh.owns(SCREEN_FILE)
    # The cascade picks within the budgets only, so all its trials are built
    state = _LoopState(progress, options, run.label, 1.0 if options.sampler == "cascade" else report.feasible_share,
                       quiet)
    study_: optuna.Study | None = None
    try:
        shared = run.joined or as_worker
        study_ = _open(run, fresh)
        work = TrialWork(run.space, options, device_name, inputs, evaluate, table, checkpoints=run_dir / "checkpoints")
        done = counted(study_.get_trials(deepcopy=False))
        _say_start(progress, options, report, run.label, device_name, run_dir, done, "resuming" if resume and not
                   as_worker else f"joining study {options.study!r}" if run.joined else "", memory_line)
        _set_sampler(run, study_, shared, progress, quiet=as_worker)
        progress.begin_trials(done)
        if not resume and report.median_params and done == 0:
            study_.enqueue_trial(report.median_params, user_attrs={CALIBRATION_ATTR: True}, skip_if_exists=True)
        _run(options, run_dir, study_, work, state, resume=bool(resume), as_worker=as_worker,
             while_workers_run=lambda: (_score_references(run_dir, run, options, work, report, progress, stream),
                                        progress.begin_trials(counted(study_.get_trials(deepcopy=False)))))
    except KeyboardInterrupt:
        progress.close()
        _interrupted(run_dir, fresh, study_, as_worker, stream)
        raise
    except BaseException:
        progress.close()
        if fresh is not None:
            fresh.undo(study_)
        raise
    progress.close()
    if as_worker:
        return None
    if state.stopped:  # fewer trials than asked: said even when quiet
        print(state.stopped, file=stream)
    try:  # after the trials, so Ctrl-C here still leaves their report (and the references scored so far)
        _score_references(run_dir, run, options, work, report, progress, stream)
    except KeyboardInterrupt:
        _interrupted(run_dir, None, study_, as_worker, stream)
        raise
    result = write_report(run_dir)
    if _time_winner(run_dir, result, options, work, progress):
        result = write_report(run_dir)
    print(result.summary(), file=stream)
    if options.objective == "supernet" and result.best is not None:
        _write_winner_weights(run_dir, result.best.genome, options, inputs, device_name, stream)
    return result


def _time_winner(run_dir: Path, result: Any, options: SearchOptions, work: TrialWork, progress: Progress) -> bool:
    """With a latency from the table (``lut``, ``predict``), the winner is timed end to end before it is
    reported as within budget (``winner_latency.json``). False when there is nothing to time."""
    best = result.best
    if (options.latency_mode == "measure" or best is None or best.latency_ms is None
            or result.winner_latency is not None):
        return False
    from nas.cost import measure_latency

    model = compile_model(best.genome, seed=options.seed)
    res = best.genome.input
    with device_slot(work.device, exclusive=True):
        measured = measure_latency(model, (res.channels, *res.resolution), work.device, warmup=3,
                                   repeats=max(options.latency_repeats, 10), runtime=options.runtime).median_ms
    data = {"genome_hash": best.genome.content_hash(), "trial": best.number, "mode": options.latency_mode,
            "predicted_ms": best.latency_ms, "measured_ms": measured, "budget_ms": options.latency_budget_ms}
    write_atomic(run_dir / WINNER_LATENCY_FILE, json.dumps(data, indent=1) + "\n")
    progress.say(f"  the winner (trial {best.number}) timed end to end: {measured:.4g} ms")
    return True


def _score_references(run_dir: Path, run: _Run, options: SearchOptions, work: TrialWork, report: Any,
                      progress: Progress, stream) -> None:
    """The references not scored yet (none left: nothing to do). A yardstick that breaks must not cost the run its
    results: its error is one line."""
    try:
        score_references(run_dir, run.space, options, work, report.largest_flops, progress.say)
    except Exception as err:  # noqa: BLE001
        print(f"reference architectures not scored: {type(err).__name__}: {err}", file=stream)


@dataclass
class _Run:
    """A run about to start: where, with which options and space, and whether it joins a search under way."""

    run_dir: Path
    options: SearchOptions
    space: dict[str, Any]
    space_text: str
    label: str
    joined: bool = False
    fresh: NewRun | None = None  # the files it writes, when it writes the run's files (not a resume)


def _asked(space: Any, options: SearchOptions | None, overrides: dict[str, Any], as_worker: bool
           ) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """The space and the options the caller gave, parsed (a duration in seconds, a budget of 'none' as None):
    what a run under way is compared with. Those a resumed run may change (``CHANGEABLE``) come apart."""
    names = option_fields(SearchOptions)
    for key in overrides:
        if key not in names:
            raise TypeError(f"search() got an unexpected keyword argument {key!r}{did_you_mean(key, names)}")
    written = {key: value for key, value in overrides.items() if value is not None}  # None: not given
    parsed = validated_options(written)
    given = {key: getattr(options, key) for key in options.model_fields_set} if options else {}
    given.update({key: getattr(parsed, key) for key in written})
    from_options = given.pop("space", None)
    space = from_options if space is None else space
    changes = {key: given.pop(key) for key in CHANGEABLE if key in given}
    if "references" in changes:
        changes["references"] = check_references(changes["references"])
    if as_worker:  # a worker process starts no workers of its own
        changes["workers"] = 1
    return space, given, changes


def validated_options(values: dict[str, Any], as_flags: bool = False) -> SearchOptions:
    """Options from Python values (or, ``as_flags``, from flags argparse left as text), whose mistakes are bad
    input too, named as keywords or as flags."""
    try:
        return SearchOptions(**values)
    except ValidationError as err:
        first = err.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        if as_flags and field in SearchOptions.model_fields:
            where = flag_name(SearchOptions, field)
        else:
            where = ".".join(map(str, first["loc"])) or "options"
        raise InputError(f"{where}: {first['msg']} (got {first.get('input')!r})") from None


def _resumed(resume: bool | str | Path, out: str | Path | None, space: Any, given: dict[str, Any],
             changes: dict[str, Any], evaluate: Evaluate | None) -> _Run:
    """A run directory to continue, with its own options: refused when they are contradicted, or when its
    storage is missing or damaged (starting over would write over its results)."""
    run_dir = _resume_dir(resume, out)
    options, space_data = read_run(run_dir)
    _refuse_changes(options, space, given, evaluate, f"--resume continues {run_dir}", "start a new run")
    options = options.model_copy(update=changes).check()
    check_storage(storage_url(run_dir, options), options.study, must_exist=True)
    return _Run(run_dir, options, space_data, yaml.safe_dump(space_data, sort_keys=False), str(run_dir / SPACE_FILE))


def _started(space: Any, out: str | Path | None, given: dict[str, Any], changes: dict[str, Any],
             evaluate: Evaluate | None) -> _Run:
    """A new run, or a worker joining the search under way on a shared ``--storage``; nothing written yet."""
    if out is not None:
        output_dir(out, "--out")
    explicit, asked_space = dict(given), space  # what a search under way is compared with
    given = dict(given)
    on_supernet = given.get("objective") in ("supernet", "train") and given.get("supernet") is not None
    own_space = on_supernet and space is None
    if on_supernet:
        given["supernet"] = str(Path(given["supernet"]).resolve())  # workers may start elsewhere
        if space is None or "data" not in given:
            space, data, limit = _supernet_defaults(given["supernet"], space, given.get("data"),
                                                    given.get("data_limit"))
            given.update({key: value for key, value in (("data", data), ("data_limit", limit))
                          if value is not None})
    options = _new_options(space, given, changes, evaluate)
    space_data, space_text, label = _load_space(DEFAULT_SPACE if space is None else space)
    if own_space:
        label = f"the space of supernet {options.supernet}"
        options = options.model_copy(update={"space": label})
    run_dir = Path(out) if out else default_run_dir(options)
    under_way = _search_under_way(options, run_dir)
    if under_way is None:
        return _Run(run_dir, options, space_data, space_text, label, fresh=_new_run(run_dir, options))
    stored, space_text = under_way  # join it: its options and space are the search's
    _refuse_changes(stored, asked_space, explicit, evaluate,
                    f"study {options.study!r} in {shown(options.storage)} is a "
                    f"search under way", "name another --study")
    space_data = parse_yaml(space_text, f"{shown(options.storage)} ({options.study})")
    options = stored.model_copy(update={"workers": 1, **changes}).check()
    # In the search's own directory a worker writes no run files; in one of its own, it writes them as a new run
    fresh = None if (run_dir / RUN_FILE).exists() else _new_run(run_dir, options)
    return _Run(run_dir, options, space_data, space_text, label, joined=True, fresh=fresh)


def _new_run(run_dir: Path, options: SearchOptions) -> NewRun:
    """The files a run will write in ``run_dir``, once it is checked that none of them is there already; what is
    there now is never written over nor removed."""
    refuse_results(run_dir, keep=storage_file(options.storage))
    return NewRun(run_dir, storage_url(run_dir, options), default_storage=not options.storage)


def _open(run: _Run, fresh: NewRun | None) -> optuna.Study:
    """Write the new run's files and open (or create) its study."""
    options = run.options
    if fresh is not None:  # the run file first: a worker starting at once then waits to join (_search_under_way)
        fresh.write(RUN_FILE, dump_options(options))
        fresh.write(SPACE_FILE, run.space_text)
    study_ = open_study(run.run_dir, options, create=True)
    if "nas.run" not in study_.user_attrs:  # what a worker on another machine joins with
        study_.set_user_attr("nas.run", {"options": options.model_dump(), "space": run.space_text})
    if options.scores_with_fit:
        _check_objective(study_, run)
    return study_


def _check_objective(study_: optuna.Study, run: _Run) -> None:
    """A proxy run's scores (a training cascade's zero-cost scores) are values of one fit: recorded when the run
    starts, and a resume or a worker whose nas ships another fit is refused rather than mixing scores that do
    not compare. (A run from before the record has none to check, and records this one.)"""
    from nas.evaluate.proxy import objective_identity

    current = objective_identity(run.options.objective_fit)
    recorded = study_.user_attrs.get(OBJECTIVE_ATTR)
    if recorded is None:
        study_.set_user_attr(OBJECTIVE_ATTR, current)
    elif recorded != current:
        raise InputError(f"{run.run_dir}: its trials were scored by the fit {recorded['name']}.json "
                         f"({recorded['digest']}) and this nas has {current['name']}.json ({current['digest']}), "
                         f"whose scores would not compare; start a new run, or continue this one with the nas "
                         f"that started it")


def _set_sampler(run: _Run, study_: optuna.Study, shared: bool, progress: Progress, quiet: bool) -> None:
    """The run's sampler on its study (for the cascade, after its screen, which it says)."""
    options = run.options
    parallel = shared or bool(options.storage) or (options.workers or 1) > 1 or options.runner == "ray"
    study_.sampler = make_sampler(options.sampler, _sampler_seed(options, study_, shared), options.trials,
                                  parallel=parallel, cascade=_cascade(run, progress, quiet))
    if isinstance(study_.sampler, CascadeSampler) and not quiet:  # the driver's (a resumed run may screen more)
        study_.set_user_attr(SCREEN_ATTR, study_.sampler.pool.counts())


def _cascade(run: _Run, progress: Progress, quiet: bool) -> Callable[[int], CascadeSampler]:
    """The cascade's sampler, made when the run's sampler is the cascade: the data-free screen (the same pool
    for every process of the run: seeded by --seed, cached in the run directory), then the sampler on it."""
    options = run.options

    def within_budget(cost: Any) -> bool:
        return all(v <= 0 for v in constraint_values(options, cost, None).values())

    def make(seed: int) -> CascadeSampler:
        cached = (run.run_dir / SCREEN_FILE).exists()
        if not (quiet or cached):
            progress.say(f"  screening {options.screen_size:,} genomes data-free (analytic cost, structural score, "
                         "the objective's data-free part)")
        pool = screen(run.space, options.screen_size, options.seed, within_budget, run.run_dir,
                      processes=options.workers or 1, objective_fit=options.objective_fit)
        if not quiet:
            progress.say(f"  screened {pool.drawn:,} genomes in {format_seconds(pool.seconds)}"
                         + (f" ({SCREEN_FILE})" if cached else "") + f": {pool.valid:,} valid, {len(pool):,} "
                         f"distinct within budget; the surrogate picks the trials from those")
        promote = Promotion(options.promotion_rungs, options.reduction_factor) if options.promotes else None
        return CascadeSampler(pool, run.space, seed, second_cost=SECOND_COST.get(options.second),
                              stage=STAGES[options.objective], promote=promote,
                              # no more scored ahead than the trainings the run may pick
                              shortlist=min(options.shortlist, options.trials) if options.zero_cost_stage else 0,
                              shortlist_growth=options.shortlist_growth)

    return make


def _run(options: SearchOptions, run_dir: Path, study_: optuna.Study, work: TrialWork, state: _LoopState,
         resume: bool, as_worker: bool, while_workers_run: Callable[[], None]) -> None:
    """The trials, on the run's runner (with the local runner's extra worker processes, stopped on failure).
    When this process started extra workers, it first does ``while_workers_run`` (the references) while they
    take the first trials: the run then ends when the last trial does, not a reference-scoring later."""
    prune = options.objective == "train" and not options.multi_objective and options.pruner != "none"
    if options.runner == "ray":
        from runners.ray import RayOptions, RayUnreachable, run_ray

        try:
            run_ray(RayOptions(storage=storage_url(run_dir, options), study=options.study,
                               heartbeat=options.heartbeat, run_dir=run_dir.resolve(), target=options.trials,
                               multi_objective=options.multi_objective, train_epochs=options.epochs if prune
                               else None, workers=options.workers, address=options.address,
                               cpus_per_trial=options.cpus_per_trial, gpus_per_trial=options.gpus_per_trial,
                               threads=options.threads, timeout=options.timeout, resume=resume),
                    work, study_.sampler, on_trial=state.on_trial)
        except RayUnreachable as err:
            raise InputError(str(err)) from None
        return
    procs = []
    workers_ = options.workers or 1
    if workers_ > 1 and not as_worker:
        procs = start_workers(workers_ - 1, _worker_command(run_dir), run_dir / "workers")
    try:
        if procs:
            while_workers_run()
        why = run_trials(study_, work, options.trials, prune=prune, heartbeat_s=options.heartbeat,
                         timeout=options.timeout, on_trial=state.on_trial)
    except BaseException:
        wait_workers(procs, stop=True)
        raise
    if why == "timeout":
        state.progress.say(f"timeout of {format_seconds(options.timeout)} reached")
    failed = [code for code in wait_workers(procs) if code != 0]
    if failed:
        state.progress.say(f"  {len(failed)} worker process(es) exited with an error; their logs are in "
                           f"{run_dir / 'workers'}")


def _interrupted(run_dir: Path, fresh: NewRun | None, study_: optuna.Study | None, as_worker: bool, stream) -> None:
    """Ctrl-C (or SIGTERM): the report for what is done. A second one while that is written leaves the earlier
    report files whole (each is replaced at once) and says how to write the report later."""
    try:
        if fresh is not None and fresh.undo(study_):
            print(f"interrupted before the first trial: nothing of it was kept in {run_dir}", file=stream)
            return
        if as_worker:
            return
        result = write_report(run_dir)
    except KeyboardInterrupt:
        print(f"interrupted again: the report was not written; write it with `nas report {run_dir}`",
              file=stream)
        return
    print(f"interrupted: the report for the {result.counts['trials']} finished trials is in {run_dir}",
          file=stream)


def _say_start(progress: Progress, options: SearchOptions, report: Any, label: str, device: str, run_dir: Path,
               done: int, how: str, memory_line: str | None) -> None:
    workers_ = options.workers or 1
    progress.say(f"nas search: {label}, {options.objective} objective"
                 + (f" and {options.second}" if options.multi_objective else "")
                 + f", sampler {options.sampler}, device {device}, runner {options.runner}"
                 + (f" ({workers_} workers)" if options.runner == "local" and workers_ > 1 else "")
                 + f"; run directory {printable(str(run_dir))}")
    invalid = report.sampled - report.valid
    progress.say(f"  {report.feasible / max(report.valid, 1):.0%} of {report.valid} valid random samples fit the "
                 f"budget" + (f" ({invalid} of {report.sampled} were invalid genomes)" if invalid else "")
                 + (f"; {how} at trial {done}/{options.trials}" if how else ""))
    if memory_line:
        progress.say(memory_line)


def _sampler_seed(options: SearchOptions, study_: optuna.Study, shared: bool) -> int:
    """The sampler's seed. A resumed run must not replay its own draws: the same seed gives the same stream,
    hence the genomes it already evaluated. So the seed moves on by the trials the study holds (a new run's is
    --seed itself, reproducible). Each process on a shared study samples its own sequence too: two with one
    seed would draw the same genomes, so a run on a shared --storage is not bit-reproducible."""
    seed = options.seed + len(study_.get_trials(deepcopy=False))
    shared = shared or bool(options.storage)
    return (seed + os.getpid() if shared else seed) % 2**32


def _check_ray_address(address: str | None) -> None:
    """A cluster that does not answer is refused in seconds, before anything is written."""
    from runners.ray import RayUnreachable, check_address

    try:
        check_address(address)
    except RayUnreachable as err:
        raise InputError(str(err)) from None


def _worker_command(run_dir: Path) -> list[str]:
    """A process that joins this run as a worker; ``runners.local`` starts it without knowing what it is."""
    return [sys.executable, "-m", "nas", "search", "--resume", str(run_dir), "--as-worker"]


def _resume_dir(resume: bool | str | Path, out: str | Path | None) -> Path:
    if not isinstance(resume, (str, Path)):
        return Path(out) if out else latest_run()
    run_dir = Path(resume)
    if out is not None and Path(out).resolve() != run_dir.resolve():
        raise InputError(f"--resume {run_dir} continues that run in its own directory; drop --out {out}")
    return run_dir


def _refuse_changes(options: SearchOptions, space: Any, given: dict[str, Any], evaluate: Evaluate | None,
                    what: str, instead: str) -> None:
    """A run keeps the options it was started with: one given that differs is refused, never ignored."""
    if space is not None and (str(space) if isinstance(space, (str, Path)) else "<mapping>") != options.space:
        raise InputError(f"{what} with its own --space {options.space}; drop --space {space} or {instead}")
    if evaluate is not None and options.objective != "custom":
        raise InputError(f"{what} with its own --objective {options.objective}; drop evaluate= or {instead}")
    if options.objective == "custom" and evaluate is None:
        raise InputError(f"{what}, searched with a custom evaluate ({options.evaluate}); pass it again")
    for key, value in given.items():
        if not _same(options, key, value):
            flag = flag_name(SearchOptions, key)
            raise InputError(f"{what} with its own {flag} {_shown(getattr(options, key))}; drop {flag} "
                             f"{_shown(value)} or {instead}")


def _same(options: SearchOptions, key: str, value: Any) -> bool:
    if key in BUDGETS:  # as parsed: 4G is 4GFLOPs
        value = None if str(value).lower() == "none" else str(value)
        return getattr(options.model_copy(update={key: value}), BUDGETS[key]) == getattr(options, BUDGETS[key])
    if key == "supernet":
        return options.supernet is not None and Path(value).resolve() == Path(options.supernet).resolve()
    if key == "batch_size" and value == "auto":  # the run chose its batch when it started; that one stands
        return True
    return value == getattr(options, key)


def _shown(value: Any) -> str:
    return "none" if value is None else shown(str(value))


def _new_options(space: Any, given: dict[str, Any], changes: dict[str, Any], evaluate: Evaluate | None
                 ) -> SearchOptions:
    values = {**given, **changes}
    if evaluate is not None:
        values.update(objective="custom", evaluate=getattr(evaluate, "__qualname__", repr(evaluate)))
    label = DEFAULT_SPACE if space is None else space if isinstance(space, (str, Path)) else "<mapping>"
    return validated_options({**values, "space": str(label)}).check()


def _supernet_defaults(path: str, space: Any, data: str | None, data_limit: int | None
                       ) -> tuple[Any, str | None, int | None]:
    """A supernet search runs on the supernet's own space and data unless told otherwise."""
    from nas.supernet import Supernet

    net, state = Supernet.load(path)
    trained_on = state.get("data", {})
    if data is None:
        data, data_limit = trained_on.get("spec"), data_limit or trained_on.get("limit")
    return (net.space if space is None else space), data, data_limit


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
        result = train_model(model, inputs.dataset, epochs=options.finetune_epochs, batch_size=options.batch_size,
                             device=device, seed=options.seed, lr=5e-4, warmup_epochs=0)
        info.update(finetune_epochs=options.finetune_epochs, finetuned_accuracy=result.accuracy)
    with replacing(run_dir / WEIGHTS_FILE) as tmp:
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, tmp)
    write_atomic(run_dir / WEIGHTS_INFO, yaml.safe_dump(info, sort_keys=False))
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
        self.session = self.session_counted = 0
        self.invalid_streak = self.duplicate_streak = 0
        self.stopped = ""  # why the search ended before the count, when it did
        self.start = time.perf_counter()

    def on_trial(self, trial: optuna.trial.FrozenTrial, all_trials: list[optuna.trial.FrozenTrial]) -> None:
        self.session += 1
        self.session_counted += counts(trial)
        self.invalid_streak = self.invalid_streak + 1 if is_invalid(trial) else 0
        if self.invalid_streak >= INVALID_STREAK:
            raise NasError(f"{self.invalid_streak} samples in a row were invalid genomes (last: "
                           f"{trial.user_attrs.get('failure')}); check the space with `nas validate {self.label}`")
        done = counted(all_trials)
        self.duplicate_streak = self.duplicate_streak + 1 if is_duplicate(trial) else 0
        if self.duplicate_streak >= DUPLICATE_STREAK:
            self.stopped = (f"stopped at trial {done}/{self.options.trials}: the last {self.duplicate_streak} "
                            f"samples were all genomes already evaluated (the space looks exhausted: "
                            f"{_distinct(all_trials)} distinct genomes sampled)")
            raise StopSearch(self.stopped)
        if counts(trial) and self.session_counted == 1 and trial.state == TrialState.COMPLETE and not self.quiet:
            _say_estimate(self.progress, all_trials, self.feasible_share, self.options.trials - done,
                          self.options.workers or 1)
        self.progress.update(done, _feasible(all_trials), _best_text(all_trials, self.options) +
                             _surrogate_text(all_trials), self.options.timeout,
                             invalid=sum(map(is_invalid, all_trials)), duplicates=sum(map(is_duplicate, all_trials)))


def _surrogate_text(trials: list[optuna.trial.FrozenTrial]) -> str:
    """The cascade's surrogate as of its latest pick: how well it ranks the results it did not see."""
    for t in reversed(trials):
        if t.user_attrs.get("picked_by") == "surrogate" and not is_screening(t):
            tau, interval = t.user_attrs.get("surrogate_tau"), t.user_attrs.get("surrogate_interval")
            if tau is None:
                return ""
            spread = f"{interval[0]:+.2f} to {interval[1]:+.2f}, " if interval else ""
            return f"  surrogate tau {tau:+.2f} ({spread}{t.user_attrs['surrogate_results']} results)"
    return ""


def _distinct(trials: list[optuna.trial.FrozenTrial]) -> int:
    return len({t.user_attrs["genome_hash"] for t in trials if "genome_hash" in t.user_attrs and not is_void(t)})


def _search_under_way(options: SearchOptions, run_dir: Path | None = None) -> tuple[SearchOptions, str] | None:
    """The options and space of the search a shared ``--storage`` already holds under ``--study``, if any. A
    worker started at the same moment as the search's first process may find that process between writing
    ``run_dir``'s run file and recording the search in its study: it waits for the record (``JOIN_WAIT_S``)
    rather than take the search for another run."""
    if not options.storage:
        return None
    check_storage(options.storage, None, must_exist=False)
    deadline = time.monotonic() + JOIN_WAIT_S
    while True:
        found = _stored_search(options)
        starting = (found is None or found is _UNRECORDED) and run_dir is not None and _just_written(
            run_dir / RUN_FILE)
        if not starting or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if found is _UNRECORDED:
        raise InputError(f"study {options.study!r} in {shown(options.storage)} was not made by nas search; name "
                         f"another --study")
    return found


JOIN_WAIT_S = 30.0
_UNRECORDED = ("a study without nas search's record",)


def _just_written(path: Path) -> bool:
    """Whether ``path`` was written within ``JOIN_WAIT_S``: by a process starting the same search, not an old run."""
    try:
        return time.time() - path.stat().st_mtime < JOIN_WAIT_S
    except OSError:
        return False


def _stored_search(options: SearchOptions) -> Any:
    """The search recorded in the storage's study, None where there is no study, ``_UNRECORDED`` for a study
    without the record."""
    file = storage_file(options.storage)
    if file is not None and not file.exists():
        return None  # nothing there yet (and opening it would create it before the run is ready)
    try:
        stored = optuna.load_study(storage=connect(options.storage), study_name=options.study)
    except KeyError:
        return None
    run = stored.user_attrs.get("nas.run")
    if not run:
        return _UNRECORDED
    return SearchOptions.model_validate(run["options"]), run["space"]


def _say_estimate(progress: Progress, trials: list[optuna.trial.FrozenTrial], feasible_share: float, left: int,
                  workers: int) -> None:
    """The run's expected time, said once, when this process has finished its first trial: from the median time
    of the trials finished so far. With several workers, the others have finished some while this process scored
    the references; the first this process finishes is often the cheapest of them, which alone had set the
    estimate a third short (benchmarks/BENCHMARKS.md, the default search)."""
    built = [t for t in trials if counts(t) and t.state == TrialState.COMPLETE and "duration" in t.user_attrs]
    if not built:
        return
    typical = statistics.median(t.user_attrs["duration"] for t in built)
    cheap = 0.002
    estimate = left * (feasible_share * typical + (1 - feasible_share) * cheap) / workers
    if len(built) == 1:
        first = built[0]
        what = f"trial {first.number}" + (" (a median-cost genome)" if first.user_attrs.get(CALIBRATION_ATTR) else "")
        basis = f"{what} took {typical:.2f}s"
    else:
        basis = f"the {len(built)} trials finished took a median of {typical:.2f}s each"
    progress.say(f"  expected run time ~{format_seconds(estimate + typical)}: {basis} to build, score and time; "
                 f"{left} trials to go, ~{feasible_share:.0%} of them built"
                 + (f", {workers} at a time" if workers > 1 else ""))


def _feasible(trials: list[optuna.trial.FrozenTrial]) -> int:
    return sum(is_result(t) and not is_duplicate(t) for t in trials)


def _best_text(trials: list[optuna.trial.FrozenTrial], options: SearchOptions) -> str:
    feasible = [t for t in trials if is_result(t)]
    if not feasible:
        return "-"
    best = max(feasible, key=lambda t: t.values[0])
    text = f"{best.values[0]:.4g}"
    if options.multi_objective and len(best.values) > 1 and not math.isnan(best.values[1]):
        text += f" @ {best.values[1]:.3g} {SECOND_UNITS[options.second]}"
    return text + f" (#{best.number})"
