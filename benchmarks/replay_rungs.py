"""Successive halving with a middle rung: ``benchmarks/replay.py``'s ``cascade-shortlist`` (the cascade of
``nas search --objective train``) replayed with its promotions stopping at the rungs given (the long run's
recorded epochs; ``replay.Ladder``) and each rate, with and without the objective's value as a feature of the
training stage (fitted on the other folds of genomes, as ``cascade-shortlist-scored``). Every seed's cost to a
top-5% genome is appended to ``rungs.jsonl`` as it is replayed, so an interrupted run resumes where it stopped;
the table is made from the file: per cell the median over seeds (quartiles) and random's exact median over it.

Seeds 0-9 chose the cells worth a longer look; the table reads seeds 10 and on apart from them, so that a cell
is not judged on the seeds that picked it (``--choosing`` prints seeds 0-9). First stages of 4 and 6 epochs were
tried on seeds 0-9 only (``UNCHOSEN``). The surrogate fitted on the first stage alone is ``nas search`` before
2026-12-04, measured beside its successor on every seed.

    python benchmarks/replay_rungs.py --tasks digits --seeds 40      # appends; then --table
    python benchmarks/replay_rungs.py --table
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent))
import replay as R  # noqa: E402  (first: it orders sys.path so that nas's runners package is found)

OUT = R.ROOT / "benchmarks" / "results" / "replay" / "rungs.jsonl"
# Until 2026-12-04 12:30 the surrogate's rows came in the order of rung_targets' dict, not of the first stages:
# the same algorithm, another draw of the forest's bootstrap. --out re-runs the chosen cells in the search's order.
CONFIRM = [((3, 12), 3, True), ((3, 6, 12), 3, True)]
# (rungs, rate, the surrogate fitted across rungs (rung_targets) or on the first stage alone)
CELLS = [((3, 12), 3, True), ((3, 6, 12), 3, True), ((3, 12), 2, True), ((3, 6, 12), 2, True), ((4, 12), 3, True),
         ((6, 12), 3, True), ((3, 12), 3, False)]
SCORES = {"search's features": None, "and the objective's value": "genomes"}
CHOSEN_ON = 10  # seeds below this chose the cells
# Cells added after the first look, run on the choosing seeds only: not better there, not run further
UNCHOSEN = {((4, 12), 3, True), ((6, 12), 3, True)}


def key(task: str, rungs: tuple[int, ...], rate: int, across: bool, score: str | None, seed: int) -> str:
    return f"{task}/{','.join(map(str, rungs))}/{rate}/{across}/{score}/{seed}"


def done(out: Path = OUT) -> dict[str, dict]:
    if not out.exists():
        return {}
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    return {key(r["task"], tuple(r["rungs"]), r["rate"], r.get("across_rungs", True), r["score"], r["seed"]): r
            for r in rows}


def run(tasks: list[str], seeds: int, out: Path = OUT) -> None:
    corpus = R.read_corpus("tiny", truth="seeds")
    have = done(out)
    cells = CELLS if out == OUT else CONFIRM
    with out.open("a") as f:
        for name in tasks:
            task = corpus.task(name)
            for seed in range(CHOSEN_ON if out != OUT else 0, seeds):
                for rungs, rate, across in cells:
                    if seed >= CHOSEN_ON and (rungs, rate, across) in UNCHOSEN:
                        continue
                    for score in SCORES.values():
                        if key(name, rungs, rate, across, score, seed) in have:
                            continue
                        trace = R.replay_shortlist(task, seed, R.REPLAY_TREES, rate=rate, rungs=rungs, score=score,
                                                   across_rungs=across, promote_by_score=False)  # as recorded
                        row = {"task": name, "rungs": list(rungs), "rate": rate, "across_rungs": across,
                               "score": score, "seed": seed,
                               "cost_to_top": trace.cost_to(task.top), "genomes": task.n, "top": len(task.top)}
                        f.write(json.dumps(row) + "\n")
                        f.flush()


def table(choosing: bool = False, out: Path = OUT) -> str:
    rows = list(done(out).values())
    lines = ["| task | rungs (epochs) | rate | surrogate fitted on | training stage reads | seeds | median cost to a "
             "top-5% genome (quartiles) | random's exact median / it |", "|---|---|---|---|---|---|---|---|"]
    for name in sorted({r["task"] for r in rows}):
        for rungs, rate, across in CELLS:
            for label, score in SCORES.items():
                costs = [r["cost_to_top"] for r in rows if r["task"] == name and tuple(r["rungs"]) == rungs
                         and r["rate"] == rate and r.get("across_rungs", True) == across and r["score"] == score
                         and (r["seed"] < CHOSEN_ON) == choosing]
                if not costs:
                    continue
                first = next(r for r in rows if r["task"] == name)
                random_cost = R.random_exact_median(first["genomes"], first["top"])
                cost, cell = R.median_cell(costs)
                fitted = "every rung" if across else "the first stage"
                lines.append(f"| {name} | {', '.join(map(str, rungs))} | {rate} | {fitted} | {label} | {len(costs)} "
                             f"| {cell} | "
                             f"{random_cost / cost:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="digits,patterns")
    parser.add_argument("--seeds", type=int, default=40)
    parser.add_argument("--table", action="store_true", help="print the table from rungs.jsonl and stop")
    parser.add_argument("--choosing", action="store_true", help="the table of the seeds that chose the cells")
    parser.add_argument("--out", type=Path, default=OUT, help="another file: the CONFIRM cells on seeds 10 and on")
    args = parser.parse_args()
    if not args.table:
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        warnings.filterwarnings("ignore")
        run(args.tasks.split(","), args.seeds, args.out)
    print(table(args.choosing, args.out))


if __name__ == "__main__":
    main()
