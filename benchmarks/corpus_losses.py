"""Training losses of the corpus's first epochs: does what a genome's first epochs cost in training loss rank its
long accuracy better than its validation accuracy after them?

The cascade's first stage trains the long schedule's first 3 epochs and ranks genomes by the validation accuracy
at its end. Ru et al. (NeurIPS 2021, "Speedy Performance Estimation for Neural Architecture Search") rank by the
sum of the training losses over the first epochs instead (TSE: a genome that learns faster tends to end better),
which costs nothing more: the losses are computed anyway. The corpus kept only validation accuracy, so this
script trains each corpus genome again for the long schedule's first ``--epochs`` epochs with the corpus's
recipe and seed 0 (benchmarks/corpus.py) and keeps the mean training loss of each epoch
(``TrainResult.losses``), beside the validation accuracy, which must repeat the corpus's own first epochs
(``matches_corpus``). Resumable and appending, one line per (genome, task) in ``losses.jsonl``:

    nohup python benchmarks/corpus_losses.py --worker 0 --of 2 > losses0.log &     # two workers share the list
    python benchmarks/corpus_losses.py --analyse          # the table, from what is there

``--analyse``: Kendall tau against the long accuracy (the mean over the corpus's three seeds) of the validation
accuracy after epoch k, of minus the sum of the training losses over epochs 1..k, of minus epoch k's loss, and
of the mean rank of the accuracy and the loss sum.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau, rankdata

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from corpus import LONG_EPOCHS, OUT, TASKS, append, for_task, read_jsonl  # noqa: E402

from nas import compile_model  # noqa: E402
from nas.data import load_data  # noqa: E402
from nas.evaluate.train import train_model  # noqa: E402
from nas.genome import Genome  # noqa: E402

FILE = "losses.jsonl"


def run(corpus: Path, worker: int, of: int, epochs: int, tasks: list[str], limit: int | None) -> None:
    genomes = sorted(read_jsonl(corpus / "genomes.jsonl"), key=lambda r: r["index"])
    long_runs = {(r["genome"], r["task"]): r["history"] for r in read_jsonl(corpus / "runs.jsonl")
                 if r["fidelity"] == "long" and r["seed"] == 0 and r["epochs"] == LONG_EPOCHS}
    data = {task: load_data(task, resolution=32, seed=0, limit=TASKS[task]) for task in tasks}
    done = {(r["genome"], r["task"]) for r in read_jsonl(corpus / FILE)}
    todo = [(g, task) for task in tasks for g in genomes
            if g["index"] % of == worker and (g["genome"], task) not in done]
    todo = todo[:limit] if limit is not None else todo
    for n, (g, task) in enumerate(todo):
        genome = for_task(Genome.model_validate(g["canonical"]), data[task])
        start = time.perf_counter()
        try:
            result = train_model(compile_model(genome, seed=0), data[task], epochs=epochs,
                                 schedule_epochs=LONG_EPOCHS, seed=0)
            history, losses, failure = result.history, result.losses, None
        except (FloatingPointError, RuntimeError) as err:
            history, losses, failure = [], [], f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
        corpus_history = long_runs.get((g["genome"], task))
        append(corpus / FILE, {
            "genome": g["genome"], "index": g["index"], "task": task, "seed": 0, "epochs": epochs,
            "schedule_epochs": LONG_EPOCHS, "history": history, "losses": losses, "failure": failure,
            "matches_corpus": None if corpus_history is None or not history
            else corpus_history[:len(history)] == history,
            "seconds": round(time.perf_counter() - start, 2), "load": round(os.getloadavg()[0], 2),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
        print(f"[{n + 1}/{len(todo)}] genome {g['index']:3d} {task:8s} losses "
              f"{' '.join(f'{v:.3f}' for v in losses) or failure}", flush=True)


def three_seed_truth(runs: list[dict], task: str) -> dict[str, float]:
    """Genome -> its long accuracy's mean over the seeds it was trained with."""
    per: dict[str, list[float]] = {}
    for r in runs:
        if r["task"] == task and r["fidelity"] == "long" and r["epochs"] == LONG_EPOCHS and r["accuracy"] is not None:
            per.setdefault(r["genome"], []).append(r["accuracy"])
    return {g: float(np.mean(v)) for g, v in per.items()}


def tau(x: dict[str, float], truth: dict[str, float]) -> tuple[float, int]:
    common = sorted(set(x) & set(truth))
    return float(kendalltau([x[g] for g in common], [truth[g] for g in common]).statistic), len(common)


def mean_rank(*signals: dict[str, float]) -> dict[str, float]:
    common = sorted(set.intersection(*(set(s) for s in signals)))
    ranks = np.mean([rankdata([s[g] for g in common]) for s in signals], axis=0)
    return dict(zip(common, ranks))


def analyse(corpus: Path) -> None:
    records = [r for r in read_jsonl(corpus / FILE) if not r["failure"]]
    runs = read_jsonl(corpus / "runs.jsonl")
    matched = [r["matches_corpus"] for r in records if r["matches_corpus"] is not None]
    print(f"{len(records)} runs; validation accuracy repeats the corpus's first epochs in {sum(matched)} of "
          f"{len(matched)}\n")
    epochs = min(len(r["losses"]) for r in records)
    print("| task | genomes | after epoch k | validation accuracy | minus the training losses' sum over epochs "
          "1..k | minus epoch k's training loss | validation accuracy and the loss sum, mean rank |")
    print("|---|---|---|---|---|---|---|")
    for task in sorted({r["task"] for r in records}):
        truth = three_seed_truth(runs, task)
        mine = [r for r in records if r["task"] == task]
        for k in range(1, epochs + 1):
            accuracy = {r["genome"]: r["history"][k - 1] for r in mine}
            tse = {r["genome"]: -sum(r["losses"][:k]) for r in mine}
            last = {r["genome"]: -r["losses"][k - 1] for r in mine}
            cells = [tau(s, truth) for s in (accuracy, tse, last, mean_rank(accuracy, tse))]
            print(f"| {task} | {cells[0][1]} | {k} | " + " | ".join(f"{t:+.3f}" for t, _ in cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=OUT)
    parser.add_argument("--worker", type=int, default=0)
    parser.add_argument("--of", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=3, help="the long schedule's first epochs to train")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-runs", type=int, default=None)
    parser.add_argument("--analyse", action="store_true")
    args = parser.parse_args()
    if args.analyse:
        analyse(args.corpus)
        return
    torch.set_num_threads(args.threads)
    run(args.corpus, args.worker, args.of, args.epochs, args.tasks.split(","), args.max_runs)


if __name__ == "__main__":
    main()
