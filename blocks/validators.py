"""Field types shared by block configs."""
from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, PositiveInt


def _odd(value: int) -> int:
    if value % 2 == 0:
        raise ValueError("must be odd to keep the feature map size")
    return value


OddInt = Annotated[PositiveInt, AfterValidator(_odd)]
