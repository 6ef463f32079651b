"""Every zoo genome exported to ONNX (``torch.onnx.export(..., dynamo=True)``, dynamic batch) at its own input
resolution, run under onnxruntime's CPU provider and compared with the PyTorch model in eval mode on the same
random inputs at batch 1 and 2 (weights from seed 0 plus small noise, so that layer scales of 1e-6 do not hide
any branch); also whether ``torch.export.export`` takes it. Writes the records and a markdown table, after each genome.

    python benchmarks/onnx_zoo.py                          # the whole zoo: results/onnx/onnx_zoo.{json,md}
    python benchmarks/onnx_zoo.py --names deit_s,swin_t    # some of it again, keeping the other rows
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import onnx
import onnxruntime
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nas import compile_model, load_genome  # noqa: E402
from nas.io import zoo_names  # noqa: E402
from nas.onnx import TOLERANCE, OnnxExportError, check_onnx  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "onnx"


def torch_export(name: str) -> str | None:
    """None when torch.export.export takes the genome at its resolution, else the reason."""
    genome = load_genome(f"zoo:{name}")
    model = compile_model(genome, seed=0).eval()
    x = torch.randn(1, genome.input.channels, *genome.input.resolution)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.export.export(model, (x,))
    except Exception as err:  # noqa: BLE001 - the reason is the record
        return f"{type(err).__name__}: {str(err).strip().splitlines()[0][:300]}"
    return None


def record(name: str) -> dict:
    row: dict = {"genome": name, "resolution": list(load_genome(f"zoo:{name}").input.resolution)}
    try:
        check = check_onnx(f"zoo:{name}")
        row.update(exported=True, reason=None, max_abs_diff=check.max_abs_diff, output_scale=check.scale,
                   equal=check.equal, export_seconds=round(check.export_seconds, 1))
    except OnnxExportError as err:
        row.update(exported=False, reason=str(err), max_abs_diff=None, output_scale=None, equal=False,
                   export_seconds=None)
    start = time.perf_counter()
    row["torch_export_error"] = torch_export(name)
    row["torch_export_seconds"] = round(time.perf_counter() - start, 1)
    return row


def table(rows: list[dict]) -> str:
    lines = ["| genome | exported | reason if not | max abs diff | output scale | equal | export s | torch.export |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        diff = f"{r['max_abs_diff']:.2e}" if r["exported"] else ""
        scale = f"{r['output_scale']:.2f}" if r["exported"] else ""
        seconds = f"{r['export_seconds']:.1f}" if r["exported"] else ""
        lines.append(f"| {r['genome']} | {'yes' if r['exported'] else 'no'} | {r['reason'] or ''} | {diff} | "
                     f"{scale} | {'yes' if r['equal'] else 'no'} | {seconds} | "
                     f"{'yes' if r['torch_export_error'] is None else 'no: ' + r['torch_export_error']} |")
    equal = sum(r["equal"] for r in rows)
    lines.append(f"\n{equal} of {len(rows)} export with outputs equal within {TOLERANCE:g} of the output scale.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--names", help="comma list (default: the whole zoo)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"folder for the results (default {OUT})")
    args = parser.parse_args()
    torch.set_num_threads(1)  # a shared machine: one thread, so export seconds compare across genomes
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "exporter": "torch.onnx.export(dynamo=True), dynamic batch", "provider": "CPUExecutionProvider",
            "tolerance": f"max abs diff <= {TOLERANCE:g} * max |torch output|", "batches": [1, 2],
            "machine": platform.processor() or platform.machine(), "threads": 1}
    results = args.out / "onnx_zoo.json"
    # --names reruns some genomes and keeps the other rows of an earlier run
    kept = {r["genome"]: r for r in json.loads(results.read_text())["rows"]} if args.names and results.exists() else {}
    for name in args.names.split(",") if args.names else zoo_names():
        kept[name] = record(name)
        print(json.dumps(kept[name]), flush=True)
        rows = [kept[n] for n in zoo_names() if n in kept]
        results.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
        (args.out / "onnx_zoo.md").write_text(table(rows) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
