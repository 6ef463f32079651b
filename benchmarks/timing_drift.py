"""Does this machine's speed drift over the minutes a calibration takes? One model, timed without pause.

`nas latency calibrate` judges the table against end-to-end timings taken minutes apart, so the truth it is
judged against is only as still as the machine. This script times one network (the first default-space genome
of the calibration draw, 224x224, 1 thread, batch 1) in back-to-back windows of ``--calls`` calls for
``--seconds``, and records each window's median and the CPU time the hypervisor stole meanwhile
(``/proc/stat``). It reports how far the window medians spread around their overall median, and how many fall
within +-10% of it.

    python benchmarks/timing_drift.py --seconds 300     # on an idle machine

Writes ``benchmarks/results/latency/timing_drift.json`` and prints a markdown summary. (The file of 2026-12-03
was written before the steal was read through ``nas.cost.latency.stolen_ms``: it counts ``steal_ticks`` of
10 ms instead of ``steal_ms``.)
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from nas.compiler import compile_model
from nas.cost.latency import stolen_ms
from nas.space import read_space, sample_genomes

OUT = Path(__file__).parent / "results" / "latency"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--genome", type=int, default=0, help="which genome of the calibration draw (seed 0)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    space, _, _ = read_space("metaformer_hybrid")
    genome = sample_genomes(space, args.genome + 1, seed=0)[args.genome]
    model = compile_model(genome, seed=0).eval()
    x = torch.randn(1, genome.input.channels, *genome.input.resolution)
    windows = []
    start = time.perf_counter()
    with torch.inference_mode():
        for _ in range(3):
            model(x)
        while time.perf_counter() - start < args.seconds:
            steal, times = stolen_ms() or 0.0, []
            for _ in range(args.calls):
                tick = time.perf_counter()
                model(x)
                times.append((time.perf_counter() - tick) * 1e3)
            windows.append({"at_s": round(time.perf_counter() - start, 1), "median_ms": statistics.median(times),
                            "steal_ms": (stolen_ms() or 0.0) - steal})
    medians = np.array([w["median_ms"] for w in windows])
    centre = float(np.median(medians))
    within = float(np.mean(np.abs(medians / centre - 1) <= 0.1))
    steal = np.array([w["steal_ms"] for w in windows])
    corr = float(np.corrcoef(medians, steal)[0, 1]) if steal.std() > 0 else float("nan")
    result = {"genome": genome.content_hash(), "calls": args.calls, "seconds": args.seconds, "windows": windows,
              "median_ms": centre, "within_10": within, "steal_correlation": corr,
              "date": time.strftime("%Y-%m-%d %H:%M")}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "timing_drift.json").write_text(json.dumps(result, indent=1) + "\n")
    print("| genome | windows (calls each) | median of window medians | range | windows within +-10% | "
          "correlation with steal |\n|---|---|---|---|---|---|")
    print(f"| {genome.content_hash()} | {len(windows)} ({args.calls}) | {centre:.1f} ms | {medians.min():.1f} - "
          f"{medians.max():.1f} ms | {within:.0%} | {corr:+.2f} |")


if __name__ == "__main__":
    main()
