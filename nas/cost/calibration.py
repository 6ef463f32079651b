"""A per-device correction of the latency table, fitted on end-to-end timings: ``--latency-mode predict``.

The table's sum (``predict_latency``) times each block alone, in a tight loop, with its weights and activations
in cache; inside the network the other blocks have evicted them, so the sum reads low, and by how much depends
on the block family and on the memory the network moves (benchmarks/BENCHMARKS.md, "Latency"). A calibration
times a set of genomes end to end on the device, and all of them once more after the last to know the
repeat-measurement floor (``calibrate``), and fits

    measured - table sum = sum over families f of a_f * (table ms of f) + b * activation MB + c * weight MB
                           + d * nodes + e

by ridge regression on relative error (scikit-learn's ``RidgeCV``, each genome weighted by 1/measured^2):
the table stays the baseline and the fit only corrects it, so a family the calibration never saw is predicted
as the table has it. A family is its own feature when it holds at least ``FAMILY_SHARE`` of the table's time
in at least ``FAMILY_GENOMES`` calibration genomes; the rest share the feature ``other``.

Held-out accuracy is part of every calibration: each genome is predicted by a fit on the other folds
(``FOLDS``-fold cross-validation), and the share within +-10% and the median error are stored beside the same
figures for the raw table sum and for the second end-to-end measurement (the floor no predictor can be judged
against without). When the fit's held-out median error is no better than the raw sum's, no correction is kept
(``Calibration.corrects`` is False) and predictions are the sum. ``margin`` is the 90th percentile of how far
the held-out predictions (or the sum, when it is kept) fell short of the measurement: a latency budget checked
by a prediction is checked against ``prediction * (1 + margin)``.

``genome_latency`` lives here, above both: it serves all three ``--latency-mode`` values (measure, lut, predict).

A calibration is stored in the table's SQLite file (table ``calibration``), keyed by the device fingerprint
the table's entries use, so it never applies to another device, thread count, batch or runtime.
"""
from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas.compiler import compile_model
from nas.cost.latency import (
    LatencyMode,
    LatencyTable,
    Prediction,
    Runtime,
    device_fingerprint,
    fingerprint_key,
    measure_latency,
    predict_latency,
)
from nas.errors import InputError, printable
from nas.genome import Genome
from nas.graph import build_graph, node_family
from nas.io import load_genome

FOLDS = 5
FAMILY_SHARE = 0.05  # of a genome's table time, for a family to be a feature of its own
FAMILY_GENOMES = 5
MARGIN_QUANTILE = 90
WITHIN = 0.10  # the +-10% the accuracy figures count
MIN_GENOMES = 8  # below this, FOLDS folds of a handful say nothing
MOST_GENOMES = 10_000  # hours of timing on any device; drawing far more distinct genomes did not end
RIDGE_ALPHAS = np.logspace(-3, 3, 13)
# Below this share of genomes repeating within +-10%, a calibration says the machine, not the fit, is the limit
STEADY_FLOOR = 0.9


@dataclass(frozen=True)
class GenomeFeatures:
    """What a calibration knows of a genome without running it whole: the table's times by family, and the
    memory its shapes move."""

    table_ms: float
    family_ms: dict[str, float]
    activation_mb: float  # every node's input and output, float32, at the timed batch
    weight_mb: float
    nodes: int


def genome_features(genome: Genome, prediction: Prediction, batch: int = 1) -> GenomeFeatures:
    families: dict[str, float] = {}
    activations = weights = 0
    nodes = 0
    for name, data in build_graph(genome).nodes(data=True):
        if data["role"] in ("input", "neck"):  # as predict_latency: no neck in the timed forward
            continue
        family = node_family(data["config"])
        families[family] = families.get(family, 0.0) + prediction.nodes[name]
        activations += math.prod(data["in_shape"]) + math.prod(data["out_shape"])
        weights += data["params"]
        nodes += 1
    return GenomeFeatures(prediction.total_ms, families, activations * batch * 4 / 2**20, weights * 4 / 2**20,
                          nodes)


@dataclass(frozen=True)
class HeldOut:
    """Accuracy on genomes a fit never saw, beside the table's and the repeat measurement's."""

    genomes: int
    folds: int
    within: float  # share of genomes predicted within +-10% of the end-to-end median
    median_error: float  # median |predicted / measured - 1|
    table_within: float
    table_median_error: float
    floor_within: float  # the same genome measured again after every other: the measurement's own noise and drift
    floor_median_error: float


