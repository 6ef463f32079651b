"""Search efficiency: TPE, NSGA-II and regularized evolution against random search at equal trial counts.

Each sampler runs ``--trials`` trials on the default space (metaformer_hybrid, 4 GFLOPs budget) for each of
``--seeds`` seeds, maximising the proxy score and minimising the second objective. The second objective is
analytic GFLOPs by default (``--second flops``), because timing every network on a shared 2-core CPU would
make the comparison about timer noise; pass ``--second latency`` to measure instead. Reported per sampler:
the hypervolume of the feasible (score, second) front, against a reference point fixed per seed group
(the worst score and the budget), and the best feasible score; mean and standard deviation over seeds.

    python benchmarks/search_efficiency.py --trials 40 --seeds 5
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from optuna.trial import TrialState

import nas
from nas.search.run import open_study, read_run


def hypervolume_2d(points: list[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Area dominated by ``points`` (score up, cost down) and bounded by ``ref`` (low score, high cost)."""
    pts = sorted((c, s) for s, c in points if s > ref[0] and c < ref[1])
    area, best = 0.0, ref[0]
    for i, (cost, score) in enumerate(pts):
        best = max(best, score)
        next_cost = pts[i + 1][0] if i + 1 < len(pts) else ref[1]
        area += (next_cost - cost) * (best - ref[0])
    return area


def feasible_points(run_dir: Path) -> list[tuple[float, float]]:
    options, _ = read_run(run_dir)
    study = open_study(run_dir, options)
    return [(t.values[0], t.values[1]) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.user_attrs.get("feasible") and "duplicate_of" not in t.user_attrs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default="metaformer_hybrid")
    parser.add_argument("--budget", default="4GFLOPs")
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--samplers", default="random,tpe,nsga2,evolution")
    parser.add_argument("--second", default="flops", choices=["flops", "params", "latency"])
    parser.add_argument("--proxy-batch", type=int, default=8)
    args = parser.parse_args()
    samplers = args.samplers.split(",")
    budget_second = {"flops": nas.cost.parse_flops(args.budget) / 1e9}.get(args.second)
    results: dict[str, dict[str, list[float]]] = {s: {"hv": [], "best": [], "seconds": []} for s in samplers}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            fronts = {}
            for sampler in samplers:
                start = time.perf_counter()
                out = Path(tmp) / f"{sampler}-{seed}"
                nas.search(args.space, budget=args.budget, trials=args.trials, sampler=sampler, seed=seed,
                           second=args.second, device="auto", proxy_batch=args.proxy_batch, out=out, quiet=True)
                fronts[sampler] = feasible_points(out)
                results[sampler]["seconds"].append(time.perf_counter() - start)
            every = [p for pts in fronts.values() for p in pts]
            ref = (min(s for s, _ in every), budget_second or max(c for _, c in every) * 1.05)
            for sampler, pts in fronts.items():
                results[sampler]["hv"].append(hypervolume_2d(pts, ref))
                results[sampler]["best"].append(max((s for s, _ in pts), default=float("nan")))
            print(f"seed {seed}: " + ", ".join(f"{s} hv {results[s]['hv'][-1]:.3g} best {results[s]['best'][-1]:.4g}"
                                               for s in samplers), flush=True)
    print(f"\n{args.space}, budget {args.budget}, {args.trials} trials x {args.seeds} seeds, second objective "
          f"{args.second}")
    print("| sampler | hypervolume (mean ± sd) | best feasible score (mean ± sd) | s per run |")
    print("|---|---|---|---|")
    def sd(v):
        return statistics.stdev(v) if len(v) > 1 else 0.0

    for s in samplers:
        r = results[s]
        print(f"| {s} | {statistics.mean(r['hv']):.4g} ± {sd(r['hv']):.2g} | "
              f"{statistics.mean(r['best']):.4g} ± {sd(r['best']):.2g} | {statistics.mean(r['seconds']):.0f} |")


if __name__ == "__main__":
    main()
