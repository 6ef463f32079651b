"""``nas scale`` on every zoo genome, by every rule, to 0.5x, 2x and 4x its FLOPs: the achieved FLOPs over the
target by the analytic count (the engine's own, which must land within 5%), or the error a rule gives when it
cannot get there. Every scaled genome is validated and costed; those of at most --compile-params parameters are
also compiled (the module's parameter count checked against the analytic one), and those of at most
--fvcore-gflops are run forward at their resolution and counted by fvcore, which must equal the analytic count.
Writes the rows after each genome.

    python benchmarks/scale_zoo.py                        # results/scale/scale_zoo.{json,md}
    python benchmarks/scale_zoo.py --names deit_s,swin_t  # some of it again, keeping the other rows
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nas import analytic_cost, compile_model, load_genome  # noqa: E402
from nas.cost.fvcore import fvcore_flops  # noqa: E402
from nas.io import zoo_names  # noqa: E402
from nas.network import count_parameters  # noqa: E402
from nas.scale import RULES, TOLERANCE, ScaleError, scale_genome  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "scale"
FACTORS = (0.5, 2.0, 4.0)


def run_one(name: str, rule: str, factor: float, compile_params: float, fvcore_gflops: float) -> dict:
    base = load_genome(f"zoo:{name}")
    target = round(analytic_cost(base).flops * factor)
    row = {"genome": name, "rule": rule, "factor": factor, "target_flops": target}
    try:
        result = scale_genome(base, target, rule)
    except ScaleError as err:
        return {**row, "error": str(err)}
    genome = result.genome
    row.update(flops=result.cost.flops, params=result.cost.params, ratio=result.ratio,
               resolution=list(genome.input.resolution), widths=[s.width for s in genome.stages],
               depths=[s.depth for s in genome.stages], adjustments=result.adjustments,
               within=abs(result.ratio - 1) <= TOLERANCE, compiled=None, fvcore_equal=None)
    if result.cost.params <= compile_params:
        model = compile_model(genome, seed=0).eval()
        row["compiled"] = count_parameters(model) == result.cost.params
        if result.cost.flops <= fvcore_gflops * 1e9:
            x = torch.randn(1, genome.input.channels, *genome.input.resolution)
            with torch.inference_mode():
                logits = model(x)
            counted = fvcore_flops(model, x)
            row["fvcore_equal"] = counted == result.cost.flops and tuple(logits.shape) == (1, genome.num_classes)
        del model
    return row


def cell(row: dict) -> str:
    if "error" in row:
        return "cannot (see below)"
    marks = "" if row["within"] else " **outside 5%**"
    checks = {True: "", False: " **check failed**", None: ""}
    extra = checks[row["compiled"]] + checks[row["fvcore_equal"]]
    built = "f" if row["fvcore_equal"] else "c" if row["compiled"] else ""
    return f"{row['ratio']:.3f}{built and ' ' + built}{marks}{extra}"


def write(rows: list[dict], args: argparse.Namespace) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "scale_zoo.json").write_text(json.dumps(rows, indent=1) + "\n")
    by_key = {(r["genome"], r["rule"], r["factor"]): r for r in rows}
    lines = [
        "# nas scale on the zoo",
        "",
        "Achieved analytic FLOPs over the target, for targets of 0.5x, 2x and 4x each genome's own FLOPs at 224x224.",
        f"`c`: compiled (up to {args.compile_params / 1e6:g}M params), its parameter count equal to the analytic "
        f"one; `f`: also run forward and counted by fvcore (up to {args.fvcore_gflops:g} GFLOPs), equal to the "
        "analytic count. Every other genome was validated and costed, not built.",
        "",
        f"Made by `python benchmarks/scale_zoo.py` ({platform.machine()}, torch {torch.__version__}).",
        "",
        "| genome | rule | x0.5 | x2 | x4 |",
        "|---|---|---|---|---|",
    ]
    for name in sorted({r["genome"] for r in rows}):
        for rule in RULES:
            cells = [cell(by_key[(name, rule, f)]) if (name, rule, f) in by_key else "-" for f in FACTORS]
            lines.append(f"| {name} | {rule} | {' | '.join(cells)} |")
    lines += ["", "## Summary", "", "| rule | within 5% | cannot reach (clear error) | outside 5% (defect) |",
              "|---|---|---|---|"]
    for rule in RULES:
        mine = [r for r in rows if r["rule"] == rule]
        lines.append(f"| {rule} | {sum(1 for r in mine if r.get('within'))} | {sum('error' in r for r in mine)} | "
                     f"{sum(1 for r in mine if 'error' not in r and not r['within'])} |")
    checked = [r for r in rows if r.get("compiled") is not None]
    lines += ["", f"Compiled: {len(checked)} genomes, parameter counts equal in "
              f"{sum(bool(r['compiled']) for r in checked)}; fvcore on "
              f"{sum(r.get('fvcore_equal') is not None for r in rows)}, equal in "
              f"{sum(bool(r.get('fvcore_equal')) for r in rows)}.", "", "## Targets a rule cannot reach", ""]
    lines += [f"- {r['genome']} {r['rule']} x{r['factor']:g}: {r['error']}" for r in rows if "error" in r]
    (OUT / "scale_zoo.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--names", help="comma-separated zoo genomes (default: all)")
    parser.add_argument("--compile-params", type=float, default=60e6, help="compile genomes up to this many params")
    parser.add_argument("--fvcore-gflops", type=float, default=3.0, help="run forward and fvcore up to these GFLOPs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = args.names.split(",") if args.names else zoo_names()
    old = OUT / "scale_zoo.json"
    rows = [r for r in json.loads(old.read_text()) if r["genome"] not in names] if old.exists() and args.names else []
    for name in names:
        for rule in RULES:
            for factor in FACTORS:
                row = run_one(name, rule, factor, args.compile_params, args.fvcore_gflops)
                rows.append(row)
                print(f"{name} {rule} x{factor:g}: {row.get('ratio', row.get('error'))}", flush=True)
        write(rows, args)


if __name__ == "__main__":
    main()
