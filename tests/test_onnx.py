"""Deploying: ONNX export under onnxruntime, and torch.export, of compiled genomes.

Zoo genomes run here cut down, so that the file stays fast: each stage keeps one block (one of each in a
pattern) and the input is the smallest multiple of 32 the genome accepts. The blocks, and so the operators the
exporters meet, are the zoo's own; benchmarks/onnx_zoo.py runs the full genomes."""
from __future__ import annotations

import warnings

import onnxruntime
import pytest
import torch
from torch import nn

from nas import compile_model, load_genome
from nas.cli import main
from nas.errors import GenomeError, InputError
from nas.genome import Genome
from nas.io import zoo_names
from nas.onnx import (
    TORCH_EXPORT_EXCEPTIONS,
    OnnxExportError,
    check_onnx,
    export_module,
    export_onnx,
    module_session,
    onnx_session,
    run_onnx,
)
from tests.conftest import run_nas


def small(name: str) -> Genome:
    """The zoo genome with one block per stage (one of each in a pattern), at the smallest resolution it takes."""
    data = load_genome(f"zoo:{name}").to_dict()
    for stage in data["stages"]:
        stage["depth"] = len(stage.get("pattern") or [None])
    own = load_genome(data).input.resolution[0]
    for resolution in range(32, own, 32):
        try:
            return load_genome({**data, "input": {**data["input"], "resolution": resolution}})
        except GenomeError:  # a window or a patch grid that does not fit this resolution
            continue
    return load_genome(data)


# One genome of each family the exporter treats differently: convolutions, attention (softmax, reshapes) and
# FFTs. VMamba's selective scan exports too, but its unrolled chunk loops take minutes: benchmarks/onnx_zoo.py.
@pytest.mark.parametrize("name", ["convnext_t", "deit_s", "gfnet_xs"])
def test_onnx_output_equals_pytorch(name):
    check = check_onnx(small(name))
    assert check.equal, f"{name}: max abs diff {check.max_abs_diff:.3g} at output scale {check.scale:.3g}"


def test_module_session_runs_a_module_at_its_shape():
    # What a latency runtime does: a module and an input shape in, an onnxruntime session for that shape out.
    genome = small("caformer_s18")
    model = compile_model(genome, seed=0).eval()
    shape = (2, 3, *genome.input.resolution)
    session = module_session(model, shape)
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert session.get_inputs()[0].shape == list(shape)
    x = torch.randn(shape)
    with torch.inference_mode():
        expected = model(x)
    assert torch.allclose(torch.from_numpy(run_onnx(session, x)), expected, atol=1e-4 * expected.abs().max())


class DataDependent(nn.Module):
    """A branch on a value: torch.export cannot capture it, as no zoo block does."""

    def forward(self, x):
        return x * 2 if x.sum() > 0 else x


def test_unexportable_module_is_one_line_error(capfd):
    with pytest.raises(OnnxExportError, match=r"^branchy: cannot export to ONNX: .*data-dependent") as info:
        export_module(DataDependent(), (1, 4), label="branchy")
    assert "\n" not in str(info.value)
    assert capfd.readouterr().err == ""  # the exporter's own dump of the graph stays out of a command's output


def test_cli_unexportable_genome_is_bad_input(tmp_path, monkeypatch, capfd):
    # Every zoo genome exports, so the genome here builds a module the exporter really rejects.
    monkeypatch.setattr("nas.onnx.compile_model", lambda genome, seed=None: DataDependent())
    assert main(["compile", "zoo:deit_s", "--onnx", str(tmp_path / "deit_s.onnx")]) == 2
    err = capfd.readouterr().err
    assert err.startswith("error: zoo:deit_s: cannot export to ONNX: ") and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


def test_unavailable_provider_is_refused():
    available = onnxruntime.get_available_providers()
    missing = "tensorrt" if "TensorrtExecutionProvider" not in available else "NoSuchExecutionProvider"
    with pytest.raises(InputError, match=f"lacks {'TensorrtExecutionProvider' if missing == 'tensorrt' else missing}"):
        onnx_session(b"", [missing])


def test_cli_compile_onnx(tmp_path):
    out = tmp_path / "mobilenetv2.onnx"  # among the quickest zoo genomes to export, and 14 MB of weights
    result = run_nas("compile", "zoo:mobilenetv2_100", "--onnx", out)
    assert result.returncode == 0, result.stderr
    assert "dynamic batch" in result.stdout and not (tmp_path / "model.py").exists()
    session = onnx_session(out)
    assert run_onnx(session, torch.randn(2, 3, 224, 224)).shape == (2, 1000)


TINY = {"name": "tiny", "input": {"channels": 3, "resolution": 32}, "num_classes": 10,
        "stem": {"type": "conv", "kernel": 4, "stride": 4},
        "stages": [{"depth": 1, "width": 16, "block": {"type": "convnext", "kernel": 3}}]}


@pytest.fixture
def external_weights(monkeypatch):
    """Any weights go to NAME.data, as the exporter sends weights over 1.5 GiB: its own threshold, lowered."""
    from torch.onnx._internal.exporter import _onnx_program

    monkeypatch.setattr(_onnx_program, "_LARGE_MODEL_THRESHOLD", 0)


def test_onnx_external_weights_never_replace_a_users_file(tmp_path, external_weights):
    out, data = tmp_path / "tiny.onnx", tmp_path / "tiny.onnx.data"
    data.write_text("the user's own")
    with pytest.raises(InputError, match=f"^{out}: the weights go to {data}, which exists") as info:
        export_onnx(TINY, out)
    assert "\n" not in str(info.value)
    assert data.read_text() == "the user's own" and sorted(tmp_path.iterdir()) == [data]


def test_onnx_external_weights_replace_an_earlier_exports(tmp_path, external_weights):
    out, data = tmp_path / "tiny.onnx", tmp_path / "tiny.onnx.data"
    export_onnx(TINY, out)
    assert data.stat().st_size > 0
    export_onnx(TINY, out, seed=1)  # the same path again: its own weights file is replaced
    assert sorted(tmp_path.iterdir()) == [out, data]
    assert run_onnx(onnx_session(out), torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("args, message", [
    (["--onnx", "model.txt"], "--onnx model.txt: unknown format '.txt'; use .onnx"),
    (["-o", "same.onnx", "--onnx", "same.onnx"], "--onnx same.onnx: the same file as -o; name another"),
])
def test_cli_compile_onnx_bad_output(tmp_path, args, message):
    result = run_nas("compile", "zoo:deit_s", *args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == f"error: {message}\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", zoo_names())
def test_torch_export_exceptions_are_exact(name):
    # Every zoo genome exports with torch.export except those listed, and each listed one still fails, so the
    # list can neither grow unnoticed nor keep a genome that has since been fixed.
    assert set(TORCH_EXPORT_EXCEPTIONS) <= set(zoo_names())
    genome = small(name)
    x = torch.randn(1, genome.input.channels, *genome.input.resolution)
    model = compile_model(genome, seed=0).eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.export.export(model, (x,))
        error = None
    except Exception as err:  # noqa: BLE001 - whatever the exporter raises is the finding
        error = f"{type(err).__name__}: {err}"
    if name in TORCH_EXPORT_EXCEPTIONS:
        assert error is not None, f"{name} now exports with torch.export: take it off TORCH_EXPORT_EXCEPTIONS"
    else:
        assert error is None, f"{name} no longer exports with torch.export: {error}"
