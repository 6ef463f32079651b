"""Where the replayed cascade's trainings go: finding a top-5% genome, or promoting it once found.

For each seed, the cascade as ``nas search --objective train`` ran it before ``--reduction-factor`` became 5
(``replay.replay_shortlist`` at its default rate, the top third promoted; with
``--score genomes`` reading the objective's value as a search given ``--data`` does, ``--score task`` the same
objective fitted on the other task alone), and for the first top-5% genome it trains long:

- *found*: the cost spent when a top-5% genome first had its first stage, and how many first stages had run
  by then (that one included);
- *reached*: the cost when a top-5% genome was first trained long (the replay's figure);
- *promotions before*: how many promotions had been paid for when the first top-5% genome was found.

Beside them, random search's exact median draws to a top-5% genome (``replay.random_exact_median``): the
number of first stages a uniform pick would need. If *reached* minus *found* is about one promotion (0.75),
the promotion rule finds the genome at once and the picks are what cost.

    python benchmarks/replay_discovery.py --tasks digits --seeds-from 40 --seeds 30
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import warnings
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent))

import replay  # noqa: E402


def discovery(trace: replay.Trace, top: set[int]) -> tuple[float, float, int, int]:
    """(cost when found, cost when reached, first stages by then, promotions by then) of one replay."""
    reached = trace.cost_to(top)
    found_at = next((k for k, (_, g, f, _) in enumerate(trace.steps) if f == "short" and g in top), None)
    if found_at is None:
        return math.inf, reached, 0, 0
    before = trace.steps[:found_at + 1]
    firsts = sum(1 for _, _, f, _ in before if f == "short")
    return before[-1][0], reached, firsts, sum(1 for _, _, f, _ in before if f not in ("short", "pruned"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="digits,patterns")
    parser.add_argument("--seeds-from", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--score", choices=["none", "genomes", "task"], default="genomes")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore")
    corpus = replay.read_corpus("tiny", "seeds")
    score = None if args.score == "none" else args.score
    seeds = range(args.seeds_from, args.seeds_from + args.seeds)
    print(f"seeds {seeds.start}-{seeds.stop - 1}, three-seed truth, objective's value: {args.score}; medians\n")
    print("| task | random: draws to a top-5% genome (exact median) | first stages until one is found | cost when "
          "found | promotions by then | cost when trained long | reached minus found |\n|---|---|---|---|---|---|---|")
    for name in args.tasks.split(","):
        task = corpus.task(name)
        rows = [discovery(replay.replay_shortlist(task, s, replay.REPLAY_TREES, score=score), task.top)
                for s in seeds]
        found, reached, firsts, promotions = (statistics.median(column) for column in zip(*rows))
        gap = statistics.median(r - f for f, r, _, _ in rows)
        print(f"| {name} | {replay.random_exact_median(task.n, len(task.top))} | {firsts:.1f} | {found:.2f} | "
              f"{promotions:.1f} | {reached:.2f} | {gap:.2f} |", flush=True)


if __name__ == "__main__":
    main()
