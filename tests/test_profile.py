"""nas profile: the per-stage table and its JSON, as a user runs it."""
from __future__ import annotations

import json
import random
import re
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from nas.cost.latency import LatencyTable
from nas.errors import InputError
from tests.conftest import run_nas


def test_profile_table_with_fvcore():
    result = run_nas("profile", "zoo:caformer_s18", "--fvcore", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    rows = {line.split()[0]: line.split() for line in lines[2:9]}
    assert list(rows) == ["stem", "stages[0]", "stages[1]", "stages[2]", "stages[3]", "head", "total"]
    assert rows["stages[2]"] == ["stages[2]", "9", "320x14x14", "11.44M", "2.467", "2.467"]
    assert rows["total"][3:] == ["26.34M", "4.125", "4.125"]
    assert "analytic vs fvcore: +0.000%" in result.stdout
    assert "peak inference memory (estimate" in result.stdout


def test_profile_json_overrides_resolution_and_batch():
    result = run_nas("profile", "zoo:deit_s", "--resolution", "160", "--batch", "8", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["input"] == [3, 160, 160] and report["batch"] == 8
    assert report["parts"][1]["out_shape"] == [384, 10, 10]
    assert sum(p["flops"] for p in report["parts"]) == report["total"]["flops"]
    assert sum(b["flops"] for b in report["blocks"]) == report["total"]["flops"]
    assert [b["path"] for b in report["blocks"][:3]] == ["stem", "stages[0].block", "stages[0].block"]
    assert report["memory"]["estimate"] is True and report["memory"]["peak_bytes"] > 4 * report["total"]["params"]


def test_profile_bad_input():
    small = run_nas("profile", "zoo:caformer_s18", "--resolution", "8")
    assert small.returncode == 2 and "input.resolution: 8x8 is too small" in small.stderr
    device = run_nas("profile", "zoo:deit_s", "--device", "tpu")
    assert device.returncode == 2 and "expected auto, cpu or cuda" in device.stderr
    batch = run_nas("profile", "zoo:deit_s", "--batch", "0")
    assert batch.returncode == 2 and "--batch must be at least 1" in batch.stderr


def test_profile_latency_measures_on_the_device_and_caches_blocks(hybrid_file, tmp_path):
    table = tmp_path / "latency.sqlite"
    args = ("profile", hybrid_file, "--latency", "--device", "cpu", "--threads", "1", "--repeats", "3",
            "--table", table, "--json")
    first = run_nas(*args)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    latency = report["latency"]
    assert 0 < latency["p10_ms"] <= latency["median_ms"] <= latency["p90_ms"]
    assert latency["fingerprint"]["threads"] == 1 and latency["fingerprint"]["device"] == "cpu"
    assert sum(p["latency_share"] for p in report["parts"]) == pytest.approx(1.0)
    assert latency["table_measured"] > 0 and table.exists()
    assert sum(b["latency_ms"] for b in report["blocks"]) == pytest.approx(latency["predicted_ms"])
    second = json.loads(run_nas(*args).stdout)["latency"]
    assert second["table_measured"] == 0  # every block came from the table
    text = run_nas("profile", hybrid_file, "--latency", "--repeats", "3", "--table", table)
    assert text.returncode == 0 and "latency (measured end to end): median" in text.stdout


@pytest.mark.parametrize(("flag", "value"), [("--repeats", "0"), ("--repeats", "-1"), ("--threads", "-2"),
                                             ("--threads", "0"), ("--batch", "0"), ("--resolution", "0")])
def test_profile_refuses_counts_below_one_naming_the_flag(flag, value):
    result = run_nas("profile", "zoo:deit_s", "--latency", flag, value)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {flag} must be at least 1") and line.endswith(f"got {value}"), line


def _unusable_tables(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Files --table cannot use, and the reason the error must give."""
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(random.Random(0).randbytes(4096))
    other = tmp_path / "other.sqlite"  # another program's database
    with closing(sqlite3.connect(other)) as db, db:
        db.execute("CREATE TABLE users (id INTEGER, email TEXT)")
    older = tmp_path / "older.sqlite"
    with closing(sqlite3.connect(older)) as db, db:
        db.execute("CREATE TABLE latency (key TEXT, ms REAL)")
    folder = tmp_path / "folder"
    folder.mkdir()
    return {"random bytes": (garbage, "not an SQLite database"),
            "another database": (other, "an SQLite database without a latency table (it holds users)"),
            "another latency table": (older, "its latency table has columns (key, ms)"),
            "a directory": (folder, "a directory, not a file")}


def test_a_latency_table_that_cannot_be_used_is_named_with_the_reason(tmp_path):
    for path, reason in _unusable_tables(tmp_path).values():
        with pytest.raises(InputError, match=re.escape(f"latency table {path}: {reason}")):
            LatencyTable(path)
    with closing(sqlite3.connect(tmp_path / "other.sqlite")) as db:  # never written into
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == [("users",)]


@pytest.mark.parametrize("kind", ["random bytes", "another database", "a directory"])
def test_profile_refuses_an_unusable_table_before_timing(kind, tmp_path):
    path, reason = _unusable_tables(tmp_path)[kind]
    result = run_nas("profile", "zoo:deit_s", "--latency", "--table", path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [f"error: latency table {path}: {reason}"]


def test_a_lut_search_refuses_an_unusable_default_table(tmp_path, monkeypatch):
    path, reason = _unusable_tables(tmp_path)["random bytes"]
    cache = tmp_path / "cache"
    cache.mkdir()
    path.rename(cache / "latency.sqlite")
    monkeypatch.setenv("NAS_CACHE_DIR", str(cache))
    result = run_nas("search", "--space", "tiny", "--latency-mode", "lut", "--trials", "1", "--out", tmp_path / "run")
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [f"error: latency table {cache / 'latency.sqlite'}: {reason}"]
