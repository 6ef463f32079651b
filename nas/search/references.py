"""Published architectures as reference points in every run (DESIGN.md, principle 10).

When a search ends, zoo genomes (or those ``--references`` names) are retargeted to the run's input and class
count and scored exactly as a trial is: ``scoring.score_genome`` with the run's own ``TrialWork`` (objective,
inputs, device, latency). The scores are kept in ``RUN/references.json``, keyed by genome content hash,
objective and device, so ``nas report`` and ``--resume`` reuse them and never recompute them. The report lists
them beside the winner and marks them on ``pareto.png``.

``auto`` picks, among the zoo genomes still valid at the run's input, those within its analytic budgets (FLOPs,
params), nearest in FLOPs to what the run's genomes reach: the survey's largest feasible sample, which is the
FLOPs budget when it binds and the space's own reach when it does not (a tiny space under the default 4 GFLOPs
budget is set beside the S12 MetaFormers, not MLP-Mixer-B/16). When none fits, the few nearest the budget.
A reference costs about a trial, so auto scores at most one per ``TRIALS_PER_REFERENCE`` trials.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from nas.cost import Cost, analytic_cost
from nas.cost.budget import format_count
from nas.errors import GenomeError, InputError, did_you_mean, printable
from nas.genome import Genome, InputSpec
from nas.io import ZOO_PREFIX, load_genome, resolve, zoo_names
from nas.outputs import write_atomic
from nas.search import markdown
from nas.search.options import MOST_REFERENCES, TRIALS_PER_REFERENCE, SearchOptions
from nas.search.rundir import REFERENCES_FILE
from nas.search.scoring import GenomeScore, fit_genome, score_genome
from nas.search.trial import TrialWork, constraint_values, second_from_cost

NEAREST_FEW = 3  # auto: references when none fits the budget
AUTO, NONE = "auto", "none"
PENDING = "not scored yet: the run stopped first; `nas search --resume RUN` scores it"
TURNED_OFF = "Turned off with --references none."


@dataclass
class Reference:
    """An architecture to score beside the run's genomes: retargeted, or the reason it could not be."""

    name: str  # as the report shows it: the zoo name or file stem, with the input size when retargeted
    source: str  # zoo:NAME, or the file
    genome: Genome | None = None
    failure: str | None = None


@dataclass
class Selection:
    references: list[Reference]
    note: str  # how they were chosen, for the report


@dataclass
class Scored:
    """A run's references as ``references.json`` holds them."""

    references: list[GenomeScore]
    note: str | None = None  # how they were chosen; None: never scored (the run stopped first, or predates them)
    device: str | None = None


# --------------------------------------------------------------------------------------------------------------
# Choosing

def check_references(text: str) -> str:
    """``--references`` checked before any work (bad input, exit 2), files as absolute paths so that a resumed
    run finds them from anywhere. Not part of ``SearchOptions.check``: ``nas report`` reads run.yaml with it, and
    a reference file moved since must not make a finished run unreadable."""
    items = [item.strip() for item in str(text).split(",")]
    if items in ([AUTO], [NONE]):
        return items[0]
    kept: list[str] = []
    for item in items:
        if not item:
            raise InputError(f"--references {text}: an empty entry; give auto, none, or a comma list of "
                             f"zoo:NAME and genome YAML files")
        if item == NONE:
            raise InputError(f"--references {text}: 'none' turns references off and stands alone")
        if item == AUTO or item.startswith(ZOO_PREFIX):
            name = item[len(ZOO_PREFIX):]
            if item != AUTO and name not in zoo_names():
                raise InputError(f"--references: unknown zoo genome {name!r}{did_you_mean(name, zoo_names())}; "
                                 f"known: {', '.join(zoo_names())}")
            kept.append(item)
            continue
        if not Path(item).exists() and item in zoo_names():
            raise InputError(f"--references {item}: no such file (did you mean 'zoo:{item}'?)")
        try:
            load_genome(item)
        except InputError as err:
            problems = str(err).splitlines()
            count = len(err.problems) if isinstance(err, GenomeError) else len(problems)  # more than it lists
            more = f" (and {count - 1} more)" if count > 1 else ""
            where = "" if problems[0].startswith(item) else f"{item}: "
            raise InputError(f"--references {where}{problems[0]}{more}") from None
        kept.append(str(resolve(item).resolve()))
    return ",".join(dict.fromkeys(kept))


def retarget(genome: Genome, space: dict[str, Any]) -> Genome:
    """``genome`` at the space's input resolution, channels and class count; a ``GenomeError`` when it is no
    longer a valid genome there (a window that no longer divides its feature map, say)."""
    resolution = (space.get("input") or {}).get("resolution", genome.input.resolution)
    moved = genome.model_copy(update={"input": InputSpec(channels=genome.input.channels, resolution=resolution)})
    return fit_genome(moved, space)


