"""Do the zero-cost scores measure a genome's norm type? For a few genomes of ``search_spaces/tiny.yaml`` (32x32),
each scored with every norm made a LayerNorm, a BatchNorm and a GroupNorm, and from three weight-init seeds:

- norm gap: how far the three norm types move a score at one seed, ``(max - min) / |mean|`` over the types,
  averaged over seeds;
- seed spread: how far three seeds move it for one norm type, ``(max - min) / |mean|`` over the seeds,
  averaged over norm types.

A score that measures the architecture has a norm gap no larger than its seed spread. Both are shown before
(``canonical=False``: every norm as it is) and after (``canonical=True``, the default: every norm computes one
per-sample standardisation; see ``nas.evaluate.zero_cost``), as medians over the genomes, with the number of
genomes whose gap exceeds their spread. The batch is the default proxy batch (``nas.evaluate.batch``).

    python benchmarks/norm_fairness.py                 # 6 genomes, batch of 8; prints a markdown table
"""
from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nas import compile_model  # noqa: E402
from nas.evaluate.batch import proxy_batch  # noqa: E402
from nas.evaluate.proxy import with_norm_type  # noqa: E402
from nas.evaluate.zero_cost import zero_cost_scores  # noqa: E402
from nas.space import sample_genomes  # noqa: E402

NORMS = ("layernorm", "batchnorm", "groupnorm")
SEEDS = (0, 1, 2)
SCORES = ("naswot", "synflow", "grad_norm", "snip", "zico", "meco")


def relative_range(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < len(values) or not finite:
        return math.nan
    scale = abs(statistics.fmean(finite))
    return (max(finite) - min(finite)) / scale if scale else math.nan


def gap_and_spread(runs: dict[str, list[float]]) -> tuple[float, float]:
    """``runs[norm][seed]`` -> (norm gap, seed spread), as defined in the module docstring."""
    gap = statistics.fmean(relative_range(list(at_seed)) for at_seed in zip(*runs.values()))
    spread = statistics.fmean(relative_range(values) for values in runs.values())
    return gap, spread


def measure(genome: dict, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[bool, dict[str, tuple[float, float]]]:
    """canonical -> score -> (norm gap, seed spread) for one genome."""
    runs = {canonical: {key: {norm: [] for norm in NORMS} for key in SCORES} for canonical in (False, True)}
    for norm in NORMS:
        variant = with_norm_type(genome, norm)
        for seed in SEEDS:
            model = compile_model(variant, seed=seed)
            for canonical in (False, True):
                scores = zero_cost_scores(model, *batch, canonical=canonical)
                for key in SCORES:
                    runs[canonical][key][norm].append(scores[key])
    return {canonical: {key: gap_and_spread(by_norm) for key, by_norm in by_key.items()}
            for canonical, by_key in runs.items()}


def table(results: list[dict[bool, dict[str, tuple[float, float]]]]) -> str:
    def cells(canonical: bool, key: str) -> list[str]:
        pairs = [r[canonical][key] for r in results]
        gap = statistics.median(p[0] for p in pairs)
        spread = statistics.median(p[1] for p in pairs)
        unfair = sum(p[0] > p[1] or math.isnan(p[0]) for p in pairs)
        return [f"{gap:.3g}", f"{spread:.3g}", f"{unfair}/{len(pairs)}"]

    lines = ["| score | raw: norm gap | raw: seed spread | raw: gap > spread | canonical: norm gap "
             "| canonical: seed spread | canonical: gap > spread |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for key in SCORES:
        lines.append("| " + " | ".join([key, *cells(False, key), *cells(True, key)]) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--genomes", type=int, default=6)
    parser.add_argument("--batch", type=int, default=8, help="proxy batch size (the search's default)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the genome sample and the batch")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batch = proxy_batch(channels=3, resolution=32, num_classes=10, count=args.batch, seed=args.seed)
    results = []
    space = yaml.safe_load((ROOT / "search_spaces" / "tiny.yaml").read_text())
    for genome in [g.to_dict() for g in sample_genomes(space, args.genomes, args.seed)]:
        results.append(measure(genome, batch))
        mixers = [(stage.get("block") or stage["pattern"][0]).get("mixer", {}).get("type", "?")
                  for stage in genome["stages"]]
        print(f"scored {' / '.join(mixers)}", file=sys.stderr, flush=True)
    print(f"{args.genomes} tiny-space genomes, norm types {', '.join(NORMS)}, seeds {SEEDS}, proxy batch of "
          f"{args.batch}; medians over genomes. {platform.processor() or platform.machine()}, torch "
          f"{torch.__version__}, {args.threads} thread(s).\n")
    print(table(results))


if __name__ == "__main__":
    main()
