"""A run directory's results, rebuilt from its Optuna storage alone: ``trials.csv``, ``pareto/*.yaml``,
``best.yaml``, ``best_model.py``, ``pareto.png`` and ``report.md``. ``nas report runs/NAME`` calls the same
``write_report`` the search calls when it ends (or is interrupted). The reference architectures are read from
``references.json``, where the search left their scores: a report never scores a model."""
from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.cost import stage_costs
from nas.cost.budget import format_count
from nas.errors import GenomeError, printable
from nas.evaluate.proxy import describe_objective, objective_terms, unweighed_descriptors
from nas.export import export_model
from nas.genome import Genome
from nas.io import dump_genome, parse_genome
from nas.outputs import write_atomic
from nas.search import markdown
from nas.search.cascade import SCREEN_ATTR, surrogate_summary
from nas.search.params import genome_data, params_picker
from nas.search.references import REFERENCES_FILE, Scored, read_references, report_section, second_value, summary_line
from nas.search.rundir import OBJECTIVE_ATTR, WINNER_LATENCY_FILE, open_study, read_run
from nas.search.samplers import dominates
from nas.search.scoring import GenomeScore
from nas.search.trial import INHERITED, SECOND_UNITS, STAGES, is_invalid, is_result
from nas.space import choices, space_size
from runners.base import FINISHED, SURPLUS, counted, is_duplicate, is_screening, is_void

PHASES = ("sample", "cost", "build", "score", "latency")


@dataclass
class ParetoPoint:
    number: int
    genome: Genome
    score: float
    second: float | None
    flops: int
    params: int
    latency_ms: float | None


@dataclass
class SearchResult:
    """What a search found: the feasible Pareto front (score up, second objective down) and its best score."""

    run_dir: Path
    pareto: list[ParetoPoint]
    best: ParetoPoint | None
    counts: dict[str, int]
    second: str
    files: list[Path] = field(default_factory=list)
    references: list[GenomeScore] = field(default_factory=list)  # scored as the trials were (references.json)
    winner_latency: dict[str, Any] | None = None  # the winner timed end to end (winner_latency.json)

    def summary(self) -> str:
        head = f"{self.counts['trials']} trials: {_breakdown(self.counts)}"
        against = summary_line(self.references, self.best)
        if self.best is None:
            return head + f"; no feasible genome yet. Run directory: {self.run_dir}" + (
                f"\n{against}" if against else "")
        best = self.best
        second = f", {best.second:.4g} {SECOND_UNITS[self.second]}" if best.second is not None else ""
        measured = winner_latency_line(self.winner_latency)
        return (f"{head}\nbest: trial {best.number}, score {best.score:.4g}{second}, "
                f"{format_count(best.flops)}FLOPs, {format_count(best.params)} params; "
                f"{len(self.pareto)} on the Pareto front\n" + (f"{measured}\n" if measured else "")
                + (f"{against}\n" if against else "")
                + f"run directory: {printable(str(self.run_dir))} (best.yaml, best_model.py, pareto/, pareto.png, "
                "report.md, trials.csv)")


def read_winner_latency(run_dir: Path, best: ParetoPoint | None) -> dict[str, Any] | None:
    """The end-to-end timing of the winner, when it is of today's winner (a resumed run may have another)."""
    path = run_dir / WINNER_LATENCY_FILE
    if best is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if data.get("genome_hash") == best.genome.content_hash() else None


def winner_latency_line(data: dict[str, Any] | None) -> str:
    """A predicted latency is not a measured one: how the winner timed end to end, and against the budget."""
    if not data:
        return ""
    line = (f"winner timed end to end: {data['measured_ms']:.4g} ms against {data['predicted_ms']:.4g} ms "
            f"{data['mode']} ({data['measured_ms'] / data['predicted_ms'] - 1:+.1%})")
    budget = data.get("budget_ms")
    if budget:
        line += (f"; within the {budget:g} ms budget" if data["measured_ms"] <= budget
                 else f"; OVER the {budget:g} ms budget: the prediction was wrong for it")
    return line


