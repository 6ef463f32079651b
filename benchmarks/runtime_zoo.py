"""Every zoo genome timed under eager PyTorch and under ONNX Runtime (its ONNX export, CPU provider), side by side,
with the rank correlation between the two: does a winner under eager latency stay one under the runtime that
ships it?

    python benchmarks/runtime_zoo.py [--resolution 224] [--repeats 10] [--threads 1]

Batch 1, float32, ``--threads`` intra-op threads for both (1 by default, as ``nas search`` times on a CPU); each
runtime's median over ``--repeats`` calls after 3 warmup calls, one genome at a time, eager first. Writes
``benchmarks/results/latency/runtime_zoo.json`` and prints a markdown table. Time it on an idle machine.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from scipy.stats import kendalltau, spearmanr

from nas import compile_model, load_genome
from nas.cost.latency import measure_latency, runtime_version
from nas.cost.profile import with_resolution
from nas.io import zoo_names

OUT = Path(__file__).parent / "results" / "latency"
RUNTIMES = ("eager", "onnxruntime")


def time_genome(name: str, resolution: int | None, repeats: int, threads: int) -> dict:
    genome = with_resolution(load_genome(f"zoo:{name}"), resolution)
    row: dict = {"genome": name, "resolution": genome.input.resolution[0]}
    shape = (genome.input.channels, *genome.input.resolution)
    for runtime in RUNTIMES:
        model = compile_model(genome, seed=0)
        tick = time.perf_counter()
        try:
            row[runtime] = measure_latency(model, shape, "cpu", warmup=3, repeats=repeats, threads=threads,
                                           runtime=runtime).median_ms
        except Exception as err:  # noqa: BLE001 - a genome the exporter cannot express is a row, not a stop
            row[runtime] = None
            row[f"{runtime}_failure"] = f"{type(err).__name__}: {err}".splitlines()[0][:200]
        row[f"{runtime}_seconds"] = round(time.perf_counter() - tick, 1)
    return row


def markdown(rows: list[dict]) -> str:
    lines = ["| genome | eager ms | onnxruntime ms | onnxruntime / eager |", "|---|---|---|---|"]
    for r in rows:
        e, o = r["eager"], r["onnxruntime"]
        lines.append(f"| {r['genome']} | {e:.1f} | " + (f"{o:.1f} | {o / e:.2f} |" if o else
                                                         f"- | {r.get('onnxruntime_failure', '')} |"))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolution", type=int, default=None, help="default: each genome's own (224)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="*", help="these zoo genomes only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.only or zoo_names():
        rows.append(time_genome(name, args.resolution, args.repeats, args.threads))
        r = rows[-1]
        print(f"{name}: eager {r['eager']}, onnxruntime {r['onnxruntime']} "
              f"{r.get('onnxruntime_failure', '')}", file=sys.stderr, flush=True)
    both = [r for r in rows if r["eager"] and r["onnxruntime"]]
    eager, ort = [r["eager"] for r in both], [r["onnxruntime"] for r in both]
    summary = {"genomes": len(rows), "timed_under_both": len(both),
               "kendall_tau": float(kendalltau(eager, ort).statistic) if len(both) > 2 else None,
               "spearman": float(spearmanr(eager, ort).statistic) if len(both) > 2 else None,
               "runtimes": {rt: runtime_version(rt) for rt in RUNTIMES}}
    result = {"command": " ".join(["python", *sys.argv]), "date": time.strftime("%Y-%m-%d %H:%M"),
              "machine": f"{platform.machine()}, Python {platform.python_version()}", "threads": args.threads,
              "repeats": args.repeats, "summary": summary, "rows": rows}
    (OUT / "runtime_zoo.json").write_text(json.dumps(result, indent=1) + "\n")
    print(markdown(rows))
    print(f"\nKendall tau (eager vs onnxruntime, {len(both)} genomes): {summary['kendall_tau']}; "
          f"Spearman {summary['spearman']}")


if __name__ == "__main__":
    main()
