"""Which first-stage genomes to promote: ``benchmarks/replay.py``'s ``cascade-shortlist-scored`` (the cascade of
``nas search --objective train``, its training stage reading the objective's value) with promotion from the
first rung ordered three ways (``nas.search.cascade.first_rung_order``):

- ``accuracy``: by the first-stage accuracy alone (``nas search`` until 2026-12-04);
- ``agreement``: beside the objective's value, weighted by the run's own Kendall tau between the two (at most
  0.5);
- ``equal``: beside the objective's value at weight 0.5.

Each with the objective fitted on the other folds of genomes (``genomes``: a task it was fitted on, as the
corpus's tasks are for the shipped fits) and on the other task alone (``task``: a new task, as a user's data set
is). Seeds 40 and on: none of them chose anything before. The rule to keep was fixed before the run: the one with
the best geometric mean of random's exact median over its median cost, over the four task x objective cells, on
seeds 40-69 (``--seeds 30``); seeds 70-139 (``--seeds 100``) followed, and showed the three rules alike.
Every seed's cost to a top-5% genome is appended to ``promotion_order.jsonl`` as it is replayed (resumable).

A rule ``RULE-rate-N`` is ``RULE`` promoting the top 1 / N of a rung rather than its top third (``nas search
--reduction-factor N``). ``equal`` at rates 3 to 6 was looked at on seeds 140-169 (``--rules
equal,equal-rate-4,equal-rate-5,equal-rate-6 --first-seed 140 --seeds 30 --objectives genomes,task,none``): rate 5
cost less than rate 3 in all six cells; seeds 170 and on judge it (``--rules equal,equal-rate-5 --first-seed 170
--seeds 100``, then ``--table --rules equal,equal-rate-5 --from 170 --against equal``).

On 2026-12-05 the weight was also fitted within the run (``fitted``: ``replay.fitted_weight``) and fixed at 0.75
and 1 (``objective75``, ``objective``), and the short-list made to grow with the trainings (``-grow-G``:
``nas search --shortlist-growth``); chosen on seeds 320-349 (``--rules
equal-rate-5,objective75-rate-5,objective-rate-5,fitted-rate-5,equal-rate-5-grow-2,equal-rate-5-grow-5,equal-rate-5-grow-10
--first-seed 320 --seeds 30``), judged on seeds 350-449. A replay stops once a top genome is trained long (its
cost is then known); the table also gives the zero-cost scores made until then and the ratio with them paid for
at ``SCORING_COST``.

    python benchmarks/replay_promotion_order.py --tasks digits        # and patterns beside it; then --table
    python benchmarks/replay_promotion_order.py --table
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import warnings
from pathlib import Path

import numpy as np
import optuna
from scipy.stats import wilcoxon

sys.path.insert(0, str(Path(__file__).resolve().parent))
import replay as R  # noqa: E402  (first: it orders sys.path so that nas's runners package is found)

OUT = R.ROOT / "benchmarks" / "results" / "replay" / "promotion_order.jsonl"
FIRST_SEED = 40
RULES = {"accuracy": dict(promote_by_score=False), "agreement": dict(weight=None), "equal": dict(weight=0.5),
         "objective75": dict(weight=0.75), "objective": dict(weight=1.0), "fitted": dict(weight="fitted")}
# A zero-cost score in long trainings: in the real digits run of 2026-12-05 13:19 (--shortlist-growth 5) a
# zero-cost trial took 0.281 s (median, wall, its pick included) and a long training 22.33 s (a first stage's
# 5.79 s plus a promotion's 16.54 s; benchmarks/BENCHMARKS.md, "A real training cascade")
SCORING_COST = 0.281 / 22.33
OBJECTIVES = {"genomes": "fitted on the task", "task": "fitted on the other task", "none": "none (no --data)"}


def parse_rule(rule: str) -> tuple[str, int, int]:
    """A rule's order (one of ``RULES``), rate and growth: ``RULE`` promotes the top third, ``RULE-rate-N`` the
    top 1 / N; ``...-grow-G``: the short-list grows by G genomes per first stage (``replay_shortlist``'s
    ``grow``)."""
    rule, _, grow = rule.partition("-grow-")
    base, _, rate = rule.partition("-rate-")
    return base, int(rate or 3), int(grow or 0)


def rule_options(rule: str) -> dict:
    """``replay_shortlist``'s options for a rule."""
    base, rate, grow = parse_rule(rule)
    return {**RULES[base], "rate": rate, "grow": grow}


def rule_key(rule: str) -> tuple[int, int, int]:
    base, rate, grow = parse_rule(rule)
    return list(RULES).index(base), rate, grow


def present_objectives(rows: list[dict]) -> list[str]:
    """The kinds of ``OBJECTIVES`` the rows hold, in its order."""
    return [o for o in OBJECTIVES if any(r["objective"] == o for r in rows)]


def done(out: Path) -> dict[tuple, dict]:
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()] if out.exists() else []
    return {(r["task"], r["rule"], r["objective"], r["seed"]): r for r in rows}


def run(tasks: list[str], seeds: int, out: Path, rules: list[str], first_seed: int = FIRST_SEED,
        objectives: tuple[str, ...] = ("genomes", "task"), extra: tuple[Path, ...] = ()) -> None:
    corpus = R.read_corpus("tiny", truth="seeds", extra=extra)
    have = done(out)
    with out.open("a") as f:
        for name in tasks:
            task = corpus.task(name)
            for seed in range(first_seed, first_seed + seeds):
                for objective in objectives:
                    for rule in rules:
                        if (name, rule, objective, seed) in have:
                            continue
                        trace = R.replay_shortlist(task, seed, R.REPLAY_TREES,
                                                   score=None if objective == "none" else objective,
                                                   stop_at_top=True, **rule_options(rule))
                        f.write(json.dumps({"task": name, "rule": rule, "objective": objective, "seed": seed,
                                            "cost_to_top": trace.cost_to(task.top), "scorings": trace.scorings,
                                            "genomes": task.n,
                                            "top": len(task.top)}) + "\n")
                        f.flush()


