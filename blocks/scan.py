"""The selective scan of Mamba, in pure PyTorch, as one traceable op.

    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t        y_t = C_t . h_t + D * u_t

Shapes follow mamba_ssm's ``selective_scan_fn``: u, delta (batch, channels, L); A (channels, N); B, C
(batch, groups, N, L), where channel c reads group c // (channels // groups); D, delta_bias (channels,).

The pure-torch path is a chunked scan (``chunked_scan``): about 3 sqrt(L) vectorised steps instead of L.
Every exponent is delta * A <= 0 or a running sum of those, so nothing overflows.
On CUDA, with ``mamba_ssm`` installed, its fused kernel runs behind the same call.
"""
from __future__ import annotations

import importlib
import math

import torch
import torch.nn.functional as F

from blocks.base import flop_handle


def scan_flops(batch: int, channels: int, length: int, state: int) -> int:
    """Multiply-accumulates of one selective scan with a D skip: VMamba's and Mamba's convention
    (``flops_selective_scan_fn``, state-spaces/mamba issue 110): 9 per (token, channel, state) plus the skip."""
    return 9 * batch * length * channels * state + batch * channels * length


@flop_handle("prim::PythonOp.SelectiveScan")
@flop_handle("prim::PythonOp.SelectiveScanFn")  # mamba_ssm's own op, traced on CUDA
def selective_scan_flop(inputs, outputs) -> int:
    batch, channels, length = inputs[0].type().sizes()
    return scan_flops(batch, channels, length, inputs[2].type().sizes()[1])


def chunked_scan(u, delta, A, B, C, D, chunk=None):
    """The scan with delta already final (biased, softplus applied), as plain autograd ops.

    Tokens split into chunks of ``chunk`` (default about sqrt(L)). A sweep over the position within a chunk
    runs every chunk's recurrence at once from a zero state, keeping each chunk's total log-decay; a loop over
    chunks then gives the state entering each chunk; a second sweep carries those states through their
    chunks and adds their share of y. About 3 sqrt(L) vectorised steps instead of L, and no tensor of size
    (L, channels, state) is ever stored, so the steps stay in cache. Every exponent is <= 0.
    """
    batch, channels, length = u.shape
    groups, state = B.shape[1], A.shape[1]
    per_group = channels // groups
    chunk = min(chunk or max(1, math.isqrt(length)), length)
    pad = -length % chunk
    if pad:  # zero delta past the end: no decay, no input
        u, delta, B, C = (F.pad(t, (0, pad)) for t in (u, delta, B, C))
    chunks = (length + pad) // chunk

    def position_major(t):  # (..., L) -> (chunk, chunks, ...): one slice per position within the chunks
        t = t.reshape(*t.shape[:-1], chunks, chunk)
        return t.movedim(-1, 0).movedim(-1, 1).contiguous()

    # (chunk, chunks, batch, groups, per_group or 1, 1 or state)
    dt = position_major(delta.reshape(batch, groups, per_group, 1, -1))
    dt_u = position_major((delta * u).reshape(batch, groups, per_group, 1, -1))
    B, C = (position_major(t.reshape(batch, groups, 1, state, -1)) for t in (B, C))
    A = A.reshape(groups, per_group, state)

    h = u.new_zeros(chunks, batch, groups, per_group, state)
    chunk_log_decay = torch.zeros_like(h)
    y_within = []
    for t in range(chunk):  # every chunk at once, from a zero state
        log_decay = dt[t] * A
        chunk_log_decay = chunk_log_decay + log_decay
        h = log_decay.exp() * h + dt_u[t] * B[t]
        y_within.append((h * C[t]).sum(-1))
    chunk_decay = chunk_log_decay.exp()
    carried = torch.zeros_like(h[0])
    entering = []
    for c in range(chunks):  # the state entering each chunk
        entering.append(carried)
        carried = chunk_decay[c] * carried + h[c]
    carried = torch.stack(entering)
    y_entering = []
    for t in range(chunk):  # the entering states, decayed through their chunks
        carried = (dt[t] * A).exp() * carried
        y_entering.append((carried * C[t]).sum(-1))
    y = torch.stack(y_within) + torch.stack(y_entering)  # (chunk, chunks, batch, groups, per_group)
    y = y.movedim(0, 1).reshape(chunks * chunk, batch, channels).movedim(0, -1)[..., :length]
    return y + D[:, None] * u[..., :length]


