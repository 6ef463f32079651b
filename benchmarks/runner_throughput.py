"""Trials per minute for the local runner and the Ray runner with 1 and 2 workers, and Ray's fixed start-up cost.

Each configuration runs ``nas search`` (proxy objective) as a user would, in a fresh run directory; the
configurations are interleaved within each repeat so that machine noise hits them alike. Throughput is taken over
the span from the first trial's start to the last trial's end in the study (steady state); the fixed overhead is
the command's wall time minus that span (imports, Ray start and stop, the report). "Workers busy" is the time
spent inside trials (sampling, building, scoring, timing) over span x workers: what a runner's own overhead and
the latency lock leave of the machine; "s per trial inside it" shows whether the genomes drawn cost alike.

    python benchmarks/runner_throughput.py --space tiny --trials 30 --repeats 3
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

CONFIGS = [("local", 1), ("local", 2), ("ray", 1), ("ray", 2)]


def run_once(space: str, trials: int, sampler: str, runner: str, workers: int, out: Path) -> dict[str, float]:
    command = [sys.executable, "-m", "nas", "search", "--space", space, "--trials", str(trials), "--runner", runner,
               "--sampler", sampler,
               "--workers", str(workers), "--out", str(out), "--quiet", "--latency-repeats", "3"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    study = optuna.load_study(storage=f"sqlite:///{out / 'study.db'}", study_name="search")
    finished = [t for t in study.get_trials(deepcopy=False) if t.datetime_complete is not None]
    span = (max(t.datetime_complete for t in finished) - min(t.datetime_start for t in finished)).total_seconds()
    busy = sum(t.user_attrs.get("duration", 0.0) for t in finished)  # time inside prepare + evaluate
    return {"wall_s": wall, "span_s": span, "per_min": 60 * len(finished) / span, "fixed_s": wall - span,
            "busy": busy / (span * workers), "trial_s": busy / len(finished)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="tiny")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sampler", default="random", help="random (default): every configuration draws genomes "
                        "from one distribution, so their trial costs compare")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    results: dict[tuple[str, int], list[dict[str, float]]] = {c: [] for c in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for runner, workers in CONFIGS:
                out = Path(tmp) / f"{runner}-{workers}-{repeat}"
                r = run_once(args.space, args.trials, args.sampler, runner, workers, out)
                results[(runner, workers)].append(r)
                print(f"repeat {repeat}: {runner:5} x{workers}  {r['per_min']:6.1f} trials/min  "
                      f"busy {r['busy']:4.0%}  trial {r['trial_s']:4.2f}s  fixed {r['fixed_s']:5.1f}s  "
                      f"wall {r['wall_s']:5.1f}s", file=sys.stderr, flush=True)

    base = statistics.median(r["per_min"] for r in results[("local", 1)])
    print(f"\n{args.trials} trials of the {args.space!r} space, {args.sampler} sampler, proxy objective, median of "
          f"{args.repeats}\n")
    print("| runner | workers | trials/min | vs local x1 | workers busy | s per trial inside it | fixed overhead (s) "
          "| wall (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for runner, workers in CONFIGS:
        rows = results[(runner, workers)]
        per_min = statistics.median(r["per_min"] for r in rows)
        print(f"| {runner} | {workers} | {per_min:.1f} | {per_min / base:.2f}x | "
              f"{statistics.median(r['busy'] for r in rows):.0%} | "
              f"{statistics.median(r['trial_s'] for r in rows):.2f} | "
              f"{statistics.median(r['fixed_s'] for r in rows):.1f} | "
              f"{statistics.median(r['wall_s'] for r in rows):.1f} |")


if __name__ == "__main__":
    main()
