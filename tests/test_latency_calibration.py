"""The latency table's per-device calibration: the fit, its storage beside the entries, `--latency-mode predict`,
and `nas latency calibrate` as a user runs it. Timings here are real but tiny (32 px genomes, 2 repeats): the
tests check the plumbing and the fit's arithmetic, not how accurate a calibration is (benchmarks/BENCHMARKS.md)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nas.cost.calibration import (
    Calibration,
    GenomeFeatures,
    calibrated_latency,
    fit_calibration,
    genome_features,
    genome_latency,
    load_calibration,
)
from nas.cost.latency import LatencyTable, device_fingerprint, fingerprint_key, predict_latency
from nas.errors import InputError
from nas.graph import node_family
from nas.io import load_genome
from nas.space import read_space, sample_genomes
from tests.conftest import run_nas


def _features(rng: np.random.Generator) -> tuple[GenomeFeatures, float]:
    """A genome whose end-to-end time is the table's sum plus 20% of its conv time plus 0.5 ms per activation MB:
    the kind of shortfall a table of blocks timed alone shows."""
    conv, attention, activation_mb = rng.uniform(1, 40), rng.uniform(0, 60), rng.uniform(1, 20)
    features = GenomeFeatures(conv + attention, {"conv": conv, "attention": attention}, activation_mb, 5.0, 12)
    return features, conv + attention + 0.2 * conv + 0.5 * activation_mb


def test_the_fit_learns_a_correction_it_can_predict_for_genomes_it_never_saw():
    rng = np.random.default_rng(0)
    samples, measured = zip(*(_features(rng) for _ in range(40)))
    again = [m * 1.02 for m in measured]
    calibration, held_out = fit_calibration(samples, measured, again, "cpu-test", {"device": "cpu"})

    assert calibration.families == ["attention", "conv"]
    # Out-of-fold predictions of an exactly linear shortfall: every genome within 10%, while the raw sum is not
    assert calibration.held_out.within == 1.0 and calibration.held_out.median_error < 0.02
    assert calibration.held_out.table_within < 0.5
    assert calibration.held_out.floor_within == 1.0 and calibration.held_out.floor_median_error == pytest.approx(0.02)
    assert np.allclose(held_out, measured, rtol=0.1)
    fresh, truth = _features(np.random.default_rng(1))
    assert calibration.predict(fresh) == pytest.approx(truth, rel=0.05)
    assert 0 <= calibration.margin < 0.05
    # It travels as JSON, as the table stores it
    assert Calibration.from_json(calibration.to_json()) == calibration


def test_a_family_the_calibration_never_saw_is_predicted_as_the_table_has_it():
    rng = np.random.default_rng(0)
    samples, measured = zip(*(_features(rng) for _ in range(20)))
    calibration, _ = fit_calibration(samples, measured, measured, "cpu-test", {})
    unseen = GenomeFeatures(30.0, {"spectral": 30.0}, 0.0, 5.0, 12)
    assert calibration.coefficients["table_ms:other"] == 0.0  # no calibration genome had any time there
    corrected = calibration.predict(unseen) - unseen.table_ms
    shape_only = calibration.intercept + sum(calibration.coefficients[k] * v for k, v in
                                             {"weight_mb": 5.0, "nodes": 12.0, "activation_mb": 0.0}.items())
    assert corrected == pytest.approx(shape_only)


def test_too_few_genomes_is_refused():
    rng = np.random.default_rng(0)
    samples, measured = zip(*(_features(rng) for _ in range(5)))
    with pytest.raises(InputError, match="at least 8 genomes"):
        fit_calibration(samples, measured, measured, "cpu-test", {})


def test_a_block_is_charged_to_its_token_mixers_family():
    genome = load_genome("zoo:caformer_s18")
    from nas.graph import build_graph

    families = {node_family(d["config"]) for n, d in build_graph(genome).nodes(data=True) if d["role"] != "input"}
    assert {"conv", "attention", "stems", "heads"} <= families  # sepconv stages, attention stages, stem, head


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A table calibrated by the CLI, as a user makes one: 8 genomes of the tiny space, 2 timed runs each."""
    folder = tmp_path_factory.mktemp("calibrated")
    done = run_nas("latency", "calibrate", "--space", "tiny", "--genomes", "8", "--repeats", "2", "--warmup", "1",
                   "--table", folder / "latency.sqlite", "--json", folder / "calibration.json")
    assert done.returncode == 0, done.stderr
    assert "8/8: measured" in done.stderr and "within +-10%" in done.stdout
    # The floor's second timing of each genome comes after every first one, so it includes the run's drift
    assert done.stderr.index("8/8: measured") < done.stderr.index("again 1/8:") < done.stderr.index("again 8/8:")
    return folder


