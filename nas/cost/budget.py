"""Budgets as a person writes them: ``4GFLOPs``, ``4.5G``, ``800MFLOPs``, ``4e9``, ``30M`` params, ``10ms``."""
from __future__ import annotations

import math
import re

from nas.errors import InputError

_SCALE = {"": 1, "k": 1e3, "K": 1e3, "m": 1e6, "M": 1e6, "g": 1e9, "G": 1e9, "t": 1e12, "T": 1e12}
_NUMBER = r"(?P<num>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?P<scale>[kKmMgGtT]?)\s*"
_UNITS = {
    "flops": ("", "flop", "flops", "mac", "macs"),
    "params": ("", "p", "param", "params", "parameters"),
}
_TIME = {"": 1.0, "ms": 1.0, "s": 1e3, "us": 1e-3, "µs": 1e-3}
_EXAMPLES = {"flops": "4GFLOPs, 4.5G, 800MFLOPs or 4e9", "params": "30M, 30Mparams or 3e7",
             "latency": "10ms, 0.5s or 800us"}


def _fail(text: str, kind: str) -> InputError:
    return InputError(f"cannot read {text!r} as a {kind} budget; write it like {_EXAMPLES[kind]}")


def _count(text: str, kind: str) -> float:
    match = re.fullmatch(_NUMBER + r"(?P<unit>[A-Za-z]*)", text.strip())
    if not match or match["unit"].lower() not in _UNITS[kind]:
        raise _fail(text, kind)
    return _positive(float(match["num"]) * _SCALE[match["scale"]], text, kind)


def _positive(value: float, text: str, kind: str) -> float:
    if not math.isfinite(value):
        raise InputError(f"a {kind} budget must be a finite number, got {text!r}")
    if value <= 0:
        raise InputError(f"a {kind} budget must be positive, got {text!r}")
    return value


def parse_flops(text: str | float) -> int:
    """Multiply-accumulates; ``G`` means 1e9."""
    return _whole(_count(str(text), "flops"), str(text), "flops")


def parse_params(text: str | float) -> int:
    return _whole(_count(str(text), "params"), str(text), "params")


def _whole(value: float, text: str, kind: str) -> int:
    # A positive count below one half (1e-30) rounds to 0, which passed as a budget and failed later as an
    # internal error (nas scale took the logarithm of it).
    if round(value) < 1:
        raise InputError(f"a {kind} budget must be at least 1, got {text!r}")
    return int(round(value))


def parse_latency_ms(text: str | float) -> float:
    """Milliseconds; a bare number is milliseconds."""
    match = re.fullmatch(r"(?P<num>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?P<unit>[a-zµ]*)", str(text).strip())
    if not match or match["unit"] not in _TIME:
        raise _fail(str(text), "latency")
    return _positive(float(match["num"]) * _TIME[match["unit"]], str(text), "latency")


def format_count(value: float, unit: str = "") -> str:
    """4.125e9 -> '4.12G'; the inverse of the parsers, for reports."""
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}{unit}"
    return f"{value:.3g}{unit}"
