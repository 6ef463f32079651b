"""Would more features help the cascade's surrogate? The replay of ``benchmarks/replay.py`` (its ``cascade``
strategy and its held-out surrogate figure, unchanged) with one or two columns added to the surrogate's features:

- ``inherited``: the genome's inherited accuracy from the corpus supernet of the task
  (``benchmarks/corpus_supernet.py``, distilling once its largest genome beats chance); a search would pay a
  second or so per genome for it;
- ``prior``: the default objective's data-free part (params, FLOPs, structural score, descriptors) fitted by
  ``objective_fit`` without the genome: on the other folds' genomes of both tasks (``held-out genomes``: a task
  the objective was fitted on, with genomes it never saw), or on the other task alone (``held-out task``: a new
  task).

``data-free only`` starts from the ``Encoder`` columns alone (the ``cascade-data-free`` of the replay: what
``nas search`` runs today) instead of those and the zero-cost scores.

Per task: the cascade's median cost (long-training equivalents, over seeds) to train a top-5% genome long,
random search's, their ratio (target 3), and the median held-out Kendall tau of the surrogate fitted on 20
genomes (target 0.6).

    python benchmarks/replay_features.py --seeds 20
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import replay as R  # noqa: E402  (first: it orders sys.path so that nas's runners package is found)
from corpus_supernet import supernet_variant  # noqa: E402
from objective_fit import (  # noqa: E402
    DATA_FREE,
    accuracy,
    descriptors,
    expand,
    feature_rows,
    held_out_genomes,
    held_out_task,
)


def main() -> None:
    args = R.seeds_command_line(__doc__)
    corpus = R.read_corpus()
    genomes, runs, scores = corpus.genomes, corpus.runs, corpus.scores
    by_id = {g["genome"]: g for g in genomes}
    described = descriptors(by_id)
    data_free = expand(",".join([*DATA_FREE, "descriptors"]), sorted({k for d in described.values() for k in d}))
    data = {t: (feature_rows(by_id, scores, t, "default", data_free, described), accuracy(runs, t, "long"))
            for t in ("digits", "patterns")}
    priors = {"held-out genomes": held_out_genomes(data), "held-out task": held_out_task(data)}
    inherited = {(r["task"], r["genome"]): r["inherited"] for r in R.read_jsonl(R.corpus_dir("tiny") / "supernet.jsonl")
                 if supernet_variant(r)["teacher_ready"] is not None}
    id_of = {g["index"]: g["genome"] for g in genomes}

    print(f"{args.seeds} seeds; cascade / random: median cost to a top-5% genome; tau: the surrogate fitted on "
          f"{R.FIT_SIZE} genomes, on the rest\n")
    print("| task | extra features | cascade | random | random / cascade | surrogate tau |")
    print("|---|---|---|---|---|---|")
    for name in ("digits", "patterns"):
        task = corpus.task(name)
        ids = [id_of[i] for i in task.indexes]
        base = task.features.copy()
        random_cost = statistics.median(R.replay_random(task, s).cost_to(task.top) for s in range(args.seeds))
        columns = {"inherited": [inherited[(name, g)] for g in ids],
                   **{f"prior ({k})": [p[name][g] for g in ids] for k, p in priors.items()}}
        for label in ("none", "inherited", "prior (held-out genomes)", "prior (held-out task)",
                      "inherited, prior (held-out task)", "data-free only", "data-free only, prior (held-out genomes)",
                      "data-free only, prior (held-out task)"):
            names = [c.strip() for c in label.split(", ") if c.strip() not in ("none", "data-free only")]
            start = base[:, :task.data_free] if label.startswith("data-free only") else base
            task.features = np.column_stack([start, *(columns[c] for c in names)]) if names else start
            cost = statistics.median(R.replay_cascade(task, s, R.REPLAY_TREES).cost_to(task.top)
                                     for s in range(args.seeds))
            tau = statistics.median(R.held_out(task, s, R.REPLAY_TREES)["surrogate"] for s in range(args.seeds))
            print(f"| {name} | {label} | {cost:.2f} | {random_cost:.2f} | {random_cost / cost:.2f} | {tau:+.3f} |",
                  flush=True)
        task.features = base


if __name__ == "__main__":
    main()
