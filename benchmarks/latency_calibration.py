"""How well a calibrated latency table predicts end-to-end latency on genomes its fit never saw.

For each space asked, a fresh table in a temporary folder (so every block is timed in this run), then
``nas.cost.calibration.calibrate`` on ``--genomes`` uniform draws of the space (seed 0): each genome timed by the
table and end to end, then every genome end to end again after the last (the repeat-measurement floor, the
machine's drift over the run included); the fit is scored by 5-fold cross-validation (each genome predicted by a
fit on the other four folds). Figures: share within +-10% of the first end-to-end median and median |error|, for
the calibrated prediction (held out), the raw table sum, and the second measurement. Target (issue 17):
calibrated at least 90% within +-10%, and never below the floor's share.

    python benchmarks/latency_calibration.py --spaces metaformer_hybrid mobile --genomes 40
    python benchmarks/latency_calibration.py --spaces tiny --runtime onnxruntime
    python benchmarks/latency_calibration.py --across benchmarks/results/latency/calibration-*-2026120*.json

Writes ``benchmarks/results/latency/calibration-<space>-<runtime>.json`` (every genome's timings and the fit)
and prints a markdown table. Time it on an idle machine: every figure is a timing.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from nas.cost.calibration import calibrate
from nas.cost.latency import LatencyTable
from nas.space import read_space, sample_genomes

OUT = Path(__file__).parent / "results" / "latency"


def run_space(space_name: str, genomes: int, repeats: int, runtime: str, threads: int) -> dict:
    space, _, _ = read_space(space_name)
    drawn = sample_genomes(space, genomes, seed=0)
    with tempfile.TemporaryDirectory() as folder:
        table = LatencyTable(Path(folder) / "latency.sqlite")

        def progress(i: int, row: dict) -> None:
            again = "" if row["again_ms"] is None else f"again {row['again_ms']:.4g} ms, "
            print(f"  {space_name} {i + 1}/{len(drawn)}: {again}measured {row['measured_ms']:.4g} ms, table "
                  f"{row['table_ms']:.4g}", file=sys.stderr, flush=True)

        run = calibrate(drawn, table, "cpu", threads=threads, warmup=3, repeats=repeats, progress=progress,
                        runtime=runtime)
    cal = run.calibration
    return {"space": space_name, "runtime": runtime, "genomes": genomes, "repeats": repeats, "threads": threads,
            "seconds": round(run.seconds, 1), "held_out": asdict(cal.held_out), "margin": cal.margin,
            "families": cal.families, "coefficients": cal.coefficients, "intercept": cal.intercept,
            "fingerprint": cal.fingerprint, "rows": run.rows}


def markdown(results: list[dict]) -> str:
    lines = ["| space | runtime | genomes | calibrated, held out: within +-10% | median error | table sum: within "
             "+-10% | median error | measured again: within +-10% | median error | budget margin | target |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        h = r["held_out"]
        met = h["within"] >= 0.9 and h["within"] >= h["floor_within"]
        lines.append(f"| {r['space']} | {r['runtime']} | {h['genomes']} | {h['within']:.0%} | "
                     f"{h['median_error']:.1%} | {h['table_within']:.0%} | {h['table_median_error']:.1%} | "
                     f"{h['floor_within']:.0%} | {h['floor_median_error']:.1%} | +{r['margin']:.1%} | "
                     f"{'met' if met else 'not met'} |")
    return "\n".join(lines)


def across_runs(files: list[Path]) -> str:
    """Whether a genome's miss is its own or the moment's: for each pair of result files (the same genomes,
    timed in runs minutes apart), the correlation of each genome's table / measured ratio between the runs, and
    the share of genomes whose end-to-end time, and whose table sum, agree within +-10% from one run to the
    other."""
    runs = [{r["genome"]: r for r in json.loads(f.read_text())["rows"]} for f in files]
    lines = ["| run A | run B | genomes | ratio table/measured: correlation A-B | measured A vs B: within +-10% | "
             "median change | table sum A vs B: within +-10% | median change |", "|---|---|---|---|---|---|---|---|"]
    for i, a in enumerate(runs):
        for j in range(i + 1, len(runs)):
            b = runs[j]
            common = sorted(set(a) & set(b))
            ratio = [[run[g]["table_ms"] / run[g]["measured_ms"] for g in common] for run in (a, b)]
            measured = np.array([b[g]["measured_ms"] / a[g]["measured_ms"] - 1 for g in common])
            table = np.array([b[g]["table_ms"] / a[g]["table_ms"] - 1 for g in common])
            lines.append(f"| {files[i].stem} | {files[j].stem} | {len(common)} | "
                         f"{np.corrcoef(ratio[0], ratio[1])[0, 1]:+.2f} | {np.mean(np.abs(measured) <= 0.1):.0%} | "
                         f"{np.median(np.abs(measured)):.1%} | {np.mean(np.abs(table) <= 0.1):.0%} | "
                         f"{np.median(np.abs(table)):.1%} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--across", nargs="+", type=Path, metavar="RESULT",
                        help="time nothing: compare result files of earlier runs on the same genomes (across_runs)")
    parser.add_argument("--spaces", nargs="+", default=["metaformer_hybrid"])
    parser.add_argument("--genomes", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runtime", default="eager", choices=["eager", "compile", "onnxruntime"])
    parser.add_argument("--tag", default="", help="added to the result file's name (e.g. the allocator setting)")
    args = parser.parse_args()
    if args.across:
        print(across_runs(args.across))
        return
    torch.set_num_threads(args.threads)
    OUT.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.spaces:
        tick = time.perf_counter()
        result = run_space(name, args.genomes, args.repeats, args.runtime, args.threads)
        result.update(command=" ".join(["python", *sys.argv]), machine=f"{platform.machine()}, "
                      f"{len(__import__('os').sched_getaffinity(0))} cores, Python {platform.python_version()}",
                      wall_s=round(time.perf_counter() - tick, 1), date=time.strftime("%Y-%m-%d %H:%M"))
        tag = f"-{args.tag}" if args.tag else ""
        result["allocator"] = result["fingerprint"]["allocator"]
        (OUT / f"calibration-{name}-{args.runtime}{tag}.json").write_text(json.dumps(result, indent=1) + "\n")
        results.append(result)
        print(markdown(results[-1:]), flush=True)
    print(markdown(results))


if __name__ == "__main__":
    main()
