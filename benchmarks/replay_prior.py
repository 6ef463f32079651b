"""Should the training cascade's first picks follow the corpus's prior? ``benchmarks/replay.py`` replays
``cascade-shortlist-prior`` (its first picks are the genomes of the highest prior); this replays the same
cascade (``replay_shortlist`` with a prior, unchanged) with its first picks uniform, or alternately by the prior
and uniform, for the prior of the task (fitted on the other folds of genomes) and of a new task (fitted on the
other task alone). Per cell: the median cost to a top-5% genome over seeds (quartiles), and random's over it.

    python benchmarks/replay_prior.py --seeds 20     # about 40 minutes on one core
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import replay as R  # noqa: E402  (first: it orders sys.path so that nas's runners package is found)

RULES = ("none", "alternate")  # "all" is replay.py's cascade-shortlist-prior


def main() -> None:
    args = R.seeds_command_line(__doc__)
    corpus = R.read_corpus()
    seeds = range(args.seeds)
    print("| task | prior | first picks | median cost (quartiles) | random / it |")
    print("|---|---|---|---|---|", flush=True)
    for name in ("digits", "patterns"):
        task = corpus.task(name)
        random_cost = statistics.median(R.replay_random(task, s).cost_to(task.top) for s in seeds)
        for kind, label in (("genomes", "of the task"), ("task", "of a new task")):
            for rule in RULES:
                cost, cell = R.median_cell([R.replay_shortlist(task, s, R.REPLAY_TREES, prior=kind, prior_first=rule)
                                            .cost_to(task.top) for s in seeds])
                print(f"| {name} | {label} | {rule} | {cell} | {random_cost / cost:.2f} |", flush=True)


if __name__ == "__main__":
    main()
