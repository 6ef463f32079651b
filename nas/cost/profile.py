"""``nas profile``: a genome's cost per stage, as data the CLI prints as a table or as JSON."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from nas.compiler import compile_model
from nas.cost.analytic import ZERO, stage_costs
from nas.errors import InputError
from nas.genome import Genome
from nas.graph import build_graph
from nas.io import load_genome
from nas.memory import peak_memory_estimate, require_memory
from nas.outputs import output_dir

if TYPE_CHECKING:
    from nas.cost.latency import LatencyTable

FVCORE_MODULES = {"stem": "stem", "head": "head"}


def resolve_device(device: str) -> str:
    """``auto`` is CUDA when present; asking for CUDA without it is bad input."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device}: CUDA is not available on this machine (torch {torch.__version__})")
    if device != "cpu" and not device.startswith("cuda"):
        raise InputError(f"--device {device}: expected auto, cpu or cuda[:N]")
    return device


def with_resolution(genome: Genome, resolution: int | tuple[int, int] | None) -> Genome:
    """The genome at another input resolution (``--resolution``: a side, or (height, width)), checked like any
    genome."""
    if resolution is None:
        return genome
    sizes = (resolution,) if isinstance(resolution, int) else tuple(resolution)
    if min(sizes) < 1:
        raise InputError(f"--resolution must be at least 1, got {'x'.join(map(str, sizes))}")
    data = genome.to_dict()
    data["input"]["resolution"] = resolution if isinstance(resolution, int) else list(sizes)
    return load_genome(data)


def _fvcore_name(part: str) -> str:
    return FVCORE_MODULES.get(part) or "stages." + part[len("stages["):-1]


def profile(genome: Genome, *, batch: int = 1, dtype: str = "float32", device: str = "cpu",
            fvcore: bool = False, latency: bool = False, threads: int | None = None,
            repeats: int = 30, table: str | Path | None = None, runtime: str = "eager") -> dict[str, Any]:
    """Per-part and total params and FLOPs; with ``fvcore`` the traced count beside each; with ``latency`` the
    measured end-to-end latency and each part's share of the summed per-block latencies (cached in ``table``,
    default ``default_table_path()``)."""
    _check_options(batch=batch, dtype=dtype, threads=threads, repeats=repeats)
    if latency or fvcore:
        require_memory(genome, batch if latency else 1, dtype, device)
    latency_table = open_table(table) if latency else None  # a bad table is found before any timing
    graph = build_graph(genome)
    parts = stage_costs(genome, graph)
    total = sum((p.cost for p in parts), ZERO)
    channels, (height, width) = genome.input.channels, genome.input.resolution
    report: dict[str, Any] = {
        "name": genome.name, "hash": genome.content_hash(), "input": [channels, height, width], "batch": batch,
        "dtype": dtype, "device": device,
        "parts": [{"name": p.name, "blocks": p.blocks, "out_shape": list(p.out_shape), "params": p.cost.params,
                   "flops": p.cost.flops} for p in parts],
        "blocks": [{"node": node, "path": d["path"], "type": d["type"], "out_shape": list(d["out_shape"]),
                    "params": d["params"], "flops": d["flops"]} for node, d in graph.nodes(data=True)
                   if d["role"] != "input"],
        **_neck_summary(parts),
        "total": {"params": total.params, "trainable_params": total.trainable_params,
                  "frozen_params": total.frozen_params, "flops": total.flops},
        "memory": {"peak_bytes": peak_memory_estimate(genome, batch, dtype, graph), "estimate": True,
                   "method": "weights + the largest input, output and workspace of one block at this batch"},
    }
    if fvcore:
        from nas.cost.fvcore import fvcore_by_module

        counted = fvcore_by_module(compile_model(genome, seed=0), torch.randn(1, channels, height, width))
        for row in report["parts"]:
            if not row["name"].startswith("neck"):
                row["fvcore_flops"] = counted.get(_fvcore_name(row["name"]), 0)
        report["total"]["fvcore_flops"] = counted[""]
        if genome.neck is not None:
            # The classifier's forward skips the neck: it runs in the pyramid's forward (features_only). fvcore
            # cannot split the neck by level (its top-down path spans levels), so it checks the neck's total.
            pyramid = fvcore_by_module(compile_model(genome, seed=0, features_only=True),
                                       torch.randn(1, channels, height, width))
            report["neck"]["fvcore_flops"] = pyramid["neck"]
            report["backbone"]["fvcore_flops"] = pyramid[""] - pyramid["neck"]
            report["total"]["fvcore_flops"] += pyramid["neck"]
    if latency:
        report["latency"] = _latency(genome, batch=batch, dtype=dtype, device=device, threads=threads,
                                     repeats=repeats, table=latency_table, runtime=runtime)
        shares = report["latency"].pop("parts")
        for row in report["blocks"]:
            row["latency_ms"] = report["latency"]["nodes"].get(row["node"])  # None for a neck level
        for row in report["parts"]:  # none for a neck: the timed classifier forward does not run it
            row["latency_share"] = None if row["name"].startswith("neck") else shares.get(row["name"], 0.0)
    return report