def _breakdown(c: dict[str, int]) -> str:
    """Each finished trial in exactly one category; the first five add up to the trials counted."""
    invalid = f"{c['invalid']} invalid genomes, " if c["invalid"] else ""
    screened = (f"; {c['zero_cost']} genomes scored zero-cost ahead of training (not counted)"
                if c["zero_cost"] else "")
    return (f"{c['feasible']} feasible, {c['infeasible']} over budget, {invalid}{c['failed']} failed, "
            f"{c['pruned']} pruned; {c['duplicates']} duplicates (earlier results reused, not counted){screened}")


def trial_counts(trials: list[FrozenTrial]) -> dict[str, int]:
    """``trials`` (those counted toward ``--trials``) split into feasible, infeasible, invalid, failed and
    pruned; beside them, duplicates, interrupted or surplus trials (void) and the zero-cost stage's screening
    evaluations, which do not count."""
    kinds = {"feasible": 0, "infeasible": 0, "invalid": 0, "failed": 0, "pruned": 0, "duplicates": 0,
             "interrupted": 0, "zero_cost": 0}
    for t in trials:
        kind = _kind(t)
        if kind is not None:
            kinds[kind] += 1
    return {"trials": counted(trials), **kinds}


def _kind(t: FrozenTrial) -> str | None:
    if t.state not in FINISHED:
        return None
    if is_void(t):
        return "interrupted"
    if is_duplicate(t):
        return "duplicates"
    if is_screening(t):
        return "zero_cost"
    if t.state == TrialState.COMPLETE:
        return "feasible" if t.user_attrs.get("feasible") else "infeasible"
    if t.state == TrialState.PRUNED:
        return "pruned"
    return "invalid" if is_invalid(t) else "failed"


def _genome(space: dict[str, Any], trial: FrozenTrial) -> Genome | None:
    try:
        data = genome_data(space, params_picker(trial.params))
        data["name"] = f"{data.get('name', 'genome')}_trial{trial.number}"
        return parse_genome(data)
    except (GenomeError, KeyError):
        return None


def pareto_trials(trials: list[FrozenTrial], directions: list[optuna.study.StudyDirection]) -> list[FrozenTrial]:
    """Feasible, evaluated once (duplicates left out), and dominated by no other such trial."""
    pool = [t for t in trials if is_result(t) and "duplicate_of" not in t.user_attrs]
    front = [t for t in pool if not any(dominates(o.values, t.values, directions) for o in pool)]
    seen: set[tuple] = set()
    unique = []
    for t in sorted(front, key=lambda t: [-v if d == optuna.study.StudyDirection.MAXIMIZE else v
                                          for v, d in zip(t.values, directions)]):
        key = tuple(t.values)
        if key not in seen:
            seen.add(key)
            unique.append(t)
    return unique


def _state(trial: FrozenTrial) -> str:
    if trial.state == TrialState.COMPLETE:
        if "duplicate_of" in trial.user_attrs:
            return "duplicate"
        return "feasible" if trial.user_attrs.get("feasible") else "over_budget"
    if is_void(trial):
        return SURPLUS if str(trial.user_attrs["failure"]).startswith(SURPLUS) else "interrupted"
    if "duplicate_of" in trial.user_attrs:
        return "duplicate"
    return "invalid" if is_invalid(trial) else trial.state.name.lower()


