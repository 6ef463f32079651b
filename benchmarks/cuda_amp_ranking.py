"""Does the corpus's CPU ranking carry over to AMP training on a GPU? Reads the ``amp`` records that
``benchmarks/cuda_checks.py`` wrote (every ``checks*.jsonl`` in the folders given) and prints, per task, the
Kendall tau of the GPU accuracies against the corpus's CPU seed 0, and the same tau between CPU seeds, the
noise the first is read against.

    python benchmarks/cuda_amp_ranking.py benchmarks/results/cuda/h200_2026-12-04_second
"""
from __future__ import annotations

import argparse
import json
from itertools import combinations
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau


def amp_records(folders: list[Path]) -> list[dict]:
    """The last ``amp`` record of each (genome, task) with a GPU accuracy and all three CPU seeds."""
    kept: dict[tuple[str, str], dict] = {}
    for folder in folders:
        for path in sorted(folder.glob("checks*.jsonl")):
            for line in path.read_text().splitlines():
                record = json.loads(line)
                if (record.get("section") == "amp" and record.get("device_accuracy") is not None
                        and len(record.get("cpu_accuracy", {})) == 3):
                    kept[record["genome"], record["task"]] = record
    return list(kept.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", type=Path, nargs="+")
    records = amp_records(parser.parse_args().folders)
    for task in sorted({r["task"] for r in records}):
        rows = [r for r in records if r["task"] == task]
        gpu = np.array([r["device_accuracy"] for r in rows])
        cpu = np.array([[r["cpu_accuracy"][seed] for seed in ("0", "1", "2")] for r in rows])
        between_seeds = [kendalltau(cpu[:, i], cpu[:, j]).statistic for i, j in combinations(range(3), 2)]
        inside = np.mean((gpu >= cpu.min(axis=1)) & (gpu <= cpu.max(axis=1)))
        print(f"{task}: {len(rows)} genomes; tau GPU vs CPU seed 0 {kendalltau(gpu, cpu[:, 0]).statistic:+.3f}, "
              f"GPU vs CPU seeds 1-2 mean {kendalltau(gpu, cpu[:, 1:].mean(axis=1)).statistic:+.3f}; "
              f"between CPU seeds {', '.join(f'{t:+.3f}' for t in between_seeds)}; "
              f"seed 0 vs seeds 1-2 mean {kendalltau(cpu[:, 0], cpu[:, 1:].mean(axis=1)).statistic:+.3f}; "
              f"GPU inside the CPU seeds' range {inside:.0%}; GPU minus CPU seed 0, mean "
              f"{np.mean(gpu - cpu[:, 0]):+.4f}")


if __name__ == "__main__":
    main()
