"""The CUDA paths, checked on a GPU: what CI and the 2-core development machine cannot run.

Run on a lent GPU machine by ``benchmarks/cuda_checks.sh`` (which also runs ``nas search --device cuda``, a
training search and a latency calibration there); each section appends one JSON line per result to ``--out`` and
prints it, so a run cut short keeps what it measured. Sections:

- ``env``: torch, the GPU, onnxruntime's providers.
- ``latency``: zoo genomes at their own resolution, batch 1: ``measure_latency`` (CUDA events) twice, a wall clock
  that synchronises after each call (what a user's own timer reads), bf16 autocast with channels-last, and batch 64.
- ``probe``: events, a synchronised wall clock and launching alone, taking turns in one loop, and the
  synchronisations one forward pass makes, for the genome whose events and wall clock disagreed.
- ``compile``: ``--runtime compile`` against eager on two genomes; ``onnxruntime``: whether its CUDA provider is
  there, and what ``--runtime onnxruntime`` on CUDA answers.
- ``memory``: ``training_memory_estimate`` against torch's peak allocation over two bf16 AdamW steps.
- ``amp``: corpus genomes trained on CUDA (bf16 autocast, channels-last) with the corpus's recipe and seed 0,
  beside the corpus's CPU float32 runs of the same seed and the other seeds' (the noise the difference is read
  against); then a checkpointed run cut after 2 of 4 epochs and resumed, against the same run uninterrupted.

    python benchmarks/cuda_checks.py --out results.jsonl [--device cuda] [--quick]

``--quick`` shrinks every section, to try the script on a CPU before spending GPU time on it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch
from corpus import LONG_EPOCHS, TASKS, for_task, read_jsonl

from nas import compile_model, load_genome
from nas.cost.latency import measure_latency, time_calls
from nas.data import load_data
from nas.errors import InputError
from nas.evaluate.train import train_model
from nas.genome import Genome
from nas.memory import training_memory_estimate

CORPUS = ROOT / "benchmarks" / "results" / "corpus"
LATENCY_ZOO = ("resnet50", "mobilenetv2_100", "convnext_t", "caformer_s18", "swin_t", "maxvit_t", "vmamba_t")
MEMORY_ZOO = ("convnext_t", "caformer_s18", "resnet50", "swin_t", "mobilenetv2_100", "poolformerv2_s12", "deit_s",
              "maxvit_t")


def record(out: Path, section: str, **fields) -> None:
    line = {"section": section, **fields}
    with open(out, "a") as f:
        f.write(json.dumps(line, sort_keys=True) + "\n")
    print(json.dumps(line, sort_keys=True), flush=True)


def failure(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0][:300] if text else ''}"


def sample_shape(genome: Genome) -> tuple[int, int, int]:
    resolution = genome.input.resolution
    height, width = (resolution, resolution) if isinstance(resolution, int) else resolution
    return genome.input.channels, height, width


def synchronized(device: torch.device):
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def env(out: Path, device: torch.device) -> None:
    import onnxruntime

    record(out, "env", torch=torch.__version__, device=str(device), cpus=os.cpu_count(),
           gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None,
           bf16=device.type == "cuda" and torch.cuda.is_bf16_supported(),
           onnxruntime=onnxruntime.__version__, providers=onnxruntime.get_available_providers())


def latency(out: Path, device: torch.device, names: tuple[str, ...], repeats: int) -> None:
    sync = synchronized(device)
    for name in names:
        genome = load_genome(f"zoo:{name}")
        shape = sample_shape(genome)
        model = compile_model(genome, seed=0)
        try:
            events = [measure_latency(model, shape, device, repeats=repeats).median_ms for _ in range(2)]
            x = torch.randn(1, *shape, device=device)
            model.to(device).eval()
            with torch.inference_mode():
                wall = time_calls(lambda m=model: (m(x), sync()), device, 10, repeats, cuda_events=False)
            bf16 = measure_latency(model, shape, device, autocast="bf16", channels_last=True, repeats=repeats)
            batch64 = measure_latency(model, shape, device, batch=64, repeats=max(5, repeats // 5))
            batch64_bf16 = measure_latency(model, shape, device, batch=64, autocast="bf16", channels_last=True,
                                           repeats=max(5, repeats // 5))
            record(out, "latency", genome=name, events_ms=[round(t, 3) for t in events],
                   wall_sync_ms=round(sorted(wall)[len(wall) // 2], 3), bf16_cl_ms=round(bf16.median_ms, 3),
                   batch64_ms=round(batch64.median_ms, 3), batch64_bf16_cl_ms=round(batch64_bf16.median_ms, 3),
                   repeats=repeats)
        except Exception as err:  # noqa: BLE001 - one genome's failure is a finding, not the end of the run
            record(out, "latency", genome=name, error=failure(err))
        del model


def probe(out: Path, device: torch.device, names: tuple[str, ...], repeats: int) -> None:
    """Why a genome's CUDA-event time and its synchronised wall clock disagree (vmamba_t: 54 ms against 83 ms in
    the first run): in one loop, each round times one call by events, one by the wall clock with a
    synchronisation, and one by the wall clock up to the call's return (launching alone); then counts the
    synchronisations and copies one forward pass makes."""
    from torch.profiler import ProfilerActivity, profile

    sync = synchronized(device)
    for name in names:
        genome = load_genome(f"zoo:{name}")
        model = compile_model(genome, seed=0).to(device).eval()
        x = torch.randn(1, *sample_shape(genome), device=device)
        events, wall, launch = [], [], []
        try:
            with torch.inference_mode():
                for _ in range(10):
                    model(x)
                sync()
                for _ in range(repeats):
                    events += time_calls(lambda m=model: m(x), device, 0, 1)
                    wall += time_calls(lambda m=model: (m(x), sync()), device, 0, 1, cuda_events=False)
                    launch += time_calls(lambda m=model: m(x), device, 0, 1, cuda_events=False)
                    sync()
                activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
                with profile(activities=activities) as prof:
                    model(x)
                    sync()
            counted = {e.key: e.count for e in prof.key_averages()
                       if any(word in e.key for word in ("Synchronize", "Memcpy", "item", "nonzero", "cudaLaunch"))}
            median = lambda values: round(sorted(values)[len(values) // 2], 3)  # noqa: E731
            record(out, "probe", genome=name, events_ms=median(events), wall_sync_ms=median(wall),
                   launch_ms=median(launch), repeats=repeats, counts=counted)
        except Exception as err:  # noqa: BLE001
            record(out, "probe", genome=name, error=failure(err))
        del model


def blocks(out: Path, device: torch.device) -> None:
    """Every block type's example (tests/test_blocks.py) on ``device``, its parameters in channels-last memory as
    CUDA training lays them, against the same block on the CPU: output and input gradient, in float32 (TF32 off)."""
    from blocks import CONFIGS, create
    from tests.test_blocks import cases, site

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    # A fixed random projection as the loss: a norm's sum of squares is constant, its gradient only rounding.
    worst, failures, count = 0.0, [], 0
    for case in cases():
        role, tag, example = case.values
        config = CONFIGS[role][tag].model_validate({"type": tag, **example})
        shape, _, context = site(role)
        torch.manual_seed(0)
        module = create(role, config.model_dump(), **context).eval()  # no dropout draws: CPU and CUDA differ
        x = torch.randn(2, shape[1], shape[2], shape[0])
        try:
            results = []
            for dev in (torch.device("cpu"), device):
                module.to(dev, memory_format=torch.channels_last if dev.type == "cuda" else torch.preserve_format)
                xin = x.detach().to(dev).requires_grad_()  # a leaf on each device, so its .grad is kept
                y = module(xin)
                weights = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(dev)
                (y.float() * weights).sum().backward()
                results.append((y.detach().cpu().float(), xin.grad.cpu()))
            (y0, g0), (y1, g1) = results
            error = max(((y1 - y0).abs().max() / y0.abs().max().clamp_min(1e-6)).item(),
                        ((g1 - g0).abs().max() / g0.abs().max().clamp_min(1e-6)).item())
            worst = max(worst, error)
            count += 1
            if error > 1e-3:
                failures.append(f"{case.id}: relative error {error:.2g}")
        except Exception as err:  # noqa: BLE001
            failures.append(f"{case.id}: {failure(err)}")
    record(out, "blocks", compared=count, worst_relative_error=worst, failures=failures)


def runtimes(out: Path, device: torch.device, names: tuple[str, ...], repeats: int) -> None:
    import onnxruntime

    for name in names:
        genome = load_genome(f"zoo:{name}")
        shape = sample_shape(genome)
        model = compile_model(genome, seed=0)
        eager = measure_latency(model, shape, device, repeats=repeats).median_ms
        start = time.perf_counter()
        try:
            compiled = measure_latency(model, shape, device, repeats=repeats, runtime="compile").median_ms
            record(out, "compile", genome=name, eager_ms=round(eager, 3), compile_ms=round(compiled, 3),
                   compile_and_time_s=round(time.perf_counter() - start, 1))
        except Exception as err:  # noqa: BLE001
            record(out, "compile", genome=name, error=failure(err))
    name = names[0]
    genome = load_genome(f"zoo:{name}")
    shape = sample_shape(genome)
    try:
        ms = measure_latency(compile_model(genome, seed=0), shape, device, repeats=repeats,
                             runtime="onnxruntime").median_ms
        record(out, "onnxruntime", genome=name, ms=round(ms, 3), providers=onnxruntime.get_available_providers())
    except InputError as err:
        record(out, "onnxruntime", genome=name, clear_error=str(err),
               providers=onnxruntime.get_available_providers())
    except Exception as err:  # noqa: BLE001
        record(out, "onnxruntime", genome=name, error=failure(err))


def memory(out: Path, device: torch.device, names: tuple[str, ...], batch: int, autocast: bool = True) -> None:
    if device.type != "cuda":
        record(out, "memory", skipped="not a CUDA device")
        return
    for name in names:
        genome = load_genome(f"zoo:{name}")
        shape = sample_shape(genome)
        estimate = training_memory_estimate(genome, batch, device="cuda",
                                            dtype="bfloat16" if autocast else "float32")
        base = torch.cuda.memory_allocated(device)  # what earlier genomes left behind
        model = compile_model(genome, seed=0).to(device, memory_format=torch.channels_last).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        x = torch.randn(batch, *shape, device=device).to(memory_format=torch.channels_last)
        y = torch.randint(0, genome.num_classes, (batch,), device=device)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        try:
            for _ in range(2):
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                    loss = torch.nn.functional.cross_entropy(model(x), y)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            torch.cuda.synchronize(device)
            record(out, "memory", genome=name, batch=batch, autocast=autocast,
                   estimate_gb=round(estimate.total / 1e9, 3),
                   estimate=estimate.describe(),
                   peak_allocated_gb=round((torch.cuda.max_memory_allocated(device) - base) / 1e9, 3),
                   peak_reserved_gb=round(torch.cuda.max_memory_reserved(device) / 1e9, 3))
        except Exception as err:  # noqa: BLE001
            record(out, "memory", genome=name, error=failure(err))
        del model, optimizer, x, y
        torch.cuda.empty_cache()


def amp(out: Path, device: torch.device, genomes: int, epochs: int, seconds: float, first: int = 0) -> None:
    """Corpus genomes trained on ``device`` with the corpus's recipe (benchmarks/corpus.py), beside its CPU runs."""
    canonical = {r["index"]: (r["genome"], r["canonical"]) for r in read_jsonl(CORPUS / "genomes.jsonl")}
    runs = {(r["genome"], r["task"], r["seed"]): r["accuracy"] for r in read_jsonl(CORPUS / "runs.jsonl")
            if r["fidelity"] == "long" and r["epochs"] == LONG_EPOCHS}
    data = {task: load_data(task, resolution=32, seed=0, limit=limit) for task, limit in TASKS.items()}
    start = time.perf_counter()
    for index in range(first, first + genomes):
        for task, dataset in data.items():
            if time.perf_counter() - start > seconds:
                record(out, "amp", stopped=f"time cap of {seconds:.0f} s reached at genome {index}")
                return
            gid, spec = canonical[index]
            genome = for_task(Genome.model_validate(spec), dataset)
            began = time.perf_counter()
            try:
                result = train_model(compile_model(genome, seed=0), dataset, epochs=epochs, seed=0, device=device)
                accuracy, failed = result.accuracy, None
            except (FloatingPointError, RuntimeError) as err:
                accuracy, failed = None, failure(err)
            record(out, "amp", index=index, genome=gid, task=task, epochs=epochs, device_accuracy=accuracy,
                   failure=failed, seconds=round(time.perf_counter() - began, 2),
                   cpu_accuracy={seed: runs.get((gid, task, seed)) for seed in (0, 1, 2)
                                 if runs.get((gid, task, seed)) is not None})
    resume(out, device, canonical[0][1], data["digits"])