def table(out: Path, rules: list[str], below: int | None = None, since: int = 0, against: str = "accuracy") -> str:
    """The rows of ``rules``, on the seeds that have every one of them (a run stopped part-way leaves some
    behind), so that the cells pair up."""
    rows = [r for r in done(out).values() if r["rule"] in rules and (below is None or r["seed"] < below)
            and r["seed"] >= since]
    have: dict[tuple, set] = {}
    for r in rows:
        have.setdefault((r["task"], r["objective"], r["seed"]), set()).add(r["rule"])
    rows = [r for r in rows if have[(r["task"], r["objective"], r["seed"])] == set(rules)]
    objectives = present_objectives(rows)
    lines = ["| promotion from the first rung | " + " | ".join(f"{t}, objective {OBJECTIVES[o]}" for t in
                                                               ("digits", "patterns") for o in objectives)
             + " | geometric mean of the ratios |", "|---" * (2 + 2 * len(objectives)) + "|"]
    for rule in sorted({r["rule"] for r in rows}, key=rule_key):
        cells, ratios = [], []
        for name in ("digits", "patterns"):
            for objective in objectives:
                found = [r for r in rows if r["task"] == name and r["rule"] == rule and r["objective"] == objective]
                if not found:
                    cells.append("")
                    continue
                cost, cell = R.median_cell([r["cost_to_top"] for r in found])
                ratio = R.random_exact_median(found[0]["genomes"], found[0]["top"]) / cost
                ratios.append(ratio)
                scored = ""
                if all("scorings" in r for r in found):  # and the ratio with the zero-cost scores paid for
                    paid, _ = R.median_cell([r["cost_to_top"] + SCORING_COST * r["scorings"] for r in found])
                    scored = (f", {statistics.median(r['scorings'] for r in found):.0f} scored; with them "
                              f"{paid:.2f}: {ratio * cost / paid:.2f}")
                cells.append(f"{cell}: **{ratio:.2f}** ({len(found)} seeds{scored})")
        mean = math.exp(sum(map(math.log, ratios)) / len(ratios)) if ratios else math.nan
        lines.append(f"| {rule} | " + " | ".join(cells) + f" | {mean:.2f} |")
    return "\n".join(lines) + "\n\n" + paired(rows, against)


def paired(rows: list[dict], against: str = "accuracy") -> str:
    """Each rule against ``against`` seed by seed (the same seeds, the same draws until the orders differ):
    on how many seeds it cost less and more, and Wilcoxon's signed-rank p."""
    cost = {(r["task"], r["rule"], r["objective"], r["seed"]): r["cost_to_top"] for r in rows}
    objectives = present_objectives(rows)
    lines = [f"| rule against `{against}`, seed by seed | " + " | ".join(
        f"{t}, objective {OBJECTIVES[o]}" for t in ("digits", "patterns") for o in objectives) + " |",
        "|---" * (1 + 2 * len(objectives)) + "|"]
    for rule in sorted({k[1] for k in cost} - {against}, key=rule_key):
        cells = []
        for name in ("digits", "patterns"):
            for objective in objectives:
                seeds = [k[3] for k in cost if k[:3] == (name, rule, objective) and (name, against, objective, k[3])
                         in cost]
                base = np.array([cost[(name, against, objective, s)] for s in seeds])
                it = np.array([cost[(name, rule, objective, s)] for s in seeds])
                if not seeds:
                    cells.append("")
                    continue
                p = wilcoxon(base, it).pvalue if (base != it).any() else 1.0
                cells.append(f"less on {(it < base).sum()}, more on {(it > base).sum()} of {len(seeds)}; p {p:.2f}")
        lines.append(f"| {rule} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="digits,patterns")
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--table", action="store_true", help="print the table from the file and stop")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--below", type=int, help="the table of the seeds below this one (70: the first 30)")
    parser.add_argument("--rules", default=",".join(RULES),
                        help="which rules to replay and tabulate (the three orders by default; RULE-rate-N too)")
    parser.add_argument("--first-seed", type=int, default=FIRST_SEED)
    parser.add_argument("--from", dest="since", type=int, default=0, help="the table of this seed and above")
    parser.add_argument("--against", default="accuracy", help="the rule the others are paired with")
    parser.add_argument("--objectives", default="genomes,task",
                        help="whose value the training stage reads: " + ", ".join(f"{k} ({v})" for k, v in
                                                                                   OBJECTIVES.items()))
    parser.add_argument("--extra", type=Path, action="append", default=[], metavar="DIR",
                        help="a folder of the tiny space's genomes drawn after the corpus (the fresh corpus), read "
                             "as part of it; repeatable (use a new --out: the rows do not say which corpus)")
    args = parser.parse_args()
    if not args.table:
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        warnings.filterwarnings("ignore")
        run(args.tasks.split(","), args.seeds, args.out, args.rules.split(","), args.first_seed,
            tuple(args.objectives.split(",")), tuple(args.extra))
    print(table(args.out, args.rules.split(","), args.below, args.since, args.against))


if __name__ == "__main__":
    main()
