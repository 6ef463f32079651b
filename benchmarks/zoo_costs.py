"""The engine's analytic params and FLOPs against the papers and against fvcore on the compiled model, with
the time each count takes: every zoo genome, then random genomes from every shipped space.

Run: python benchmarks/zoo_costs.py [--repeats 5] [--random 100]"""
from __future__ import annotations

import argparse
import platform
import random
import statistics
import time

import torch
import yaml

from nas import analytic_cost, compile_model, load_genome
from nas.cost.fvcore import fvcore_flops
from nas.errors import InputError
from nas.io import data_dir, read_yaml, zoo_dir, zoo_names
from nas.space import instantiate, random_picker


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
    parser.add_argument("--random", type=int, default=100, help="random genomes, spread over the shipped spaces")
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
    random_genomes(args.random, args.repeats)


def random_genomes(count: int, repeats: int) -> None:
    spaces = sorted(p.stem for p in data_dir().glob("*.yaml"))
    rng = random.Random(0)
    ratios, errors, t_analytic, t_fvcore = [], [], [], []
    while len(errors) < count:
        data, _, _ = read_yaml(spaces[len(errors) % len(spaces)])
        try:
            genome = load_genome(instantiate(data, random_picker(rng)))
        except InputError:
            continue
        model = compile_model(genome).eval()
        x = torch.randn(1, genome.input.channels, *genome.input.resolution)
        analytic = analytic_cost(genome).flops
        errors.append(abs(analytic / fvcore_flops(model, x) - 1))
        t_analytic.append(median_seconds(lambda: analytic_cost(genome), repeats))
        t_fvcore.append(median_seconds(lambda: fvcore_flops(model, x), 1))
        ratios.append(t_fvcore[-1] / t_analytic[-1])
    print(f"\n{count} random genomes from {', '.join(spaces)}: max |analytic/fvcore - 1| = {max(errors):.2e}; "
          f"median time analytic {statistics.median(t_analytic) * 1e3:.2f} ms, fvcore "
          f"{statistics.median(t_fvcore) * 1e3:.0f} ms, median speed-up {statistics.median(ratios):.0f}x "
          f"(min {min(ratios):.0f}x)")


if __name__ == "__main__":
    main()