def _neck_summary(parts: list) -> dict[str, Any]:
    """With a neck: the backbone's cost (stem and stages) and the neck's, beside the per-part rows."""
    neck = [p for p in parts if p.name.startswith("neck")]
    if not neck:
        return {}
    backbone = [p for p in parts if p.name == "stem" or p.name.startswith("stages")]
    return {"backbone": {"params": sum(p.cost.params for p in backbone), "flops": sum(p.cost.flops for p in backbone)},
            "neck": {"params": sum(p.cost.params for p in neck), "flops": sum(p.cost.flops for p in neck),
                     "levels": [list(p.out_shape) for p in neck if p.name.startswith("neck.levels")]}}


def _check_options(*, batch: int, dtype: str, threads: int | None, repeats: int) -> None:
    """The CLI's flags and the Python API's arguments alike, named as flags (bad input, exit 2)."""
    if batch < 1:
        raise InputError(f"--batch must be at least 1, got {batch}")
    if repeats < 1:
        raise InputError(f"--repeats must be at least 1, got {repeats}")
    if threads is not None and threads < 1:
        raise InputError(f"--threads must be at least 1 (or left out for torch's current count), got {threads}")
    if dtype not in _DTYPES:
        raise InputError(f"--dtype {dtype}: expected one of {', '.join(_DTYPES)}")


def open_table(table: str | Path | None) -> LatencyTable:
    """The per-block latency cache: ``table``, or the default one (its folder made when missing)."""
    from nas.cost.latency import LatencyTable

    path = Path(table) if table else default_table_path()
    output_dir(path.parent, f"{'--table' if table else 'latency cache'} {path}: folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    return LatencyTable(path)


def default_table_path() -> Path:
    """Where per-block latencies are cached: ``$NAS_CACHE_DIR`` or ``~/.cache/nas``."""
    root = os.environ.get("NAS_CACHE_DIR") or Path.home() / ".cache" / "nas"
    return Path(root) / "latency.sqlite"


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _latency(genome: Genome, *, batch: int, dtype: str, device: str, threads: int | None, repeats: int,
             table: LatencyTable, runtime: str = "eager") -> dict[str, Any]:
    """End-to-end median, plus each part's share of the per-block table sum. Half precision runs as
    float32 weights under autocast on CUDA, and as plain float32 on CPU (where it is rarely faster)."""
    from nas.cost.calibration import genome_features, load_calibration
    from nas.cost.latency import measure_latency, predict_latency

    autocast = {"bfloat16": "bf16", "float16": "fp16"}.get(dtype) if device.startswith("cuda") else None
    run_dtype = torch.float32 if autocast or not device.startswith("cuda") else _DTYPES[dtype]
    res = genome.input
    model = compile_model(genome, seed=0)
    result = measure_latency(model, (res.channels, *res.resolution), device, run_dtype, batch,
                             warmup=max(repeats // 5, 2), repeats=repeats, threads=threads, autocast=autocast,
                             runtime=runtime)
    prediction = predict_latency(genome, table, device, run_dtype, batch, threads,
                                 warmup=max(repeats // 5, 2), repeats=repeats, runtime=runtime)
    fp = result.fingerprint
    calibration = load_calibration(table, prediction.device)  # made by `nas latency calibrate` for this setup
    calibrated = calibration.predict(genome_features(genome, prediction, batch)) if calibration else None
    return {"median_ms": result.median_ms, "p10_ms": result.p10_ms, "p90_ms": result.p90_ms,
            "steal_share": result.steal_share, "steal_warning": result.steal_warning(),
            "calibrated_ms": calibrated,
            "repeats": result.repeats, "fingerprint": fp,
            "fingerprint_text": f"{fp['name']}, {fp['runtime']}, {fp['dtype']}"
                                f"{' autocast ' + fp['autocast'] if fp.get('autocast') else ''}, "
                                f"batch {fp['batch']}, {fp['threads']} threads",
            "predicted_ms": prediction.total_ms, "table": str(table.path), "table_measured": prediction.measured,
            "parts": {name: ms / prediction.total_ms for name, ms in prediction.stages.items()},
            "nodes": prediction.nodes}
