"""The convolution family against naive references: MBConv (MobileNetV2 and MaxViT forms), the ResNet
bottleneck, the large kernel with dilated branches (folding into one kernel), the Inception depthwise conv
and MambaOut's gated CNN block. Blocks take and return channels-last (B, H, W, C) maps."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from blocks import CONFIGS, create

C, H = 8, 8


def build(role, config, **context):
    """A module from a config dict, in eval mode (BatchNorm uses its running statistics), with non-trivial
    BatchNorm statistics so that a wrong BN placement shows."""
    torch.manual_seed(0)
    cfg = CONFIGS[role][config["type"]].model_validate(config)
    module = create(role, cfg.model_dump(), **context)
    for bn in module.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.5, 0.5)
    return module.eval()


def bn(x, layer):
    return F.batch_norm(x, layer.running_mean, layer.running_var, layer.weight, layer.bias, False, 0.0, layer.eps)


def conv_bn(x, seq, act=None, stride=1):
    conv = seq[0]
    y = bn(F.conv2d(x, conv.weight, conv.bias, stride, conv.padding, conv.dilation, conv.groups), seq[1])
    return act(y) if act else y


def nchw(x):
    return x.permute(0, 3, 1, 2)


def test_mobilenetv2_block_keeps_a_residual_only_when_the_shape_is_kept():
    x = torch.randn(2, H, H, C)
    for stride, out in ((1, C), (2, 16)):
        block = build("block", {"type": "mbconv", "expansion": 6, "stride": stride}, in_chs=C, out_chs=out)
        xc = nchw(x)
        y = conv_bn(xc, block.expand, F.relu6)
        y = conv_bn(y, block.dwconv, F.relu6, stride)
        y = conv_bn(y, block.project)  # linear bottleneck: no activation
        expected = xc + y if stride == 1 else y
        assert block.expand[0].out_channels == 6 * C
        torch.testing.assert_close(nchw(block(x)), expected)


def test_expansion_one_has_no_expand_conv():
    block = build("block", {"type": "mbconv", "expansion": 1}, in_chs=C, out_chs=4)
    assert isinstance(block.expand, torch.nn.Identity)
    assert block.shortcut is None  # width changes, MobileNetV2 form: no shortcut


def test_maxvit_mbconv_pools_its_shortcut_and_gates_with_squeeze_excitation():
    cfg = {"type": "mbconv", "expansion": 4, "act": "gelu", "expand_from": "out", "pre_norm": True,
           "out_norm": False, "se": 0.25, "shortcut": "pool_conv", "stride": 2}
    block = build("block", cfg, in_chs=C, out_chs=16)
    x = torch.randn(2, H, H, C)
    xc = nchw(x)
    y = conv_bn(bn(xc, block.pre_norm), block.expand, F.gelu)
    assert y.shape[1] == 64  # MaxViT expands the output width
    y = conv_bn(y, block.dwconv, F.gelu, stride=2)
    se = block.se
    assert se.reduce.out_features == 4  # 0.25 of the output width
    gate = torch.sigmoid(se.expand(F.silu(se.reduce(y.mean((2, 3))))))
    y = F.conv2d(y * gate[:, :, None, None], block.project.weight, block.project.bias)
    shortcut = F.conv2d(F.avg_pool2d(xc, 2), block.shortcut.proj.weight, block.shortcut.proj.bias)
    torch.testing.assert_close(nchw(block(x)), shortcut + y)


def test_bottleneck_projects_its_shortcut_when_striding_and_adds_before_the_relu():
    block = build("block", {"type": "bottleneck", "stride": 2}, in_chs=C, out_chs=16)
    assert block.reduce[0].out_channels == 4  # out / 4
    x = torch.randn(2, H, H, C)
    xc = nchw(x)
    y = conv_bn(conv_bn(conv_bn(xc, block.reduce, F.relu), block.conv, F.relu, 2), block.expand)
    shortcut = conv_bn(xc, block.shortcut, stride=2)
    torch.testing.assert_close(nchw(block(x)), F.relu(shortcut + y))
    identity = build("block", {"type": "bottleneck"}, in_chs=16, out_chs=16)
    assert isinstance(identity.shortcut, torch.nn.Identity)


def test_resnet_stem_may_be_narrower_than_the_first_stage():
    stem = build("stem", {"type": "resnet", "width": 6}, in_chs=3, out_chs=16)
    y = stem(torch.randn(1, 32, 32, 3))
    assert y.shape == (1, 8, 8, 6) and stem.out_size((32, 32)) == (8, 8)


def test_large_kernel_branches_fold_into_one_depthwise_kernel():
    """The point of the dilated reparam block: at inference it is a single large depthwise conv."""
    branches = [(5, 1), (3, 2), (3, 3)]
    mixer = build("mixer", {"type": "largekernel", "kernel": 7, "branches": branches}, dim=C)
    kernel, bias = torch.zeros(C, 1, 7, 7), torch.zeros(C)
    for (k, d), seq in zip([(7, 1), *branches], [mixer.large, *mixer.branches]):
        layer = seq[1]
        scale = layer.weight / torch.sqrt(layer.running_var + layer.eps)
        dilated = torch.zeros(C, 1, d * (k - 1) + 1, d * (k - 1) + 1)
        dilated[:, :, ::d, ::d] = seq[0].weight * scale[:, None, None, None]
        pad = (7 - dilated.shape[-1]) // 2
        kernel += F.pad(dilated, (pad, pad, pad, pad))
        bias += layer.bias - layer.running_mean * scale
    x = torch.randn(2, H, H, C)
    folded = F.conv2d(nchw(x), kernel, bias, padding=3, groups=C)
    torch.testing.assert_close(nchw(mixer(x)), folded, atol=1e-5, rtol=1e-5)


def test_inception_mixer_passes_identity_channels_and_convolves_the_rest_per_branch():
    dim = 32
    mixer = build("mixer", {"type": "inception", "branch_ratio": 0.125}, dim=dim)
    x = torch.randn(2, H, H, dim)
    y = mixer(x)
    assert mixer.splits == (20, 4, 4, 4)
    torch.testing.assert_close(y[..., :20], x[..., :20])
    parts = torch.split(nchw(x), mixer.splits, dim=1)
    for conv, part, start in ((mixer.square, parts[1], 20), (mixer.band_w, parts[2], 24), (mixer.band_h, parts[3], 28)):
        torch.testing.assert_close(nchw(y[..., start:start + 4]), conv(part))
    assert mixer.band_w.kernel_size == (1, 11) and mixer.band_h.kernel_size == (11, 1)


def test_gated_cnn_block_convolves_the_value_path_and_gates_it():
    block = build("block", {"type": "gated", "expansion": 2, "conv_ratio": 0.5, "kernel": 3}, dim=C)
    x = torch.randn(2, H, H, C)
    hidden = block.fc1(F.layer_norm(x, (C,), block.norm.weight, block.norm.bias, block.norm.eps))
    gate, value = hidden[..., :16], hidden[..., 16:]
    convolved = value.clone()
    convolved[..., 12:] = block.conv(nchw(value[..., 12:])).permute(0, 2, 3, 1)  # conv on 0.5 x dim channels
    expected = x + block.fc2(F.gelu(gate) * convolved)
    torch.testing.assert_close(block(x), expected)


def test_conv_head_returns_pooled_input_features_without_classes():
    head = build("head", {"type": "conv_head", "width": 24}, in_chs=C, num_classes=0)
    x = torch.randn(2, H, H, C)
    torch.testing.assert_close(head(x), x.mean((1, 2)))
    head.reset(10)
    assert head(x).shape == (2, 10) and head(x, pre_logits=True).shape == (2, 24)
