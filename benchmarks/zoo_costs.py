"""Zoo genomes: the engine's analytic params and FLOPs against the papers and against fvcore on the compiled
model, with the time each count takes. Run: python benchmarks/zoo_costs.py [--repeats 5]"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import yaml

from nas import analytic_cost, compile_model, load_genome
from nas.cost.fvcore import fvcore_flops
from nas.io import zoo_dir, zoo_names


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    reference = yaml.safe_load((zoo_dir() / "reference.yaml").read_text())
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread, "
          f"median of {args.repeats}")
    print("| genome | params (M) | paper | GFLOPs | paper | fvcore GFLOPs | analytic / fvcore | analytic ms "
          "| fvcore ms | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in zoo_names():
        genome = load_genome(f"zoo:{name}")
        cost = analytic_cost(genome)
        model = compile_model(genome).eval()
        x = torch.randn(1, 3, 224, 224)
        counted = fvcore_flops(model, x)
        t_analytic = median_seconds(lambda: analytic_cost(genome), args.repeats)
        t_fvcore = median_seconds(lambda: fvcore_flops(model, x), args.repeats)
        ref = reference[name]
        print(f"| {name} | {cost.trainable_params / 1e6:.2f} | {ref['params_m']} | {cost.flops / 1e9:.3f} | "
              f"{ref['gflops']} | {counted / 1e9:.3f} | {cost.flops / counted:.4f} | {t_analytic * 1e3:.2f} | "
              f"{t_fvcore * 1e3:.0f} | {t_fvcore / t_analytic:.0f}x |")


if __name__ == "__main__":
    main()