def resume(out: Path, device: torch.device, spec: dict, dataset) -> None:
    """A run cut after 2 of 4 epochs and resumed from its checkpoint ends where the uninterrupted run does."""
    genome = for_task(Genome.model_validate(spec), dataset)
    whole = [train_model(compile_model(genome, seed=0), dataset, epochs=4, seed=0, device=device).history
             for _ in range(2)]
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "run.pt"
        first = train_model(compile_model(genome, seed=0), dataset, epochs=2, schedule_epochs=4, seed=0,
                            device=device, checkpoint=checkpoint)
        kept = checkpoint.is_file()
        resumed = train_model(compile_model(genome, seed=0), dataset, epochs=4, seed=0, device=device,
                              checkpoint=checkpoint)
    record(out, "resume", uninterrupted=whole[0], uninterrupted_again=whole[1], cut=first.history,
           checkpoint_kept=kept, resumed=resumed.history)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="small sections, to try the script on a CPU")
    parser.add_argument("--sections", default="env,latency,runtimes,memory,amp")
    parser.add_argument("--amp-genomes", type=int, default=20)
    parser.add_argument("--amp-seconds", type=float, default=60)
    parser.add_argument("--amp-first", type=int, default=0, help="the corpus index to start at")
    args = parser.parse_args()
    device = torch.device(args.device)
    quick = args.quick
    sections = args.sections.split(",")
    names = ("mobilenetv2_100",) if quick else LATENCY_ZOO
    if "env" in sections:
        env(args.out, device)
    if "latency" in sections:
        latency(args.out, device, names, repeats=5 if quick else 50)
    if "probe" in sections:
        probe(args.out, device, ("mobilenetv2_100",) if quick else ("vmamba_t", "convnext_t"),
              repeats=5 if quick else 40)
    if "blocks" in sections:
        blocks(args.out, device)
    if "memory" in sections:
        memory(args.out, device, ("convnext_t", "caformer_s18", "resnet50"), batch=64)
    if "memory2" in sections:  # more genomes, with and without autocast
        for autocast in (True, False):
            memory(args.out, device, MEMORY_ZOO, batch=32, autocast=autocast)
    if "amp" in sections:
        amp(args.out, device, 1 if quick else args.amp_genomes, 1 if quick else LONG_EPOCHS,
            args.amp_seconds, args.amp_first)
    if "runtimes" in sections:  # last: compiling takes the longest
        runtimes(args.out, device, ("mobilenetv2_100",) if quick else ("convnext_t", "caformer_s18"),
                 repeats=5 if quick else 50)


if __name__ == "__main__":
    main()
