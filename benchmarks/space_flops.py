"""The spread of a shipped space's analytic FLOPs: the 5th, 50th and 95th percentiles over genomes sampled as a
search's random sampler draws them (``nas.space.sample_genomes``), the figures the README gives for each space.

    python benchmarks/space_flops.py metaformer_hybrid mobile --samples 2000 --seeds 0 1
"""
from __future__ import annotations

import argparse

import numpy as np

from nas.cost import analytic_cost
from nas.space import read_space, sample_genomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spaces", nargs="+", help="shipped space names or space files")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    print("| space | seed | genomes | GFLOPs p5 | p50 | p95 | least | most |\n|---|---|---|---|---|---|---|---|")
    for name in args.spaces:
        space = read_space(name)[0]
        for seed in args.seeds:
            flops = np.array([analytic_cost(g).flops for g in sample_genomes(space, args.samples, seed=seed)]) / 1e9
            p5, p50, p95 = np.percentile(flops, [5, 50, 95])
            print(f"| {name} | {seed} | {len(flops)} | {p5:.2f} | {p50:.2f} | {p95:.2f} | {flops.min():.2f} | "
                  f"{flops.max():.2f} |")


if __name__ == "__main__":
    main()