def pick_references(space: dict[str, Any], options: SearchOptions, reach_flops: int | None = None
                    ) -> Selection:
    """The references of a run on ``space`` (data-fitted) with ``options``, retargeted to its input.
    ``reach_flops``: the most FLOPs the run's genomes reach (``Survey.largest_flops``), surveyed when not given."""
    items = [item for item in options.references.split(",") if item]
    if items == [NONE]:
        return Selection([], TURNED_OFF)
    picked: list[Reference] = []
    note = "As named with --references."
    if AUTO in items:
        if reach_flops is None:
            from nas.search.survey import survey

            reach_flops = survey(space, options).largest_flops
        auto, note = _auto(space, options, reach_flops)
        picked += auto
    named = [_named(item, space) for item in items if item != AUTO and all(ref.source != item for ref in picked)]
    if named and AUTO in items:
        note += f" Named with --references: {', '.join(ref.name for ref in named)}."
    return Selection(picked + named, note)


def _named(source: str, space: dict[str, Any]) -> Reference:
    """A reference the person named: one that cannot be read or retargeted is listed with the reason."""
    # a file's name goes into one line of the progress, the report's sentences and its table
    name = source[len(ZOO_PREFIX):] if source.startswith(ZOO_PREFIX) else printable(Path(source).stem)
    try:
        genome = load_genome(source)
    except InputError as err:
        return Reference(name, source, failure=str(err).splitlines()[0])
    try:
        return Reference(_shown_name(name, genome, space), source, retarget(genome, space))
    except GenomeError as err:
        return Reference(_shown_name(name, genome, space), source,
                         failure=f"not valid at this run's input: {_first_problem(err)}")


