"""Does successive halving pay on the corpus? ``benchmarks/replay.py``'s ``cascade-shortlist`` promotes a first stage
(the long run's first 3 epochs) when it is in the top third of those seen, as ``nas search --objective train`` does.
Where a long run's epoch 3 ranks long accuracy weakly, top genomes that start slowly are left behind (the second
table says how many, per task). This replays the same cascade (``replay_shortlist``, unchanged but for ``rate``)
promoting the top third, the top half, or training every pick long at once, with the search's own surrogate (no
prior) and steered by the corpus's prior of the task (fitted on the other folds of genomes) or of a new task (fitted
on the other task alone). Per cell: the median cost to a top-5% genome over seeds (quartiles), and random's exact
median over it.

    python benchmarks/replay_promotion.py --space hybrid32 --tasks patterns --seeds 10
"""
from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent))
import replay as R  # noqa: E402  (first: it orders sys.path so that nas's runners package is found)

RATES = {"top third": 3, "top half": 2, "every pick long": None}
PRIORS = {"none (the search's)": None, "of the task": "genomes", "of a new task": "task"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--space", choices=sorted(R.SPACES), default="tiny")
    parser.add_argument("--tasks", default="digits,patterns")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore")
    corpus = R.read_corpus(args.space)
    seeds = range(args.seeds)
    print("| space | task | genomes (top 5%) | prior | promotion | median cost (quartiles) "
          "| random's exact median / it |")
    print("|---|---|---|---|---|---|---|", flush=True)
    notes = []
    for name in args.tasks.split(","):
        task = corpus.task(name)
        summary = R.corpus_summary(task)
        third = np.sort(task.early)[::-1][math.ceil(task.n / 3) - 1]
        kept = sum(task.early[i] >= third for i in task.top)
        notes.append(f"| {args.space} | {name} | {summary['tau_early_long']:+.3f} | {kept} of {len(task.top)} "
                     f"| {', '.join(f'{task.early[i]:.2f}' for i in sorted(task.top, key=lambda i: -task.long[i]))} "
                     f"| {np.median(task.early):.2f} |")
        random_cost = summary["random_exact_median"]
        for label, prior in PRIORS.items():
            for rule, rate in RATES.items():
                cost, cell = R.median_cell([R.replay_shortlist(task, s, R.REPLAY_TREES, prior=prior, rate=rate)
                                            .cost_to(task.top) for s in seeds])
                print(f"| {args.space} | {name} | {task.n} ({len(task.top)}) | {label} | {rule} | {cell} | "
                      f"{random_cost / cost:.2f} |", flush=True)

    print("\n| space | task | tau(epoch 3 of the long run, long) | top-5% genomes in the top third by epoch 3 "
          "| their epoch-3 accuracies, best long first | median epoch-3 accuracy |")
    print("|---|---|---|---|---|---|")
    print("\n".join(notes))


if __name__ == "__main__":
    main()
