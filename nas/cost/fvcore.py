"""fvcore's FLOP count of a compiled model, with handles for the ops fvcore does not know.

Same convention as the analytic count: one multiply-accumulate is one FLOP.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from math import prod
from typing import Any

import torch
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import get_shape

from blocks.base import FLOP_HANDLES


def sdpa_flop(inputs: list[Any], outputs: list[Any]) -> int:
    """q @ k^T and attn @ v: (..., N, d) x (..., M, d) then (..., N, M) x (..., M, dv)."""
    q, k, v = (get_shape(t) for t in inputs[:3])
    batch = prod(q[:-2])
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


HANDLES = {"aten::scaled_dot_product_attention": sdpa_flop}


def fvcore_by_module(model: torch.nn.Module, inputs: torch.Tensor | Sequence[torch.Tensor]) -> dict[str, int]:
    """FLOPs of ``model(*inputs)`` per submodule name as fvcore traces it in eval mode; ``""`` is the total."""
    inputs = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    was_training = model.training
    model.eval()
    try:
        analysis = FlopCountAnalysis(model, inputs).set_op_handle(**HANDLES, **FLOP_HANDLES)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        logging.getLogger("fvcore").setLevel(logging.ERROR)
        with torch.no_grad():
            return {name: int(n) for name, n in analysis.by_module().items()}
    finally:
        model.train(was_training)


def fvcore_flops(model: torch.nn.Module, inputs: torch.Tensor | Sequence[torch.Tensor]) -> int:
    """Total FLOPs of ``model(*inputs)`` as fvcore traces it, in eval mode."""
    return fvcore_by_module(model, inputs)[""]
