"""Is the training-free objective short of data or of terms? Two measurements on the tiny corpus, against the
three-seed truth, held-out genomes (5 folds, the mean over ``--shuffles`` shufflings of them):

- *fitting genomes*: the shipped terms (``objective_fit.DEFAULT_FEATURES`` on the structured batch, or
  ``DATA_FEATURES`` on the tasks' images with ``--batch task``), each fold's model fitted on a random ``n`` of
  the other folds' genomes, ``n`` from 64 in steps of 32 to all of them (192 on 240 genomes); every genome is
  judged at every ``n``, so the rows differ only in how many genomes the fit saw. A growing corpus is read at
  the size ``NAS_CORPUS_GENOMES`` pins (``corpus.read_genomes``);
- *more terms*: the shipped terms plus one set of terms the descriptors lack: each stage's depth, its mixer's
  kernel (or window, or pool size), its MLP ratio, the mixer type crossed with the stage's depth or width, and
  the receptive field at init (``--fields`` computes it first).

The receptive field of a stage: the input gradient of the channel sum at the centre of the stage's output map,
for the genome as ``compile_model(seed=0)`` builds it, in eval mode, on one normal image: the share of input
pixels with a gradient (``cover``), the gradient-weighted RMS distance from the centre in input pixels
(``radius``), and the gradient's share outside the 8x8 input window at the centre (``far``). Kept in
``benchmarks/results/corpus/fields.jsonl``, one line a genome, resumable.

    python benchmarks/objective_saturation.py --fields     # about a minute
    python benchmarks/objective_saturation.py              # both tables
    python benchmarks/objective_saturation.py --curve-only # the fitting genomes alone
"""
from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import objective_fit as of  # noqa: E402
from corpus import OUT, append, read_jsonl  # noqa: E402

from nas import compile_model  # noqa: E402
from nas.genome import Genome  # noqa: E402

FIELDS = OUT / "fields.jsonl"
SMALLEST, STEP = 64, 32


