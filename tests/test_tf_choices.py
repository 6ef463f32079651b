"""Three choices of TensorFlow ports, each one grammar option, here as examples: ``act: gelu_tanh``, a BatchNorm
``eps`` (``norm_eps`` on an MBConv, ``eps`` on a norm config) and ``padding: same``. MaxViT's official code is
TensorFlow, and the zoo genome takes all three, so timm's ``maxvit_tiny_tf_224`` weights give its outputs
(tests/test_weights_timm.py checks that where timm is installed). Costs and export are checked by the suites
that check every block (tests/test_blocks.py, tests/test_memory.py, tests/test_zoo.py); here, only what those
options mean."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import yaml

from blocks import CONFIGS, create
from blocks.layers import same_padding
from nas import compile_model, load_genome
from nas.cost.analytic import analytic_cost
from tests.conftest import run_nas
from tests.test_export import run_clean


def build(role: str, config: dict, **context) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = CONFIGS[role][config["type"]].model_validate(config)
    return create(role, cfg.model_dump(), **context).eval()


def test_gelu_tanh_is_torchs_tanh_approximation_of_gelu():
    x = torch.linspace(-6, 6, 1001)
    mlp = build("mlp", {"type": "mlp", "act": "gelu_tanh"}, dim=4)
    torch.testing.assert_close(mlp.act(x), F.gelu(x, approximate="tanh"), rtol=0, atol=0)
    assert (mlp.act(x) - F.gelu(x)).abs().max() > 1e-4  # not the exact GELU


def tf_same(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's documented rule: ceil(size / stride) outputs; the padding that needs, the odd one after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


@pytest.mark.parametrize("size", [8, 9])  # even: only after (right, bottom); odd: both sides
def test_same_padding_is_tensorflows_rule_on_an_even_and_an_odd_map(size):
    assert same_padding(size, 3, 2) == tf_same(size, 3, 2) == ((0, 1) if size == 8 else (1, 1))
    assert same_padding(size, 4, 1) == tf_same(size, 4, 1)  # an even kernel pads unevenly even at stride 1
    # the conv_pair stem's first conv (3x3, stride 2) against a conv of the input padded by hand
    stem = build("stem", {"type": "conv_pair", "strides": [2, 1], "padding": "same"}, in_chs=3, out_chs=8)
    x = torch.randn(2, 3, size, size)
    (top, bottom), (left, right) = tf_same(size, 3, 2), tf_same(size, 3, 2)
    expected = F.conv2d(F.pad(x, (left, right, top, bottom)), stem.conv1.weight, stem.conv1.bias, stride=2)
    torch.testing.assert_close(stem.conv1(x), expected)
    assert expected.shape[-1] == math.ceil(size / 2)
    # symmetric padding: the same size, and on an odd map the same values; on an even map it shifts every
    # window by one pixel, which matters to trained weights
    symmetric = build("stem", {"type": "conv_pair", "strides": [2, 1]}, in_chs=3, out_chs=8)
    assert symmetric.conv1(x).shape == expected.shape
    assert torch.allclose(symmetric.conv1(x), expected) == (size % 2 == 1)


def test_same_padding_in_an_mbconv_pads_its_strided_depthwise_conv_only_after_an_even_map():
    block = build("block", {"type": "mbconv", "expansion": 1, "stride": 2, "padding": "same"}, in_chs=8, out_chs=8)
    x = torch.randn(2, 8, 8, 8)  # channels-last
    conv, bn = block.dwconv[0], block.dwconv[1]
    y = F.conv2d(F.pad(x.permute(0, 3, 1, 2), (0, 1, 0, 1)), conv.weight, None, stride=2, groups=8)
    y = F.relu6(F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps))
    torch.testing.assert_close(block.dwconv(x.permute(0, 3, 1, 2)), y)
    assert tuple(block(x).shape) == (2, 4, 4, 8)


def test_a_conv_downsample_takes_padding_same_as_well_as_a_count():
    down = build("downsample", {"type": "conv", "kernel": 3, "stride": 2, "padding": "same"},
                 in_chs=8, out_chs=16, size=(9, 9))
    x = torch.randn(2, 9, 9, 8)
    expected = F.conv2d(F.pad(x.permute(0, 3, 1, 2), (1, 1, 1, 1)), down.conv.weight, down.conv.bias, stride=2)
    torch.testing.assert_close(down(x), expected.permute(0, 2, 3, 1))
    assert down.out_size((9, 9)) == (5, 5)


def test_norm_eps_reaches_every_batchnorm():
    maxvit = {"type": "mbconv", "expansion": 4, "expand_from": "out", "pre_norm": True, "out_norm": False,
              "se": 0.25, "shortcut": "pool_conv", "stride": 2}
    for given, eps in (({}, 1e-5), ({"norm_eps": 1e-3}, 1e-3)):
        block = build("block", {**maxvit, **given}, in_chs=8, out_chs=16)
        norms = [m for m in block.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert len(norms) == 3 and {m.eps for m in norms} == {eps}  # pre-norm, after expand, after depthwise
    stem = build("stem", {"type": "conv_pair", "mid_norm": {"type": "batchnorm", "eps": 1e-3}}, in_chs=3, out_chs=8)
    assert stem.mid_norm.eps == 1e-3


def test_maxvit_t_takes_the_tensorflow_choices_at_no_cost_in_params_or_flops():
    genome = load_genome("zoo:maxvit_t")
    data = genome.to_dict()
    stem, mbconv = data["stem"], data["stages"][0]["block"]["blocks"][0]
    assert (stem["padding"], stem["act"], stem["mid_norm"]["eps"]) == ("same", "gelu_tanh", 1e-3)
    assert (mbconv["padding"], mbconv["act"], mbconv["norm_eps"]) == ("same", "gelu_tanh", 1e-3)
    stem.update(padding="symmetric", act="gelu", mid_norm={"type": "batchnorm"})
    for stage in data["stages"]:
        stage["block"]["blocks"][0].update(padding="symmetric", act="gelu", norm_eps=1e-5)
    pytorch_habits = analytic_cost(load_genome(data))
    tf = analytic_cost(genome)
    assert (tf.params, tf.flops) == (pytorch_habits.params, pytorch_habits.flops)


TINY = """\
name: tiny_tf
input: {resolution: 32}
num_classes: 10
stem: {type: conv_pair, strides: [2, 1], mid_ratio: 1.0, mid_norm: {type: batchnorm, eps: 1.0e-3}, act: gelu_tanh,
       padding: same}