@dataclass(frozen=True)
class Calibration:
    """A fitted correction for one device fingerprint; ``predict`` turns a genome's features into milliseconds."""

    device: str  # fingerprint_key of the table entries it corrects
    fingerprint: dict[str, Any]
    families: list[str]  # families with a feature of their own; any other is ``other``
    coefficients: dict[str, float]  # feature -> ms of correction per unit
    intercept: float
    margin: float  # a budget checked by a prediction is checked against prediction * (1 + margin)
    held_out: HeldOut
    created: str = ""

    def predict(self, features: GenomeFeatures) -> float:
        row = _row(features, self.families)
        correction = self.intercept + sum(self.coefficients.get(k, 0.0) * v for k, v in row.items())
        # A correction that would leave less than a tenth of the table's sum is an extrapolation, not a timing
        return max(features.table_ms + correction, 0.1 * features.table_ms)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "a calibration") -> Calibration:
        """``source`` names the stored text in the error when it is damaged (hand-edited, or another version's)."""
        try:
            data = json.loads(text)
            return cls(**{**data, "held_out": HeldOut(**data["held_out"])})
        except (ValueError, TypeError, KeyError) as err:  # was an internal error of nas latency show, or a search's
            raise InputError(f"{source}: damaged ({type(err).__name__}: {printable(str(err)[:100])}); make it "
                             "again with nas latency calibrate") from None

    @property
    def corrects(self) -> bool:
        """False when the fit did no better than the table's sum on held-out genomes, which is then kept."""
        return bool(self.coefficients) or self.intercept != 0.0

    def describe(self) -> str:
        h = self.held_out
        kept = "" if self.corrects else "no correction kept (held out, the fit was no better than the table sum); "
        drift = ("" if h.floor_within >= STEADY_FLOOR else
                 f"; this machine's own timings moved: timed again after the run, only {h.floor_within:.0%} of "
                 f"genomes were within +-10% of their first timing, and no prediction can be judged finer than that "
                 f"(a machine shared with other tenants drifts with them)")
        return (f"{kept}held out ({h.genomes} genomes, {h.folds}-fold): {h.within:.0%} within +-10%, median error "
                f"{h.median_error:.1%}; table sum {h.table_within:.0%} / {h.table_median_error:.1%}; measured "
                f"again {h.floor_within:.0%} / {h.floor_median_error:.1%}; budget margin +{self.margin:.1%}{drift}")


def _family_key(family: str) -> str:
    return f"table_ms:{family}"


def _row(features: GenomeFeatures, families: Sequence[str]) -> dict[str, float]:
    row = {_family_key(f): 0.0 for f in (*families, "other")}
    for family, ms in features.family_ms.items():
        row[_family_key(family if family in families else "other")] += ms
    row.update(activation_mb=features.activation_mb, weight_mb=features.weight_mb, nodes=float(features.nodes))
    return row


def _families(samples: Sequence[GenomeFeatures]) -> list[str]:
    counts: dict[str, int] = {}
    for s in samples:
        for family, ms in s.family_ms.items():
            if s.table_ms > 0 and ms / s.table_ms >= FAMILY_SHARE:
                counts[family] = counts.get(family, 0) + 1
    return sorted(f for f, n in counts.items() if n >= FAMILY_GENOMES)


def _fit(samples: Sequence[GenomeFeatures], measured: Sequence[float]) -> tuple[list[str], dict[str, float], float]:
    """Ridge regression on standardised features, its penalty chosen by scikit-learn's efficient leave-one-out
    (``RidgeCV``): a few dozen genomes against up to a dozen features, so the fit shrinks what the data cannot
    support. The coefficients are returned on the features' own scale."""
    from sklearn.linear_model import RidgeCV

    families = _families(samples)
    rows = [_row(s, families) for s in samples]
    names = list(rows[0])
    x = np.array([[r[k] for k in names] for r in rows])
    y = np.array([m - s.table_ms for s, m in zip(samples, measured)])
    weights = 1.0 / np.square(np.asarray(measured))  # least squares on relative error
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0  # a feature every genome shares carries nothing beyond the intercept
    model = RidgeCV(alphas=RIDGE_ALPHAS).fit((x - mean) / scale, y, sample_weight=weights)
    coefficients = model.coef_ / scale
    intercept = float(model.intercept_ - np.dot(coefficients, mean))
    return families, dict(zip(names, map(float, coefficients))), intercept


