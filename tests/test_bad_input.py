"""Every bad input, given as a careless user or an adversary would: exit status 2 and one line that starts with
``error:`` and names the file or option, and the YAML path where there is one; never a traceback, never a hang,
never a file half written.

The table goes through ``nas.cli.main`` in this process: the same parsing, dispatch and error formatting as the
``nas`` command, without paying for a fresh interpreter per case. ``test_bad_input_in_a_real_process`` runs one
case of each command as a real subprocess, and ``test_inputs_that_used_to_hang_end_in_seconds`` runs the cases
that once hung or ate memory as subprocesses under a time limit.
"""
from __future__ import annotations

import io
import os
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from nas.cli import main
from tests.conftest import run_nas

GOOD = """\
name: g
input: {channels: 3, resolution: 32}
num_classes: 10
stem: {type: conv, kernel: 4, stride: 4}
defaults: {downsample: {type: conv, kernel: 2, stride: 2}}
stages:
  - {depth: 1, width: 16, block: {mixer: {type: dwconv, kernel: 3}}}
  - {depth: 1, width: 32, block: {mixer: {type: attention, heads: 2}}}
"""


def edit(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new)


SPACE = GOOD.replace("width: 16,", "width: {choice: [16, 24]},")
BOMB = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n' + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi")) + "stem: *i\n"


def _sqlite(*statements: str) -> bytes:
    """The bytes of an SQLite file made by ``statements``, in WAL mode as a latency table keeps itself."""
    with tempfile.TemporaryDirectory() as folder:
        db = sqlite3.connect(Path(folder) / "t.sqlite")
        db.execute("PRAGMA journal_mode=WAL")
        for statement in statements:
            db.execute(statement)
        db.commit()
        db.close()
        return (Path(folder) / "t.sqlite").read_bytes()


