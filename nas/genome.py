"""The genome grammar: a network described stage by stage, as pydantic models.

Block-level types (stem, mixers, norms, ...) come from the ``blocks`` registry as discriminated unions on
``type``. A genome's canonical form is fully explicit (defaults applied, patterns at their shortest period)
so that equal networks hash equally.
"""
from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    NonNegativeInt,
    PlainSerializer,
    PositiveInt,
    field_validator,
    model_validator,
)

from blocks import CONFIGS, Block, BlockConfig, ChannelMixer, Downsample, Head, Mixer, Neck, Norm, Stem
from blocks.base import check_numbers, repeat_pattern, strided

# Blocks in a whole genome: ten times the deepest published backbone here (MLP-Mixer-B/16 has 12, ResNet-152
# 50), and a bound on the time any cost walk takes.
MAX_BLOCKS = 4096



def _square(value: Any) -> Any:
    return (value, value) if isinstance(value, int) and not isinstance(value, bool) else value


Resolution = Annotated[
    tuple[PositiveInt, PositiveInt],
    BeforeValidator(_square),
    PlainSerializer(lambda v: v[0] if v[0] == v[1] else list(v)),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    _numbers = field_validator("*", mode="wrap")(check_numbers)


class InputSpec(_Model):
    channels: PositiveInt = 3
    resolution: Resolution = Field((224, 224), description="an int for square inputs, or [height, width]")


class StageSpec(_Model):
    """``depth`` blocks at ``width`` channels: one ``block`` repeated, or a ``pattern`` cycled to the depth.

    A stage changes resolution and width either with a ``downsample`` module before its blocks (MetaFormer,
    Swin) or in its first block, through ``stride`` (ResNet, MobileNet), for block types that resample."""

    depth: PositiveInt
    width: PositiveInt
    downsample: Downsample | None = None
    stride: PositiveInt = Field(1, description="the first block's stride, for block types with a stride")
    block: Block | None = None
    pattern: list[Block] | None = Field(None, min_length=1)
    class_token: bool = Field(False, description="a learned class token joins the stage's tokens after its "
                                                 "downsample, and the head classifies it (CvT); last stage only")

    @model_validator(mode="after")
    def _block_or_pattern(self) -> StageSpec:
        if (self.block is None) == (self.pattern is None):
            raise ValueError("give exactly one of 'block' or 'pattern'")
        first = (self.pattern or [self.block])[0]
        if self.stride != 1 and not first.resamples:
            raise ValueError(f"stride {self.stride}: a {first.type} block cannot stride; use a downsample, or a "
                             "block type with a stride (bottleneck, mbconv)")
        return self

    def blocks(self) -> list[BlockConfig]:
        """The blocks in order; the first carries the stage's stride."""
        blocks = repeat_pattern(self.pattern or [self.block], self.depth)
        if self.stride != 1:
            blocks[0] = type(blocks[0]).model_validate(strided(blocks[0].model_dump(), self.stride))
        return blocks


class Defaults(_Model):
    """Fields every stage inherits unless it sets them; ``downsample`` applies from the second stage on."""

    mixer: Mixer | None = None
    mlp: ChannelMixer | None = None
    norm: Norm | None = None
    layer_scale: float | None = None
    res_scale: float | None = None
    downsample: Downsample | None = None


class Genome(_Model):
    name: str = "genome"
    input: InputSpec = Field(default_factory=InputSpec)
    num_classes: NonNegativeInt = Field(1000, description="0: no classifier, the head returns pooled features")
    stem: Stem
    defaults: Defaults | None = Field(None, exclude=True)
    stages: list[StageSpec] = Field(min_length=1)
    head: Head = Field(default_factory=lambda: CONFIGS["head"]["linear"]())
    neck: Neck | None = Field(None, description="a feature pyramid over chosen stage outputs (detection, "
                                                "segmentation); the head still classifies from the last stage")
    drop_path_rate: float = Field(0.0, ge=0.0, lt=1.0)

    @model_validator(mode="before")
    @classmethod
    def _inherit_defaults(cls, data: Any) -> Any:
        return apply_defaults(data)

    @field_validator("stages")
    @classmethod
    def _bounded_depth(cls, stages: list[StageSpec]) -> list[StageSpec]:
        # a sequence is one block of its stage but builds all of its sub-blocks: those are what cost time and memory
        built = _built_blocks(stages)
        if built > MAX_BLOCKS:
            inside = ", counting each block inside a sequence" if built != sum(s.depth for s in stages) else ""
            raise ValueError(f"{built:,} blocks in all{inside}; a genome may hold at most {MAX_BLOCKS:,}")
        return stages

    def built_blocks(self) -> int:
        """The blocks the network builds, each of a sequence's counted (what ``MAX_BLOCKS`` bounds)."""
        return _built_blocks(self.stages)

    def to_dict(self) -> dict[str, Any]:
        """The canonical form: every default written out, each stage's pattern at its shortest period."""
        data = self.model_dump(mode="json")
        data["stages"] = [_canonical_stage(stage) for stage in data["stages"]]
        if data["neck"] is None:  # left out, so genomes without a neck keep their canonical form and hash
            del data["neck"]
        return _type_first(data)

    def content_hash(self) -> str:
        """Stable across key order, anchors, defaults and the name: the hash of the architecture."""
        data = self.to_dict()
        data.pop("name")
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Genome) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash((self.name, self.content_hash()))


