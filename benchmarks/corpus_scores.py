"""Every training-free score of every corpus genome, on the untrained network: the inputs of
``benchmarks/objective_fit.py``. Resumable and appending (``scores.jsonl`` beside the corpus); cheap (well under a
second per genome and batch on one CPU thread), so it is rerun from scratch (``--fresh``) whenever a score changes.

For each genome of ``genomes.jsonl`` and each task (the genome takes the task's channels and classes), two batches
of ``--batch`` images: ``default``, the structured batch a search uses without ``--data``
(``nas.evaluate.batch.proxy_batch``), and ``task``, the task's first training images (what ``--data`` gives).
Weights and the scores' own randomness use seed 0; the genomes ``benchmarks/corpus.py`` trains with three seeds are
also scored with seeds 1 and 2, which gives each score's spread across seeds. ``--batch-seeds 1,2`` also scores
every genome (weights seed 0) on the structured batches of those seeds, ``default-1`` and ``default-2``: how much
a figure on the structured batch owes to which 8 images it drew.

    python benchmarks/corpus_scores.py            # scores what is missing
    python benchmarks/corpus_scores.py --fresh    # rescore everything (after a score changed)
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from corpus import OUT, SEEDS, TASKS, append, for_task, read_jsonl  # noqa: E402

from nas import compile_model  # noqa: E402
from nas.data import load_data  # noqa: E402
from nas.evaluate.batch import proxy_batch  # noqa: E402
from nas.evaluate.proxy import proxy_score  # noqa: E402
from nas.genome import Genome  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=OUT)
    parser.add_argument("--batch", type=int, default=8, help="images per proxy batch (the search's default)")
    parser.add_argument("--replicated", type=int, default=20, help="genomes also scored with seeds 1 and 2")
    parser.add_argument("--fresh", action="store_true", help="start scores.jsonl again")
    parser.add_argument("--batch-seeds", default="", help="comma list: also the structured batches of these seeds")
    args = parser.parse_args()
    torch.set_num_threads(1)
    path = args.corpus / "scores.jsonl"
    if args.fresh and path.exists():
        path.unlink()
    done = {(r["genome"], r["task"], r["batch"], r["seed"]) for r in read_jsonl(path)}
    genomes = read_jsonl(args.corpus / "genomes.jsonl")
    data = {task: load_data(task, resolution=32, seed=0, limit=limit) for task, limit in TASKS.items()}
    for record in genomes:
        base = Genome.model_validate(record["canonical"])
        seeds = SEEDS if record["index"] < args.replicated else SEEDS[:1]
        for task, dataset in data.items():
            genome = for_task(base, dataset)
            batches = {"default": proxy_batch(dataset.channels, dataset.resolution, dataset.num_classes,
                                              args.batch, seed=0),
                       "task": (dataset.train_x[:args.batch], dataset.train_y[:args.batch]),
                       **{f"default-{b}": proxy_batch(dataset.channels, dataset.resolution, dataset.num_classes,
                                                      args.batch, seed=int(b))
                          for b in args.batch_seeds.split(",") if b}}
            for kind, (x, y) in batches.items():
                for seed in seeds if kind in ("default", "task") else SEEDS[:1]:
                    if (record["genome"], task, kind, seed) in done:
                        continue
                    start = time.perf_counter()
                    scores = proxy_score(genome, compile_model(genome, seed=seed), x, y, seed=seed)
                    append(path, {"genome": record["genome"], "index": record["index"], "task": task, "batch": kind,
                                  "seed": seed, "batch_size": args.batch, "scores": scores,
                                  "seconds": round(time.perf_counter() - start, 3)})
        print(f"genome {record['index']}: scored", flush=True)


if __name__ == "__main__":
    main()
