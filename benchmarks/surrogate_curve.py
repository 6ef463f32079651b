"""How far can a surrogate of the training stage rank long accuracy, given more results than a search has? The
search's surrogate (``nas.search.surrogate.Surrogate``, its 100 trees; since 2026-12-05 10:30 the forest or a line
in the objective's value plus a forest, whichever ranks the N better held out) on the training stage's features
as ``nas search --objective train --data`` has them (``replay.training_stage_features``: the Encoder row, the zero-cost
stage's scores and the objective's value, fitted on the other folds of genomes), fitted on N random genomes'
long accuracy (seed 0, what a training returns) and judged on all the others against the three-seed truth,
N from 20 (the issue's target point) to 200 of 240. Beside it the same forest also reading each genome's
first-stage accuracy (the long run's epoch 3, which a search knows for every genome it has trained once): the
multi-fidelity model that a promotion could use, judged on genomes whose first stage is known and long run is
not. And, fitted on nothing, the objective's value alone, the first-stage accuracy alone, and their mean rank
(``first_rung_order`` at weight 0.5) on the same held-out genomes; the same two ranks weighed by the weight
(0, 0.1, ..., 1) that ranks the N fitted genomes best, and, as a bound no surrogate of these two features can
pass, by the weight that ranks the held-out genomes best. Ten random splits per N; medians.

    python benchmarks/surrogate_curve.py          # writes benchmarks/results/replay/surrogate_curve.md
    python benchmarks/surrogate_curve.py --out benchmarks/results/replay/surrogate_curve_360.md
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import warnings
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau, rankdata

sys.path.insert(0, str(Path(__file__).resolve().parent))
import replay as R  # noqa: E402  (first: it orders sys.path so that nas's runners package is found)

from nas.search.surrogate import TREES, Surrogate  # noqa: E402

SIZES = (20, 40, 80, 120, 160, 200)
SPLITS = 10
OUT = R.RESULTS / "surrogate_curve.md"
COLUMNS = {"forest": "the search's surrogate, training stage's features", "multi": "it, and first-stage accuracy",
           "objective": "objective's value alone", "first": "first-stage accuracy alone", "blend": "their mean rank",
           "weighed": "their ranks weighed as best on the N", "bound": "their ranks weighed as best on the rest"}


def kt(x: np.ndarray, y: np.ndarray) -> float:
    return float(kendalltau(x, y).statistic)


def curve(task: R.Task) -> list[dict[str, float]]:
    x = R.training_stage_features(task, "genomes")
    multi = np.column_stack([x, task.early])
    objective = task.objectives["genomes"]
    rows = []
    for size in SIZES:
        found: dict[str, list[float]] = {k: [] for k in COLUMNS}
        for split in range(SPLITS):
            rng = random.Random(f"{task.name}/curve/{size}/{split}")
            fit = sorted(rng.sample(range(task.n), size))
            rest = sorted(set(range(task.n)) - set(fit))
            truth = task.truth[rest]
            for key, features in (("forest", x), ("multi", multi)):
                model = Surrogate(seed=split, trees=TREES, line_column=x.shape[1] - 1).fit(features[fit],
                                                                                          task.long[fit])
                found[key].append(kt(model.predict(features[rest])[0], truth))
            found["objective"].append(kt(objective[rest], truth))
            found["first"].append(kt(task.early[rest], truth))
            found["blend"].append(kt(rankdata(task.early[rest]) + rankdata(objective[rest]), truth))
            # ranks over all genomes, so that a weight chosen on the fitted ones means the same on the rest
            early, prior = rankdata(task.early), rankdata(objective)
            on_fit = [kt(w * prior[fit] + (1 - w) * early[fit], task.long[fit]) for w in R.WEIGHTS]
            w = R.WEIGHTS[int(np.argmax(on_fit))]
            found["weighed"].append(kt(w * prior[rest] + (1 - w) * early[rest], truth))
            found["bound"].append(max(kt(w * prior[rest] + (1 - w) * early[rest], truth) for w in R.WEIGHTS))
        rows.append({"size": size, **{k: statistics.median(v) for k, v in found.items()}})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"the table's file (default {OUT})")
    parser.add_argument("--extra", type=Path, action="append", default=[], metavar="DIR",
                        help="a folder of the tiny space's genomes drawn after the corpus (the fresh corpus), read "
                             "as part of it; repeatable")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    corpus = R.read_corpus("tiny", truth="seeds", extra=args.extra)
    lines = ["| task | fitted on N | " + " | ".join(COLUMNS.values()) + " |", "|---" * (len(COLUMNS) + 2) + "|"]
    for name in ("digits", "patterns"):
        for row in curve(corpus.task(name)):
            lines.append(f"| {name} | {row['size']} | " + " | ".join(f"{row[k]:+.3f}" for k in COLUMNS) + " |")
    text = "\n".join(lines)
    args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
