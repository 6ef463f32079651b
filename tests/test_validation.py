"""Every bad input gets a one-line error naming the YAML path and the reason; the CLI exits 2."""
from __future__ import annotations

from pathlib import Path

import pytest

from nas import GenomeError, load_genome
from tests.conftest import run_nas

BASE = """\
stem: {type: conv, kernel: 4, stride: 4}
stages:
  - {depth: 2, width: 64, block: {mixer: {type: dwconv, kernel: 7}}}
  - {depth: 2, width: 128, downsample: {type: conv, kernel: 2, stride: 2}, block: {mixer: {type: dwconv}}}
"""

# name: (YAML text, the path the error must name, words the reason must contain)
CASES = {
    "unknown mixer type": (BASE.replace("type: dwconv, kernel", "type: dwconvv, kernel"),
                           "stages[0].block.mixer", ["unknown type 'dwconvv'", "attention", "sepconv"]),
    "wrong value type": (BASE.replace("depth: 2, width: 64", "depth: two, width: 64"),
                         "stages[0].depth", ["valid integer", "'two'"]),
    "negative size": (BASE.replace("width: 128", "width: -128"), "stages[1].width", ["greater than 0", "-128"]),
    "zero size": (BASE.replace("kernel: 7", "kernel: 0"), "stages[0].block.mixer.kernel", ["greater than 0"]),
    "heads do not divide the width": (BASE.replace("{type: dwconv}", "{type: attention, heads: 7}"),
                                      "stages[1].block.mixer.heads", ["7 does not divide width 128"]),
    "window does not tile the map": (BASE.replace("{type: dwconv}", "{type: attention, window: 5}"),
                                     "stages[1].block.mixer.window", ["5 does not divide the 28x28"]),
    "resolution too small": (BASE + "input: {resolution: 4}", "input.resolution",
                             ["4x4 is too small", "stages[1].downsample"]),
    "missing required field": (BASE.replace("depth: 2, width: 64", "depth: 2"), "stages[0].width",
                               ["required"]),
    "missing stem": (BASE.replace("stem: {type: conv, kernel: 4, stride: 4}", "name: x"), "stem", ["required"]),
    "unknown field": (BASE.replace("kernel: 7", "kernal: 7"), "stages[0].block.mixer.kernal", ["unknown field"]),
    "block and pattern both given": (BASE.replace("block: {mixer: {type: dwconv}}",
                                                  "block: {mixer: identity}, pattern: [{mixer: identity}]"),
                                     "stages[1]", ["exactly one of 'block' or 'pattern'"]),
    "width changes without a downsample": (BASE.replace(", downsample: {type: conv, kernel: 2, stride: 2}", ""),
                                           "stages[1].width", ["differs from the 64 channels"]),
    "stride on a block that cannot stride": (BASE.replace("depth: 2, width: 64", "depth: 2, width: 64, stride: 2"),
                                             "stages[0]", ["stride 2: a metaformer block cannot stride"]),
    "even kernel": (BASE.replace("kernel: 7", "kernel: 4"), "stages[0].block.mixer.kernel", ["must be odd"]),
    "bad default": (BASE + "defaults: {mlp: {ratio: -1}}", "defaults.mlp.ratio", ["greater than 0"]),
    "YAML syntax error": ("stem: {type: conv\nstages: [\n", "", ["line 2", "YAML syntax error at column 7"]),
    "empty file": ("", "", ["empty"]),
    "not a mapping": ("- 1\n- 2\n", "", ["must be a mapping", "list"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_genome_names_the_path(name, tmp_path):
    text, path, words = CASES[name]
    file = tmp_path / "bad.yaml"
    file.write_text(text)
    with pytest.raises(GenomeError) as info:
        load_genome(file)
    message = str(info.value)
    assert info.value.path == path, message
    for word in words:
        assert word in message, message
    assert len(message.splitlines()) == 1, message


@pytest.mark.parametrize("name", ["unknown mixer type", "heads do not divide the width", "YAML syntax error",
                                  "empty file", "resolution too small", "wrong value type"])
def test_cli_reports_bad_input_with_status_2_and_no_traceback(name, tmp_path):
    text, path, words = CASES[name]
    file = tmp_path / "bad.yaml"
    file.write_text(text)
    for command in (["validate", file], ["compile", file, "-o", tmp_path / "m.py"]):
        result = run_nas(*command)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {file}: {path}"), result.stderr
        assert all(word in lines[0] for word in words)
    assert not (tmp_path / "m.py").exists()


def test_errors_give_the_line_in_the_file(tmp_path):
    file = tmp_path / "bad.yaml"
    file.write_text(CASES["heads do not divide the width"][0])
    with pytest.raises(GenomeError) as info:
        load_genome(file)
    assert info.value.problems[0].line == 4
    assert "stages[1].block.mixer.heads (line 4): 7 does not divide width 128" in str(info.value)


def test_missing_file_and_unknown_zoo_name_are_bad_input(tmp_path):
    result = run_nas("validate", tmp_path / "nope.yaml")
    assert result.returncode == 2 and "no such file" in result.stderr
    result = run_nas("validate", "zoo:resnet9000")
    assert result.returncode == 2 and "unknown zoo genome 'resnet9000'" in result.stderr
    assert "convnext_t" in result.stderr


def test_environment_failures_exit_1_with_a_message():
    result = run_nas("compile", "zoo:deit_s", "-o", "/dev/full")  # a disk with no space left
    assert result.returncode == 1
    assert "No space left on device" in result.stderr and "Traceback" not in result.stderr


def _bad_outputs(tmp_path: Path, genome: Path) -> list[tuple[list, str, str]]:
    """(command, the option and path the error names, the reason) for output paths no command can write."""
    folder, missing, model = tmp_path / "folder", tmp_path / "missing", tmp_path / "model.py"
    return [(["compile", genome, "-o", folder], f"-o {folder}", "is a directory"),
            (["compile", genome, "-o", missing / "model.py"], f"-o {missing / 'model.py'}", "does not exist"),
            (["compile", genome, "-o", model, "--weights", folder], f"--weights {folder}", "is a directory"),
            (["compile", genome, "-o", model, "--weights", missing / "w.pt"], f"--weights {missing / 'w.pt'}",
             "does not exist"),
            (["compile", genome, "-o", model, "--weights", model], f"--weights {model}", "the same file as -o"),
            (["validate", genome, "--graph", missing / "g.dot"], f"--graph {missing / 'g.dot'}", "does not exist"),
            (["validate", genome, "--graph", folder], f"--graph {folder}", "is a directory"),
            (["validate", genome, "--graph", tmp_path / "g.txt"], f"--graph {tmp_path / 'g.txt'}",
             "unknown format '.txt'; use .dot, .gv, .graphml"),
            (["schema", "-o", folder], f"-o {folder}", "is a directory")]


def test_bad_output_paths_are_bad_input_found_before_anything_is_written(tmp_path, hybrid_file):
    (tmp_path / "folder").mkdir()
    before = sorted(tmp_path.rglob("*"))
    for command, named, reason in _bad_outputs(tmp_path, hybrid_file):
        result = run_nas(*command)
        assert result.returncode == 2, (command, result.stderr)
        [line] = result.stderr.splitlines()
        assert line.startswith(f"error: {named}: ") and reason in line, line
        assert sorted(tmp_path.rglob("*")) == before, command  # model.py is not written before --weights fails
