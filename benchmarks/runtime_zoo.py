"""Every zoo genome timed under eager PyTorch and under ONNX Runtime (its ONNX export, CPU provider), side by side,
with the rank correlation between the two: does a winner under eager latency stay one under the runtime that
ships it?

Two phases, so that the slow part (the dynamo exporter takes about a minute a genome here) need not hold the
machine idle:

    python benchmarks/runtime_zoo.py --export /tmp/zoo_onnx     # nas.onnx.export_onnx of each genome (any load)
    python benchmarks/runtime_zoo.py --onnx-dir /tmp/zoo_onnx   # the timings: on an idle machine

Each genome runs in a subprocess of its own (an exporter or runtime crash is a row, not the end of the run).
Batch 1, float32, ``--threads`` intra-op threads for both (1 by default, as ``nas search`` times on a CPU); each
runtime's median over ``--repeats`` calls after 3 warmup calls (``nas.cost.latency.time_calls``), eager first.
Writes ``benchmarks/results/latency/runtime_zoo.json`` and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).parent / "results" / "latency"
TIMEOUT_S = 1800  # one genome's export or timing; a busy machine can take minutes, a hang takes forever
NOT_EXPORTED = ("not timed: no export of it in --onnx-dir (phase 1 was stopped before it); whether it exports: "
                "benchmarks/results/onnx/onnx_zoo.md")


def export_one(name: str, folder: Path) -> None:
    from nas.onnx import export_onnx

    export_onnx(f"zoo:{name}", folder / f"{name}.onnx", dynamic_batch=False)


def time_one(name: str, folder: Path, repeats: int, threads: int) -> dict:
    import numpy as np
    import torch

    from nas import compile_model, load_genome
    from nas.cost.latency import measure_latency, time_calls
    from nas.onnx import onnx_session

    torch.set_num_threads(threads)
    genome = load_genome(f"zoo:{name}")
    shape = (genome.input.channels, *genome.input.resolution)
    eager = measure_latency(compile_model(genome, seed=0), shape, "cpu", warmup=3, repeats=repeats,
                            threads=threads).median_ms
    session = onnx_session(folder / f"{name}.onnx", threads=threads)
    feed = {session.get_inputs()[0].name: np.random.default_rng(0).standard_normal((1, *shape), np.float32)}
    ort = float(np.median(time_calls(lambda: session.run(None, feed), torch.device("cpu"), 3, repeats)))
    return {"genome": name, "eager": eager, "onnxruntime": ort}


def in_subprocess(args: list[str]) -> tuple[dict | None, str]:
    try:
        done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {TIMEOUT_S} s"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        return None, f"exit {done.returncode}: {last[:200]}"
    lines = done.stdout.strip().splitlines()
    return (json.loads(lines[-1]) if lines else {}), ""


def markdown(rows: list[dict]) -> str:
    lines = ["| genome | eager ms | onnxruntime ms | onnxruntime / eager |", "|---|---|---|---|"]
    for r in rows:
        if r.get("onnxruntime"):
            lines.append(f"| {r['genome']} | {r['eager']:.1f} | {r['onnxruntime']:.1f} | "
                         f"{r['onnxruntime'] / r['eager']:.2f} |")
        else:
            lines.append(f"| {r['genome']} | - | - | {r.get('failure', '')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", type=Path, metavar="DIR", help="phase 1: export every zoo genome here")
    parser.add_argument("--onnx-dir", type=Path, metavar="DIR", help="phase 2: time eager and these exports")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="*", help="these zoo genomes only")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a subprocess's genome
    args = parser.parse_args()
    if args.one:
        if args.export:
            export_one(args.one, args.export)
            print("{}")
        else:
            print(json.dumps(time_one(args.one, args.onnx_dir, args.repeats, args.threads)))
        return
    from nas.io import zoo_names

    names = args.only or zoo_names()
    if args.export:
        args.export.mkdir(parents=True, exist_ok=True)
        for name in names:
            if (args.export / f"{name}.onnx").exists():
                continue
            tick = time.perf_counter()
            _, failure = in_subprocess(["--one", name, "--export", str(args.export)])
            print(f"{name}: {'exported' if not failure else failure} ({time.perf_counter() - tick:.0f}s)",
                  file=sys.stderr, flush=True)
        return
    from scipy.stats import kendalltau, spearmanr

    from nas.cost.latency import runtime_version

    rows = []
    for name in names:
        if not (args.onnx_dir / f"{name}.onnx").exists():
            rows.append({"genome": name, "failure": NOT_EXPORTED})
            continue
        row, failure = in_subprocess(["--one", name, "--onnx-dir", str(args.onnx_dir), "--repeats",
                                      str(args.repeats), "--threads", str(args.threads)])
        rows.append(row or {"genome": name, "failure": failure})
        print(f"{name}: {rows[-1]}", file=sys.stderr, flush=True)
    both = [r for r in rows if r.get("eager") and r.get("onnxruntime")]
    eager, ort = [r["eager"] for r in both], [r["onnxruntime"] for r in both]
    summary = {"genomes": len(rows), "timed_under_both": len(both),
               "kendall_tau": float(kendalltau(eager, ort).statistic) if len(both) > 2 else None,
               "spearman": float(spearmanr(eager, ort).statistic) if len(both) > 2 else None,
               "median_ratio": float(sorted(o / e for e, o in zip(eager, ort))[len(both) // 2]) if both else None,
               "runtimes": {rt: runtime_version(rt) for rt in ("eager", "onnxruntime")}}
    result = {"command": " ".join(["python", *sys.argv]), "date": time.strftime("%Y-%m-%d %H:%M"),
              "machine": f"{platform.machine()}, Python {platform.python_version()}", "threads": args.threads,
              "repeats": args.repeats, "summary": summary, "rows": rows}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "runtime_zoo.json").write_text(json.dumps(result, indent=1) + "\n")
    print(markdown(rows))
    print(f"\nKendall tau (eager vs onnxruntime, {len(both)} genomes): {summary['kendall_tau']}; "
          f"Spearman {summary['spearman']}; median onnxruntime/eager {summary['median_ratio']}")


if __name__ == "__main__":
    main()
