"""Latency lookup table against end-to-end timing on random genomes: how close the sum of per-block table
entries comes to the whole network's measured latency, and what each costs in wall time.

Run: python benchmarks/latency_predictor.py [--genomes 30] [--repeats 20]
"""
from __future__ import annotations

import argparse
import random
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from nas import GenomeError, analytic_cost, compile_model, load_genome
from nas.cost.latency import LatencyTable, device_fingerprint, measure_latency, predict_latency
from nas.genome import Genome

# Per stage: depth, width and token-mixer choices. Attention heads of 3 do not divide every width, so some
# samples are invalid and skipped, as a search would skip them.
SPACE: dict[str, Any] = {
    "depth": [[1, 2, 3], [1, 2, 3], [2, 4, 6], [1, 2]],
    "width": [[32, 48, 64], [48, 64, 96], [64, 96, 128], [96, 128]],
    "mixer": [{"type": "sepconv", "kernel": 7}, {"type": "sepconv", "kernel": 3}, {"type": "dwconv", "kernel": 7},
              {"type": "attention", "heads": 2}, {"type": "attention", "heads": 3}, {"type": "pooling"},
              {"type": "identity"}],
    "mlp_ratio": [2, 4],
}


def sample(rng: random.Random, resolution: int) -> dict[str, Any]:
    stages = []
    for i in range(4):
        stage = {"depth": rng.choice(SPACE["depth"][i]), "width": rng.choice(SPACE["width"][i]),
                 "block": {"mixer": rng.choice(SPACE["mixer"]), "mlp": {"ratio": rng.choice(SPACE["mlp_ratio"])}}}
        if i > 0:
            stage["downsample"] = {"type": "conv", "kernel": 3, "stride": 2, "padding": 1, "pre_norm": "layernorm"}
        stages.append(stage)
    return {"input": {"resolution": resolution}, "num_classes": 1000,
            "stem": {"type": "conv", "kernel": 4, "stride": 4, "post_norm": "layernorm"}, "stages": stages}


def genomes(n: int, resolution: int, seed: int) -> tuple[list[Genome], int]:
    """``n`` valid genomes and how many invalid samples were skipped on the way."""
    rng, found, skipped = random.Random(seed), [], 0
    while len(found) < n:
        try:
            found.append(load_genome(sample(rng, resolution)))
        except GenomeError:
            skipped += 1
    return found, skipped


def wall(fn, *args, **kwargs):
    """fn's result and the seconds it took."""
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def page_faults() -> int:
    """Minor page faults of this process so far: glibc returning freed activations to the kernel shows here."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def errors(predicted: list[float], measured: list[float]) -> list[float]:
    return [(p - m) / m for p, m in zip(predicted, measured)]


def summary(label: str, errs: list[float]) -> str:
    within = sum(abs(e) <= 0.10 for e in errs) / len(errs)
    return (f"{label}: within ±10%: {within:.0%} ({len(errs)} genomes), median |error| "
            f"{statistics.median(abs(e) for e in errs):.1%}, median signed error {statistics.median(errs):+.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--genomes", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per measurement, whole or per block")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--table", type=Path, help="LUT file to reuse (default: a fresh one, so it starts cold)")
    args = parser.parse_args()
    timing = {"threads": 1, "batch": 1, "warmup": args.warmup, "repeats": args.repeats}
    sampled, skipped = genomes(args.genomes, args.resolution, args.seed)
    fp = device_fingerprint("cpu", threads=1)
    print(f"# {fp['name']}, torch {fp['torch']}, {fp['dtype']}, batch 1, 1 thread, {args.resolution}px, "
          f"allocator environment {fp['allocator'] or 'default'}, "
          f"warmup {args.warmup}, repeats {args.repeats}; {len(sampled)} genomes ({skipped} invalid samples skipped)")
    table_path = args.table or Path(tempfile.mkdtemp()) / "latency.sqlite"
    table = LatencyTable(table_path)
    measured, remeasured, predicted, misses, faults = [], [], [], [], []
    t_compile, t_measure, t_cold, t_warm = [], [], [], []
    shape = (3, args.resolution, args.resolution)
    print("| # | depths | widths | mixers | GMACs | measured ms | faults/call | again ms | LUT ms | LUT error "
          "| new entries |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for i, genome in enumerate(sampled):
        model, s_compile = wall(compile_model, genome, seed=0)
        faults_before = page_faults()
        result, s_measure = wall(measure_latency, model, shape, **timing)
        faults.append((page_faults() - faults_before) / (args.warmup + args.repeats))
        cold, s_cold = wall(predict_latency, genome, table, **timing)
        warm, s_warm = wall(predict_latency, genome, table, **timing)
        assert warm.measured == 0 and warm.total_ms == cold.total_ms
        again = measure_latency(model, shape, **timing).median_ms  # the same model once more: the noise floor
        measured.append(result.median_ms)
        remeasured.append(again)
        predicted.append(cold.total_ms)
        misses.append(cold.measured)
        for times, seconds in ((t_compile, s_compile), (t_measure, s_measure), (t_cold, s_cold), (t_warm, s_warm)):
            times.append(seconds)
        mixers = "/".join(s.block.mixer.type for s in genome.stages)
        print(f"| {i} | {[s.depth for s in genome.stages]} | {[s.width for s in genome.stages]} | {mixers} | "
              f"{analytic_cost(genome).flops / 1e9:.2f} | {result.median_ms:.2f} | {faults[-1]:.0f} | {again:.2f} | "
              f"{cold.total_ms:.2f} | {(cold.total_ms - result.median_ms) / result.median_ms:+.1%} | "
              f"{cold.measured} |")
    print()
    print(summary("end to end, timed again", errors(remeasured, measured)))
    print(summary("LUT sum", errors(predicted, measured)))
    # A single per-device scale, fitted on the even-numbered genomes and scored on the odd ones only.
    scale = statistics.median(m / p for m, p in zip(measured[::2], predicted[::2]))
    print(summary(f"LUT sum x {scale:.3f} (fit on even, scored on odd)",
                  errors([p * scale for p in predicted[1::2]], measured[1::2])))
    print(f"median wall per genome: compile_model {statistics.median(t_compile) * 1e3:.0f} ms, "
          f"measure_latency {statistics.median(t_measure) * 1e3:.0f} ms, "
          f"LUT prediction cold {statistics.median(t_cold) * 1e3:.0f} ms "
          f"(median {statistics.median(misses):.0f} new entries), warm {statistics.median(t_warm) * 1e3:.1f} ms; "
          f"table: {len(table)} entries, {sum(t_cold):.1f} s of LUT timing in all")
    print(f"median page faults per end-to-end call: {statistics.median(faults):.0f}")


if __name__ == "__main__":
    main()