def fold_fitting(genomes: int, folds: int = 5) -> int:
    """How many genomes a fold's fit sees: the other folds', the largest fold held out."""
    return genomes - -(-genomes // folds)


def fitting_sizes(genomes: int) -> list[int | None]:
    """The learning curve's fitting sizes: 64, 96, ... below ``fold_fitting``, then all of it (None: the shipped
    procedure)."""
    return [*range(SMALLEST, fold_fitting(genomes), STEP), None]


def receptive_fields(genome: Genome) -> dict[str, float]:
    """``cover:K``, ``radius:K`` and ``far:K`` of stage ``K`` (see the module's docstring)."""
    model = compile_model(genome, seed=0).eval()
    height, width = genome.input.resolution
    x = torch.randn(1, genome.input.channels, height, width, generator=torch.Generator().manual_seed(0),
                    requires_grad=True)
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    out = {}
    for k, feature in enumerate(model.forward_intermediates(x, intermediates_only=True)):
        h, w = feature.shape[-2:]
        grad, = torch.autograd.grad(feature[0, :, h // 2, w // 2].sum(), x, retain_graph=True)
        energy = grad[0].abs().sum(0)
        share = energy / energy.sum()
        cy, cx = (h // 2 + 0.5) * height / h, (w // 2 + 0.5) * width / w
        out[f"cover:{k}"] = float((energy > energy.max() * 1e-6).float().mean())
        out[f"radius:{k}"] = float(torch.sqrt((share * ((ys - cy) ** 2 + (xs - cx) ** 2)).sum()))
        out[f"far:{k}"] = float(share[((ys - cy).abs() > 4) | ((xs - cx).abs() > 4)].sum())
    return out


def write_fields() -> None:
    done = {r["genome"] for r in read_jsonl(FIELDS)}
    torch.set_num_threads(1)
    for record in read_jsonl(OUT / "genomes.jsonl"):
        if record["genome"] not in done:
            append(FIELDS, {"genome": record["genome"],
                            **receptive_fields(Genome.model_validate(record["canonical"]))})


def stage_terms(canonical: dict) -> dict[str, float]:
    """Per stage ``K``: ``depth:K``, ``log_kernel:K`` (the mixer's kernel, window or pool size; 1 for none),
    ``log_ratio:K`` (MLP ratio) and ``log_width:K``."""
    out: dict[str, float] = {}
    for k, stage in enumerate(canonical["stages"]):
        mixer = stage["block"]["mixer"]
        out[f"depth:{k}"] = stage["depth"]
        out[f"log_kernel:{k}"] = math.log(mixer.get("kernel") or mixer.get("window") or mixer.get("pool_size") or 1)
        out[f"log_ratio:{k}"] = math.log(stage["block"]["mlp"]["ratio"])
        out[f"log_width:{k}"] = math.log(stage["width"])
    return out


def extra_sets(genomes: dict[str, dict], fields: dict[str, dict]) -> dict[str, Callable[[str], list[float]]]:
    """Name -> genome -> the terms added to the shipped ones."""
    terms = {g: stage_terms(r["canonical"]) for g, r in genomes.items()}
    mixer = {g: [s["block"]["mixer"]["type"] for s in r["canonical"]["stages"]] for g, r in genomes.items()}
    types = sorted({t for kinds in mixer.values() for t in kinds})
    stages = range(len(next(iter(mixer.values()))))

    def per_stage(*names: str) -> Callable[[str], list[float]]:
        return lambda g: [terms[g][f"{name}:{k}"] for name in names for k in stages]

    def crossed(name: str) -> Callable[[str], list[float]]:
        return lambda g: [float(mixer[g][k] == t) * terms[g][f"{name}:{k}"] for k in stages for t in types]

    def field(*names: str) -> Callable[[str], list[float]]:
        def log(name: str, value: float) -> float:
            return value if name.startswith("radius") else math.log(max(value, 1e-4))
        return lambda g: [log(n, fields[g][f"{n}:{k}"]) for n in names for k in stages]

    return {"depth per stage": per_stage("depth"), "kernel per stage": per_stage("log_kernel"),
            "MLP ratio per stage": per_stage("log_ratio"),
            "depth and MLP ratio per stage": per_stage("depth", "log_ratio"),
            "mixer type x depth": crossed("depth"), "mixer type x width": crossed("log_width"),
            "receptive field: cover": field("cover"), "receptive field: radius": field("radius"),
            "receptive field: far": field("far"), "receptive field: all three": field("cover", "radius", "far")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fields", action="store_true", help="compute the receptive fields first")
    parser.add_argument("--batch", default="default", help="default (structured) or task (the tasks' images)")
    parser.add_argument("--shuffles", type=int, default=20)
    parser.add_argument("--curve-only", action="store_true", help="the fitting genomes' table alone")
    args = parser.parse_args()
    if args.fields:
        write_fields()
    genomes, runs, scores, _, _ = of.load([OUT])
    terms = of.DEFAULT_FEATURES if args.batch == "default" else of.DATA_FEATURES
    data, _ = of.default_fit_data(genomes, scores, runs, "seeds", args.batch, terms)
    tasks = sorted(data)
    print(f"Held-out genomes, three-seed truth, batch {args.batch}, mean over {args.shuffles} fold shufflings\n")
    print("| genomes each fold's fit saw | " + " | ".join(tasks) + " |\n|---|" + "---|" * len(tasks))
    genome_count = len(of.fittable(data))
    for n in fitting_sizes(genome_count):
        taus = of.shuffled_tau(data, args.shuffles, fitting=n)
        label = n if n is not None else f"all the other folds' ({fold_fitting(genome_count)} of {genome_count} genomes)"
        print(f"| {label} | " + " | ".join(f"{taus[t]:+.3f}" for t in tasks) + " |", flush=True)
    if args.curve_only:
        return
    fields = {r["genome"]: r for r in read_jsonl(FIELDS)}
    print("\n| terms | " + " | ".join(tasks) + " |\n|---|" + "---|" * len(tasks))
    base = of.shuffled_tau(data, args.shuffles)
    print("| the shipped terms | " + " | ".join(f"{base[t]:+.3f}" for t in tasks) + " |", flush=True)
    for name, extra in extra_sets(genomes, fields).items():
        if name.startswith("receptive") and not fields:
            continue
        more = {t: ({g: row + extra(g) for g, row in rows.items()}, acc) for t, (rows, acc) in data.items()}
        taus = of.shuffled_tau(more, args.shuffles)
        print(f"| + {name} | " + " | ".join(f"{taus[t]:+.3f}" for t in tasks) + " |", flush=True)


if __name__ == "__main__":
    main()