def final_delta(delta, delta_bias, softplus):
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    return F.softplus(delta) if softplus else delta


class SelectiveScan(torch.autograd.Function):
    """One op for tracing (fvcore sees ``prim::PythonOp.SelectiveScan``) and for memory: the forward keeps
    only its inputs, and the backward recomputes the chunked scan under autograd."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, softplus, chunk):
        ctx.save_for_backward(u, delta, A, B, C, D, delta_bias)
        ctx.softplus, ctx.chunk = softplus, chunk
        with torch.no_grad():
            return chunked_scan(u, final_delta(delta, delta_bias, softplus), A, B, C, D, chunk)

    @staticmethod
    def backward(ctx, grad_y):
        saved = ctx.saved_tensors
        with torch.enable_grad():
            inputs = [t.detach().requires_grad_(ctx.needs_input_grad[i]) if t is not None else None
                      for i, t in enumerate(saved)]
            u, delta, A, B, C, D, delta_bias = inputs
            y = chunked_scan(u, final_delta(delta, delta_bias, ctx.softplus), A, B, C, D, ctx.chunk)
            wanted = [t for t in inputs if t is not None and t.requires_grad]
            grads = iter(torch.autograd.grad(y, wanted, grad_y)) if wanted else iter(())
        return (*(next(grads) if t is not None and t.requires_grad else None for t in inputs), None, None)


def mamba_kernel():
    """mamba_ssm's fused ``selective_scan_fn`` when it is installed, else None (looked up once). A plain
    function with its answer kept on itself, not a ``functools.cache`` wrapper: ``nas compile`` inlines it into
    ``model.py``, which holds plain torch and standard-library code only."""
    if not hasattr(mamba_kernel, "found"):
        try:
            mamba_kernel.found = importlib.import_module("mamba_ssm.ops.selective_scan_interface").selective_scan_fn
        except ImportError:
            mamba_kernel.found = None
    return mamba_kernel.found


def selective_scan(u, delta, A, B, C, D, delta_bias=None, softplus=True, chunk=None):
    """y (batch, channels, L) of the selective scan; delta becomes softplus(delta + delta_bias)."""
    kernel = mamba_kernel() if u.is_cuda else None
    if kernel is not None:
        return kernel(u.contiguous(), delta.contiguous(), A.float(), B.contiguous(), C.contiguous(), D.float(),
                      delta_bias=None if delta_bias is None else delta_bias.float(), delta_softplus=softplus)
    return SelectiveScan.apply(u, delta, A, B, C, D, delta_bias, softplus, chunk)


def reference_scan(u, delta, A, B, C, D, delta_bias=None, softplus=True):
    """The recurrence one token at a time: the definition the chunked scan is tested and timed against."""
    delta = final_delta(delta, delta_bias, softplus)
    batch, channels, length = u.shape
    groups = B.shape[1]
    B = B.repeat_interleave(channels // groups, dim=1)  # (batch, channels, N, L)
    C = C.repeat_interleave(channels // groups, dim=1)
    h = u.new_zeros(batch, channels, A.shape[1])
    ys = []
    for t in range(length):
        dt = delta[..., t, None]
        h = torch.exp(dt * A) * h + dt * B[..., t] * u[..., t, None]
        ys.append((h * C[..., t]).sum(-1))
    return torch.stack(ys, -1) + D[:, None] * u
