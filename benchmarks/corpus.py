"""The trained ground truth every objective is scored against: genomes of the tiny space, trained on two tasks
at two fidelities, some with three seeds. Resumable and appending; CI never runs it.

Genomes: distinct valid genomes drawn from ``search_spaces/tiny.yaml`` (32x32, seven mixer families) with
``random.Random(SAMPLE_SEED)``; the list is a prefix of one fixed sequence, so ``--genomes 160`` after
``--genomes 120`` keeps the first 120 and adds 40. Each is written once to ``genomes.jsonl`` (its index, its id
= the content hash of the tiny-space genome, canonical form, params, FLOPs, mixers).

``--space hybrid32`` draws from ``benchmarks/spaces/hybrid32.yaml`` instead (the default space's 23 mixer types
on four maps, scaled to 32x32) and keeps that corpus in ``benchmarks/results/corpus_hybrid32``; everything else
is the same, so ``benchmarks/objective_fit.py --corpus A --corpus B`` can fit and judge across the two.

Runs, one line each in ``runs.jsonl``: (genome, task, fidelity, seed) with the validation accuracy after every
epoch, the wall time and the machine. Tasks: ``digits`` (500 train / 360 val) and ``patterns`` (1500 / 1000),
both at 32x32 with 10 classes; the genome's input channels follow the task. Fidelities: ``short`` is the
search's ``--objective train`` default (3 epochs), ``long`` has its own, longer cosine schedule (``--long``).
The seed sets the initial weights and the training order (``compile_model(seed=)``, ``train_model(seed=)``);
the data are the same for every seed. Seed 0 runs for every genome; seeds 1 and 2 for the first
``--replicated`` genomes, interleaved so the noise ceiling grows with the corpus (genome j's replicas follow
genome 5j + 4's seed-0 runs).

    python benchmarks/corpus.py                      # runs what is missing, in order
    nohup python benchmarks/corpus.py --worker 0 --of 2 > corpus0.log &   # two workers share the list
    python benchmarks/corpus.py --status             # what is done
    python benchmarks/corpus.py --space hybrid32 --genomes 120 --replica-seeds 1 --replica-fidelities long

``--from N --out DIR`` keeps the same sequence's genomes from index N on in another folder: genomes drawn after
the ones a shipped objective was fitted on, for a fresh test of it (``objective_fit.py --judge DIR``) that never
enters the fitted corpus:

    python benchmarks/corpus.py --genomes 480 --from 360 --replicated 480 --replica-fidelities long \
        --out benchmarks/results/corpus_fresh --worker K --of 2

Each run is appended under a file lock as soon as it ends, so a kill loses at most the runs in progress.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nas import analytic_cost, compile_model  # noqa: E402
from nas.data import Dataset, load_data  # noqa: E402
from nas.evaluate.train import train_model  # noqa: E402
from nas.genome import Genome  # noqa: E402
from nas.space import fit_space_to_data, sample_genomes  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "corpus"
SPACE = ROOT / "search_spaces" / "tiny.yaml"
# --space NAME: another 32x32 space's corpus, under OUT's sibling corpus_NAME (the objective's coverage:
# benchmarks/spaces/hybrid32.yaml holds the default space's 23 mixer types on four maps).
SPACES = {"tiny": SPACE, "hybrid32": ROOT / "benchmarks" / "spaces" / "hybrid32.yaml"}
SAMPLE_SEED = 0
# Task -> images per split: digits capped at 500 training images (all 1437 put every genome at 0.97-0.99 after
# 12 epochs, too close to rank); patterns as shipped (1500 / 1000).
TASKS = {"digits": 500, "patterns": None}
SHORT_EPOCHS = 3  # SearchOptions.epochs
LONG_EPOCHS = 12
SEEDS = (0, 1, 2)


def corpus_dir(space: str) -> Path:
    """Where the corpus of ``space`` is kept."""
    return OUT if space == "tiny" else OUT.with_name(f"corpus_{space}")


def for_task(genome: Genome, data: Dataset) -> Genome:
    """The genome with the task's input channels and class count (every task is at the genome's 32x32)."""
    return Genome.model_validate(fit_space_to_data(genome.to_dict(), data))


def mixers(genome: Genome) -> list[str]:
    blocks = [s.block or s.pattern[0] for s in genome.stages]
    return [getattr(b, "mixer", b).type for b in blocks]


def jobs(count: int, replicated: int, long_epochs: int, replica_seeds: tuple[int, ...] = SEEDS[1:],
         replica_fidelities: tuple[str, ...] = ("short", "long")) -> list[tuple[int, str, str, int, int]]:
    """(genome index, task, fidelity, seed, epochs) in the order they run; a replicated genome runs again with
    each of ``replica_seeds`` at each of ``replica_fidelities``."""
    fidelities = (("short", SHORT_EPOCHS), ("long", long_epochs))
    again = [(name, epochs) for name, epochs in fidelities if name in replica_fidelities]

    def replicas(j: int) -> list[tuple[int, str, str, int, int]]:
        return [(j, task, name, seed, epochs) for seed in replica_seeds for task in TASKS for name, epochs in again]

    order = []
    for i in range(count):
        order += [(i, task, name, 0, epochs) for task in TASKS for name, epochs in fidelities]
        if i % 5 == 4 and i // 5 < replicated:
            order += replicas(i // 5)
        # Beyond the interleaved ones, a replicated genome's seeds run right after its seed 0, so a corpus
        # extended a piece at a time gains whole genomes (every seed) rather than seed 0 alone.
        if count // 5 <= i < replicated:
            order += replicas(i)
    return order


def append(path: Path, record: dict) -> None:
    """One JSON line, appended under an exclusive lock (workers share the file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
        fcntl.flock(f, fcntl.LOCK_UN)


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill
            continue
    return records


# The corpus grows a piece at a time; figures published on a smaller one reproduce with this set to its size
# (``NAS_CORPUS_GENOMES=240``: the tiny corpus until 2026-12-04 21:25), and a job stopped mid-genome leaves one
# whose other seeds are missing (its truth would be seed 0 alone): pin to the genomes whose runs are all done.
# Every script that reads the corpus's genomes goes through ``read_genomes``.
GENOMES_ENV = "NAS_CORPUS_GENOMES"


def read_genomes(folder: Path, first: int | None = None) -> list[dict]:
    """The corpus's genomes in index order: the first ``first``, else the first ``$NAS_CORPUS_GENOMES``, else
    all."""
    if first is None and os.environ.get(GENOMES_ENV):
        first = int(os.environ[GENOMES_ENV])
    genomes = sorted(read_jsonl(folder / "genomes.jsonl"), key=lambda g: g["index"])
    return genomes if first is None else [g for g in genomes if g["index"] < first]


def run_key(record: dict) -> tuple:
    return record["genome"], record["task"], record["fidelity"], record["seed"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--genomes", type=int, default=120)
    parser.add_argument("--replicated", type=int, default=20, help="genomes trained with seeds 0, 1 and 2")
    parser.add_argument("--replica-seeds", default="1,2",
                        help="the seeds a replicated genome runs again with (default: 1,2)")
    parser.add_argument("--replica-fidelities", default="short,long",
                        help="the fidelities a replicated genome runs again at (default: short,long; long alone "
                             "is enough for the noise ceiling)")
    parser.add_argument("--long", type=int, default=LONG_EPOCHS, help="epochs of the long fidelity")
    parser.add_argument("--worker", type=int, default=0)
    parser.add_argument("--of", type=int, default=1, help="workers sharing the job list (genome i's runs with "
                        "seed s go to worker (i + s) %% of)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--space", choices=sorted(SPACES), default="tiny",
                        help="the space genomes are drawn from (default: tiny)")
    parser.add_argument("--out", type=Path, default=None, help="where the corpus is kept (default: "
                        "benchmarks/results/corpus for tiny, corpus_SPACE for another space)")
    parser.add_argument("--from", dest="first_index", type=int, default=0, metavar="N",
                        help="keep only the genomes from index N on (with --out: a fresh corpus, drawn after "
                             "the genomes of the fitted one)")
    parser.add_argument("--status", action="store_true", help="print what is done and stop")
    parser.add_argument("--max-runs", type=int, default=None, help="stop after this many runs")
    parser.add_argument("--tasks", default=",".join(TASKS),
                        help="run these tasks' jobs alone, comma-separated (default: all: %(default)s)")
    args = parser.parse_args()
    tasks = args.tasks.split(",")
    if not set(tasks) <= set(TASKS):
        parser.error(f"--tasks {args.tasks}: expected some of {', '.join(TASKS)}")
    torch.set_num_threads(args.threads)

    args.out = args.out or corpus_dir(args.space)
    if args.first_index and args.out.resolve() == corpus_dir(args.space).resolve():
        parser.error("--from keeps a fresh corpus apart from the fitted one: give it its own --out")
    replicas = tuple(int(seed) for seed in args.replica_seeds.split(","))
    replica_fidelities = tuple(args.replica_fidelities.split(","))
    space = yaml.safe_load(SPACES[args.space].read_text())
    genomes = sample_genomes(space, args.genomes, SAMPLE_SEED)
    ids = [g.content_hash() for g in genomes]
    known = {r["genome"] for r in read_jsonl(args.out / "genomes.jsonl")}
    if args.worker == 0:
        for i, genome in enumerate(genomes):
            if i >= args.first_index and ids[i] not in known:
                cost = analytic_cost(genome)
                append(args.out / "genomes.jsonl", {"index": i, "genome": ids[i], "canonical": genome.to_dict(),
                                                    "params": cost.params, "flops": cost.flops,
                                                    "mixers": mixers(genome)})
    done = {run_key(r) for r in read_jsonl(args.out / "runs.jsonl")}
    every = [job for job in jobs(len(genomes), args.replicated, args.long, replicas, replica_fidelities)
             if job[0] >= args.first_index]
    todo = [job for job in every if (job[0] + job[3]) % args.of == args.worker and job[1] in tasks
            and (ids[job[0]], job[1], job[2], job[3]) not in done]
    if args.status:
        total = len(every)
        print(f"{len(done)} runs done of {total}; {len(todo)} left for worker {args.worker} of {args.of}")
        return

    data = {task: load_data(task, resolution=32, seed=0, limit=limit) for task, limit in TASKS.items()}
    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} threads"
    for n, (i, task, fidelity, seed, epochs) in enumerate(todo):
        if args.max_runs is not None and n >= args.max_runs:
            break
        if (ids[i], task, fidelity, seed) in {run_key(r) for r in read_jsonl(args.out / "runs.jsonl")}:
            continue  # another worker got there (a second process on the same share)
        genome = for_task(genomes[i], data[task])
        model = compile_model(genome, seed=seed)
        start = time.perf_counter()
        try:
            result = train_model(model, data[task], epochs=epochs, seed=seed)
            history, failure = result.history, None
        except (FloatingPointError, RuntimeError) as err:
            history, failure = [], f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
        seconds = time.perf_counter() - start
        record = {"genome": ids[i], "index": i, "task": task, "fidelity": fidelity, "seed": seed,
                  "epochs": epochs, "train_images": len(data[task].train_y), "history": history,
                  "accuracy": history[-1] if history else None,
                  "failure": failure, "seconds": round(seconds, 2), "machine": machine,
                  "load": round(os.getloadavg()[0], 2), "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        append(args.out / "runs.jsonl", record)
        acc = f"{history[-1]:.3f}" if history else failure
        print(f"[{n + 1}/{len(todo)}] genome {i:3d} {task:8s} {fidelity:5s} seed {seed} {epochs:2d} ep: {acc} "
              f"({seconds:.0f} s) {'/'.join(mixers(genomes[i]))}", flush=True)


if __name__ == "__main__":
    main()