def _built_blocks(stages: list[StageSpec]) -> int:
    total = 0
    for stage in stages:  # by whole cycles of the pattern: a stage's block list is never built just to be counted
        counts = [b.built_blocks() for b in stage.pattern or [stage.block]]
        cycles, rest = divmod(stage.depth, len(counts))
        total += cycles * sum(counts) + sum(counts[:rest])
    return total


def _frozen(value: Any) -> Any:
    """A hashable stand-in equal exactly when the JSON values are equal (as dicts and lists compare)."""
    if isinstance(value, dict):
        return frozenset((k, _frozen(v)) for k, v in value.items())
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


def shortest_period(keys: list[Any]) -> int:
    """The least ``p`` with ``keys[i] == keys[i % p]`` for every ``i``, in linear time: the length less the
    longest proper border (the KMP prefix function)."""
    border = [0] * len(keys)
    for i in range(1, len(keys)):
        k = border[i - 1]
        while k and keys[i] != keys[k]:
            k = border[k - 1]
        border[i] = k + (keys[i] == keys[k])
    return len(keys) - border[-1] if keys else 0


def _canonical_stage(stage: dict[str, Any]) -> dict[str, Any]:
    if not stage.get("class_token"):  # the default, left out: genomes keep the hash they had before the field
        stage.pop("class_token", None)
    pattern = stage.pop("pattern") or [stage.pop("block")]
    stage.pop("block", None)
    # each entry compared once, through a hashable key; then only small ints are compared
    ids: dict[Any, int] = {}
    keys = [ids.setdefault(_frozen(entry), len(ids)) for entry in pattern]
    unit = repeat_pattern(pattern, shortest_period(repeat_pattern(keys, stage["depth"])))
    if len(unit) == 1:
        stage["block"] = unit[0]
    else:
        stage["pattern"] = unit
    return stage


def _type_first(value: Any) -> Any:
    if isinstance(value, list):
        return [_type_first(v) for v in value]
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: k != "type")
        return {k: _type_first(value[k]) for k in keys}
    return value


def _shorthand(value: Any) -> Any:
    return {"type": value} if isinstance(value, str) else value


def _merge(default: Any, given: Any) -> Any:
    """A block's own mapping refines a default of the same type; anything else replaces it."""
    default, given = _shorthand(default), _shorthand(given)
    if isinstance(default, dict) and isinstance(given, dict) and given.get("type", default.get("type")) == default.get(
            "type"):
        return {**default, **given}
    return given


def _fill_block(block: Any, defaults: dict[str, Any]) -> Any:
    if not isinstance(block, dict):
        return block
    tag = block.get("type", "metaformer")
    cls = CONFIGS["block"].get(tag) if isinstance(tag, str) else None
    if cls is None:
        return block
    out = dict(block)
    for key, value in defaults.items():
        if key in cls.model_fields:
            out[key] = _merge(value, out[key]) if key in out else value
    if isinstance(out.get("blocks"), list):
        out["blocks"] = [_fill_block(b, defaults) for b in out["blocks"]]
    return out


def apply_defaults(data: Any) -> Any:
    """Copy ``defaults:`` into the stages' blocks on the raw mapping, before validation."""
    if not isinstance(data, dict) or not isinstance(data.get("defaults"), dict):
        return data
    if not isinstance(data.get("stages"), list):
        return data
    defaults = dict(data["defaults"])
    downsample = defaults.pop("downsample", None)
    stages = []
    for i, stage in enumerate(data["stages"]):
        if isinstance(stage, dict):
            stage = dict(stage)
            if i > 0 and downsample is not None and "downsample" not in stage:
                stage["downsample"] = downsample
            if "block" in stage:
                stage["block"] = _fill_block(stage["block"], defaults)
            if isinstance(stage.get("pattern"), list):
                stage["pattern"] = [_fill_block(b, defaults) for b in stage["pattern"]]
        stages.append(stage)
    return {**data, "stages": stages}
