"""The tiny space's training-free objective judged forward: each corpus folder drawn after the others is ranked by
the objective fitted on every genome drawn before it, and the judged genomes of all folders are pooled into one
tau per task.

Cross-validation (``objective_fit.py``) judges held-out genomes of the same draw; a fresh folder (``--judge``)
judges genomes drawn later, but 80-120 of them give an interval of about +-0.1. Here every genome after the first
``--corpus`` is judged exactly once, by a fit that saw none of them and none drawn after them: the later folders'
genomes are the test set, as many as have been trained, and each is predicted as a search with the objective of
its day would have scored it. The objective is the shipped procedure (``--model kernel``: the ridge plus a kernel
on its residuals; ``--model ridge``: the ridge alone) with the shipped terms, on the structured batch (or, with
``--batch task --features ...``, the ``--data`` twin's). The pooled figure is the tau over all judged genomes of
their predictions against the three-seed truth; a genome is judged only once all its long seeds are in.

    python benchmarks/objective_forward.py --extra benchmarks/results/corpus_fresh \\
        --extra benchmarks/results/corpus_fresh2 --extra benchmarks/results/corpus_fresh3
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from corpus import OUT, SEEDS  # noqa: E402
from objective_fit import (  # noqa: E402
    DEFAULT_FEATURES,
    KERNEL_MODEL,
    MODELS,
    accuracy,
    bootstrap,
    descriptors,
    expand,
    feature_rows,
    fitted_and_predicted,
    load,
    long_truth,
    noise_ceiling,
    one_ranking_bound,
    tau,
    within_corpus,
)


def complete(runs: list[dict], task: str) -> dict[str, float]:
    """The three-seed truth of the genomes whose every long seed is in (a folder still training has some with
    seed 0 alone)."""
    by_seed = [accuracy(runs, task, "long", seed) for seed in SEEDS]
    done = set.intersection(*(set(s) for s in by_seed))
    return {g: a for g, a in long_truth(runs, task, "seeds").items() if g in done}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=OUT, help="the first folder: fitted on, never judged")
    parser.add_argument("--extra", type=Path, action="append", required=True, metavar="DIR",
                        help="the later folders, in the order they were drawn; each judged by a fit on all before it")
    parser.add_argument("--batch", default="default", help="which proxy batch's scores: default or task")
    parser.add_argument("--features", default=DEFAULT_FEATURES)
    parser.add_argument("--model", choices=("ridge", "kernel"), default="kernel")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--pool-from", type=int, default=0, metavar="K",
                        help="pool only the judged folders from the K-th --extra on (0: all): those drawn after a "
                             "choice the earlier ones informed (the kernel was chosen on corpus_fresh among others)")
    args = parser.parse_args()
    regressor = MODELS[KERNEL_MODEL] if args.model == "kernel" else None

    predicted: dict[str, dict[str, float]] = {}
    truths: dict[str, dict[str, float]] = {}
    params: dict[str, dict[str, float]] = {}
    flops: dict[str, dict[str, float]] = {}
    steps = []
    for k, judged_dir in enumerate(args.extra):
        genomes, runs, scores, _, space_of = load([args.corpus], None, args.extra[:k])
        described = descriptors(genomes)
        every = sorted({key for d in described.values() for key in d})
        present = {key for s in scores for key in s["scores"]} | {"params", "flops"} | set(every)
        features = [f for f in expand(args.features, every) if f in present]
        tasks = sorted({r["task"] for r in runs})
        fitting = {t: (feature_rows(genomes, scores, t, args.batch, features, described),
                       within_corpus(long_truth(runs, t, "seeds"), space_of)) for t in tasks}
        later, later_runs, later_scores, _, _ = load([judged_dir])
        later_described = descriptors(later)
        truth = {t: complete(later_runs, t) for t in tasks}
        judged = {t: (feature_rows(later, later_scores, t, args.batch, features, later_described), truth[t])
                  for t in tasks}
        ids = set().union(*(set(rows) & set(truth[t]) for t, (rows, _) in judged.items()))
        out = fitted_and_predicted(fitting, judged, ids, regressor)
        step = {"fitted": len(genomes), "judged": judged_dir.name, "per_task": {}}
        for t in tasks:
            mine = {g: v for g, v in out[t].items() if g in truth[t]}
            step["per_task"][t] = (len(mine), tau([mine[g] for g in mine], [truth[t][g] for g in mine]))
            if k < args.pool_from:
                continue
            predicted.setdefault(t, {}).update(mine)
            truths.setdefault(t, {}).update({g: truth[t][g] for g in mine})
            params.setdefault(t, {}).update({g: later[g]["params"] for g in mine})
            flops.setdefault(t, {}).update({g: later[g]["flops"] for g in mine})
        step["ceiling"] = {t: noise_ceiling(later_runs, t, "long", 200)[0] for t in tasks}
        steps.append(step)
        print(f"fitted on {len(genomes)} genomes, judged on {judged_dir.name}: "
              + "; ".join(f"{t} {step['per_task'][t][1]:+.3f} (n={step['per_task'][t][0]})" for t in tasks),
              flush=True)

    tasks = sorted(predicted)
    model = KERNEL_MODEL if regressor else "ridge"
    print(f"\nForward judgement of the {model} on the {args.batch} batch's scores (terms: {args.features}); "
          f"truth: the mean over three long seeds.\n")
    print("| fitted on | judged on | " + " | ".join(f"{t} (n)" for t in tasks) + " | noise ceiling there |")
    print("|---|---|" + "---|" * len(tasks) + "---|")
    for step in steps:
        print(f"| the {step['fitted']} genomes before | {step['judged']} | "
              + " | ".join(f"{step['per_task'][t][1]:+.3f} ({step['per_task'][t][0]})" for t in tasks) + " | "
              + " / ".join(f"{step['ceiling'][t]:+.3f}" for t in tasks) + " |")
    pooled = ", ".join(step["judged"] for step in steps[args.pool_from:])
    print(f"\nPooled over every judged genome of {pooled} (95% bootstrap interval, genomes resampled):\n")
    print("| predictor | " + " | ".join(tasks) + " |")
    print("|---|" + "---|" * len(tasks))
    for name, values in ((f"the {model}, each genome by the fit before its folder", predicted), ("params", params),
                         ("FLOPs", flops)):
        cells = []
        for t in tasks:
            ids = sorted(values[t])
            x, y = [values[t][g] for g in ids], [truths[t][g] for g in ids]
            lo, hi = bootstrap(x, y, args.bootstrap)
            cells.append(f"{tau(x, y):+.3f} ({lo:+.2f}, {hi:+.2f}; n={len(ids)})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    one_ranking_bound({t: ({}, truths[t]) for t in tasks}, args.bootstrap)


if __name__ == "__main__":
    main()
