"""How far to trust the weight-sharing supernet: rank fidelity and cost against stand-alone training (issue #7).

Trains one supernet for a small space (``nas.supernet.train_supernet``, sandwich rule with in-place
distillation), then draws ``--genomes`` distinct random genomes of the same space and, for each one, measures

- its *inherited* validation accuracy: extracted from the supernet, norms recalibrated, scored
  (``nas.supernet.inherited_accuracy``; timed: the supernet search's cost per candidate);
- the training-free proxy scores of ``--objective proxy`` (``nas.evaluate.proxy.proxy_score``: structural,
  NASWOT, SynFlow, grad-norm and the combined ``score``) on the untrained network and the first
  ``--proxy-batch`` training images, as ``benchmarks/proxy_validity.py`` does; params and FLOPs as baselines;
- its *stand-alone* validation accuracy: ``compile_model(genome, seed)`` trained from scratch with
  ``nas.evaluate.train.train_model`` for ``--epochs`` epochs (the same split, seed and schedule for every
  genome; timed).

It reports Kendall's tau-b (and Spearman's rho) of stand-alone accuracy against the inherited accuracy and
against every proxy, on the same genomes, and the cost: supernet training plus N inherited evaluations against
N stand-alone trainings, with the break-even number of candidates. Everything goes to a JSON file.

    python benchmarks/supernet_fidelity.py --quick          # smoke run, a minute or two
    python benchmarks/supernet_fidelity.py                  # the benchmark (see benchmarks/BENCHMARKS.md)
    python benchmarks/supernet_fidelity.py --table benchmarks/results/supernet_fidelity.json   # reprint
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

import torch
from scipy.stats import kendalltau, spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nas import analytic_cost, compile_model
from nas.data import load_data
from nas.evaluate.proxy import fitted_objective, proxy_score
from nas.evaluate.train import train_model
from nas.genome import Genome
from nas.io import read_yaml
from nas.space import fit_space_to_data, space_resolution
from nas.supernet import (
    SupernetTrainOptions,
    inherited_accuracy,
    sample_genome,
    train_supernet,
)
from nas.supernet.supernet import Supernet, SupernetCoverageError

DEFAULT_SPACE = "benchmarks/spaces/supernet_small.yaml"
DEFAULT_JSON = "benchmarks/results/supernet_fidelity.json"
# What is ranked against stand-alone accuracy, in table order.
PREDICTORS = ("inherited", "score", "structural", "naswot", "synflow", "grad_norm", "params", "flops")
QUICK = {"genomes": 6, "supernet_epochs": 2, "epochs": 1, "limit": 256}


def sample_distinct(space: dict, count: int, seed: int) -> list[Genome]:
    """``count`` distinct valid genomes (by content hash) from ``nas.supernet.sample_genome``."""
    rng, found, seen = random.Random(seed), [], set()
    for _ in range(100 * count):
        genome = sample_genome(space, rng)
        if genome.content_hash() not in seen:
            seen.add(genome.content_hash())
            found.append(genome)
        if len(found) == count:
            return found
    raise SystemExit(f"only {len(found)} distinct genomes in {100 * count} draws; ask for fewer")


def describe(genome: Genome) -> str:
    """``depth x mixer[params] @ width / ...`` per stage, e.g. ``2xdwconv7@24/1xattention16@48/...``."""
    parts = []
    for stage in genome.stages:
        block = stage.block or stage.pattern[0]
        mixer = getattr(block, "mixer", block)
        extra = next((getattr(mixer, k) for k in ("kernel", "head_dim", "window") if getattr(mixer, k, None)), "")
        parts.append(f"{stage.depth}x{mixer.type}{extra}@{stage.width}")
    return "/".join(parts)


def correlations(records: list[dict], key: str) -> dict[str, float]:
    """Kendall's tau-b and Spearman's rho of ``key`` against stand-alone accuracy (finite pairs only)."""
    pairs = [(r[key], r["standalone"]) for r in records
             if r.get(key) is not None and math.isfinite(r[key]) and r.get("standalone") is not None]
    out = {"n": len(pairs), "tau": math.nan, "tau_p": math.nan, "rho": math.nan, "rho_p": math.nan}
    if len(pairs) >= 3:
        x, y = [p[0] for p in pairs], [p[1] for p in pairs]
        kt, sr = kendalltau(x, y), spearmanr(x, y)
        out.update(tau=float(kt.statistic), tau_p=float(kt.pvalue), rho=float(sr.statistic),
                   rho_p=float(sr.pvalue))
    # Where the predictor's favourite genome lands in the stand-alone ranking (1 = the best), and the regret.
    if pairs:
        best = max(pairs, key=lambda p: p[0])
        ordered = sorted((p[1] for p in pairs), reverse=True)
        out["pick_rank"] = 1 + sum(1 for a in ordered if a > best[1])
        out["pick_regret"] = ordered[0] - best[1]
    return out


def machine() -> dict:
    return {"platform": platform.platform(), "machine": platform.machine(), "processor": platform.processor(),
            "python": platform.python_version(), "torch": torch.__version__, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "load_average_start": list(os.getloadavg())}


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    started = datetime.now().isoformat(timespec="seconds")
    info = machine()
    if not Path(args.space).exists() and (ROOT / args.space).exists():
        args.space = str(ROOT / args.space)
    space, _, _ = read_yaml(args.space)
    data = load_data(args.data, resolution=space_resolution(space), seed=args.seed, limit=args.limit)
    space = fit_space_to_data(space, data)
    print(f"{args.data}: {len(data.train_y)} train, {len(data.val_y)} val images, {data.num_classes} classes, "
          f"{space_resolution(space)}px; {args.threads} torch thread(s)", flush=True)

    # 1. The supernet, trained once on the same data (same spec, seed and limit as the stand-alone runs).
    supernet_dir = Path(args.supernet_dir or ROOT / "runs" / "supernet_fidelity" /
                        datetime.now().strftime("%Y%m%d-%H%M%S"))
    options = SupernetTrainOptions(space=str(args.space), data=args.data, data_limit=args.limit,
                                   epochs=args.supernet_epochs, random_per_step=args.random_per_step,
                                   distill=not args.no_distill,
                                   seed=args.seed, threads=args.threads, device="cpu")
    trained = train_supernet(options, out=supernet_dir, quiet=args.quiet)
    net, _ = Supernet.load(supernet_dir)
    net.eval()
    history = trained.history
    supernet = {"dir": str(supernet_dir), "options": options.model_dump(), "seconds": trained.seconds,
                "eval_seconds": sum(row["eval_seconds"] for row in history), "history": history,
                "largest": describe(Genome.model_validate(net.largest)),
                "smallest": describe(Genome.model_validate(net.smallest)),
                "largest_accuracy": history[-1]["largest_accuracy"],
                "smallest_accuracy": history[-1]["smallest_accuracy"],
                "shared_params": sum(p.numel() for p in net.parameters())}
    print(f"supernet: {trained.seconds:.0f} s for {args.supernet_epochs} epochs; largest "
          f"{supernet['largest_accuracy']:.3f}, smallest {supernet['smallest_accuracy']:.3f}", flush=True)

    # 2. The genomes, each scored three ways.
    genomes = sample_distinct(space, args.genomes, args.seed)
    x, y = data.train_x[:args.proxy_batch], data.train_y[:args.proxy_batch]
    records = []
    for i, genome in enumerate(genomes):
        cost = analytic_cost(genome)
        record = {"genome": genome.content_hash(), "arch": describe(genome), "params": cost.params,
                  "flops": cost.flops}
        tick = time.perf_counter()
        try:
            record["inherited"], _ = inherited_accuracy(net, genome, data, seed=args.seed)
        except SupernetCoverageError as err:  # reported, not hidden: the supernet cannot run this genome
            record["inherited"], record["inherited_error"] = None, str(err)
        record["inherited_seconds"] = time.perf_counter() - tick

        tick = time.perf_counter()
        model = compile_model(genome, seed=args.seed)
        record["build_seconds"] = time.perf_counter() - tick
        tick = time.perf_counter()
        record.update(proxy_score(genome, model, x, y, seed=args.seed))  # on a deep copy: model untouched
        record["proxy_seconds"] = time.perf_counter() - tick

        result = train_model(model, data, epochs=args.epochs, batch_size=64, seed=args.seed)
        record.update(standalone=result.accuracy, standalone_history=result.history,
                      standalone_seconds=result.seconds)
        records.append(record)
        inherited = "  n/a" if record["inherited"] is None else f"{record['inherited']:.3f}"
        print(f"{i + 1:2d}/{len(genomes)} stand-alone {result.accuracy:.3f} ({result.seconds:5.1f} s)  inherited "
              f"{inherited} ({record['inherited_seconds']:.2f} s)  score {record['score']:7.3f}  {record['arch']}",
              flush=True)

    # 3. Ranks and cost.
    taus = {key: correlations(records, key) for key in PREDICTORS}
    n = len(records)
    inherited_s = [r["inherited_seconds"] for r in records]
    standalone_s = [r["standalone_seconds"] for r in records]
    proxy_s = [r["proxy_seconds"] + r["build_seconds"] for r in records]
    supernet_total = trained.seconds + sum(inherited_s)
    per_candidate_saving = statistics.mean(standalone_s) - statistics.mean(inherited_s)
    cost = {"candidates": n, "supernet_train_seconds": trained.seconds,
            "inherited_seconds_sum": sum(inherited_s), "inherited_seconds_median": statistics.median(inherited_s),
            "supernet_total_seconds": supernet_total,
            "standalone_seconds_sum": sum(standalone_s),
            "standalone_seconds_median": statistics.median(standalone_s),
            "proxy_seconds_sum": sum(proxy_s), "proxy_seconds_median": statistics.median(proxy_s),
            "standalone_over_supernet": sum(standalone_s) / supernet_total,
            "break_even_candidates": (trained.seconds / per_candidate_saving if per_candidate_saving > 0
                                      else math.inf)}
    info["torch_threads"] = torch.get_num_threads()
    info["load_average_end"] = list(os.getloadavg())
    accuracies = [r["standalone"] for r in records]
    return {"started": started, "command": "python benchmarks/supernet_fidelity.py " + " ".join(sys.argv[1:]),
            "machine": info, "args": vars(args), "proxy_objective": fitted_objective()["features"],
            "data": {"spec": args.data, "train": len(data.train_y), "val": len(data.val_y),
                     "classes": data.num_classes, "resolution": space_resolution(space)},
            "supernet": supernet, "standalone": {"epochs": args.epochs, "batch_size": 64, "seed": args.seed,
                                                  "accuracy_min": min(accuracies), "accuracy_max": max(accuracies),
                                                  "accuracy_median": statistics.median(accuracies)},
            "correlations": taus, "cost": cost, "records": records}


def table(result: dict) -> str:
    sn, cost, sa = result["supernet"], result["cost"], result["standalone"]
    inherited = [r["inherited"] for r in result["records"] if r["inherited"] is not None]
    n, epochs = cost["candidates"], sn["options"]["epochs"]
    training = "in-place distillation" if sn["options"]["distill"] else "labels only"
    summary = (f"{n} genomes; stand-alone accuracy {sa['accuracy_min']:.3f}-{sa['accuracy_max']:.3f} (median "
               f"{sa['accuracy_median']:.3f}) after {sa['epochs']} epochs; supernet {epochs} epochs ({training}), "
               f"largest genome {sn['largest_accuracy']:.3f}, smallest {sn['smallest_accuracy']:.3f}; inherited "
               f"accuracy {min(inherited):.3f}-{max(inherited):.3f} ({n - len(inherited)} genomes it could not run).")
    lines = [summary, "",
             "| predictor of stand-alone accuracy | Kendall tau (p) | Spearman rho (p) "
             "| its top genome: stand-alone rank, regret |",
             "|---|---|---|---|"]
    for key, c in result["correlations"].items():
        pick = f"{c['pick_rank']} of {c['n']}, {c['pick_regret']:.3f}" if "pick_rank" in c else "-"
        lines.append(f"| {key} | {c['tau']:+.3f} ({c['tau_p']:.2g}) | {c['rho']:+.3f} ({c['rho_p']:.2g}) | {pick} |")
    rows = [
        (f"supernet training ({epochs} epochs, incl. {sn['eval_seconds']:.0f} s of per-epoch evaluation)",
         f"{cost['supernet_train_seconds']:.0f}", "-"),
        (f"inherited evaluation x {n}", f"{cost['inherited_seconds_sum']:.1f}",
         f"{cost['inherited_seconds_median']:.2f}"),
        ("**supernet total**", f"**{cost['supernet_total_seconds']:.0f}**", "-"),
        (f"**stand-alone training x {n}** ({sa['epochs']} epochs each)", f"**{cost['standalone_seconds_sum']:.0f}**",
         f"{cost['standalone_seconds_median']:.1f}"),
        (f"proxy (build + score) x {n}", f"{cost['proxy_seconds_sum']:.1f}", f"{cost['proxy_seconds_median']:.2f}"),
    ]
    lines += ["", "| cost (s) | total | per candidate (median) |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    lines += ["", (f"Stand-alone / supernet time at {n} candidates: {cost['standalone_over_supernet']:.2f}x; "
                   f"break-even at {cost['break_even_candidates']:.1f} candidates.")]
    return "\n".join(lines)


def genome_table(result: dict) -> str:
    lines = ["| # | genome | stand-alone | inherited | score | MFLOPs | params K | train s | inherit s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(sorted(result["records"], key=lambda r: -r["standalone"])):
        inherited = "n/a" if r["inherited"] is None else f"{r['inherited']:.3f}"
        lines.append(f"| {i + 1} | {r['arch']} | {r['standalone']:.3f} | {inherited} | {r['score']:.2f} | "
                     f"{r['flops'] / 1e6:.1f} | {r['params'] / 1e3:.0f} | {r['standalone_seconds']:.1f} | "
                     f"{r['inherited_seconds']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--space", default=DEFAULT_SPACE, help="space YAML (or a shipped space name)")
    parser.add_argument("--data", default="synthetic", help="synthetic, digits, an image folder or an .npz")
    parser.add_argument("--limit", type=int, default=None, help="cap on each split's size (None: all)")
    parser.add_argument("--genomes", type=int, default=24, help="distinct random genomes to compare")
    parser.add_argument("--supernet-epochs", type=int, default=30, help="supernet training epochs")
    parser.add_argument("--random-per-step", type=int, default=2,
                        help="random genomes per supernet step, besides the largest and the smallest")
    parser.add_argument("--no-distill", action="store_true",
                        help="supernet: every genome learns from the labels, not from the largest's predictions")
    parser.add_argument("--epochs", type=int, default=12, help="stand-alone training epochs per genome")
    parser.add_argument("--proxy-batch", type=int, default=16,
                        help="training images the zero-cost proxies see (as proxy_validity.py)")
    parser.add_argument("--seed", type=int, default=0, help="data, supernet, init and training seed")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: oversubscribed threads are far slower on a shared CPU)")
    parser.add_argument("--supernet-dir", help="where the supernet run goes (None: runs/supernet_fidelity/TIME)")
    parser.add_argument("--json", default=DEFAULT_JSON, help="where the results go")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK} unless given (and JSON in runs/ unless --json is given)")
    parser.add_argument("--quiet", action="store_true", help="no supernet progress output")
    parser.add_argument("--table", metavar="JSON", help="only print the tables of a saved result")
    args = parser.parse_args()
    if args.table:
        result = json.loads(Path(args.table).read_text())
        print(genome_table(result) + "\n\n" + table(result))
        return
    if args.quick:
        given = {a.split("=")[0].lstrip("-").replace("-", "_") for a in sys.argv[1:] if a.startswith("--")}
        for key, value in QUICK.items():
            if key not in given:
                setattr(args, key, value)
        if "json" not in given:
            args.json = str(ROOT / "runs" / "supernet_fidelity_quick.json")
    start = time.perf_counter()
    result = run(args)
    result["wall_seconds"] = time.perf_counter() - start
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=str))
    print("\n" + genome_table(result) + "\n\n" + table(result))
    print(f"\nwall {result['wall_seconds'] / 60:.1f} min; "
          f"load average {result['machine']['load_average_start'][0]:.1f} "
          f"at the start, {result['machine']['load_average_end'][0]:.1f} at the end; results in {path}")


if __name__ == "__main__":
    main()
