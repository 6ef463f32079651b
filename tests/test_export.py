"""Standalone export: model.py runs in a clean interpreter where nas and blocks cannot be imported, and
gives the compiled model's outputs for the same weights."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from blocks import CONFIGS
from nas import compile_model, load_genome
from nas.export import ExportError, _Collector, used_modules
from tests.conftest import ROOT, run_nas

# Makes nas, blocks and runners unimportable, so that model.py shows it needs only torch.
REFUSE_OUR_PACKAGES = """
import importlib.abc, sys
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('nas', 'blocks', 'runners', 'search_spaces'):
            raise ImportError('standalone model.py imported ' + name)
sys.meta_path.insert(0, Refuse())
"""
# Runs model.py and saves its outputs on a seeded input.
CLEAN_RUN = REFUSE_OUR_PACKAGES + """
import importlib.util, torch
spec = importlib.util.spec_from_file_location('model', sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
model = module.build_model(weights=sys.argv[2]).eval()
torch.manual_seed(0)
x = torch.randn(2, *sys.argv[4:5] and [int(v) for v in sys.argv[4].split(',')] or [3, 224, 224])
with torch.inference_mode():
    torch.save({'x': x, 'y': model(x)}, sys.argv[3])
print(module.GENOME['name'], sum(p.numel() for p in model.parameters()))
"""


def run_clean(model_py: Path, weights: Path, out: Path, chw: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-I", "-c", CLEAN_RUN, str(model_py), str(weights), str(out), chw],
                          capture_output=True, text=True, cwd=model_py.parent, timeout=300, check=False)


# One genome crossing the families: inception conv, focal modulation, a spectral filter and a shift MLP, a
# selective scan, shifted-window attention; SwiGLU and ConvGLU channel mixers; a ResNet-style strided stage.
FAMILIES_YAML = """\
name: families
input: {resolution: 64}
num_classes: 10
stem: {type: conv, kernel: 4, stride: 4, post_norm: layernorm}
defaults:
  mlp: {type: glu, ratio: 2}
  downsample: {type: conv, kernel: 2, stride: 2, pre_norm: layernorm}
stages:
  - {depth: 2, width: 32, pattern: [{mixer: inception}, {mixer: {type: focal_modulation, focal_level: 2}}]}
  - {depth: 2, width: 48, pattern: [{mixer: global_filter}, {mixer: shift_mlp, mlp: {type: convglu, ratio: 2}}]}
  - {depth: 2, width: 64, block: {mixer: {type: ss2d, d_state: 4}}}
  - {depth: 2, width: 96, pattern: [{mixer: {type: window_attention, window: 2, head_dim: 16}},
                                    {mixer: {type: window_attention, window: 2, shift: 1, head_dim: 16}}]}
head: {type: linear, norm_tokens: true}
"""


@pytest.fixture
def families_file(tmp_path):
    path = tmp_path / "families.yaml"
    path.write_text(FAMILIES_YAML)
    return path


def test_a_hybrid_of_every_family_validates(families_file):
    result = run_nas("validate", families_file)
    assert result.returncode == 0, result.stderr
    assert "families" in result.stdout


@pytest.mark.parametrize(("spec", "chw"), [("hybrid", "3,64,64"), ("families", "3,64,64"),
                                           ("zoo:randformer_s12", "3,224,224"), ("zoo:deit_s", "3,224,224")])
def test_exported_model_matches_the_compiled_model(spec, chw, tmp_path, hybrid_file, families_file):
    source = {"hybrid": hybrid_file, "families": families_file}.get(spec, spec)
    model_py, weights = tmp_path / "model.py", tmp_path / "weights.pt"
    result = run_nas("compile", source, "-o", model_py, "--weights", weights, "--seed", 3)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out.pt"
    clean = run_clean(model_py, weights, out, chw)
    assert clean.returncode == 0, clean.stderr
    genome = load_genome(source)
    model = compile_model(genome).eval()
    model.load_state_dict(torch.load(weights, weights_only=True))
    saved = torch.load(out, weights_only=True)
    with torch.inference_mode():
        expected = model(saved["x"])
    assert saved["y"].shape == (2, genome.num_classes)
    assert torch.allclose(saved["y"], expected, atol=1e-5, rtol=1e-5)
    assert clean.stdout.split() == [genome.name, str(sum(p.numel() for p in model.parameters()))]


def test_model_py_imports_only_torch_and_the_standard_library(tmp_path, hybrid_file):
    model_py = tmp_path / "model.py"
    assert run_nas("compile", hybrid_file, "-o", model_py).returncode == 0
    tree = ast.parse(model_py.read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"torch", "__future__", *sys.stdlib_module_names}, imported
    text = model_py.read_text()
    assert "GENOME = {" in text and "def build_model(" in text and "class SepConv(" in text
    assert "class Pooling(" not in text  # only the classes this genome uses
    smoke = subprocess.run([sys.executable, "-I", str(model_py)], capture_output=True, text=True, timeout=300,
                           check=False)
    assert smoke.returncode == 0 and smoke.stdout.startswith("my_hybrid (1, 10)"), smoke.stderr


# A genome's name is free text; model.py must hold it as data only. Each of these broke the old exporter's
# docstring or could have written code into model.py.
HOSTILE_NAMES = [
    "net\\unet_v2",  # \\u starts a unicode escape in a string literal
    "ends with a backslash\\",
    'x"""\n__import__("os").system("touch PWNED")\n"""',  # closed the old docstring, then ran
    "x'''\n__import__('os').system('touch PWNED')\n'''",
    "__import__('os').system('touch PWNED')",
    "two\nlines\r\n\ta nul\x00 and an escape \x1b[31m",
    "ünïcødé ネット 🚀 {name} {0} %s %(x)s \\N{BULLET} \\x41 \"'",
]
TINY_GENOME = {"input": {"resolution": 16}, "num_classes": 3, "stem": {"type": "conv", "kernel": 4, "stride": 4},
               "stages": [{"depth": 1, "width": 8, "block": {"mixer": {"type": "pooling"}}}]}

# Imports each model.py in this clean interpreter, builds its model and prints the name it holds, as JSON.
CHECK_NAMES = REFUSE_OUR_PACKAGES + """
import importlib.util, json
names = []
for i, path in enumerate(sys.argv[1:]):
    spec = importlib.util.spec_from_file_location(f'model{i}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.build_model()
    names.append(module.GENOME['name'])
print(json.dumps(names))
"""
# After the docstring, model.py holds only these statements: an injected call would be an ast.Expr.
AFTER_DOCSTRING = (ast.ImportFrom, ast.Import, ast.Assign, ast.ClassDef, ast.FunctionDef, ast.If)


def test_a_genome_name_is_written_as_data_never_as_code(tmp_path):
    files = []
    for i, name in enumerate(HOSTILE_NAMES):
        genome_file, model_py = tmp_path / f"g{i}.yaml", tmp_path / f"model{i}.py"
        genome_file.write_text(yaml.safe_dump({"name": name, **TINY_GENOME}))
        assert load_genome(genome_file).name == name
        result = run_nas("compile", genome_file, "-o", model_py)
        assert result.returncode == 0, result.stderr
        assert len(result.stdout.splitlines()) == 1, result.stdout  # "wrote ...": one line, whatever the name
        tree = ast.parse(model_py.read_text(encoding="utf-8"))  # a SyntaxError here is the bug
        docstring, *rest = tree.body
        assert all(isinstance(node, AFTER_DOCSTRING) for node in rest), name
        assert name not in docstring.value.value and "PWNED" not in docstring.value.value
        genome_literal = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                              and node.targets[0].id == "GENOME")
        assert ast.literal_eval(genome_literal)["name"] == name
        files.append(model_py)
    clean = subprocess.run([sys.executable, "-I", "-c", CHECK_NAMES, *map(str, files)], capture_output=True,
                           text=True, cwd=tmp_path, timeout=300, check=False)
    assert clean.returncode == 0, clean.stderr
    assert json.loads(clean.stdout) == HOSTILE_NAMES
    assert not list(tmp_path.rglob("PWNED")) and not (ROOT / "PWNED").exists()


def test_non_finite_floats_never_reach_model_py(tmp_path):
    """YAML's .inf and .nan would be bare ``inf`` in model.py (a NameError): they are refused at load."""
    genome_file, model_py = tmp_path / "g.yaml", tmp_path / "model.py"
    block = {"mixer": {"type": "pooling"}, "layer_scale": float("nan"), "norm": {"type": "layernorm",
                                                                              "eps": float("inf")}}
    genome_file.write_text(yaml.safe_dump({**TINY_GENOME, "stages": [{"depth": 1, "width": 8, "block": block}]}))
    result = run_nas("compile", genome_file, "-o", model_py)
    assert result.returncode == 2 and "stages[0].block.layer_scale" in result.stderr and "finite" in result.stderr
    assert not model_py.exists()


def _first_config(role: str, tag: str) -> dict:
    cls = CONFIGS[role][tag]
    return {"type": tag, **(cls.examples[0] if cls.examples else {})}


def _every_type_genomes() -> dict[str, dict]:
    """A few genomes that together use every registered module type: one stage of every mixer, channel mixer,
    norm and block type in a pattern at 8x8x32; then the stems, downsamples and heads, cycled."""
    pattern = ([{"mixer": _first_config("mixer", t)} for t in sorted(CONFIGS["mixer"])]
               + [{"mixer": "pooling", "mlp": _first_config("mlp", t)} for t in sorted(CONFIGS["mlp"])]
               + [{"mixer": "pooling", "norm": _first_config("norm", t)} for t in sorted(CONFIGS["norm"])]
               + [{k: v for k, v in _first_config("block", t).items() if k != "stride"}  # one map size throughout
                  for t in sorted(CONFIGS["block"]) if t != "metaformer"])
    genomes = {"blocks": {"name": "every_block", "input": {"resolution": 32}, "num_classes": 5,
                          "stem": {"type": "conv", "kernel": 4, "stride": 4},
                          "stages": [{"depth": len(pattern), "width": 32, "pattern": pattern}]}}
    stems, downsamples, heads = (sorted(CONFIGS[role]) for role in ("stem", "downsample", "head"))
    for k in range(max(len(stems), len(downsamples), len(heads))):
        stem = _first_config("stem", stems[k % len(stems)])
        genomes[f"ends{k}"] = {
            "name": f"ends_{k}", "input": {"resolution": 64}, "num_classes": 5,
            "stem": stem, "head": _first_config("head", heads[k % len(heads)]),
            "stages": [{"depth": 1, "width": stem.get("width", 32), "block": {"mixer": "pooling"}},
                       {"depth": 1, "width": 48, "downsample": _first_config("downsample",
                                                                             downsamples[k % len(downsamples)]),
                        "block": {"mixer": "pooling"}}]}
    for tag in sorted(CONFIGS["neck"]):  # each neck over a three-stage backbone
        down = {"type": "conv", "kernel": 2, "stride": 2}
        genomes[f"neck_{tag}"] = {
            "name": f"neck_{tag}", "input": {"resolution": 32}, "num_classes": 5,
            "stem": {"type": "conv", "kernel": 4, "stride": 4}, "neck": _first_config("neck", tag),
            "stages": [{"depth": 1, "width": 16, "block": {"mixer": "pooling"}},
                       *({"depth": 1, "width": w, "downsample": down, "block": {"mixer": "pooling"}}
                         for w in (24, 32))]}
    return genomes


def test_the_every_type_genomes_use_every_registered_type():
    used = {(role, tag) for genome in _every_type_genomes().values()
            for role, table in used_modules(load_genome(genome)).items() for tag in table}
    assert used == {(role, tag) for role, table in CONFIGS.items() for tag in table}


@pytest.mark.parametrize("name", list(_every_type_genomes()))
def test_every_registered_type_exports_into_one_model_py(name, tmp_path):
    """One flat model.py per genome: no name may be bound to two objects (two helpers called alike in two
    files once broke a gated + gnconv genome), and the outputs equal the compiled model's."""
    genome = load_genome(_every_type_genomes()[name])
    model_py, weights, out = tmp_path / "model.py", tmp_path / "weights.pt", tmp_path / "out.pt"
    genome_file = tmp_path / "g.yaml"
    genome_file.write_text(yaml.safe_dump(genome.to_dict()))
    result = run_nas("compile", genome_file, "-o", model_py, "--weights", weights)
    assert result.returncode == 0, result.stderr
    res = genome.input.resolution[0]
    clean = run_clean(model_py, weights, out, f"3,{res},{res}")
    assert clean.returncode == 0, clean.stderr
    model = compile_model(genome).eval()
    model.load_state_dict(torch.load(weights, weights_only=True))
    saved = torch.load(out, weights_only=True)
    with torch.inference_mode():
        assert torch.allclose(saved["y"], model(saved["x"]), atol=1e-5, rtol=1e-5)


def test_a_gated_block_and_a_gnconv_mixer_share_one_model_py(tmp_path):
    """The genome of the issue that found the name collision."""
    genome = tmp_path / "collide.yaml"
    genome.write_text("name: collide\ninput: {channels: 3, resolution: 32}\nnum_classes: 10\n"
                      "stem: {type: conv, kernel: 4, stride: 4}\n"
                      "defaults: {downsample: {type: conv, kernel: 2, stride: 2}}\nstages:\n"
                      "  - {depth: 1, width: 32, block: {type: gated}}\n"
                      "  - {depth: 1, width: 64, block: {mixer: {type: gnconv}}}\n")
    model_py, weights, out = tmp_path / "model.py", tmp_path / "w.pt", tmp_path / "out.pt"
    assert run_nas("compile", genome, "-o", model_py, "--weights", weights).returncode == 0
    assert run_clean(model_py, weights, out, "3,32,32").returncode == 0


def test_one_name_for_two_objects_is_refused_naming_both():
    collector = _Collector()
    collector.bind("helper", "blocks.a.helper")
    with pytest.raises(ExportError, match="'helper' would stand for both blocks.a.helper and blocks.b.helper"):
        collector.bind("helper", "blocks.b.helper")
