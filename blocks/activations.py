"""Activations by name: the one table every ``act`` field validates against and every module builds from."""
from __future__ import annotations

from functools import cache
from typing import Literal

import torch
from torch import nn


class StarReLU(nn.Module):
    """s * relu(x)^2 + b with learnable scalars (MetaFormer baselines)."""

    def __init__(self, scale=1.0, bias=0.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([float(scale)]))
        self.bias = nn.Parameter(torch.tensor([float(bias)]))

    def forward(self, x):
        # relu(x) * relu(x), not ** 2: CUDA autocast runs pow in float32, which kept two float32 copies per
        # activation (the H200's peak for CAFormer-S18 was 1.6x nas.memory's estimate; benchmarks/BENCHMARKS.md)
        relu = torch.relu(x)
        return self.scale * (relu * relu) + self.bias


class SquaredReLU(nn.Module):
    def forward(self, x):
        relu = torch.relu(x)
        return relu * relu  # not ** 2, as in StarReLU


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x), the sigmoid approximation of GELU that CLIP's and CvT's code use."""

    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


def activation_table() -> dict:
    """The activation registry: name -> module class, or a factory taking no arguments. A new activation is
    one entry here. It is a literal in this function, not a dict filled at import, because exported
    ``model.py`` files copy ``create_act`` and this function by source and need the same table."""
    return {
        "gelu": nn.GELU,
        "gelu_tanh": lambda: nn.GELU(approximate="tanh"),  # GELU's tanh approximation (TensorFlow's MaxViT)
        "relu": nn.ReLU,
        "relu6": nn.ReLU6,
        "silu": nn.SiLU,
        "hardswish": nn.Hardswish,
        "sigmoid": nn.Sigmoid,
        "tanh": nn.Tanh,
        "star_relu": StarReLU,
        "squared_relu": SquaredReLU,
        "quick_gelu": QuickGELU,
        "identity": nn.Identity,
    }


def create_act(name: str) -> nn.Module:
    table = activation_table()
    if name not in table:
        raise ValueError(f"unknown activation {name!r}")
    return table[name]()


# The type of every ``act`` field: one of the registry's names (a Literal, so the JSON Schema lists them).
Act = Literal[tuple(activation_table())]  # type: ignore[valid-type]

# Registered activations whose input sign is not a unit's on/off state: a sigmoid scales a path (a gate), the
# identity does nothing. The zero-cost proxies (nas/evaluate/proxy.py) read the inputs of all the others.
NOT_SWITCHING = ("sigmoid", "identity")


@cache
def act_params(name: str) -> int:
    """Learnable parameters of one activation module (StarReLU's scale and bias)."""
    return sum(p.numel() for p in create_act(name).parameters())