def test_calibrate_writes_every_genome_and_stores_the_fit_that_predict_mode_applies(calibrated: Path):
    data = json.loads((calibrated / "calibration.json").read_text())
    assert len(data["rows"]) == 8 and data["calibration"]["held_out"]["genomes"] == 8
    assert all(r["measured_ms"] > 0 and r["again_ms"] > 0 and r["table_ms"] > 0 and r["held_out_ms"] > 0
               for r in data["rows"])

    table = LatencyTable(calibrated / "latency.sqlite")
    key = fingerprint_key(device_fingerprint("cpu", threads=1))
    stored = load_calibration(table, key)
    assert stored is not None and stored.to_json() == json.dumps(data["calibration"], sort_keys=True)

    space, _, _ = read_space("tiny")
    genome = sample_genomes(space, 1, seed=0)[0]  # the first calibration genome: its entries are in the table
    predicted = genome_latency(genome, "predict", table=table, threads=1, repeats=2)
    prediction = predict_latency(genome, table, threads=1, repeats=2)
    assert prediction.measured == 0
    assert predicted == pytest.approx(stored.predict(genome_features(genome, prediction)))
    calibrated_ = calibrated_latency(genome, prediction, table)
    assert calibrated_.budget_ms == pytest.approx(calibrated_.ms * (1 + stored.margin))
    # Another setup (two threads) has no calibration: refused, never silently uncorrected
    with pytest.raises(InputError, match="no calibration"):
        genome_latency(genome, "predict", table=table, threads=2, repeats=2)


def test_show_then_profile_then_a_search_that_predicts(calibrated: Path, tmp_path: Path, hybrid_file: Path):
    table = calibrated / "latency.sqlite"
    shown = run_nas("latency", "show", "--table", table)
    assert shown.returncode == 0 and "1 calibration(s)" in shown.stdout and "1 thread(s)" in shown.stdout

    # nas profile puts the calibrated prediction beside its measurement
    profiled = run_nas("profile", hybrid_file, "--latency", "--threads", "1", "--repeats", "2", "--table", table)
    assert profiled.returncode == 0, profiled.stderr
    assert "latency predicted by the table's calibration for this setup" in profiled.stdout

    # The search finds the table through NAS_CACHE_DIR, checks budgets with the margin, and times its winner
    search = run_nas("search", "--space", "tiny", "--latency-mode", "predict", "--latency", "1s", "--trials", "4",
                     "--screen", "100", "--references", "none", "--out", tmp_path / "run",
                     env={"NAS_CACHE_DIR": str(calibrated)})
    assert search.returncode == 0, search.stderr
    assert "latency predicted by the calibrated table" in search.stderr
    assert "winner timed end to end" in search.stderr and "within the 1000 ms budget" in search.stderr
    timed = json.loads((tmp_path / "run" / "winner_latency.json").read_text())
    assert timed["mode"] == "predict" and timed["measured_ms"] > 0 and timed["budget_ms"] == 1000
    assert "winner timed end to end" in (tmp_path / "run" / "report.md").read_text()


def test_bad_calibration_input_is_one_line_and_exit_2(tmp_path: Path):
    few = run_nas("latency", "calibrate", "--genomes", "3", "--table", tmp_path / "t.sqlite")
    assert few.returncode == 2 and few.stderr.strip() == "error: --genomes must be at least 8, got 3"
    # predict mode with a table that holds no calibration: refused before any trial, nothing left behind
    search = run_nas("search", "--space", "tiny", "--latency-mode", "predict", "--trials", "2",
                     "--out", tmp_path / "run", env={"NAS_CACHE_DIR": str(tmp_path / "empty")})
    assert search.returncode == 2
    assert "holds no calibration" in search.stderr and "nas latency calibrate" in search.stderr
    assert not (tmp_path / "run").exists()


def test_a_fit_no_better_than_the_table_sum_is_not_kept():
    # End-to-end times that are the table's sum plus noise: nothing to correct, so the sum is what predicts
    rng = np.random.default_rng(0)
    samples = [GenomeFeatures(ms, {"conv": ms}, rng.uniform(1, 20), 5.0, 12) for ms in rng.uniform(10, 100, 30)]
    measured = [s.table_ms * rng.normal(1.0, 0.08) for s in samples]
    calibration, held_out = fit_calibration(samples, measured, measured, "cpu-test", {})
    assert not calibration.corrects and "no correction kept" in calibration.describe()
    assert held_out == [s.table_ms for s in samples]
    assert calibration.predict(samples[0]) == samples[0].table_ms
    assert calibration.margin > 0  # the sum's own shortfall, at the 90th percentile


def test_a_machine_whose_own_timings_drift_is_named_as_the_limit():
    rng = np.random.default_rng(0)
    samples = [GenomeFeatures(ms, {"conv": ms}, rng.uniform(1, 20), 5.0, 12) for ms in rng.uniform(10, 100, 30)]
    measured = [s.table_ms * rng.normal(1.0, 0.02) for s in samples]
    steady, _ = fit_calibration(samples, measured, [m * 1.01 for m in measured], "cpu-test", {})
    drifting, _ = fit_calibration(samples, measured, [m * (1.2 if i % 2 else 1.0) for i, m in enumerate(measured)],
                                  "cpu-test", {})
    assert drifting.held_out.floor_within == pytest.approx(0.5)
    assert "only 50% of genomes were within +-10% of their first timing" in drifting.describe()
    assert "own timings moved" not in steady.describe()
