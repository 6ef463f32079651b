"""The block registry: a block type is a pydantic config plus the torch module it builds.

Config classes (``BlockConfig``) carry the analytic side (shape, params, FLOPs); module classes
(``BlockModule``, ``HeadModule``) are plain torch so the exporter can inline them. Both base classes state
the contract their subclasses keep. ``create`` is the one place a config dict becomes a module, in the engine
and in exported ``model.py`` files alike.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator
from functools import cached_property
from typing import Annotated, Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    ValidatorFunctionWrapHandler,
    field_validator,
)
from torch import nn

Shape = tuple[int, int, int]  # (channels, height, width) of a feature map

ROLES = ("stem", "downsample", "block", "mixer", "mlp", "norm", "head", "neck")
# The largest magnitude of any number in a genome (a width, a depth, a kernel, a resolution, a ratio): far
# above any published network, and small enough that no cost formula overflows or hangs before it is checked.
MAX_NUMBER = 1 << 16

# role -> type -> module class. Filled by ``register``; exported files get a literal copy.
MODULES: dict[str, dict[str, type[BlockModule]]] = {}
# role -> type -> config class.
CONFIGS: dict[str, dict[str, type[BlockConfig]]] = {}
# What ``create`` passes to a role's module besides the config's fields: the engine's call sites (nas/network.py,
# and blocks that build nested configs) give these, and a constructor takes the ones it names.
CONTEXT: dict[str, tuple[str, ...]] = {
    "stem": ("in_chs", "out_chs", "size"),
    "downsample": ("in_chs", "out_chs", "size"),
    "block": ("dim", "in_chs", "out_chs", "size", "drop_path"),
    "mixer": ("dim", "size"),
    "mlp": ("dim",),
    "norm": ("dim",),
    "head": ("in_chs", "num_classes"),
    "neck": ("in_chs",),  # one channel count per input level
}
# Submodule names that mark a linear layer whose output stacks q, k and v (or k and v) in equal parts; the
# supernet slices each part on its own (nas/supernet/supernet.py).
FUSED_PROJECTIONS = {"qkv": 3, "kv": 2}
# traced op name -> FLOP counter, for ops fvcore does not count (FFTs, custom scans). A counter takes the
# op's traced inputs and outputs, as fvcore handles do, and returns multiply-accumulates.
FLOP_HANDLES: dict[str, Callable[[list[Any], list[Any]], int]] = {}


class BlockModule(nn.Module):
    """Base of every module a block config builds (``register`` refuses any other). The contract:

    - Construction: ``create(role, cfg, **context)`` calls the class with the config's fields (all but
      ``type``) as keyword arguments of the same names, plus those of the role's ``CONTEXT`` arguments that
      the constructor names: ``dim`` (the input width of a width-keeping module), ``in_chs`` and ``out_chs``,
      ``size`` (the input map's (height, width), for weights or buffers sized by the map), ``drop_path``,
      ``num_classes``. Nested configs (a block's ``mixer``, ``norm``) arrive as dicts, built with ``create``.
    - Data: ``forward`` takes and returns channels-last (B, H, W, C) maps; a head returns (B, classes). In a
      stage with a class token, a block whose config ``takes_class_token()`` is called ``forward(x, token)``
      with the (B, 1, 1, C) token and returns the map and the token; its mixer, ``forward(x, token)``, returns
      the (B, 1, 1 + H * W, C) sequence, token first.
    - Size: ``out_size(size)`` is the output map's (height, width) for an input of ``size``, and agrees with
      the config's ``out_shape``. The default keeps the size: stems, downsamples and resampling blocks
      (a strided bottleneck) override it.
    - Weights: state-dict keys follow attribute names, so renaming one breaks saved weights and supernet
      checkpoints. A linear layer stacking q, k and v (or k and v) in equal parts of its output is named
      ``qkv`` (or ``kv``), and no other layer is (``FUSED_PROJECTIONS``).
    - Export: ``nas compile`` copies the class, and every module-level helper it names, into ``model.py`` by
      source: plain torch and the standard library, with names unique across blocks/.
    """

    def out_size(self, size: tuple[int, int]) -> tuple[int, int]:
        return size


class HeadModule(BlockModule):
    """Base of classifier heads (context: ``in_chs``, ``num_classes``).

    ``forward(x, pre_logits=False)`` maps the last stage's (B, H, W, C) features to (B, num_classes) logits,
    or with ``pre_logits`` to the pooled features its classifier reads. ``reset(num_classes)`` rebuilds the
    classifier for another class count (``Network.reset_classifier``); with zero classes there is none, and
    ``forward`` returns the pooled (B, in_chs) features.
    """

    def out_size(self, size: tuple[int, int]) -> tuple[int, int]:
        return (1, 1)

    def reset(self, num_classes: int) -> None:
        raise NotImplementedError(f"{type(self).__name__}.reset")


class NeckModule(BlockModule):
    """Base of necks (context: ``in_chs``, the channel count of each input level). ``forward`` takes the
    backbone's chosen stage outputs, finest first, as a list of NCHW maps (the layout of detection and
    segmentation heads), and returns the pyramid, finest first, as a list of NCHW maps."""


class ShapeError(ValueError):
    """A config that cannot run on the feature map it receives; ``field`` is relative to the config."""

    def __init__(self, field: str | None, message: str):
        super().__init__(message)
        self.field = field
        self.message = message

    def within(self, prefix: str) -> ShapeError:
        return ShapeError(join_path(prefix, self.field), self.message)


def join_path(prefix: str | None, field: str | None) -> str | None:
    if not prefix:
        return field
    if not field:
        return prefix
    return f"{prefix}{field}" if field.startswith("[") else f"{prefix}.{field}"


def checked_number(raw: Any, value: Any) -> Any:
    """``value`` as validated from ``raw``, refused when a boolean stood for a number (``depth: true`` would be
    1), or when it is not finite or beyond ``MAX_NUMBER``; sequences (a ``[height, width]``) item by item."""
    if isinstance(value, (tuple, list)):  # a [height, width], given as one number or as two
        raws = raw if isinstance(raw, (tuple, list)) and len(raw) == len(value) else [raw] * len(value)
        for r, v in zip(raws, value):
            checked_number(r, v)
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if isinstance(raw, bool):
        raise ValueError("expected a number, not a boolean")
    if isinstance(value, float) and not math.isfinite(value):  # not for an int: a huge one overflows a float
        raise ValueError("must be a finite number")
    if abs(value) > MAX_NUMBER:
        raise ValueError(f"beyond the limit of {MAX_NUMBER:,} for any number in a genome")
    return value


def check_numbers(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """A wrap validator for every field of a model: see ``checked_number``."""
    return checked_number(value, handler(value))


class BlockConfig(BaseModel):
    """Base of every block config. Cost methods take the input shape and the output channel count."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    _numbers = field_validator("*", mode="wrap")(check_numbers)
    module: ClassVar[type[BlockModule]]
    # Configs tests/test_blocks.py builds and checks against the module, besides the all-defaults one
    # (which is skipped when a field is required).
    examples: ClassVar[tuple[dict[str, Any], ...]] = ()

    @property
    def resamples(self) -> bool:
        """A block that may change channels and stride: a stage's first block then maps the incoming channels
        to the stage width and takes the stage's ``stride`` (ResNet, MobileNet)."""
        return "stride" in type(self).model_fields

    def out_shape(self, shape: Shape, out: int) -> Shape:
        return shape

    def check(self, shape: Shape, out: int) -> None:
        """Raise ShapeError when this config cannot run on ``shape``."""
        for name, child in self.children():
            check_within(name, child, shape)

    def params(self, shape: Shape, out: int) -> int:
        raise NotImplementedError(f"{type(self).__name__}.params")

    def flops(self, shape: Shape, out: int) -> int:
        """Multiply-accumulates for one image, counted as fvcore counts them."""
        raise NotImplementedError(f"{type(self).__name__}.flops")

    def takes_class_token(self) -> bool:
        """Whether this config can serve in a stage with a class token (``class_token: true``, CvT): token-wise
        norms and MLPs apply to the token as to any other token; a mixer or block that takes one says so, and
        overrides ``class_token_flops`` where the token costs more than one token of a token-wise layer."""
        return False

    def class_token_flops(self, shape: Shape, out: int) -> int:
        """Multiply-accumulates a class token adds when it joins the tokens of the ``shape`` map; by default
        those of a token-wise layer on one more token."""
        return self.flops((shape[0], 1, 1), out)

    def workspace(self, shape: Shape, out: int) -> int:
        """Elements of the largest temporary a forward pass holds besides its input and output, per image
        (an MLP's hidden map, attention scores). For memory estimates."""
        return max((child.workspace(shape, shape[0]) for _, child in self.children()), default=0)

    def frozen_params(self, shape: Shape, out: int) -> int:
        """Parameters that never train (random mixing matrices); included in ``params``."""
        return sum(child.frozen_params(shape, shape[0]) for _, child in self.children())

    def built_blocks(self) -> int:
        """How many blocks this config builds: 1, or a composite's sub-blocks (``sequence``). A genome's size
        limit counts these, as they are what building and running it costs."""
        return 1

    def children(self) -> tuple[tuple[str, BlockConfig], ...]:
        """Nested configs with their field paths."""
        return self._children

    @cached_property
    def _children(self) -> tuple[tuple[str, BlockConfig], ...]:
        # Cached: configs are frozen, and cost walks ask for children many times.
        found = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, BlockConfig):
                found.append((name, value))
            elif isinstance(value, (list, tuple)):
                found += [(f"{name}[{i}]", item) for i, item in enumerate(value) if isinstance(item, BlockConfig)]
        return tuple(found)

    def walk(self) -> Iterator[BlockConfig]:
        yield self
        for _, child in self.children():
            yield from child.walk()


