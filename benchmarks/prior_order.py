"""How much the training-free objective alone can give the training cascade: train a corpus's genomes in the
order of the fitted objective, every one long, no surrogate, no first stage. Its cost to a top-5% genome (the
1-based position of the first such genome in that order) is what the cascade would pay if it followed the
objective blindly, beside random search's exact median over orders.

The objective is refitted as ``objective_fit.py`` fits it (its default terms, the default batch, the rank of
long accuracy, of seed 0 or with ``--truth seeds`` its mean over the genome's seeds) and read on genomes it was
not fitted on, three ways:

- *of the task, full*: each genome scored by a fit on the other 4 of 5 folds of genomes (every task), with its
  zero-cost scores: what the shipped objective gives a new genome of a space and task it was fitted on;
- *of the task, data-free part*: the same fit with every zero-cost term at its mean (``replay.py``'s prior);
- *of a new task*: fitted on the other task's genomes alone, with its zero-cost scores: what a user's own data
  set gets.

Fold shufflings 0-9 give the orders (a new task's fit has one order). The top 5% is ``replay.top_genomes``'.

    python benchmarks/prior_order.py                        # the tiny corpus, both tasks
    python benchmarks/prior_order.py --corpus benchmarks/results/corpus_hybrid32 --leave-out corpus_hybrid32:digits
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from objective_fit import OUT, TRUTHS, default_fit_data, held_out_genomes, held_out_task, load  # noqa: E402
from replay import top_genomes  # noqa: E402

SHUFFLES = 10


def first_top(order: list[str], long: dict[str, float]) -> int:
    """The 1-based position in ``order`` of its first top-5% genome."""
    values = np.array([long[g] for g in order])
    top = top_genomes(values)
    return 1 + min(top)  # top_genomes indexes ``order``; the first top genome is the smallest index


def random_median(n: int, top: int) -> float:
    """The exact median over uniform orders of the position of the first of ``top`` marked genomes among
    ``n``."""
    # P(first > k) = C(n - top, k) / C(n, k); the median is the least k with P(first <= k) >= 1/2.
    for k in range(1, n + 1):
        if 1 - math.comb(n - top, k) / math.comb(n, k) >= 0.5:
            return float(k)
    return float(n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=OUT)
    parser.add_argument("--leave-out", action="append", default=[], metavar="CORPUS:TASK",
                        help="a task the corpus cannot rank, as objective_fit.py takes it")
    parser.add_argument("--truth", choices=sorted(TRUTHS), default="seed0",
                        help="fit and judge on the long accuracy of seed 0, or its mean over each genome's seeds")
    args = parser.parse_args()
    genomes, runs, scores, _, _ = load([args.corpus])
    data, keep = default_fit_data(genomes, scores, runs, args.truth)
    for corpus, task in (spec.split(":", 1) for spec in args.leave_out):
        if corpus == args.corpus.name and task in data:
            data[task] = (data[task][0], {})
    new_task = held_out_task(data) if all(acc for _, acc in data.values()) else {}
    # Each fold shuffling's held-out predictions, of every task at once: the full fit, and its data-free part.
    shuffled = {kind: [held_out_genomes(data, seed=shuffle, keep=columns) for shuffle in range(SHUFFLES)]
                for kind, columns in (("full", None), ("data-free", keep))}
    print(f"corpus {args.corpus.name}: cost to a top-5% genome, training in the objective's order (position of "
          f"the first top-5% genome; median over {SHUFFLES} fold shufflings, range)\n")
    print("| task | genomes (top 5%) | random, exact median | of the task, full | of the task, data-free part | "
          "of a new task |")
    print("|---|---|---|---|---|---|")
    for task, (rows, long) in data.items():
        if not long:
            continue
        ids = sorted(g for g in rows if g in long)
        top = len(top_genomes(np.array([long[g] for g in ids])))
        cells = []
        for predictions in shuffled.values():
            positions = [first_top(sorted(ids, key=lambda g, p=p[task]: -p[g]), long) for p in predictions]
            cells.append(f"{statistics.median(positions):.1f} ({min(positions)}-{max(positions)})")
        if task in new_task:
            cells.append(str(first_top(sorted(ids, key=lambda g: -new_task[task][g]), long)))
        else:
            cells.append("not measured")
        print(f"| {task} | {len(ids)} ({top}) | {random_median(len(ids), top):.0f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
