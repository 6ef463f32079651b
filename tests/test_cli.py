"""The nas command as a user runs it: real subprocesses."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml

from nas.io import zoo_names
from tests.conftest import run_nas


def test_console_script_is_installed():
    nas = shutil.which("nas")
    assert nas, "pip install -e . puts `nas` on PATH"
    result = subprocess.run([nas, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "validate" in result.stdout


@pytest.mark.parametrize("command", ["validate", "schema", "compile", "zoo", "search"])
def test_every_command_has_help(command):
    result = run_nas(command, "--help")
    assert result.returncode == 0 and result.stdout.startswith("usage: nas " + command)


def test_schema_is_json_schema_with_every_mixer(tmp_path):
    result = run_nas("schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    assert schema["title"] == "Genome" and {"stem", "stages"} <= set(schema["required"])
    text = result.stdout
    for mixer in ("attention", "sepconv", "dwconv", "pooling", "identity", "random"):
        assert f'"const": "{mixer}"' in text
    assert run_nas("schema", "-o", tmp_path / "genome.schema.json").returncode == 0
    assert json.loads((tmp_path / "genome.schema.json").read_text()) == schema


def test_zoo_list_and_show():
    result = run_nas("zoo", "list")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    rows = {line.split()[0]: line.split() for line in lines[1:] if not line.startswith("*")}
    assert set(rows) == set(zoo_names())
    # name, params, paper, diff, GFLOPs, paper, diff, family
    assert rows["caformer_s18"][1:7] == ["26.34M", "26.3", "+0.2%", "4.125", "4.1", "+0.6%"]
    assert rows["identityformer_s12"][-1].endswith("*") and "identityformer_s12" in lines[-1]
    shown = run_nas("zoo", "show", "convnext_t")
    assert shown.returncode == 0 and "name: convnext_t" in shown.stdout
    canonical = run_nas("zoo", "show", "convnext_t", "--canonical")
    assert canonical.returncode == 0 and "padding: 0" in canonical.stdout
    assert run_nas("zoo", "show", "nope").returncode == 2


def test_validate_prints_cost_and_hash(hybrid_file, tmp_path):
    result = run_nas("validate", hybrid_file, "--graph", tmp_path / "g.dot")
    assert result.returncode == 0, result.stderr
    assert "genome 'my_hybrid', 4 stages, 7 blocks" in result.stdout and "hash " in result.stdout
    assert (tmp_path / "g.dot").read_text().startswith('digraph "my_hybrid"')
    assert run_nas("validate", hybrid_file, "--graph", tmp_path / "g.png").returncode == 2
    # MaxViT's 11 blocks are sequences of three: 33 built, which is what the limit of 4,096 counts
    assert "4 stages, 11 blocks (33 built: " in run_nas("validate", "zoo:maxvit_t").stdout


def test_validate_says_when_a_space_has_too_many_options_to_force_each(tmp_path):
    space = tmp_path / "space.yaml"
    widths = list(range(8, 8 * 301, 8))
    space.write_text(yaml.safe_dump({"stem": {"type": "conv", "kernel": 4, "stride": 4}, "head": {"type": "linear"},
                                     "stages": [{"depth": 1, "width": {"choice": widths},
                                                 "block": {"mixer": {"type": "pooling"}}}]}))
    result = run_nas("validate", space, "--samples", "2")
    assert result.returncode == 0, result.stderr
    assert "256 of its 300 options each forced into a sample" in result.stdout


def test_unknown_arguments_are_bad_input():
    result = run_nas("validate")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert run_nas("frobnicate").returncode == 2
    assert run_nas("search", "--budgett", "4G").returncode == 2  # a typo is not silently ignored


def test_blocks_lists_every_registered_type():
    from blocks import CONFIGS

    result = run_nas("blocks", "mixer", "--fields")
    assert result.returncode == 0
    listed = {line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ") and
              not line.startswith("      ")}
    assert listed == set(CONFIGS["mixer"])
    assert "      kernel: default 7" in result.stdout  # dwconv's field
    bad = run_nas("blocks", "mixers")
    assert bad.returncode == 2 and "unknown role 'mixers'" in bad.stderr
