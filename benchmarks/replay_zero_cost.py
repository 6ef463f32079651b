"""Which zero-cost scores should the training cascade's zero-cost stage give its surrogate, and how large a
short-list should it keep? Two tables on the replay of ``benchmarks/replay.py`` (its functions, unchanged):

1. ``replay_cascade`` (every corpus genome scored) with the surrogate's extra columns swapped: the six zero-cost
   scores or grad-norm and MeCo alone, each on the default structured batch or on a batch of the task, and none
   (data-free). Per set: the median cost to a top-5% genome over seeds, random's over it, and the median
   held-out tau of the surrogate fitted on 20 genomes (``held_out``) with those features. The row
   ``grad_norm+meco task`` is the surrogate ``nas search --objective train`` fits (without the objective's own
   value, which was fitted on these genomes).
2. ``replay_shortlist`` (the search's zero-cost stage) at short-list sizes 5, 10, 20 and 40.

A score that is not finite for a genome is set below the task's least finite value of that score.

    python benchmarks/replay_zero_cost.py --seeds 20     # about 25 minutes on one core
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import replay as R  # noqa: E402  (first: it orders sys.path so that nas's runners package is found)
from objective_fit import feature_rows  # noqa: E402

SIZES = (5, 10, 20, 40)


def score_columns(rows: list[list[float] | None]) -> np.ndarray:
    width = len(next(r for r in rows if r is not None))
    values = np.array([r if r is not None else [np.nan] * width for r in rows], dtype=float)
    finite = np.where(np.isfinite(values), values, np.nan)
    return np.where(np.isfinite(values), values, np.nanmin(finite, axis=0) - 1)


def main() -> None:
    args = R.seeds_command_line(__doc__)
    corpus = R.read_corpus()
    scores = corpus.scores
    by_id = {g["genome"]: g for g in corpus.genomes}
    id_of = {g["index"]: g["genome"] for g in corpus.genomes}
    seeds = range(args.seeds)

    print("| task | surrogate's extra features | cascade | random | random / cascade | surrogate tau (fitted on 20) |")
    print("|---|---|---|---|---|---|", flush=True)
    tasks = {name: corpus.task(name) for name in ("digits", "patterns")}
    for name, task in tasks.items():
        ids = [id_of[i] for i in task.indexes]
        whole, base = task.features, task.features[:, :task.data_free].copy()
        random_cost = statistics.median(R.replay_random(task, s).cost_to(task.top) for s in seeds)
        sets: dict[str, np.ndarray | None] = {}
        for batch in ("default", "task"):
            for label, names in (("6 zero-cost scores", list(R.ZERO_COST)), ("grad_norm+meco", ["grad_norm", "meco"])):
                rows = feature_rows(by_id, scores, name, batch, names)
                sets[f"{label}, {batch} batch"] = score_columns([rows.get(g) for g in ids])
        sets["none (data-free)"] = None
        for label, extra in sets.items():
            task.features = base if extra is None else np.column_stack([base, extra])
            cost = statistics.median(R.replay_cascade(task, s, R.REPLAY_TREES).cost_to(task.top) for s in seeds)
            tau = statistics.median(R.held_out(task, s, R.REPLAY_TREES)["surrogate"] for s in seeds)
            print(f"| {name} | {label} | {cost:.2f} | {random_cost:.2f} | {random_cost / cost:.2f} | {tau:+.3f} |",
                  flush=True)
        task.features = whole

    print("\n| task | short-list size | median cost (quartiles) | random / short-list cascade |")
    print("|---|---|---|---|", flush=True)
    for name, task in tasks.items():
        random_cost = statistics.median(R.replay_random(task, s).cost_to(task.top) for s in seeds)
        for size in SIZES:
            costs = [R.replay_shortlist(task, s, R.REPLAY_TREES, size).cost_to(task.top) for s in seeds]
            low, high = R.quartiles(costs)
            cost = statistics.median(costs)
            print(f"| {name} | {size} | {cost:.2f} ({low:.2f} - {high:.2f}) | {random_cost / cost:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
