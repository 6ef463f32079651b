"""What a command writes never breaks on a user's text, and never replaces a file the command reads: a genome's
name, a file's name or an exception's message stays inside its line, cell or code block."""
from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import networkx as nx
import pytest
import yaml
from optuna.trial import TrialState, create_trial

import nas
import nas.io
from nas import build_graph, load_genome
from nas.cli import main
from nas.graph import to_dot, write_graph
from nas.outputs import replacing
from nas.search.report import write_trials_csv
from tests.conftest import HYBRID_YAML, run_nas
from tests.test_search import SMALL_SPACE, score_by_width

HOSTILE = 'x"]; evil [label="pwn"]; //\nfoo'


def hybrid(name: str) -> dict:
    return {**yaml.safe_load(HYBRID_YAML), "name": name}


def test_a_hostile_name_stays_inside_the_dot_graphs_id():
    plain, hostile = (to_dot(build_graph(load_genome(hybrid(name)))) for name in ("plain", HOSTILE))
    assert hostile.splitlines()[0] == 'digraph "\'x\\"]; evil [label=\\"pwn\\"]; //\\\\nfoo\'" {'
    assert len(hostile.splitlines()) == len(plain.splitlines())  # nothing added: no statement of its own


def test_a_name_with_control_characters_still_makes_valid_graphml(tmp_path: Path):
    write_graph(build_graph(load_genome(hybrid("a\x01b\x00c"))), tmp_path / "g.graphml")
    assert nx.read_graphml(tmp_path / "g.graphml").graph["name"] == repr("a\x01b\x00c")


def test_the_report_keeps_a_hostile_genome_name_and_failure_message_out_of_its_markdown(tmp_path: Path):
    # PyYAML folds a long name at 120 columns, which can put a line of backticks on its own
    name = "word " * 24 + "`" * 130 + " <h1>INJECTED</h1> " + "x " * 70 + "x"
    # an option with a key no block has fails its trials, and the failure names the key
    first = {**SMALL_SPACE["stages"][0], "block": {"choice": [
        {"mixer": {"type": "pooling"}}, {"mixer": {"type": "pooling"}, "x\n\n<h1>INJECTED too</h1>\n": 1}]}}
    nas.search({**SMALL_SPACE, "name": name, "stages": [first, SMALL_SPACE["stages"][1]]}, budget=None, trials=6,
               sampler="random", second="params", references="none", evaluate=score_by_width,
               out=tmp_path / "run", quiet=True)
    lines = (tmp_path / "run" / "report.md").read_text().splitlines()
    opening = next(i for i, line in enumerate(lines) if line.startswith("```"))
    fence = re.match(r"`+", lines[opening]).group()
    closing = lines.index(fence, opening + 1)
    assert len(fence) > 130 and lines[opening] == fence + "yaml"
    inside = [i for i, line in enumerate(lines) if "<h1>INJECTED</h1>" in line]
    assert inside and all(opening < i < closing for i in inside)
    failures = lines[lines.index("## Failures") + 2:]
    failures = failures[:failures.index("")]
    assert failures and all(line.startswith("- ") and "INJECTED too" in line for line in failures)


def test_trials_csv_keeps_text_that_a_spreadsheet_would_run_as_a_formula_as_text(tmp_path: Path):
    hostile = {"stage": "=HYPERLINK(\"http://evil\")", "genome_hash": "@SUM(A1)", "scores": {"zc": -0.25},
               "latency_ms": -1.5, "duration": 2.0}
    trials = [create_trial(state=TrialState.COMPLETE, values=[-3.0], user_attrs={**hostile, "feasible": True}),
              create_trial(state=TrialState.FAIL, user_attrs={"failure": "+cmd|' /C calc'!A0", "stage": "\tx"})]
    write_trials_csv(tmp_path / "trials.csv", trials, multi=False)
    complete, failed = csv.DictReader((tmp_path / "trials.csv").open(newline=""))
    assert complete["stage"] == "'=HYPERLINK(\"http://evil\")" and complete["genome_hash"] == "'@SUM(A1)"
    assert failed["failure"] == "'+cmd|' /C calc'!A0" and failed["stage"] == "'\tx"
    # numbers, negative ones too, stay numbers a spreadsheet reads as such
    assert (complete["score"], complete["latency_ms"], complete["score_zc"]) == ("-3.0", "-1.5", "-0.25")


@pytest.mark.parametrize("option", ["-o", "--weights"])
def test_compile_refuses_to_write_over_the_genome_it_reads(tmp_path: Path, option: str):
    genome = tmp_path / "net.yaml"
    genome.write_text(HYBRID_YAML)
    done = run_nas("compile", genome, *(["-o", tmp_path / "model.py"] if option == "--weights" else []),
                   option, genome)
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {option} {genome}: the same file as the genome; name another"
    assert genome.read_text() == HYBRID_YAML and not (tmp_path / "model.py").exists()


def test_scale_refuses_to_write_over_the_genome_it_scales(tmp_path: Path):
    genome = tmp_path / "net.yaml"
    genome.write_text(HYBRID_YAML)
    done = run_nas("scale", genome, "--flops", "20M", "-o", genome)
    assert done.returncode == 2 and "the same file as the genome" in done.stderr
    assert genome.read_text() == HYBRID_YAML