def _npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _torch_file(state: dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` pixels (and holds almost none)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b""))


LATENCY_TABLE = ("CREATE TABLE latency (device TEXT, role TEXT, config TEXT, in_shape TEXT, out INTEGER, "
                 "ms REAL NOT NULL, PRIMARY KEY (device, role, config, in_shape, out))")


@dataclass
class Case:
    argv: str  # split on spaces; {d} is the case's own folder
    words: list[str]  # each must appear in the error line
    files: dict[str, str | bytes] = field(default_factory=dict)


GENOME = "validate {d}/g.yaml"
CASES: dict[str, Case] = {
    # --- genome files: the grammar ------------------------------------------------------------------------
    "unknown type": Case(GENOME, ["g.yaml", "stages[0].block.mixer", "'dwconvv'", "did you mean 'dwconv'"],
                         {"g.yaml": edit("type: dwconv", "type: dwconvv")}),
    "unknown field": Case(GENOME, ["stages[0].block.mixer.kernal", "did you mean 'kernel'"],
                          {"g.yaml": edit("kernel: 3}", "kernal: 3}")}),
    "unknown top-level field": Case(GENOME, ["num_clases", "did you mean 'num_classes'"],
                                    {"g.yaml": edit("num_classes", "num_clases")}),
    "wrong value type": Case(GENOME, ["stages[0].depth", "'two'"], {"g.yaml": edit("depth: 1, width: 16",
                                                                                     "depth: two, width: 16")}),
    "boolean as a number": Case(GENOME, ["stages[0].depth", "not a boolean"],
                                {"g.yaml": edit("depth: 1, width: 16", "depth: true, width: 16")}),
    "negative size": Case(GENOME, ["stages[1].width", "greater than 0"], {"g.yaml": edit("width: 32", "width: -32")}),
    "zero kernel": Case(GENOME, ["stages[0].block.mixer.kernel", "greater than 0"],
                        {"g.yaml": edit("kernel: 3}", "kernel: 0}")}),
    "width beyond the limit": Case(GENOME, ["stages[0].width", "limit of 65,536"],
                                   {"g.yaml": edit("width: 16", "width: 10000000")}),
    "float beyond any int": Case(GENOME, ["stages[0].width", "1e+35"], {"g.yaml": edit("width: 16",
                                                                                         "width: 1.0e+35")}),
    "infinite size": Case(GENOME, ["stages[0].width", "finite"], {"g.yaml": edit("width: 16", "width: .inf")}),
    "not-a-number rate": Case(GENOME, ["drop_path_rate"], {"g.yaml": GOOD + "drop_path_rate: .nan\n"}),
    "resolution beyond the limit": Case(GENOME, ["input.resolution", "limit"],
                                        {"g.yaml": edit("resolution: 32", "resolution: 1000000")}),
    "too many blocks": Case(GENOME, ["stages", "at most 4,096"], {"g.yaml": edit("depth: 1, width: 16",
                                                                                 "depth: 5000, width: 16")}),
    "heads do not divide the width": Case(GENOME, ["stages[1].block.mixer.heads", "does not divide"],
                                          {"g.yaml": edit("heads: 2", "heads: 7")}),
    "window does not tile the map": Case(GENOME, ["stages[1].block.mixer.window", "does not divide"],
                                         {"g.yaml": edit("heads: 2", "heads: 2, window: 3")}),
    "resolution too small": Case(GENOME, ["input.resolution", "too small"],
                                 {"g.yaml": edit("resolution: 32", "resolution: 4")}),
    "missing required field": Case(GENOME, ["stages[1].width", "required"],
                                   {"g.yaml": edit("depth: 1, width: 32", "depth: 1")}),
    "missing stem": Case(GENOME, ["stem", "required"], {"g.yaml": edit("stem: {type: conv, kernel: 4, stride: 4}\n",
                                                                       "")}),
    "block and pattern": Case(GENOME, ["stages[0]", "exactly one"],
                              {"g.yaml": edit("block: {mixer: {type: dwconv, kernel: 3}}",
                                              "block: {mixer: identity}, pattern: [{mixer: identity}]")}),
    "width change without downsample": Case(GENOME, ["stages[1].width"],
                                            {"g.yaml": edit("defaults: {downsample: {type: conv, kernel: 2, "
                                                            "stride: 2}}\n", "")}),
    "stride on a block that cannot": Case(GENOME, ["stages[0]", "cannot stride"],
                                          {"g.yaml": edit("depth: 1, width: 16", "depth: 1, width: 16, stride: 2")}),
    "even kernel": Case(GENOME, ["stages[0].block.mixer.kernel", "odd"], {"g.yaml": edit("kernel: 3}",
                                                                                         "kernel: 4}")}),
    "bad default": Case(GENOME, ["defaults.mlp.ratio"], {"g.yaml": GOOD.replace("defaults: {",
                                                                              "defaults: {mlp: {ratio: -1}, ")}),
    # --- genome files: the YAML ---------------------------------------------------------------------------
    "syntax error": Case(GENOME, ["g.yaml", "line 2", "syntax error"], {"g.yaml": "stem: {type: conv\nstages: [\n"}),
    "empty file": Case(GENOME, ["g.yaml", "empty"], {"g.yaml": ""}),
    "a list, not a mapping": Case(GENOME, ["g.yaml", "mapping", "list"], {"g.yaml": "- 1\n- 2\n"}),
    "a scalar, not a mapping": Case(GENOME, ["g.yaml", "mapping", "str"], {"g.yaml": "just text\n"}),
    "duplicate key": Case(GENOME, ["g.yaml", "duplicate key 'name'", "line 1"], {"g.yaml": "name: a\n" + GOOD}),
    "duplicate key on one line": Case(GENOME, ["g.yaml", "duplicate key 'kernel'", "line 4"],
                                      {"g.yaml": edit("kernel: 4, stride: 4", "kernel: 4, kernel: 8, stride: 4")}),
    "integer of 5,000 digits": Case(GENOME, ["g.yaml", "line 7", "5000 digits"],
                                    {"g.yaml": edit("width: 16", "width: " + "9" * 5000)}),
    "hex integer beyond any float": Case(GENOME, ["stages[0].width", "limit of 65,536", "20,000 bits"],
                                         {"g.yaml": edit("width: 16", "width: 0x" + "f" * 5000)}),
    "date that does not exist": Case(GENOME, ["g.yaml", "line 1", "day is out of range"],
                                     {"g.yaml": edit("name: g", "name: 2001-02-30")}),
    "key with a newline": Case(GENOME, ["stages[0].block.'x\\n\\n<h1>INJECTED</h1>\\n'", "unknown field"],
                               {"g.yaml": edit("kernel: 3}}", 'kernel: 3}, "x\\n\\n<h1>INJECTED</h1>\\n": 1}')}),
    "python tag": Case(GENOME, ["g.yaml", "python/object"], {"g.yaml": "stem: !!python/object/apply:os.system "
                                                                        "['echo hi']\n"}),
    "alias bomb": Case(GENOME, ["g.yaml", "more than 100,000 values"], {"g.yaml": BOMB}),
    "recursive alias": Case(GENOME, ["g.yaml", "contains it"], {"g.yaml": "a: &a [*a]\nstem: *a\n"}),
    "nested too deep": Case(GENOME, ["g.yaml", "more than 64 levels"], {"g.yaml": "a: " + "[" * 200 + "]" * 200}),
    "file too large": Case(GENOME, ["g.yaml", "at most 1,048,576"], {"g.yaml": "a: " + "x" * (1 << 20) + "\n"}),
    "unhashable key": Case(GENOME, ["g.yaml", "unhashable key"], {"g.yaml": "stem: {? [a]: b}\n"}),
    "not UTF-8": Case(GENOME, ["g.yaml", "cannot read"], {"g.yaml": b"stem: \xff\xfe\x00\x81\n"}),
    "no such file": Case("validate {d}/nope.yaml", ["nope.yaml", "no such file"]),
    "a folder, not a file": Case("validate {d}", ["is a directory"]),
    "unknown zoo name": Case("validate zoo:resnet9000", ["unknown zoo genome 'resnet9000'", "convnext_t"]),
    "zoo name escaping the zoo": Case("validate zoo:../zoo/reference", ["unknown zoo genome"]),
    "zoo name as a path": Case("validate zoo:../../tests/../search_spaces/tiny", ["unknown zoo genome"]),
    # --- spaces -------------------------------------------------------------------------------------------
    "misspelt choice": Case(GENOME, ["stages[0].width.choise", "did you mean 'choice'"],
                            {"g.yaml": edit("width: 16", "width: {choise: [16, 24]}")}),
    "empty choice": Case(GENOME, ["stages[0].width.choice", "non-empty"], {"g.yaml": edit("width: 16",
                                                                                          "width: {choice: []}")}),
    "range upside down": Case(GENOME, ["stages[0].depth.int", "above high"],
                              {"g.yaml": edit("depth: 1, width: 16", "depth: {int: [4, 2]}, width: 16")}),
    "int range of floats": Case(GENOME, ["stages[0].depth.int", "two ints"],
                                {"g.yaml": edit("depth: 1, width: 16", "depth: {int: [1.5, 2]}, width: 16")}),
    "misspelt range option": Case(GENOME, ["stages[0].depth", "remove stp", "did you mean 'step'"],
                                  {"g.yaml": edit("depth: 1, width: 16", "depth: {int: [1, 4], stp: 2}, width: 16")}),
    "log range from zero": Case(GENOME, ["drop_path_rate.float", "log"],
                                {"g.yaml": GOOD + "drop_path_rate: {float: [0.0, 0.5], log: true}\n"}),
    "space with no valid genome": Case(GENOME, ["stages[1].block.mixer.heads", "no valid genome", "does not divide"],
                                       {"g.yaml": edit("heads: 2", "heads: {choice: [3, 5]}")}),
    # --- command-line options -----------------------------------------------------------------------------
    "unknown command": Case("frobnicate", ["invalid choice"]),
    "missing argument": Case("validate", ["required"]),
    "negative sample count": Case("validate {d}/s.yaml --samples -5", ["--samples", "at least 0"],
                                  {"s.yaml": SPACE}),
    "graph of a space": Case("validate {d}/s.yaml --graph {d}/g.dot", ["--graph needs a genome"],
                             {"s.yaml": SPACE}),
    "graph format unknown": Case("validate {d}/g.yaml --graph {d}/g.png", ["g.png"], {"g.yaml": GOOD}),
    "graph into a missing folder": Case("validate {d}/g.yaml --graph {d}/no/g.dot", ["--graph", "does not exist"],
                                        {"g.yaml": GOOD}),
    "compile into a folder": Case("compile {d}/g.yaml -o {d}", ["-o", "is a directory"], {"g.yaml": GOOD}),
    "compile into a missing folder": Case("compile {d}/g.yaml -o {d}/no/model.py", ["does not exist"],
                                          {"g.yaml": GOOD}),
    "weights into a folder": Case("compile {d}/g.yaml -o {d}/m.py --weights {d}", ["--weights", "is a directory"],
                                  {"g.yaml": GOOD}),
    "weights beyond memory": Case("compile {d}/g.yaml -o {d}/m.py --weights {d}/w.pt", ["GiB", "available"],
                                  {"g.yaml": edit("width: 32", "width: 60000")}),
    "schema into a folder": Case("schema -o {d}", ["-o", "is a directory"]),
    "profile repeats zero": Case("profile {d}/g.yaml --latency --repeats 0", ["--repeats"], {"g.yaml": GOOD}),
    "profile threads negative": Case("profile {d}/g.yaml --latency --threads -2", ["--threads"], {"g.yaml": GOOD}),
    "profile batch zero": Case("profile {d}/g.yaml --batch 0", ["--batch"], {"g.yaml": GOOD}),
    "profile resolution zero": Case("profile {d}/g.yaml --resolution 0", ["--resolution"], {"g.yaml": GOOD}),
    "inference beyond memory": Case("profile {d}/g.yaml --latency", ["GiB", "available"],
                                    {"g.yaml": edit("resolution: 32", "resolution: 60000")}),
    "latency table of garbage": Case("profile {d}/g.yaml --latency --repeats 1 --table {d}/t.sqlite", ["t.sqlite"],
                                     {"g.yaml": GOOD, "t.sqlite": os.urandom(4096)}),
    "zoo show unknown": Case("zoo show nope", ["nope"]),
    "zoo list given a name": Case("zoo list convnext_t", ["nas zoo list", "NAME"]),
    "zoo show given --from": Case("zoo show convnext_t --from {d}/w.pt", ["nas zoo show", "--from"]),
    "zoo weights of too few dimensions": Case("zoo weights caformer_s18 --from {d}/w.pt -o {d}/o.pt",
                                              ["w.pt", "stages.0.blocks.0.mlp.fc1.weight", "shape ()"],
                                              {"w.pt": _torch_file({"stages.0.blocks.0.mlp.fc1.weight":
                                                                    torch.tensor(0.0)})}),
    "zoo weights key with a newline": Case("zoo weights convnext_t --from {d}/w.pt -o {d}/o.pt",
                                           ["w.pt", "do not map", "'x\\n<h1>INJECTED</h1>'"],
                                           {"w.pt": _torch_file({"x\n<h1>INJECTED</h1>": torch.zeros(2)})}),
    "scale to a fraction of a FLOP": Case("scale {d}/g.yaml --flops 1e-30", ["flops budget", "at least 1", "1e-30"],
                                          {"g.yaml": GOOD}),
    "calibration space with an unknown field": Case("latency calibrate --space {d}/s.yaml --table {d}/t.sqlite",
                                                    ["s.yaml", "num_clases", "line 3"],
                                                    {"s.yaml": SPACE.replace("num_classes", "num_clases")}),
    "calibration of a genome": Case("latency calibrate --space {d}/g.yaml --genomes 10000 --table {d}/t.sqlite",
                                    ["g.yaml", "1 distinct", "at least 8"], {"g.yaml": GOOD}),
    "calibration genomes beyond the limit": Case("latency calibrate --genomes 100000000000", ["--genomes",
                                                                                             "at most 10,000"]),
    "calibration stored damaged": Case("latency show --table {d}/t.sqlite", ["t.sqlite", "calibration", "damaged"],
                                       {"t.sqlite": _sqlite(LATENCY_TABLE, "CREATE TABLE calibration (device TEXT "
                                                            "PRIMARY KEY, data TEXT NOT NULL)", "INSERT INTO "
                                                            "calibration VALUES ('cpu', '{\"x\": 1}')")}),
    "calibration table of other columns": Case("latency show --table {d}/t.sqlite",
                                               ["t.sqlite", "calibration table has columns (device, blob)"],
                                               {"t.sqlite": _sqlite(LATENCY_TABLE, "CREATE TABLE calibration "
                                                                    "(device TEXT, blob TEXT)")}),
    # --- data -------------------------------------------------------------------------------------------------
    "image declaring billions of pixels": Case("score {d}/g.yaml --data {d}/img", ["0.png", "cannot be read",
                                                                                  "decompression bomb"],
                                               {"g.yaml": GOOD, "img/a/0.png": _png_header(40000, 40000),
                                                "img/b/0.png": _png_header(40000, 40000)}),
    "npz of images without pixels": Case("score {d}/g.yaml --data {d}/x.npz", ["x.npz", "'x'", "no pixels"],
                                         {"g.yaml": GOOD, "x.npz": _npz(x=np.zeros((4, 0, 0)), y=np.arange(4) % 2)}),
    "npz of NaN pixels": Case("score {d}/g.yaml --data {d}/x.npz", ["x.npz", "'x'", "NaN"],
                              {"g.yaml": GOOD, "x.npz": _npz(x=np.full((4, 8, 8), np.nan), y=np.arange(4) % 2)}),
    "npz of complex pixels": Case("score {d}/g.yaml --data {d}/x.npz", ["x.npz", "'x'", "complex"],
                                  {"g.yaml": GOOD, "x.npz": _npz(x=np.ones((4, 8, 8), complex), y=np.arange(4) % 2)}),
    "data folder named with a terminal escape": Case("score {d}/g.yaml --data {d}/cats\x1b[2Jdogs",
                                                     ["cats\\x1b[2Jdogs", "no images"],
                                                     {"g.yaml": GOOD, "cats\x1b[2Jdogs/a/n.txt": "x",
                                                      "cats\x1b[2Jdogs/b/n.txt": "x"}),
    "npz of NaN labels": Case("score {d}/g.yaml --data {d}/x.npz", ["x.npz", "'y'", "NaN"],
                              {"g.yaml": GOOD, "x.npz": _npz(x=np.zeros((4, 8, 8)), y=np.array([0.0, 1, np.nan, 1]))}),
    "blocks unknown role": Case("blocks frobs", ["unknown role 'frobs'"]),
    # --- search ---------------------------------------------------------------------------------------------
    "budget overflows": Case("search --space tiny --budget 1e400 --out {d}/r", ["budget", "finite"]),
    "budget unreadable": Case("search --space tiny --budget lots --out {d}/r", ["'lots'", "4GFLOPs"]),
    "latency budget zero": Case("search --space tiny --latency 0ms --out {d}/r", ["latency budget", "positive"]),
    "zero trials": Case("search --space tiny --trials 0 --out {d}/r", ["--trials"]),
    "zero threads": Case("search --space tiny --threads 0 --out {d}/r", ["--threads"]),
    "negative threads": Case("search --space tiny --threads -2 --out {d}/r", ["--threads"]),
    "negative heartbeat": Case("search --space tiny --heartbeat -1 --out {d}/r", ["--heartbeat"]),
    "zero workers": Case("search --space tiny --workers 0 --out {d}/r", ["--workers"]),
    "run directory is a file": Case("search --space tiny --out {d}/f", ["--out", "f"], {"f": "x"}),
    "train without data": Case("search --space tiny --objective train --out {d}/r", ["--data"]),
    "address without ray": Case("search --space tiny --address 127.0.0.1:1 --out {d}/r", ["--runner ray"]),
    "missing data file": Case("search --space tiny --data {d}/none.npz --out {d}/r", ["none.npz"]),
    "timeout unreadable": Case("search --space tiny --timeout soon --out {d}/r", ["'soon'", "duration"]),
    "nothing under the budget": Case("search --space tiny --budget 1kFLOPs --out {d}/r", ["budget"]),
    "space file with a bad choice": Case("search --space {d}/g.yaml --out {d}/r", ["g.yaml", "stages[0].depth",
                                                                                   "line 7"],
                                         {"g.yaml": edit("depth: 1, width: 16", "depth: {int: [4, 2]}, width: 16")}),
    "space file alias bomb": Case("search --space {d}/g.yaml --out {d}/r", ["g.yaml", "100,000"], {"g.yaml": BOMB}),
    "resume a folder that is no run": Case("search --resume {d}", ["run.yaml"]),
    "storage of garbage": Case("search --space tiny --storage sqlite:///{d}/x.db --out {d}/r", ["x.db"],
                               {"x.db": os.urandom(8192)}),
    "storage scheme unknown": Case("search --space tiny --storage mongodb://x/y --out {d}/r", ["mongodb"]),
    "supernet checkpoint of garbage": Case("search --objective supernet --supernet {d}/s.pt --out {d}/r",
                                           ["s.pt", "not a supernet checkpoint"], {"s.pt": os.urandom(4096)}),
    "report of a folder that is no run": Case("report {d}", ["run.yaml"]),
    # --- supernet training ------------------------------------------------------------------------------------
    "learning rate not a number": Case("supernet train --lr nan --out {d}/sn", ["--lr"]),
    "zero epochs": Case("supernet train --epochs 0 --out {d}/sn", ["--epochs"]),
    "resume from garbage": Case("supernet train --resume {d}/sn", ["not a supernet checkpoint"],
                                {"sn/supernet.pt": os.urandom(4096)}),
    "resume into another folder": Case("supernet train --resume {d}/sn --out {d}/other", ["--resume", "drop --out"],
                                       {"sn/supernet.pt": os.urandom(4096)}),
    "supernet device unknown": Case("supernet train --device gpu --out {d}/sn", ["--device gpu", "cuda[:N]"]),
}


def _prepare(case: Case, folder: Path) -> list[str]:
    for name, content in case.files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return case.argv.format(d=folder).split()


def _snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*")}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_and_exit_2(name: str, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default run directory would land here, not in the checkout
    case = CASES[name]
    argv = _prepare(case, tmp_path)
    before = _snapshot(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own exits
        code = exit_.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in case.words:
        assert word in lines[0], lines[0]
    assert _snapshot(tmp_path) == before, "bad input must leave nothing behind"


@pytest.mark.parametrize("name", ["unknown type", "python tag", "compile into a folder", "profile repeats zero",
                                  "budget overflows", "zero epochs", "unknown command"])
def test_bad_input_in_a_real_process(name: str, tmp_path: Path):
    case = CASES[name]
    result = run_nas(*_prepare(case, tmp_path), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and all(w in lines[0] for w in case.words)


@pytest.mark.parametrize("name", ["alias bomb", "space file alias bomb", "nested too deep", "file too large",
                                  "too many blocks", "width beyond the limit", "weights beyond memory",
                                  "calibration of a genome"])
def test_inputs_that_used_to_hang_end_in_seconds(name: str, tmp_path: Path):
    argv = _prepare(CASES[name], tmp_path)
    start = time.perf_counter()
    # An interpreter starting with torch takes a few seconds here; these inputs once took minutes, or forever.
    result = subprocess.run([sys.executable, "-m", "nas", *argv], capture_output=True, text=True, cwd=tmp_path,
                            timeout=120)
    assert result.returncode == 2, result.stderr
    assert time.perf_counter() - start < 60


def test_a_file_wrong_throughout_is_composed_once_and_listed_in_short(tmp_path: Path, capsys, monkeypatch):
    # 400 wrong stages: reading the file anew to find each one's line took half a minute.
    file = tmp_path / "g.yaml"
    stage = "  - {depth: 0, width: 16, block: {mixer: identity}}\n"
    file.write_text(GOOD.split("stages:")[0] + "stages:\n" + stage * 400)
    compose, calls = yaml.compose, []
    monkeypatch.setattr(yaml, "compose", lambda *args, **kwargs: calls.append(1) or compose(*args, **kwargs))
    start = time.perf_counter()
    code = main(["validate", str(file)])
    elapsed = time.perf_counter() - start
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(calls) == 1 and elapsed < 10, (len(calls), elapsed)
    zero = "input should be greater than 0 (got 0)"
    assert len(lines) == 20
    assert lines[0] == f"error: {file}: stages[0].depth (line 7): {zero}"
    assert lines[-1] == f"error: {file}: stages[19].depth (line 26): {zero} (and 380 more)"


def test_an_empty_role_is_an_unknown_role(capsys):
    # `nas blocks ''` listed every role, as if none had been named
    assert main(["blocks", ""]) == 2
    assert capsys.readouterr().err.strip() == ("error: unknown role ''; roles are block, downsample, head, mixer, "
                                               "mlp, neck, norm, stem")
