"""Where a real search's winner stands in the trained corpus (issue 16's real-run target).

Takes a finished run of ``nas search --space tiny --data digits --data-limit 500 --objective train`` (or patterns),
trains its winner (``best.yaml``) at the corpus's long fidelity exactly as ``benchmarks/corpus.py`` trains a
corpus genome (the task's channels and classes, ``compile_model(seed=0)``, ``train_model(epochs=12, seed=0)``
on the same data), and ranks that accuracy among the corpus's seed-0 long accuracies on the task.

    python benchmarks/real_run.py runs/real --task digits
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

from benchmarks.corpus import LONG_EPOCHS, OUT, TASKS, for_task, read_jsonl  # noqa: E402
from nas import compile_model  # noqa: E402
from nas.data import load_data  # noqa: E402
from nas.evaluate.train import train_model  # noqa: E402
from nas.io import load_genome  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="the search's run directory (its best.yaml)")
    parser.add_argument("--task", choices=sorted(TASKS), default="digits")
    parser.add_argument("--corpus", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)

    data = load_data(args.task, resolution=32, seed=0, limit=TASKS[args.task])
    genome = for_task(load_genome(args.run / "best.yaml"), data)
    start = time.perf_counter()
    history = train_model(compile_model(genome, seed=0), data, epochs=LONG_EPOCHS, seed=0).history
    seconds = time.perf_counter() - start
    corpus = sorted((r["accuracy"] for r in read_jsonl(args.corpus / "runs.jsonl")
                     if r["task"] == args.task and r["fidelity"] == "long" and r["seed"] == 0
                     and r["accuracy"] is not None), reverse=True)
    accuracy = history[-1]
    better = sum(a > accuracy for a in corpus)
    result = {"run": str(args.run), "task": args.task, "winner_long_accuracy": accuracy, "history": history,
              "seconds": round(seconds, 1), "corpus_genomes": len(corpus), "corpus_genomes_better": better,
              "top_share": round((better + 1) / (len(corpus) + 1), 4),
              "corpus_top10_threshold": corpus[max(0, len(corpus) // 10 - 1)] if corpus else None}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
