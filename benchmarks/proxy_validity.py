"""How far to trust the training-free objective: Kendall tau of each proxy against trained accuracy.

Samples distinct genomes from ``search_spaces/tiny.yaml`` (32x32), scores every proxy on the untrained network
(one batch of training images), trains each on ``synthetic`` and on ``digits`` for a fixed short schedule with
``nas.evaluate.train.train_model``, and reports Kendall's tau-b of each score against final validation
accuracy, per data set. Params and FLOPs are listed as the baselines any proxy has to beat.

    python benchmarks/proxy_validity.py                       # 30 genomes, prints the table
    python benchmarks/proxy_validity.py --append              # and appends it to benchmarks/BENCHMARKS.md
    python benchmarks/proxy_validity.py --json runs/pv.json   # per-genome records, to study combinations
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
import yaml
from scipy.stats import kendalltau

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nas import analytic_cost, compile_model  # noqa: E402
from nas.data import load_data  # noqa: E402
from nas.evaluate.proxy import combine, fitted_objective, proxy_score  # noqa: E402
from nas.evaluate.train import train_model  # noqa: E402
from nas.genome import Genome  # noqa: E402
from nas.space import sample_genomes  # noqa: E402

PROXIES = ("structural", "naswot", "synflow", "grad_norm", "score", "params", "flops")
# Other weightings of the same log-scaled terms (nas.evaluate.proxy.combine), scored on the same records.
ALTERNATIVES = {
    "structural + naswot": {"structural": 1, "naswot": 1},
    "all four, equal": {"structural": 1, "naswot": 1, "synflow": 1, "grad_norm": 1},
    "naswot + synflow": {"naswot": 1, "synflow": 1},
    "structural + synflow": {"structural": 1, "synflow": 1},
    "naswot + grad_norm": {"naswot": 1, "grad_norm": 1},
}


def for_data(genome: dict, data) -> Genome:
    genome = {**genome, "input": {**genome["input"], "channels": data.channels, "resolution": data.resolution},
              "num_classes": data.num_classes}
    return Genome.model_validate(genome)


def tau(records: list[dict], key: str) -> tuple[float, float]:
    pairs = [(r[key], r["accuracy"]) for r in records if r[key] == r[key] and abs(r[key]) != float("inf")]
    if len(pairs) < 3:
        return float("nan"), float("nan")
    result = kendalltau([p[0] for p in pairs], [p[1] for p in pairs])
    return float(result.statistic), float(result.pvalue)


def run(args: argparse.Namespace) -> dict[str, list[dict]]:
    space = yaml.safe_load((ROOT / "search_spaces" / "tiny.yaml").read_text())
    genomes = [g.to_dict() for g in sample_genomes(space, args.genomes, args.seed)]
    results: dict[str, list[dict]] = {}
    for spec in args.data:
        data = load_data(spec, resolution=32, seed=args.seed, limit=args.limit)
        x, y = data.train_x[:args.batch], data.train_y[:args.batch]
        records = []
        for i, raw in enumerate(genomes):
            genome = for_data(raw, data)
            cost = analytic_cost(genome)
            model = compile_model(genome, seed=args.seed + i)
            start = time.perf_counter()
            scores = proxy_score(genome, model, x, y, seed=args.seed)
            proxy_seconds = time.perf_counter() - start
            trained = train_model(model, data, epochs=args.epochs, batch_size=64, seed=args.seed)
            record = {"genome": genome.content_hash(), "mixers": mixers(genome), "batch": len(y), **scores,
                      "params": cost.params, "flops": cost.flops, "accuracy": trained.accuracy,
                      "proxy_seconds": proxy_seconds, "train_seconds": trained.seconds}
            records.append(record)
            print(f"{spec:9s} {i + 1:2d}/{len(genomes)} acc {trained.accuracy:.3f} score {scores['score']:8.3f} "
                  f"({proxy_seconds:.1f}s proxy, {trained.seconds:.1f}s train) {record['mixers']}", flush=True)
        results[spec] = records
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(results, indent=1))
    return results


def mixers(genome: Genome) -> str:
    blocks = [s.block or s.pattern[0] for s in genome.stages]
    return "/".join(f"{s.depth}x{getattr(b, 'mixer', b).type}@{s.width}" for s, b in zip(genome.stages, blocks))


def rescore(results: dict[str, list[dict]]) -> None:
    """``score`` and the alternatives from the recorded components, with the current weights."""
    for records in results.values():
        for r in records:
            r["score"] = combine(r, r.get("batch", 16))
            for name, weights in ALTERNATIVES.items():
                r[name] = combine(r, r.get("batch", 16), weights)


def table(results: dict[str, list[dict]]) -> str:
    rescore(results)
    specs = list(results)
    lines = ["| proxy | " + " | ".join(f"tau on {s} (p)" for s in specs) + " |",
             "|---|" + "---|" * len(specs)]
    for key in (*PROXIES, *ALTERNATIVES):
        cells = []
        for spec in specs:
            t, p = tau(results[spec], key)
            cells.append(f"{t:+.3f} ({p:.2g})")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    accuracy = [f"{min(r['accuracy'] for r in results[s]):.3f}-{max(r['accuracy'] for r in results[s]):.3f}"
                for s in specs]
    lines.append("| (accuracy range) | " + " | ".join(accuracy) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--genomes", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--limit", type=int, default=1024, help="training (and validation) images per data set")
    parser.add_argument("--batch", type=int, default=16, help="images the zero-cost proxies see")
    parser.add_argument("--data", nargs="+", default=["synthetic", "digits"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; 1 is ~10x faster than 2 on a shared, oversubscribed CPU")
    parser.add_argument("--json", help="write per-genome records here")
    parser.add_argument("--append", action="store_true", help="append the table to benchmarks/BENCHMARKS.md")
    parser.add_argument("--table", metavar="JSON", help="only print the table of records saved with --json")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    results = run(args)
    wall = time.perf_counter() - start
    text = table(results)
    print(text)
    load = os.getloadavg()
    print(f"wall {wall / 60:.1f} min; load average at the end {load[0]:.1f}")
    if args.append:
        command = "python benchmarks/proxy_validity.py " + " ".join(sys.argv[1:])
        section = (f"\n## Proxy validity: Kendall tau against trained accuracy (tiny space)\n\n"
                   f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
                   f"{torch.__version__}, {args.threads} threads; load average {load[0]:.1f} at the end "
                   f"(shared). Command: `{command}`. Wall time {wall / 60:.1f} min.\n"
                   f"{args.genomes} genomes, {args.epochs} epochs on {args.limit} images at 32x32, proxies on "
                   f"{args.batch} training images before training; `score` = "
                   f"{fitted_objective()['features']}.\n\n{text}\n")
        with open(ROOT / "benchmarks" / "BENCHMARKS.md", "a") as f:
            f.write(section)


if __name__ == "__main__":
    main()
