"""Every zoo genome scored as ``nas score zoo:NAME`` scores it (the default space's objective, at 224x224 with 1000
classes, on the default proxy batch), one line each, as a markdown table: the components, params, FLOPs and the
rank of each among the zoo. Shows that every zoo genome scores, and where the objective puts published designs.

    python benchmarks/zoo_scores.py                    # the table
    python benchmarks/zoo_scores.py --json out.json    # and the records
    python benchmarks/zoo_scores.py --table out.json   # the table again, scored by the current objectives
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nas.evaluate.proxy import combine, objective_terms  # noqa: E402
from nas.io import load_genome, zoo_names  # noqa: E402
from nas.search import SearchOptions  # noqa: E402
from nas.search.scoring import score_genome, search_inputs  # noqa: E402
from nas.search.trial import TrialWork  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--names", help="comma list (default: the whole zoo)")
    parser.add_argument("--table", type=Path, help="records of an earlier --json: rescore and print only")
    args = parser.parse_args()
    torch.set_num_threads(1)
    options = SearchOptions(second="none")
    records = json.loads(args.table.read_text()) if args.table else []
    for r in records:  # the components stay; the objective is today's
        terms = objective_terms(load_genome(f"zoo:{r['name']}"), r["components"])
        r["score"] = combine(terms, options.proxy_batch, fit=options.objective_fit) if r["score"] is not None else None
    for name in ([] if args.table else args.names.split(",") if args.names else zoo_names()):
        genome = load_genome(f"zoo:{name}")
        inputs, space = search_inputs(genome.to_dict(), options)
        start = time.perf_counter()
        result = score_genome(genome, TrialWork(space, options, "cpu", inputs))
        records.append({**result.as_dict(), "seconds": round(time.perf_counter() - start, 1)})
        print(f"{name}: {result.score} ({records[-1]['seconds']} s) {result.failure or ''}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))
    keys = sorted({k for r in records for k in r["components"]})
    ranked = sorted((r for r in records if r["score"] is not None), key=lambda r: -r["score"])
    print("\n| rank | genome | score | " + " | ".join(keys) + " | params (M) | GFLOPs |")
    print("|---|---|---|" + "---|" * len(keys) + "---|---|")
    for i, r in enumerate(ranked, 1):
        cells = " | ".join(f"{r['components'].get(k, float('nan')):.4g}" for k in keys)
        print(f"| {i} | {r['name']} | {r['score']:.3f} | {cells} | {r['params'] / 1e6:.1f} | {r['flops'] / 1e9:.2f} |")
    for r in records:
        if r["score"] is None:
            print(f"| - | {r['name']} | failed: {r['failure']} |")


if __name__ == "__main__":
    main()