def _auto(space: dict[str, Any], options: SearchOptions, reach_flops: int | None) -> tuple[list[Reference], str]:
    res = _resolution_text(space)
    if options.objective == "supernet":
        return [], ("None picked (--references auto): the supernet objective scores a genome with the supernet's "
                    "weights, and a zoo genome outside its space has none.")
    valid: list[tuple[Reference, Cost]] = []
    invalid: list[str] = []
    for name in zoo_names():
        genome = load_genome(f"{ZOO_PREFIX}{name}")
        try:
            moved = retarget(genome, space)
        except GenomeError:
            invalid.append(name)
            continue
        valid.append((Reference(_shown_name(name, genome, space), f"{ZOO_PREFIX}{name}", moved),
                      analytic_cost(moved)))
    anchor = reach_flops or options.flops_budget
    fitting = [(ref, cost) for ref, cost in valid if _excess(options, cost) == 0]
    room = max(1, options.trials // TRIALS_PER_REFERENCE)
    skipped = f" Not valid at {res}: {', '.join(invalid)}." if invalid else ""
    if fitting:
        fitting.sort(key=lambda item: (_distance(item[1].flops, anchor), item[0].name))
        chosen = fitting[:min(MOST_REFERENCES, room)]
        which = (f"the {len(chosen)} zoo genome{'s' if len(chosen) > 1 else ''}" if len(chosen) == len(fitting)
                 else f"{len(chosen)} of the {len(fitting)} zoo genomes")
        near = (f", nearest in FLOPs to this run's largest genomes ({format_count(anchor)}FLOPs) first"
                if anchor else ", the smallest first")
        return [ref for ref, _ in chosen], (
            f"Picked by auto: {which} that fit the budget at {res}{near}; at most {MOST_REFERENCES}, and one per "
            f"{TRIALS_PER_REFERENCE} trials, as a reference costs about a trial.{skipped}")
    valid.sort(key=lambda item: (_excess(options, item[1]), _distance(item[1].flops, anchor), item[0].name))
    chosen = valid[:min(NEAREST_FEW, room)]
    these = "this is the nearest one" if len(chosen) == 1 else f"these are the {len(chosen)} nearest"
    return [ref for ref, _ in chosen], (
        f"Picked by auto: no zoo genome fits the budget at {res}; {these}.{skipped}")


def _excess(options: SearchOptions, cost: Cost) -> float:
    """How far over the analytic budgets, as a sum of log ratios: 0 within them."""
    return sum(math.log1p(max(v, 0.0)) for v in constraint_values(options, cost, None).values())


def _distance(flops: int, anchor: int | None) -> float:
    return abs(math.log(max(flops, 1) / anchor)) if anchor else float(flops)


def _shown_name(name: str, genome: Genome, space: dict[str, Any]) -> str:
    target = InputSpec(resolution=(space.get("input") or {}).get("resolution", genome.input.resolution))
    return name if target.resolution == genome.input.resolution else f"{name} @{_resolution_text(space, 'px')}"


def _resolution_text(space: dict[str, Any], unit: str = " px") -> str:
    height, width = InputSpec(resolution=(space.get("input") or {}).get("resolution", 224)).resolution
    return f"{height}{unit}" if height == width else f"{height}x{width}{unit}"


def _first_problem(err: GenomeError) -> str:
    return str(err.problems[0]) if err.problems else str(err)


# --------------------------------------------------------------------------------------------------------------
# Scoring, once per run directory

def score_references(run_dir: Path, space: dict[str, Any], options: SearchOptions, work: TrialWork,
                     reach_flops: int | None, say: Callable[[str], None]) -> list[GenomeScore]:
    """Pick the run's references, score those ``references.json`` does not hold yet (each written as soon as it
    is scored, so Ctrl-C loses at most the one under way) and return them in the report's order. A reference
    that fails (an exception, a NaN, out of memory) is returned with its reason; it never fails the run."""
    path = run_dir / REFERENCES_FILE
    stored = _read(path)
    scores: dict[str, dict[str, Any]] = stored["scores"] if stored else {}
    if options.references == NONE and stored is None:
        return []
    selection = pick_references(space, options, reach_flops)
    keys = {id(ref): _key(ref.genome, options, work.device) for ref in selection.references if ref.genome}
    todo = [ref for ref in selection.references if ref.genome is not None and keys[id(ref)] not in scores]
    _write(path, selection, keys, scores, options, work.device)
    if todo:
        say(f"scoring {len(todo)} reference architecture{'s' if len(todo) > 1 else ''} as the trials are "
            f"({options.objective} objective, device {work.device}) ...")
    for ref in todo:
        tick = time.perf_counter()
        try:
            result = score_genome(ref.genome, work)
        except Exception as err:  # noqa: BLE001 - a reference that fails is reported, the run goes on
            result = GenomeScore(ref.name, options.objective, None, failure=f"{type(err).__name__}: {err}"[:300])
        seconds = time.perf_counter() - tick
        scores[keys[id(ref)]] = {**result.as_dict(), "name": ref.name, "seconds": round(seconds, 2)}
        _write(path, selection, keys, scores, options, work.device)
        say(f"  {ref.name}: {describe(result)} ({seconds:.1f}s)")
    return read_references(run_dir).references


def _key(genome: Genome, options: SearchOptions, device: str) -> str:
    return f"{genome.content_hash()}:{options.objective}:{device}"


def _write(path: Path, selection: Selection, keys: dict[int, str], scores: dict[str, Any],
           options: SearchOptions, device: str) -> None:
    shown = []
    for ref in selection.references:
        entry: dict[str, Any] = {"name": ref.name, "source": ref.source, "key": keys.get(id(ref))}
        if ref.genome is None:
            entry["failure"] = ref.failure
        else:
            cost = analytic_cost(ref.genome)
            entry.update(params=cost.params, flops=cost.flops)
        shown.append(entry)
    data = {"objective": options.objective, "second": options.second, "device": device, "note": selection.note,
            "shown": shown, "scores": scores}
    text = json.dumps(data, indent=1) + "\n"
    if not path.is_file() or path.read_text() != text:  # a resume with nothing new leaves the file as it was
        write_atomic(path, text)


def _read(path: Path) -> dict[str, Any] | None:
    """The file's contents; a damaged one is as good as none (its scores are recomputed, never trusted)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("scores"), dict):
        return None
    return data


def read_references(run_dir: Path) -> Scored:
    """The references of a run as its last scoring left them, in the report's order."""
    data = _read(Path(run_dir) / REFERENCES_FILE)
    if data is None:
        return Scored([])
    names = {f.name for f in fields(GenomeScore)}
    out = []
    for entry in data.get("shown", []):
        stored = data["scores"].get(entry.get("key"))
        if stored is not None:
            out.append(GenomeScore(**{k: v for k, v in stored.items() if k in names} | {"name": entry["name"]}))
        else:
            out.append(GenomeScore(entry["name"], data.get("objective", ""), None, params=entry.get("params", 0),
                                   flops=entry.get("flops", 0), second=data.get("second", "none"),
                                   failure=entry.get("failure") or PENDING))
    return Scored(out, data.get("note"), data.get("device"))


# --------------------------------------------------------------------------------------------------------------
# Showing

def second_value(score: GenomeScore, second: str) -> float | None:
    """The reference's second objective in the unit the trials' is stored in (``SECOND_UNITS``)."""
    if second == "latency":
        return score.latency_ms
    return second_from_cost(second, Cost(score.params, 0, score.flops))


def describe(score: GenomeScore) -> str:
    if score.score is None:
        return f"failed: {score.failure}"
    latency = f", {score.latency_ms:.3g} ms" if score.latency_ms is not None else ""
    return f"score {score.score:.4g}{latency}, {format_count(score.flops)}FLOPs, {format_count(score.params)} params"


def report_section(scored: Scored, best: Any, front: list[Any], options: SearchOptions, space: dict[str, Any]
                   ) -> list[str]:
    """The report's "Reference architectures" section (markdown lines); ``best`` and ``front`` are the run's
    winner and Pareto points (``ParetoPoint``s), ``best`` None when nothing feasible was found."""
    references, note = scored.references, scored.note
    if note is None:
        if options.references == NONE:
            return []
        return ["## Reference architectures", "", "Not scored yet: the run stopped before them; "
                "`nas search --resume RUN` scores them (no new trials needed).", ""]
    if not references:
        return ["## Reference architectures", "", markdown.text(note), ""]
    classes, channels = space.get("num_classes"), (space.get("input") or {}).get("channels", 3)
    latency = any(r.latency_ms is not None for r in references)
    lines = ["## Reference architectures", "",
             f"Published architectures retargeted to this run's input ({channels} channels, "
             f"{_resolution_text(space)}, {classes} classes) and scored as a trial is: {options.objective} objective "
             f"on the trials' inputs, device {scored.device}" + (", latency measured the same way" if latency else "")
             + f". {markdown.text(note)}", ""]
    multi = options.multi_objective
    head = ["reference", "score", *(["latency (ms)"] if latency else []), "GFLOPs", "params (M)", "within budget"]
    if best is not None:
        head.append(f"winner (trial {best.number}) beats it")
    if multi and front:
        head.append("dominated by the front")
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for ref in references:
        row = [markdown.code(ref.name, in_table=True),
               f"{ref.score:.4g}" if ref.score is not None else markdown.cell(f"failed: {ref.failure}"),
               *([f"{ref.latency_ms:.3g}" if ref.latency_ms is not None else "-"] if latency else []),
               f"{ref.flops / 1e9:.3f}" if ref.flops else "-", f"{ref.params / 1e6:.2f}" if ref.params else "-",
               _within(ref, options)]
        if best is not None:
            row.append("-" if ref.score is None else
                       f"{'yes' if best.score > ref.score else 'no'} ({best.score - ref.score:+.3g})")
        if multi and front:
            row.append("-" if ref.score is None else "yes" if _dominated(ref, front, options.second) else "no")
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    ranked = sorted((r for r in references if r.score is not None), key=lambda r: -r.score)
    if best is None:
        lines.append("No feasible genome yet to compare with them.")
    elif ranked:
        ahead = [markdown.code(r.name) for r in ranked if r.score >= best.score]
        where = f"behind {', '.join(ahead)}" if ahead else "ahead of every one"
        lines.append(f"Against the {len(ranked)} scored reference{'s' if len(ranked) > 1 else ''}, the winner "
                     f"(trial {best.number}, score {best.score:.4g}) ranks {_ordinal(len(ahead) + 1)} of "
                     f"{len(ranked) + 1} by score: {where}.")
    else:
        lines.append("No reference could be scored; the reasons are in the table.")
    return lines + [""]


def _within(ref: GenomeScore, options: SearchOptions) -> str:
    if not ref.flops:
        return "-"
    over = [name for name, v in constraint_values(options, Cost(ref.params, 0, ref.flops),
                                                  ref.latency_ms).items() if v > 0]
    return "yes" if not over else "no: " + ", ".join(over)


def _dominated(ref: GenomeScore, front: list[Any], second: str) -> bool:
    """Some Pareto point scores at least as high and costs at most as much, better in one of the two."""
    cost = second_value(ref, second)
    if cost is None:
        return False
    return any(p.second is not None and p.score >= ref.score and p.second <= cost
               and (p.score > ref.score or p.second < cost) for p in front)


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def summary_line(references: list[GenomeScore], best: Any) -> str:
    """One line for the end of a run: how the winner stands against the references."""
    scored = [r for r in references if r.score is not None]
    if not scored:
        return f"references: none of {len(references)} could be scored (report.md says why)" if references else ""
    top = max(scored, key=lambda r: r.score)
    text = f"best reference {top.name}, score {top.score:.4g}"
    if best is None:
        return f"references: {text}"
    beaten = sum(best.score > r.score for r in scored)
    return f"references: the winner beats {beaten} of {len(scored)} on the score ({text})"