stages:
  - {depth: 1, width: 16, stride: 2,
     block: {type: mbconv, expansion: 4, act: gelu_tanh, padding: same, norm_eps: 1.0e-3}}
  - {depth: 1, width: 32, downsample: {type: conv, kernel: 3, stride: 2, padding: same},
     block: {mixer: pooling, mlp: {type: mlp, act: gelu_tanh}}}
"""


def test_model_py_pads_and_approximates_as_the_compiled_model(tmp_path):
    genome_file, model_py = tmp_path / "tiny.yaml", tmp_path / "model.py"
    weights, out = tmp_path / "weights.pt", tmp_path / "out.pt"
    genome_file.write_text(TINY)
    result = run_nas("compile", genome_file, "-o", model_py, "--weights", weights)
    assert result.returncode == 0, result.stderr
    clean = run_clean(model_py, weights, out, "3,32,32")
    assert clean.returncode == 0, clean.stderr
    model = compile_model(load_genome(yaml.safe_load(TINY))).eval()
    model.load_state_dict(torch.load(weights, weights_only=True))
    saved = torch.load(out, weights_only=True)
    with torch.inference_mode():
        torch.testing.assert_close(model(saved["x"]), saved["y"])


@pytest.mark.parametrize(("edit", "path", "words"), [
    (("padding: same, norm_eps", "padding: valid, norm_eps"), "stages[0].block.padding",
     "'symmetric' or 'same' (got 'valid')"),
    (("act: gelu_tanh,\n", "act: gelu_tan,\n"), "stem.act", "'gelu_tanh'"),
    (("norm_eps: 1.0e-3", "norm_eps: 0"), "stages[0].block.norm_eps", "greater than 0"),
    (("batchnorm, eps: 1.0e-3}", "batchnorm, eps: -1.0e-3}"), "stem.mid_norm.eps", "greater than 0"),
    (("stride: 2, padding: same}", "stride: 2, padding: SAME}"), "stages[1].downsample.padding",
     "a valid integer, unable to parse string as an integer, or 'same' (got 'SAME')"),
])
def test_a_bad_value_is_one_line_naming_the_file_and_yaml_path(tmp_path, edit, path, words):
    assert edit[0] in TINY
    file = tmp_path / "bad.yaml"
    file.write_text(TINY.replace(*edit))
    result = run_nas("validate", file)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {file}: {path} (line "), result.stderr
    assert words in lines[0], lines[0]