class NeckConfig(BlockConfig):
    """Base of neck configs: a pyramid built over the outputs of the stages ``in_stages`` (finest first).

    Cost methods take the input levels' shapes (finest first) instead of one shape. A level's cost is what
    computes that output level (its lateral, output and resampling convolutions); weights every level uses
    (SEPC's pyramid convolutions) are ``shared_params``, counted once.
    """

    in_stages: list[Annotated[int, Field(ge=0)]] = Field(min_length=1, description="stage indices, finest first")
    out_channels: PositiveInt = 256
    extra_levels: NonNegativeInt = Field(0, description="coarser levels added above the last input, each at stride 2")

    @field_validator("in_stages")
    @classmethod
    def _increasing(cls, stages: list[int]) -> list[int]:
        if any(b <= a for a, b in zip(stages, stages[1:])):
            raise ValueError(f"{stages}: give each stage once, finest (lowest index) first")
        return stages

    def out_shapes(self, shapes: list[Shape]) -> list[Shape]:
        raise NotImplementedError(f"{type(self).__name__}.out_shapes")

    def check_levels(self, shapes: list[Shape]) -> None:
        """Raise ShapeError when the neck cannot run on input levels of ``shapes``."""

    def level_costs(self, shapes: list[Shape]) -> list[tuple[int, int]]:
        """(params, FLOPs) of each output level, finest first, FLOPs counted as fvcore counts them."""
        raise NotImplementedError(f"{type(self).__name__}.level_costs")

    def shared_params(self, shapes: list[Shape]) -> int:
        return 0


