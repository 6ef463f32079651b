"""Does a linear probe of the untrained network's features add what the fitted objective lacks? A study, not a
shipped score.

The objective given ``--data`` is still one weighing of the same terms for every task, and the tiny corpus's two
tasks rank its genomes almost independently (tau +0.15 between their truths). A probe is task-aware by
construction: the genome at initialisation (weights seed 0, the task's channels and classes) embeds the task's
first 500 training images and 500 validation images, a ridge classifier (scikit-learn's ``RidgeClassifierCV`` on
standardised features, its penalty chosen by leave-one-out on the training images) is fitted on the training
images' features, and its validation accuracy is the probe. No weight of the network is trained. Five feature
maps per genome, from ``forward_intermediates`` (each stage's output) and ``forward_head(pre_logits=True)``:

- ``pre``: the head's pre-logit features (pooled);
- ``mean_all``: every stage's output, averaged over the map, side by side;
- ``energy4_all``, ``energy4_last``, ``energy2_last``: the mean square of every stage's output (or the last
  one's) over a 4x4 (2x2) grid of the map. ``patterns`` sets stripe orientation against layout; a mean over
  the map, or any linear read-out of random features, stays at chance (0.10) on it, and the energy on a grid
  does not.

Written to ``probes.jsonl`` beside each corpus, one line per genome and task, resumable; about 1.5 s per genome
and task on one thread. ``--table`` prints each probe's Kendall tau against the long accuracy (mean over seeds),
and the held-out-genome tau of the shipped objective's terms with and without the probes (each probe as its
rank within the task, so that the two tasks' scales do not become a task marker).

    python benchmarks/corpus_probes.py --corpus benchmarks/results/corpus --worker 0 --of 2
    python benchmarks/corpus_probes.py --table --corpus benchmarks/results/corpus \
        --extra benchmarks/results/corpus_fresh
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from corpus import OUT, TASKS, append, for_task, read_genomes, read_jsonl  # noqa: E402

from nas import compile_model  # noqa: E402
from nas.data import load_data  # noqa: E402
from nas.genome import Genome  # noqa: E402

IMAGES = 500  # training images the probe is fitted on, and validation images it is judged on
PROBES = ("pre", "mean_all", "energy4_all", "energy4_last", "energy2_last")
CHUNK = 250  # images per forward pass


def probe_accuracy(features: torch.Tensor, labels: np.ndarray, fitted: int) -> float:
    """Validation accuracy of a ridge classifier fitted on the first ``fitted`` rows of ``features``."""
    from sklearn.linear_model import RidgeClassifierCV
    x = np.nan_to_num(features.double().numpy())
    mean, std = x[:fitted].mean(axis=0), x[:fitted].std(axis=0) + 1e-8
    z = (x - mean) / std
    model = RidgeClassifierCV(alphas=np.logspace(-2, 5, 15)).fit(z[:fitted], labels[:fitted])
    return float((model.predict(z[fitted:]) == labels[fitted:]).mean())


def probes(model: torch.nn.Module, x: torch.Tensor, y: np.ndarray, fitted: int) -> dict[str, float]:
    with torch.no_grad():
        chunks = [model.forward_intermediates(x[i:i + CHUNK], intermediates_only=True)
                  for i in range(0, len(x), CHUNK)]
        maps = [torch.cat([c[k] for c in chunks]) for k in range(len(chunks[0]))]
        pre = torch.cat([model.forward_head(model.forward_features(x[i:i + CHUNK]), pre_logits=True)
                         for i in range(0, len(x), CHUNK)])
    grid = {
        "pre": pre,
        "mean_all": torch.cat([m.mean((2, 3)) for m in maps], 1),
        "energy4_all": torch.cat([F.adaptive_avg_pool2d(m ** 2, 4).flatten(1) for m in maps], 1),
        "energy4_last": F.adaptive_avg_pool2d(maps[-1] ** 2, 4).flatten(1),
        "energy2_last": F.adaptive_avg_pool2d(maps[-1] ** 2, 2).flatten(1),
    }
    return {name: probe_accuracy(features, y, fitted) for name, features in grid.items()}


def measure(corpus: Path, worker: int, of: int) -> None:
    torch.set_num_threads(1)
    path = corpus / "probes.jsonl"
    done = {(r["genome"], r["task"]) for r in read_jsonl(path)}
    data = {task: load_data(task, resolution=32, seed=0, limit=limit) for task, limit in TASKS.items()}
    for record in read_genomes(corpus):
        if record["index"] % of != worker:
            continue
        base = Genome.model_validate(record["canonical"])
        for task, dataset in data.items():
            if (record["genome"], task) in done:
                continue
            start = time.perf_counter()
            genome = for_task(base, dataset)
            fitted = min(IMAGES, len(dataset.train_x))
            x = torch.cat([dataset.train_x[:fitted], dataset.val_x[:IMAGES]])
            y = torch.cat([dataset.train_y[:fitted], dataset.val_y[:IMAGES]]).numpy()
            found = probes(compile_model(genome, seed=0).eval(), x, y, fitted)
            append(path, {"genome": record["genome"], "index": record["index"], "task": task, "seed": 0,
                          **found, "seconds": round(time.perf_counter() - start, 3)})
        print(f"genome {record['index']}: probed", flush=True)


def table(corpus: Path, extra: list[Path], shuffles: int) -> None:
    import objective_fit as fit
    from scipy.stats import rankdata
    genomes, runs, scores, _, _ = fit.load([corpus], None, extra)
    found = {(r["genome"], r["task"]): r for folder in [corpus, *extra] for r in read_jsonl(folder / "probes.jsonl")}
    data, _ = fit.default_fit_data(genomes, scores, runs, truth="seeds")
    probed = {g for g in genomes if all((g, t) in found for t in data)}
    data = {t: ({g: row for g, row in rows.items() if g in probed}, acc) for t, (rows, acc) in data.items()}
    ids = fit.fittable(data)
    print(f"{len(ids)} genomes; truth: the long accuracy's mean over seeds\n")
    print("| | " + " | ".join(data) + " |")
    print("|---|" + "---|" * len(data))
    for name in PROBES:
        cells = [fit.tau([found[(g, t)][name] for g in ids], [acc[g] for g in ids]) for t, (_, acc) in data.items()]
        print(f"| probe `{name}` alone | " + " | ".join(f"{c:+.3f}" for c in cells) + " |")
    within = {t: dict(zip(ids, rankdata([[found[(g, t)][n] for n in PROBES] for g in ids], axis=0) / len(ids)))
              for t in data}
    plain = fit.shuffled_tau(data, shuffles)
    print("| the shipped objective's terms (`tiny.json`), held-out genomes | "
          + " | ".join(f"{plain[t]:+.3f}" for t in data) + " |")
    for chosen in (("pre",), ("energy2_last",), ("pre", "energy2_last"), PROBES):
        columns = [PROBES.index(n) for n in chosen]
        widened = {t: ({g: row + [float(within[t][g][c]) for c in columns] for g, row in rows.items()}, acc)
                   for t, (rows, acc) in data.items()}
        cells = fit.shuffled_tau(widened, shuffles)
        print(f"| the same plus {', '.join(f'`{n}`' for n in chosen)} (rank within the task), held-out genomes | "
              + " | ".join(f"{cells[t]:+.3f}" for t in data) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=OUT)
    parser.add_argument("--extra", type=Path, action="append", default=[], metavar="DIR",
                        help="with --table: more genomes of the corpus's space (benchmarks/results/corpus_fresh)")
    parser.add_argument("--worker", type=int, default=0)
    parser.add_argument("--of", type=int, default=1, help="workers sharing the corpus (each takes index %% of)")
    parser.add_argument("--table", action="store_true", help="print the figures instead of measuring")
    parser.add_argument("--shuffles", type=int, default=5)
    args = parser.parse_args()
    if args.table:
        table(args.corpus, args.extra, args.shuffles)
    else:
        measure(args.corpus, args.worker, args.of)


if __name__ == "__main__":
    main()
