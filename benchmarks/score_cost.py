"""What the zero-cost scores cost a tiny genome: the median wall time of ``zero_cost_scores`` over the first
``--genomes`` corpus genomes (the task's channels and classes, ``compile_model(seed=0)``), on the task's first 8
training images, one thread, for the two scores the structured batch's fit weighs (grad-norm, MeCo) and for the
six the ``--data`` twins of the tiny space and of any space weigh. Time it on an idle machine.

    python benchmarks/score_cost.py --task patterns --genomes 30
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from corpus import OUT, for_task, read_jsonl  # noqa: E402

from nas import compile_model  # noqa: E402
from nas.data import load_data  # noqa: E402
from nas.evaluate.proxy import objective_scores, zero_cost_scores  # noqa: E402
from nas.genome import Genome  # noqa: E402

BATCH = 8  # the search's --proxy-batch default


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="patterns")
    parser.add_argument("--genomes", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_data(args.task, resolution=32, seed=0, limit=64)
    x, y = data.train_x[:BATCH], data.train_y[:BATCH]
    records = sorted(read_jsonl(OUT / "genomes.jsonl"), key=lambda g: g["index"])[:args.genomes]
    for fit in ("tiny", "tiny.data"):
        which = sorted(objective_scores(fit))
        seconds = []
        for record in records:
            model = compile_model(for_task(Genome.model_validate(record["canonical"]), data), seed=0)
            start = time.perf_counter()
            zero_cost_scores(model, x, y, seed=0, which=which)
            seconds.append(time.perf_counter() - start)
        print(f"{fit}.json weighs {', '.join(which)}: median {statistics.median(seconds):.3f} s a genome "
              f"({len(seconds)} genomes, {args.task}, {BATCH} images, one thread)")


if __name__ == "__main__":
    main()