def flop_handle(op: str):
    """Decorator: count FLOPs of a traced op (``aten::fft_rfft2``, ``prim::PythonOp.SelectiveScan``) that
    fvcore does not know. Lives with the block that uses the op."""

    def decorate(fn):
        FLOP_HANDLES[op] = fn
        return fn

    return decorate


def check_within(name: str, child: BlockConfig, shape: Shape) -> None:
    """Check a nested config, prefixing its error path with the field that holds it."""
    try:
        child.check(shape, shape[0])
    except ShapeError as err:
        raise err.within(name) from None


def register(*roles: str, module: type[BlockModule]):
    """Class decorator: make a config usable everywhere under its ``type`` name in the given roles."""

    def decorate(cls: type[BlockConfig]) -> type[BlockConfig]:
        tag = cls.model_fields["type"].default
        for role in roles:
            if role not in ROLES:
                raise ValueError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
            base = {"head": HeadModule, "neck": NeckModule}.get(role, BlockModule)
            if not issubclass(module, base):
                raise TypeError(f"{role} type {tag!r}: {module.__name__} must subclass blocks.base.{base.__name__}")
            known = CONFIGS.setdefault(role, {})
            if tag in known and known[tag] is not cls:
                raise ValueError(f"{role} type {tag!r} is registered twice")
            known[tag] = cls
            MODULES.setdefault(role, {})[tag] = module
        cls.module = module
        return cls

    return decorate


def create(role, cfg, **context):
    """Build the module for a config dict: its fields as keyword arguments, with the context arguments (see
    ``CONTEXT``) the module's constructor names; the others are dropped."""
    cls = MODULES[role][cfg["type"]]
    accepted = inspect.signature(cls).parameters
    kwargs = {k: v for k, v in context.items() if k in accepted}
    kwargs.update((k, v) for k, v in cfg.items() if k != "type")
    return cls(**kwargs)


def repeat_pattern(pattern, depth):
    """A stage's blocks: its pattern repeated, and cut, to its depth."""
    return [pattern[i % len(pattern)] for i in range(depth)]


def strided(block: dict, stride: int) -> dict:
    """A block dict striding by ``stride``; a composite passes the stride to its first sub-block."""
    if isinstance(block.get("blocks"), list):
        return {**block, "blocks": [strided(block["blocks"][0], stride), *block["blocks"][1:]]}
    return {**block, "stride": stride}


def stage_blocks(stage: dict) -> list[dict]:
    """A stage's block dicts: its pattern repeated, and cut, to its depth, the first taking the stage stride."""
    blocks = repeat_pattern(stage.get("pattern") or [stage["block"]], stage["depth"])
    stride = stage.get("stride", 1)
    return [strided(blocks[0], stride), *blocks[1:]] if stride != 1 else blocks


def conv_out(size, kernel, stride, padding):
    """Spatial size after a convolution, per dimension."""
    return tuple((s + 2 * padding - kernel) // stride + 1 for s in size)


def count(*shape: int) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
