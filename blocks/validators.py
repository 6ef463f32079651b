"""Field types shared by block configs."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, PositiveInt


def _odd(value: int) -> int:
    if value % 2 == 0:
        raise ValueError("must be odd to keep the feature map size")
    return value


OddInt = Annotated[PositiveInt, AfterValidator(_odd)]

# How a conv pads its input: ``symmetric``, kernel // 2 on every side (PyTorch's habit), or ``same``, TensorFlow's
# rule (blocks.layers.same_padding), which on a stride-2 conv over an even map pads only the right and bottom.
# Weights trained one way lose accuracy run the other way: TensorFlow ports (MaxViT's) need ``same``.
Padding = Literal["symmetric", "same"]
