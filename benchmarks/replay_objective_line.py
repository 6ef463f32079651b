"""Should the training cascade's surrogate read the objective's value through a line, as ``PriorLine`` reads
the prior? ``benchmarks/replay.py``'s ``held_out`` fits the training stage's forest on 20 genomes with the
``--data`` twin's value as one more column (``cascade-shortlist-scored``); this fits, on the same 20 genomes per
seed, that forest, the forest without the value, a line in the value plus the forest on what the line leaves
(``PriorLine`` with the value as its prior column), the search's surrogate since 2026-12-05 (the forest with the
value or a line in it plus a weighed forest, whichever ranks the 20 better held out: ``Surrogate(line_column=)``),
and reads the value alone, each judged by Kendall tau on
the other genomes against the truth; for the value fitted on the task (other folds of genomes) and on a new
task (the other task alone). Medians over seeds.

    python benchmarks/replay_objective_line.py --seeds 10 --truth seeds     # about a minute
    python benchmarks/replay_objective_line.py --seeds 20 --truth seeds --extra benchmarks/results/corpus_fresh
"""
from __future__ import annotations

import argparse
import statistics
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import replay as R  # noqa: E402  (first: it orders sys.path so that nas's runners package is found)

from nas.search.surrogate import Surrogate  # noqa: E402

COLUMNS = ("the search's forest without the value", "the forest with it (the search until 2026-12-05)",
           "a line in the value plus the forest", "the search's surrogate now (the better of the two held out)",
           "the value alone")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--truth", choices=sorted(R.TRUTHS), default="seed0")
    parser.add_argument("--extra", type=Path, action="append", default=[], metavar="DIR",
                        help="a folder of the tiny space's genomes drawn after the corpus (the fresh corpus), read "
                             "as part of it; repeatable")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    corpus = R.read_corpus("tiny", args.truth, extra=args.extra)
    print("| task | the value fitted on | " + " | ".join(COLUMNS) + " |")
    print("|---|---|" + "---|" * len(COLUMNS), flush=True)
    for name in ("digits", "patterns"):
        task = corpus.task(name)
        shortlisted = R.training_stage_features(task)
        for kind, label in (("genomes", "the task"), ("task", "a new task")):
            with_value = R.training_stage_features(task, kind)
            taus: dict[str, list[float]] = {c: [] for c in COLUMNS}
            for seed in range(args.seeds):
                fit, rest = R.held_out_split(task, seed)  # replay.held_out's draw of the 20
                models = {COLUMNS[0]: (Surrogate(seed=seed, trees=R.REPLAY_TREES), shortlisted),
                          COLUMNS[1]: (Surrogate(seed=seed, trees=R.REPLAY_TREES), with_value),
                          COLUMNS[2]: (R.PriorLine(seed, R.REPLAY_TREES, with_value.shape[1] - 1), with_value),
                          COLUMNS[3]: (Surrogate(seed=seed, trees=R.REPLAY_TREES,
                                                 line_column=with_value.shape[1] - 1), with_value)}
                for column, (model, x) in models.items():
                    predicted = model.fit(x[fit], task.long[fit]).predict(x[rest])[0]
                    taus[column].append(R._tau(predicted, task.truth[rest]))
                taus[COLUMNS[4]].append(R._tau(task.objectives[kind][rest], task.truth[rest]))
            cells = " | ".join(f"{statistics.median(taus[c]):+.3f}" for c in COLUMNS)
            print(f"| {name} | {label} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