def test_no_command_writes_over_the_shipped_file_that_a_name_reads(tmp_path: Path, monkeypatch, capsys):
    # zoo:NAME and a shipped space's name are files too: nas scale zoo:convnext_t -o <the zoo's convnext_t.yaml>
    # replaced it, and so did nas latency calibrate --space tiny --json <tiny.yaml>; here, on a copy of them
    shipped = tmp_path / "search_spaces"
    shutil.copytree(nas.io.data_dir(), shipped, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(nas.io, "data_dir", lambda: shipped)
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "cache"))
    zoo, space = shipped / "zoo" / "convnext_t.yaml", shipped / "tiny.yaml"
    table = tmp_path / "cache" / "latency.sqlite"
    table.parent.mkdir()
    table.write_bytes(b"")  # the default table: --json naming it would replace the table just calibrated
    before = {path: path.read_bytes() for path in (zoo, space, table)}
    calibrate = ["latency", "calibrate", "--space", "tiny", "--genomes", "8"]
    for argv, what in ((["scale", "zoo:convnext_t", "--flops", "2G", "-o", str(zoo)], "the genome"),
                       (["compile", "zoo:convnext_t", "-o", str(zoo)], "the genome"),
                       ([*calibrate, "--table", str(tmp_path / "t.sqlite"), "--json", str(space)], "the space"),
                       ([*calibrate, "--json", str(table)], "--table")):
        assert main(argv) == 2, argv
        assert capsys.readouterr().err.strip().endswith(f"the same file as {what}; name another"), argv
    assert {path: path.read_bytes() for path in before} == before


def test_a_hostile_genome_name_is_one_line_in_profile_and_scale(tmp_path: Path):
    genome = tmp_path / "net.yaml"
    genome.write_text(yaml.safe_dump(hybrid("net\nerror: forged\x1b[31m")))
    profiled = run_nas("profile", genome)
    assert profiled.returncode == 0, profiled.stderr
    assert profiled.stdout.splitlines()[0].startswith(repr("net\nerror: forged\x1b[31m") + " (hash ")
    refused = run_nas("scale", genome, "--flops", "1KFLOPs")  # far below what any genome of it reaches
    assert refused.returncode != 0 and len(refused.stderr.strip().splitlines()) == 1
    assert "\x1b" not in refused.stderr


def test_a_write_stopped_halfway_leaves_the_old_file_and_no_temporary_one(tmp_path: Path):
    weights = tmp_path / "best_weights.pt"
    weights.write_bytes(b"the old weights")
    with pytest.raises(KeyboardInterrupt), replacing(weights) as tmp:
        tmp.write_bytes(b"half of the new")
        raise KeyboardInterrupt  # Ctrl-C while torch.save writes
    assert weights.read_bytes() == b"the old weights" and list(tmp_path.iterdir()) == [weights]
    with replacing(weights) as tmp:
        tmp.write_bytes(b"the new weights")
    assert weights.read_bytes() == b"the new weights" and list(tmp_path.iterdir()) == [weights]


def test_file_names_with_html_or_math_stay_text_in_the_report_and_its_plot(tmp_path: Path):
    space = tmp_path / "sp$\\foo{$.yaml"  # "$...$" is mathtext to matplotlib, and this is no valid math
    space.write_text(yaml.safe_dump(SMALL_SPACE))
    mine = tmp_path / "<img src=x onerror=alert(1)>$\\foo{$.yaml"
    mine.write_text(yaml.safe_dump(hybrid("mine")))
    nas.search(str(space), budget=None, trials=3, sampler="random", second="params", references=str(mine),
               evaluate=score_by_width, out=tmp_path / "run", quiet=True)
    report = (tmp_path / "run" / "report.md").read_text()
    assert "| `<img src=x onerror=alert(1)>$\\foo{$ @32px` |" in report  # retargeted to the run's 32 px
    assert "<img" not in report.replace("`<img", "")
    assert (tmp_path / "run" / "pareto.png").stat().st_size > 0


def test_a_device_is_written_in_place_and_a_link_keeps_pointing_at_its_file(tmp_path: Path):
    with replacing("/dev/null") as target:  # compile -o /dev/null: the device stays a device
        target.write_text("model.py")
    assert Path("/dev/null").is_char_device()
    real, link = tmp_path / "real.yaml", tmp_path / "link.yaml"
    real.write_text("old")
    real.chmod(0o640)
    link.symlink_to(real)
    with replacing(link) as tmp:
        tmp.write_text("new")
    assert link.is_symlink() and real.read_text() == "new" and real.stat().st_mode & 0o777 == 0o640


def test_a_run_folder_with_a_newline_is_one_line_in_the_summary(tmp_path: Path):
    out = tmp_path / "r\nbest: trial 99, score 1e9"
    result = nas.search(SMALL_SPACE, budget=None, trials=2, sampler="random", second="params", references="none",
                        evaluate=score_by_width, out=out, quiet=True)
    assert result.summary().splitlines()[-1].startswith(f"run directory: {str(out)!r} (best.yaml")
    assert not any(line.startswith("best: trial 99") for line in result.summary().splitlines())