def _accuracy(predicted: Sequence[float], measured: Sequence[float]) -> tuple[float, float]:
    errors = np.abs(np.asarray(predicted) / np.asarray(measured) - 1)
    return float(np.mean(errors <= WITHIN)), float(np.median(errors))


def fit_calibration(samples: Sequence[GenomeFeatures], measured: Sequence[float], again: Sequence[float],
                    device: str, fingerprint: dict[str, Any], seed: int = 0) -> tuple[Calibration, list[float]]:
    """The calibration fitted on every sample, and each sample's held-out prediction (from the fold that left it
    out). ``measured`` is the end-to-end median per genome, ``again`` a second one, for the floor."""
    n = len(samples)
    if n < MIN_GENOMES:
        raise InputError(f"a calibration needs at least {MIN_GENOMES} genomes, got {n}")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    folds = min(FOLDS, n)
    held: list[float] = [0.0] * n
    for k in range(folds):
        test = order[k::folds]
        train = [i for j, i in enumerate(order) if j % folds != k]
        families, coefficients, intercept = _fit([samples[i] for i in train], [measured[i] for i in train])
        part = Calibration(device, fingerprint, families, coefficients, intercept, 0.0, _NO_HELD_OUT)
        for i in test:
            held[i] = part.predict(samples[i])
    within, error = _accuracy(held, measured)
    table_within, table_error = _accuracy([s.table_ms for s in samples], measured)
    floor_within, floor_error = _accuracy(again, measured)
    families, coefficients, intercept = _fit(samples, measured)
    if error >= table_error:
        # Held out, the fit does no better than the plain sum (noise, or nothing to correct): the sum is kept,
        # and the margin is the sum's own
        held = [s.table_ms for s in samples]
        families, coefficients, intercept = [], {}, 0.0
    shortfall = [m / p - 1 for m, p in zip(measured, held)]
    margin = max(0.0, float(np.percentile(shortfall, MARGIN_QUANTILE)))
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return Calibration(device, fingerprint, families, coefficients, intercept, margin,
                       HeldOut(n, folds, within, error, table_within, table_error, floor_within, floor_error),
                       created), held