# A cell starting with one of these runs as a formula in a spreadsheet (CSV injection).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    """``value`` as a CSV cell a spreadsheet shows as written: text that would run as a formula (a failure
    message quotes the user's space, a user attribute is anyone's) gets a leading ``'``, as OWASP advises;
    numbers, negative ones too, stay numbers."""
    return f"'{value}" if isinstance(value, str) and value.startswith(_FORMULA_STARTS) else value


def write_trials_csv(path: Path, trials: list[FrozenTrial], multi: bool) -> None:
    extra = sorted({f"score_{k}" for t in trials for k in t.user_attrs.get("scores", {})})
    columns = ["number", "state", "stage", "genome_hash", "params", "flops", "latency_ms", "score",
               *(["second"] if multi else []), *extra, "duplicate_of", "failure", "duration",
               *(f"t_{p}" for p in PHASES)]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for t in trials:
            attrs = t.user_attrs
            values = list(t.values) if t.values else []
            row = {"number": t.number, "state": _state(t), "score": values[0] if values else "",
                   "second": values[1] if len(values) > 1 else "", **attrs,
                   **{f"score_{k}": v for k, v in attrs.get("scores", {}).items()},
                   **{f"t_{k}": v for k, v in attrs.get("seconds", {}).items()}}
            if attrs.get("estimated"):
                row["score"] = ""  # never built: no score to report
            writer.writerow(["" if row.get(c) is None else _cell(row.get(c, "")) for c in columns])


def _plot(path: Path, trials: list[FrozenTrial], front: list[FrozenTrial], options: Any,
          references: list[GenomeScore]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    # a space file's or a reference's name is the user's text: a "$" in it would be read as mathtext, and a
    # name that is no valid math failed the plot, and with it the report, at every try
    with matplotlib.rc_context({"text.parse_math": False}):
        _draw(path, trials, front, options, references)


def _draw(path: Path, trials: list[FrozenTrial], front: list[FrozenTrial], options: Any,
          references: list[GenomeScore]) -> None:
    import matplotlib.pyplot as plt

    show_flops = options.second != "flops" and options.flops_budget is not None
    fig, axes = plt.subplots(1, 2 if show_flops else 1, figsize=(12 if show_flops else 7, 4.5), dpi=110,
                             squeeze=False)
    ax = axes[0][0]
    built = [t for t in trials if is_result(t) and "duplicate_of" not in t.user_attrs]
    over = [t for t in trials if t.state == TrialState.COMPLETE and not t.user_attrs.get("feasible")
            and not is_screening(t)
            and not t.user_attrs.get("estimated") and "duplicate_of" not in t.user_attrs]
    unit = SECOND_UNITS[options.second]
    scored = [r for r in references if r.score is not None]
    if options.multi_objective:
        ax.scatter([t.values[1] for t in built], [t.values[0] for t in built], s=14, c="tab:blue", alpha=0.6,
                   label="feasible")
        if over:
            ax.scatter([t.values[1] for t in over], [t.values[0] for t in over], s=14, c="tab:gray",
                       marker="x", label="over the latency budget")
        ax.plot([t.values[1] for t in front], [t.values[0] for t in front], "o-", c="tab:red", ms=5,
                label="Pareto front")
        budget = {"latency": options.latency_budget_ms, "flops": (options.flops_budget or 0) / 1e9 or None,
                  "params": (options.params_budget or 0) / 1e6 or None}[options.second]
        if budget:
            ax.axvline(budget, c="k", ls="--", lw=1, label=f"budget {budget:g} {unit}")
        placed = [(x, r) for x, r in ((second_value(r, options.second), r) for r in scored) if x is not None]
        xs = [t.values[1] for t in built + over if t.values[1] > 0] + [x for x, _ in placed if x > 0]
        if xs and max(xs) / min(xs) > 30:
            ax.set_xscale("log")
        _mark_references(ax, placed)
        ax.set_xlabel(f"{options.second} ({unit})")
    else:
        numbers = [t.number for t in built]
        ax.scatter(numbers, [t.values[0] for t in built], s=14, c="tab:blue", alpha=0.6, label="feasible")
        best, running = -math.inf, []
        for t in built:
            best = max(best, t.values[0])
            running.append(best)
        ax.step(numbers, running, where="post", c="tab:red", label="best so far")
        for i, r in enumerate(sorted(scored, key=lambda r: r.score)):  # no trial to place it at: a level line
            ax.axhline(r.score, c="tab:green", ls=":", lw=1, label="reference architectures" if i == 0 else None)
            ax.annotate(r.name, (0.01 + 0.5 * (i % 2), r.score), xycoords=("axes fraction", "data"), fontsize=7,
                        c="tab:green", va="bottom")  # alternating sides: close scores do not overwrite
        ax.set_xlabel("trial")
    if show_flops:
        right = axes[0][1]
        right.scatter([t.user_attrs["flops"] / 1e9 for t in built], [t.values[0] for t in built], s=14,
                      c="tab:blue", alpha=0.6, label="built (within budget)")
        unbuilt = [t.user_attrs["flops"] / 1e9 for t in trials if t.user_attrs.get("estimated")]
        if unbuilt:
            low = min([t.values[0] for t in built], default=0.0)
            right.scatter(unbuilt, [low] * len(unbuilt), s=14, c="tab:gray", marker="|",
                          label="over budget, never built")
        right.axvline(options.flops_budget / 1e9, c="k", ls="--", lw=1, label=f"budget {options.budget}")
        _mark_references(right, [(r.flops / 1e9, r) for r in scored])
        right.set_xlabel("GFLOPs (analytic)")
        right.set_ylabel("score" if options.objective != "train" else "val accuracy")
        right.grid(alpha=0.3)
        right.legend(fontsize=8)
    ax.set_ylabel("score" if options.objective != "train" else "val accuracy")
    budgets = ", ".join(b for b in (f"FLOPs <= {options.budget}" if options.budget else "",
                                    f"params <= {options.params}" if options.params else "",
                                    f"latency <= {options.latency}" if options.latency else "") if b)
    ax.set_title(f"{options.space}: {len(built)} feasible genomes" + (f" ({budgets})" if budgets else ""),
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _mark_references(ax: Any, placed: list[tuple[float, GenomeScore]]) -> None:
    """Reference architectures as labelled stars at (x, score)."""
    if not placed:
        return
    ax.scatter([x for x, _ in placed], [r.score for _, r in placed], s=110, marker="*", c="tab:green",
               edgecolors="k", linewidths=0.5, zorder=3, label="reference architectures")
    for x, r in placed:  # labels of points in the right part of the plot go to their left, inside it
        right = ax.transAxes.inverted().transform(ax.transData.transform((x, r.score)))[0] > 0.6
        ax.annotate(r.name, (x, r.score), xytext=(-5 if right else 5, 3), textcoords="offset points", fontsize=7,
                    ha="right" if right else "left")


def _importances(trials: list[FrozenTrial], directions) -> dict[str, float] | str:
    pool = [t for t in trials if is_result(t) and "duplicate_of" not in t.user_attrs]
    if len(pool) < 4:
        return f"too few feasible trials ({len(pool)}) to estimate importances"
    try:
        scratch = optuna.create_study(directions=directions)
        scratch.add_trials(pool)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # PED-ANOVA reads low targets as good: the score is maximised, so it is negated
            found = optuna.importance.get_param_importances(scratch, target=lambda t: -t.values[0])
        return {name: value for name, value in found.items() if value > 0}
    except Exception as err:  # noqa: BLE001 - importances are a nicety; say why they are missing
        return f"not available: {type(err).__name__}: {err}"


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or value == "":
        return "-"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def write_report(run_dir: str | Path) -> SearchResult:
    """Rebuild every result file of ``run_dir`` from its storage; returns what ``nas.search`` returns. Each file
    is replaced whole, so an interrupted rebuild leaves the previous files, never half of one."""
    run_dir = Path(run_dir)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    options, space = read_run(run_dir)
    study = open_study(run_dir, options)
    trials = study.get_trials(deepcopy=False)
    directions = study.directions
    front = pareto_trials(trials, directions)
    counts = trial_counts(trials)
    references = read_references(run_dir)

    def point(t: FrozenTrial) -> ParetoPoint | None:
        genome = _genome(space, t)
        if genome is None:
            return None
        return ParetoPoint(t.number, genome, t.values[0], t.values[1] if len(t.values) > 1 else None,
                           t.user_attrs.get("flops", 0), t.user_attrs.get("params", 0),
                           t.user_attrs.get("latency_ms"))

    points = [p for p in map(point, front) if p is not None]
    feasible = [t for t in trials if is_result(t) and "duplicate_of" not in t.user_attrs]
    best_trial = max(feasible, key=lambda t: t.values[0]) if feasible else None
    best = point(best_trial) if best_trial else None

    files = [run_dir / "trials.csv"]
    with _replacing(files[0]) as tmp:
        write_trials_csv(tmp, trials, options.multi_objective)
    files += _write_pareto(run_dir / "pareto", points, options)
    if best is not None:
        _write_genome(run_dir / "best.yaml", best, options)
        with _replacing(run_dir / "best_model.py") as tmp:
            export_model(best.genome, tmp)
        files += [run_dir / "best.yaml", run_dir / "best_model.py"]
    else:
        for stale in ("best.yaml", "best_model.py"):
            (run_dir / stale).unlink(missing_ok=True)
    with _replacing(run_dir / "pareto.png") as tmp:
        _plot(tmp, trials, front, options, references.references)
    files.append(run_dir / "pareto.png")
    winner_latency = read_winner_latency(run_dir, best)
    write_atomic(run_dir / "report.md", _markdown(run_dir, options, space, trials, points, best, counts,
                                                  _importances(trials, directions), references,
                                                  study.user_attrs.get(SCREEN_ATTR), winner_latency,
                                                  study.user_attrs.get(OBJECTIVE_ATTR)))
    files.append(run_dir / "report.md")
    if (run_dir / REFERENCES_FILE).is_file():
        files.append(run_dir / REFERENCES_FILE)
    return SearchResult(run_dir, points, best, counts, options.second, files, references.references,
                        winner_latency)


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write; it replaces ``path`` only once written in full."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_pareto(folder: Path, points: list[ParetoPoint], options: Any) -> list[Path]:
    """The front's genomes, written to a new folder that then takes the old one's place."""
    fresh = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir()
    try:
        for p in points:
            _write_genome(fresh / f"trial{p.number:04d}.yaml", p, options)
        old = folder.with_name(f".{folder.name}.{os.getpid()}.old")
        if folder.exists():
            os.replace(folder, old)
        os.replace(fresh, folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
    return [folder / f"trial{p.number:04d}.yaml" for p in points]


def _write_genome(path: Path, p: ParetoPoint, options: Any) -> None:
    second = f", {options.second} {p.second:.4g} {SECOND_UNITS[options.second]}" if p.second is not None else ""
    header = (f"# trial {p.number}: score {p.score:.4g}{second}; {format_count(p.flops)}FLOPs, "
              f"{format_count(p.params)} params; hash {p.genome.content_hash()}\n")
    write_atomic(path, header + dump_genome(p.genome))


def _cascade_section(space: dict[str, Any], trials: list[FrozenTrial], screened: dict[str, Any], seed: int,
                     first_stage: str) -> list[str]:
    """What each stage of the cascade saw, and how far its surrogate can be trusted in this run."""
    stages: dict[str, int] = {}
    for t in trials:
        if t.state in FINISHED and not is_duplicate(t) and "stage" in t.user_attrs and "estimated" not in t.user_attrs:
            stages[t.user_attrs["stage"]] = stages.get(t.user_attrs["stage"], 0) + 1
    summary = surrogate_summary(space, trials, first_stage, seed)
    tau, interval = summary["held_out_tau"], summary["held_out_interval"]
    lines = ["## Cascade", "", "| stage | genomes | cost each |", "|---|---|---|",
             f"| screen (data-free: analytic cost, structural score, the objective's data-free part) | "
             f"{screened['drawn']:,} drawn, "
             f"{screened['within_budget']:,} distinct within budget | "
             f"{1000 * screened['seconds'] / max(screened['drawn'], 1):.1f} ms |"]
    for stage, n in stages.items():
        at_stage = [t for t in trials if t.user_attrs.get("stage") == stage]
        built = [sum(t.user_attrs["seconds"].values()) for t in at_stage if "build" in t.user_attrs.get("seconds", {})]
        each = f"{sum(built) / len(built):.2f} s" if built else "-"
        timed = ", timed" if any("latency_ms" in t.user_attrs for t in at_stage) else ""
        ahead = ", ahead of training" if any(map(is_screening, at_stage)) else ""
        lines.append(f"| {stage} (built, scored{timed}{ahead}) | {n} | {each} |")
    names = summary["zero_cost_features"]
    features = ("choices and data-free costs" if not names else "choices, data-free costs and zero-cost scores"
                + (" and inherited accuracy with the supernet" if INHERITED in names else ""))
    source = "the genomes the zero-cost stage scored" if names else "the screened genomes"
    model = (f"the score's data-free part, known exactly, plus a random forest on the genome's {features} for "
             "the rest" if summary["knows_data_free"] else f"a random forest on the genome's {features}")
    if names:
        model += ("; over all the results it keeps, as ranking them better held out, a line in the objective's "
                  "value plus a forest on what the line leaves" if summary["follows_objective"] else
                  "; over all the results it keeps it, as ranking them better held out than a line in the "
                  "objective's value")
    lines += ["", f"The surrogate ({model}) picked "
                  f"{summary['surrogate_picks']} of the {first_stage} trials; the others were uniform picks from "
                  f"{source}. Its held-out Kendall tau over the {summary['results']} results (each predicted by "
                  f"{'the model' if summary['follows_objective'] else 'the trees'} fitted without it): "
                  + (f"**{tau:+.2f}**" if tau is not None else "not measured (too few distinct results)")
                  + (f", 95% bootstrap interval {interval[0]:+.2f} to {interval[1]:+.2f}" if interval else "")
                  + " (1: it ranks the genomes it did not see as they scored; 0: no better than chance)."
                  + (" A result is read at the long schedule's end where the genome was promoted there, else at "
                     "its highest rung plus the median gain from that rung to the end." if summary["across_rungs"]
                     else ""), ""]
    single = summary["single_taus"]
    if single:
        scores = {name: t for name, t in single.items() if name != "score"}
        parts = ([f"the objective's value ranks them at {single['score']:+.2f}"] if "score" in single else []) + (
            [f"the best single zero-cost score, picked in hindsight, {max(scores, key=scores.get)}, at "
             f"{max(scores.values()):+.2f}"] if scores else [])
        lines += ["Over the same results, with nothing fitted: " + "; ".join(parts) + ". A surrogate below these "
                  "adds nothing to them yet.", ""]
    if summary["ranked_with_objective"]:
        lines += [f"{summary['ranked_with_objective']} promotions from the first stage were chosen by the mean of "
                  "two ranks: the first-stage accuracy and the objective's value at the zero-cost stage.", ""]
    return lines


def _markdown(run_dir: Path, options: Any, space: dict[str, Any], trials: list[FrozenTrial],
              points: list[ParetoPoint], best: ParetoPoint | None, counts: dict[str, int],
              importances: dict[str, float] | str, references: Scored, screened: dict[str, Any] | None = None,
              winner_latency: dict[str, Any] | None = None, objective: dict[str, str] | None = None) -> str:
    unit = SECOND_UNITS[options.second]
    found = choices(space)
    lines = [f"# Search report: {markdown.code(run_dir.name)}", "",
             f"- space: {markdown.code(options.space)} ({len(found)} choices, {space_size(space):.3g} genomes), input "
             f"{_fmt(space.get('input', {}).get('resolution'))} px, {space.get('num_classes')} classes",
             "- budgets: " + markdown.text(f"FLOPs {options.budget or 'none'}, params {options.params or 'none'}, "
                                           f"latency {options.latency or 'none'}"),
             f"- objective: {options.objective} (maximised)" + (f"; second: {options.second} in {unit} (minimised)"
                                                               if options.multi_objective else ""),
             *([f"- {'proxy objective' if options.objective == 'proxy' else 'zero-cost stage'}: "
                f"{describe_objective(objective)}"] if objective else []),
             f"- sampler {options.sampler}, seed {options.seed}, device {options.device}, latency "
             f"{options.latency_mode} ({options.latency_repeats} repeats)",
             f"- trials: {counts['trials']} of {options.trials} ({_breakdown(counts)}; "
             f"{counts['interrupted']} interrupted or surplus, replaced)", ""]
    durations = [t.user_attrs["seconds"] for t in trials if "build" in t.user_attrs.get("seconds", {})]
    if durations:
        means = {p: sum(a.get(p, 0) for a in durations) / len(durations) for p in PHASES}
        lines += ["Mean seconds per built trial: " + ", ".join(f"{p} {means[p]:.3f}" for p in PHASES), ""]
    if screened:
        lines += _cascade_section(space, trials, screened, options.seed, STAGES[options.objective])
    failures: dict[str, int] = {}
    for t in trials:
        if t.state == TrialState.FAIL and not is_duplicate(t):
            reason = markdown.text(str(t.user_attrs.get("failure", "?"))[:120])
            failures[reason] = failures.get(reason, 0) + 1
    if failures:
        lines += ["## Failures", "", *(f"- {n}x {reason}" for reason, n in
                                       sorted(failures.items(), key=lambda item: -item[1])), ""]
    lines += ["## Pareto front" if options.multi_objective else "## Best", "",
              f"| trial | score | {options.second + ' (' + unit + ')' if options.multi_objective else 'latency'} "
              f"| GFLOPs | params (M) | genome |", "|---|---|---|---|---|---|"]
    for p in points:
        second = p.second if options.multi_objective else p.latency_ms
        lines.append(f"| {p.number} | {p.score:.4g} | {_fmt(second)} | {p.flops / 1e9:.3f} | "
                     f"{p.params / 1e6:.2f} | pareto/trial{p.number:04d}.yaml |")
    if winner_latency:
        lines += ["", winner_latency_line(winner_latency) + "."]
    lines += ["", "![Pareto front](pareto.png)", ""]
    lines += report_section(references, best, points, options, space)
    lines += ["## Parameter importances (score, feasible trials)", ""]
    if isinstance(importances, str):
        lines.append(importances)
    else:
        lines += ["| parameter | importance |", "|---|---|",
                  *(f"| {markdown.code(name, in_table=True)} | {value:.3f} |" for name, value in importances.items())]
    if best is not None:
        lines += ["", f"## Winner: trial {best.number} (best.yaml, best_model.py)", "",
                  "| part | blocks | output | params (M) | GFLOPs | share of FLOPs |", "|---|---|---|---|---|---|"]
        parts = stage_costs(best.genome)
        total = sum(part.cost.flops for part in parts) or 1
        for part in parts:
            lines.append(f"| {part.name} | {part.blocks or ''} | {'x'.join(map(str, part.out_shape))} | "
                         f"{part.cost.params / 1e6:.2f} | {part.cost.flops / 1e9:.3f} | "
                         f"{part.cost.flops / total:.1%} |")
        lines += ["", "Stages in `best.yaml`:", "", *markdown.fenced(dump_genome(best.genome).rstrip(), "yaml")]
        silent = (unweighed_descriptors(objective_terms(best.genome, {}), options.objective_fit)
                  if options.objective == "proxy" else [])
        if silent:
            lines += ["", f"The winner has what the proxy objective's corpora never held: "
                          f"{', '.join(f'`{name}`' for name in silent)}. Those terms are weighed 0, so its score "
                          "says nothing of them; `nas score best.yaml` shows how the score is made."]
    return "\n".join(lines) + "\n"
