"""The SSM family: the chunked selective scan against the per-token recurrence, its traced op and FLOP count,
and the mamba, vim and ss2d mixers against references built from their parts."""
from __future__ import annotations

import pytest
import torch

from blocks import create
from blocks.scan import reference_scan, scan_flops, selective_scan
from blocks.ssm import Mamba, cross_merge, cross_scan
from nas.cost.fvcore import fvcore_flops


def scan_inputs(batch=2, channels=6, length=37, state=4, groups=2, dtype=torch.float64, seed=0):
    """(u, delta, A, B, C, D, delta_bias) in mamba_ssm's layout; B and C in ``groups`` groups of channels."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, channels, length, dtype=dtype, generator=g),
            torch.randn(batch, channels, length, dtype=dtype, generator=g),
            -3 * torch.rand(channels, state, dtype=dtype, generator=g),
            torch.randn(batch, groups, state, length, dtype=dtype, generator=g),
            torch.randn(batch, groups, state, length, dtype=dtype, generator=g),
            torch.randn(channels, dtype=dtype, generator=g),
            torch.randn(channels, dtype=dtype, generator=g))


@pytest.mark.parametrize("chunk", [None, 1, 5, 8, 64])  # None: about sqrt(L); 5 and 8 do not divide 37
def test_scan_and_its_gradients_equal_the_per_token_recurrence(chunk):
    inputs = [t.requires_grad_() for t in scan_inputs()]
    y = selective_scan(*inputs, softplus=True, chunk=chunk)
    expected = reference_scan(*inputs, softplus=True)
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-10)
    grad_y = torch.randn_like(y)
    for got, want in zip(torch.autograd.grad(y, inputs, grad_y), torch.autograd.grad(expected, inputs, grad_y)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


def test_float32_scan_is_within_1e_5_and_stable_under_strong_decay():
    u, delta, A, B, C, D, bias = scan_inputs(channels=8, length=200, dtype=torch.float32, seed=1)
    A = A * 100  # exp(delta * A) down to e^-300 per token: an unstabilised cumsum of log-decays overflows
    y = selective_scan(u, delta, A, B, C, D, bias, chunk=16)
    assert torch.isfinite(y).all()
    expected = reference_scan(*(t.double() for t in (u, delta, A, B, C, D, bias)))
    torch.testing.assert_close(y.double(), expected, rtol=0, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fused_kernel_equals_the_pure_torch_scan_where_installed():
    pytest.importorskip("mamba_ssm")
    from blocks.scan import chunked_scan, final_delta, mamba_kernel

    assert mamba_kernel() is not None
    u, delta, A, B, C, D, bias = (t.float().cuda() for t in scan_inputs(length=300))
    fused = selective_scan(u, delta, A, B, C, D, bias)  # mamba_ssm's kernel on CUDA
    torch.testing.assert_close(fused, chunked_scan(u, final_delta(delta, bias, True), A, B, C, D),
                               rtol=1e-4, atol=1e-4)


def test_scan_is_one_traced_op_counted_by_the_mamba_convention():
    u, delta, A, B, C, D, bias = scan_inputs(batch=1, channels=8, length=20, state=3, dtype=torch.float32)

    class Scan(torch.nn.Module):
        def forward(self, u, delta, B, C):
            return selective_scan(u, delta, A, B, C, D, bias)

    graph = torch.jit.trace(Scan(), (u, delta, B, C)).graph
    ops = [node.pyname() for node in graph.nodes() if node.kind() == "prim::PythonOp"]
    assert ops == ["SelectiveScan"]
    assert fvcore_flops(Scan(), (u, delta, B, C)) == scan_flops(1, 8, 20, 3) == 9 * 20 * 8 * 3 + 20 * 8


def test_mamba_is_causal_over_the_row_major_sequence():
    torch.manual_seed(0)
    mixer = create("mixer", {"type": "mamba", "d_state": 4}, dim=16).double()
    x = torch.randn(1, 4, 4, 16, dtype=torch.float64)
    later = x.clone()
    later[:, 2:] += torch.randn(1, 2, 4, 16, dtype=torch.float64)  # change rows 2-3 only
    y, y_later = mixer(x), mixer(later)
    torch.testing.assert_close(y[:, :2], y_later[:, :2])
    assert not torch.allclose(y[:, 2:], y_later[:, 2:])


def test_vim_is_a_forward_and_a_reversed_mamba_averaged():
    """Vim = (mamba_fwd(x) + flip(mamba_bwd(flip(x)))) / 2 with shared projections and per-direction rest."""
    torch.manual_seed(0)
    dim, width = 8, 16
    vim = create("mixer", {"type": "vim", "d_state": 4}, dim=dim).double()
    x = torch.randn(2, 3, 5, dim, dtype=torch.float64)

    def one_direction(k):
        mamba = Mamba(dim, d_state=4).double()
        state = dict(vim.state_dict())
        rows = slice(k * width, (k + 1) * width)
        state["conv.weight"], state["conv.bias"] = state["conv.weight"][rows], state["conv.bias"][rows]
        for name in ("x_proj", "dt_proj", "dt_bias"):
            state[f"ssm.{name}"] = state[f"ssm.{name}"][k:k + 1]
        for name in ("A_log", "D"):
            state[f"ssm.{name}"] = state[f"ssm.{name}"][rows]
        mamba.load_state_dict(state)
        return mamba  # out_proj has no bias: the average of gated outputs passes through it

    forward, backward = one_direction(0), one_direction(1)
    flat = x.reshape(2, 1, 15, dim)
    reversed_back = backward(flat.flip(2)).flip(2).reshape(x.shape)
    torch.testing.assert_close(vim(x), (forward(x) + reversed_back) / 2)


def test_cross_merge_sums_the_four_scans_back_in_place():
    x = torch.randn(2, 3, 4, 5)  # (b, width, H, W)
    xs = cross_scan(x)
    assert xs.shape == (2, 4, 20, 3)
    torch.testing.assert_close(xs[:, 1, :4], x[:, :, :, 0].transpose(1, 2))  # column-major: first column
    torch.testing.assert_close(xs[:, 2], xs[:, 0].flip(1))
    torch.testing.assert_close(cross_merge(xs, 4, 5), 4 * x.flatten(2).transpose(1, 2))


def test_ss2d_commutes_with_transposing_the_map():
    """Transposing the map swaps row- and column-major scans: with directions 0<->1, 2<->3 swapped and the
    conv kernel transposed, SS2D of the transposed map is the transposed output."""
    torch.manual_seed(0)
    config = {"type": "ss2d", "d_state": 2, "ratio": 1.5}
    mixer = create("mixer", config, dim=8).double()
    swapped = create("mixer", config, dim=8).double()
    state = mixer.state_dict()
    order = [1, 0, 3, 2]
    width = 12
    per_direction = lambda t: t.reshape(4, width, *t.shape[1:])[order].reshape(t.shape)  # noqa: E731
    state = {**state, "conv.weight": state["conv.weight"].transpose(-1, -2),
             "ssm.x_proj": state["ssm.x_proj"][order], "ssm.dt_proj": state["ssm.dt_proj"][order],
             "ssm.dt_bias": state["ssm.dt_bias"][order], "ssm.A_log": per_direction(state["ssm.A_log"]),
             "ssm.D": per_direction(state["ssm.D"])}
    swapped.load_state_dict(state)
    x = torch.randn(1, 3, 5, 8, dtype=torch.float64)
    torch.testing.assert_close(swapped(x.transpose(1, 2)), mixer(x).transpose(1, 2))


def test_ssm_mixers_train():
    for config in ({"type": "mamba", "d_state": 4}, {"type": "vim", "d_state": 4}, {"type": "ss2d", "d_state": 1}):
        mixer = create("mixer", config, dim=8)
        mixer(torch.randn(2, 4, 4, 8)).square().mean().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in mixer.parameters()), config