_NO_HELD_OUT = HeldOut(0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


@dataclass
class CalibrationRun:
    """A calibration and the measurements it was fitted on, one row per genome."""

    calibration: Calibration
    rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def calibrate(genomes: Sequence[Genome], table: LatencyTable, device: str = "cpu", batch: int = 1,
              threads: int | None = None, warmup: int = 3, repeats: int = 10, seed: int = 0,
              progress: Callable[[int, dict[str, Any]], None] | None = None,
              runtime: Runtime = "eager") -> CalibrationRun:
    """Time each genome by the table (timing its missing entries) and end to end, then every genome end to end
    once more after the last, fit, and store the calibration in ``table``. ``progress(i, row)`` is called after
    each timing: first with ``again_ms`` None, then in the second pass with it set.

    The second timing comes last, not straight after the first, because the table's entries were timed at other
    moments of the run: the floor a prediction is judged against must include how far the machine drifts over
    the run. On the 2-core VM, two timings a few seconds apart agreed within +-10% for 95% of genomes, while a
    genome's table-to-measured ratio in one run did not correlate with its ratio in another run minutes later
    (benchmarks/BENCHMARKS.md, "Latency calibration")."""
    tick = time.perf_counter()
    threads = threads if threads is not None else torch.get_num_threads()
    fingerprint = device_fingerprint(device, torch.float32, batch, threads, runtime=runtime)
    key = fingerprint_key(fingerprint)

    def end_to_end(genome: Genome) -> float:
        model = compile_model(genome, seed=seed)
        shape = (genome.input.channels, *genome.input.resolution)
        return measure_latency(model, shape, device, batch=batch, warmup=warmup, repeats=repeats, threads=threads,
                               runtime=runtime).median_ms

    samples, measured, rows = [], [], []
    for i, genome in enumerate(genomes):
        prediction = predict_latency(genome, table, device, batch=batch, threads=threads, warmup=warmup,
                                     repeats=repeats, seed=seed, runtime=runtime)
        first = end_to_end(genome)
        features = genome_features(genome, prediction, batch)
        samples.append(features)
        measured.append(first)
        row = {"genome": genome.content_hash(), "measured_ms": first, "again_ms": None,
               "table_ms": prediction.total_ms, "new_entries": prediction.measured, **asdict(features)}
        rows.append(row)
        if progress is not None:
            progress(i, row)
    again = []
    for i, (genome, row) in enumerate(zip(genomes, rows)):
        again.append(end_to_end(genome))
        row["again_ms"] = again[-1]
        if progress is not None:
            progress(i, row)
    calibration, held = fit_calibration(samples, measured, again, key, fingerprint, seed)
    for row, p in zip(rows, held):
        row["held_out_ms"] = p
    save_calibration(table, calibration)
    return CalibrationRun(calibration, rows, time.perf_counter() - tick)


# --------------------------------------------------------------------------------------------------------------
# Storage, in the table whose entries it corrects

def save_calibration(table: LatencyTable, calibration: Calibration) -> None:
    table.put_calibration_text(calibration.device, calibration.to_json())


def load_calibration(table: LatencyTable, device: str) -> Calibration | None:
    """The calibration stored for the fingerprint key ``device``, or None."""
    text = table.calibration_text(device)
    return None if text is None else Calibration.from_json(text, f"latency table {table.path}: the calibration "
                                                                  f"for {device}")


def list_calibrations(table: LatencyTable) -> list[Calibration]:
    return [Calibration.from_json(text, f"latency table {table.path}: a calibration")
            for text in table.calibration_texts()]


@dataclass(frozen=True)
class Calibrated:
    ms: float  # the corrected prediction
    table_ms: float
    calibration: Calibration

    @property
    def budget_ms(self) -> float:
        """What a latency budget is checked against: the prediction raised by the held-out margin."""
        return self.ms * (1 + self.calibration.margin)


def require_calibration(table: LatencyTable, device: str, setup: str = "this device and setup",
                        command: str = "`nas latency calibrate` with the same device, threads and runtime"
                        ) -> Calibration:
    """The calibration of the fingerprint key ``device``, or an ``InputError`` naming the ``setup`` and the
    ``command`` that makes one: a prediction is never silently left uncorrected."""
    calibration = load_calibration(table, device)
    if calibration is None:
        raise InputError(f"latency table {table.path} holds no calibration for {setup} ({device}); make one with "
                         f"{command}")
    return calibration


def calibrated_latency(genome: Genome, prediction: Prediction, table: LatencyTable, batch: int = 1) -> Calibrated:
    """``prediction`` (the table's sum for ``genome``) corrected by the calibration of its device fingerprint."""
    calibration = require_calibration(table, prediction.device)
    return Calibrated(calibration.predict(genome_features(genome, prediction, batch)), prediction.total_ms,
                      calibration)


def genome_latency(genome: Genome | str | Path | dict[str, Any], mode: LatencyMode, table: LatencyTable | None = None,
                   device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, batch: int = 1,
                   threads: int | None = None, warmup: int = 10, repeats: int = 50, seed: int = 0,
                   runtime: Runtime = "eager") -> float:
    """Milliseconds for a search objective, by ``mode``:

    - ``measure``: compile the whole network and time it end to end (NCHW input): the reference, ~0.4 s a
      genome on one CPU thread at 224px.
    - ``lut``: the sum of per-node table entries (``predict_latency``), timing missing entries once; ~6 ms
      once cached. On CPU it reads about 10% low (blocks timed alone run with warm caches).
    - ``predict``: the table's sum corrected by the device's calibration (``nas.cost.calibration``, made by
      ``nas latency calibrate``); an ``InputError`` when the table holds none for this device fingerprint.
    """
    genome = load_genome(genome)
    if mode == "measure":
        model = compile_model(genome, seed=seed)
        res = genome.input
        return measure_latency(model, (res.channels, *res.resolution), device, dtype, batch, warmup, repeats,
                               threads, runtime=runtime).median_ms
    if mode in ("lut", "predict"):
        if table is None:
            raise ValueError(f"mode {mode!r} needs a LatencyTable")
        prediction = predict_latency(genome, table, device, dtype, batch, threads, warmup, repeats, seed, runtime)
        if mode == "lut":
            return prediction.total_ms
        return calibrated_latency(genome, prediction, table, batch).ms
    raise ValueError(f"unknown latency mode {mode!r}; use 'measure', 'lut' or 'predict'")
