"""The supernet's inherited accuracy of every corpus genome: one supernet trained on the corpus space
(``search_spaces/tiny.yaml``) per corpus task, with the task's own data, then each genome extracted and scored
(``nas.supernet.inherited_accuracy``). Appends to ``supernet.jsonl`` beside the corpus; resumable (the supernet's
own training resumes from its checkpoint, and genomes already scored are skipped).

    python benchmarks/corpus_supernet.py --epochs 30      # both tasks
    python benchmarks/corpus_supernet.py --task patterns
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

from corpus import OUT, SPACE, TASKS, append, for_task, read_jsonl  # noqa: E402

from nas.data import load_data  # noqa: E402
from nas.genome import Genome  # noqa: E402
from nas.supernet import SupernetTrainOptions, inherited_accuracy, train_supernet  # noqa: E402
from nas.supernet.supernet import Supernet, SupernetCoverageError  # noqa: E402
from nas.supernet.train import TEACHER_READY  # noqa: E402


def supernet_variant(record: dict) -> dict:
    """How a record's supernet was trained: with in-place distillation or on the labels alone, and the teacher's
    threshold before distillation starts (``None``: from the first step, as the records before it was added)."""
    return {"distill": record.get("distill", True), "teacher_ready": record.get("teacher_ready")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=OUT)
    parser.add_argument("--task", choices=list(TASKS), action="append", help="default: every corpus task")
    parser.add_argument("--epochs", type=int, default=30, help="supernet training epochs")
    parser.add_argument("--no-distill", action="store_true",
                        help="every genome learns from the labels (the patterns supernet stayed at chance with "
                             "in-place distillation: its largest genome learned nothing for the others to copy)")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "corpus_supernet",
                        help="where the supernets are trained (not committed)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    path = args.corpus / "supernet.jsonl"
    genomes = read_jsonl(args.corpus / "genomes.jsonl")
    for task in args.task or list(TASKS):
        run = args.runs / (task + ("-labels" if args.no_distill else ""))
        options = SupernetTrainOptions(space=str(SPACE), data=task, data_limit=TASKS[task], epochs=args.epochs,
                                       seed=0, threads=1, device="cpu", distill=not args.no_distill)
        start = time.perf_counter()
        if (run / "supernet.pt").exists():
            trained = train_supernet(out=run, resume=True, epochs=args.epochs)
        else:
            trained = train_supernet(options, out=run)
        train_seconds = time.perf_counter() - start
        net, _ = Supernet.load(run)
        net.eval()
        data = load_data(task, resolution=32, seed=0, limit=TASKS[task])
        variant = {"distill": not args.no_distill, "teacher_ready": None if args.no_distill else TEACHER_READY}
        done = {r["genome"] for r in read_jsonl(path) if r["task"] == task and r["epochs"] == args.epochs
                and variant == supernet_variant(r)}
        for record in genomes:
            if record["genome"] in done:
                continue
            genome = for_task(Genome.model_validate(record["canonical"]), data)
            tick = time.perf_counter()
            try:
                acc, failure = inherited_accuracy(net, genome, data, seed=0)[0], None
            except SupernetCoverageError as err:
                acc, failure = None, str(err)
            append(path, {"genome": record["genome"], "index": record["index"], "task": task,
                          "epochs": args.epochs, **variant, "inherited": acc, "failure": failure,
                          "seconds": round(time.perf_counter() - tick, 2),
                          "supernet_seconds": round(trained.seconds, 1), "this_call_seconds": round(train_seconds)})
            print(f"{task} genome {record['index']}: inherited {acc}", flush=True)


if __name__ == "__main__":
    main()
