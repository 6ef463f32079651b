"""Pretrained weights from the published implementations: a timm checkpoint mapped onto a zoo genome.

Each mapped zoo genome has a list of :class:`Rule`: a timm key template, the zoo key template it becomes, and,
where the layouts differ, a :class:`Layout` that converts the tensor both ways. Templates name integer fields
(``{s}``, or ``{s+1}`` where the two sides count from different origins) and end in ``*`` for the rest of the
key (``weight``, ``bias``, ``running_mean``...). The inverse direction (:func:`to_reference`) exists so that
tests can build timm-layout checkpoints from a zoo model without timm, and so that a zoo model's weights can go
back to timm.

Loading reads safetensors, or ``torch.load(..., weights_only=True)``: a checkpoint never runs code.
"""
from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from nas.errors import InputError, printable
from nas.outputs import replacing

StateDict = dict[str, Tensor]
# Where trainers nest the weights in a checkpoint file (timm's train script, the papers' repos, EMA copies).
NESTED_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema")
# Derived buffers some checkpoints carry (older timm, the papers' repos); the zoo rebuilds them from the genome.
DERIVED_BUFFERS = (r"(^|\.)relative_position_index$", r"(^|\.)attn_mask$", r"(^|\.)relative_coords_table$")
SHOWN = 5  # keys named in an error before "... (N in all)"


@dataclass(frozen=True)
class Layout:
    """How a tensor's layout differs between timm and the zoo: ``to_zoo(tensor, module)`` and
    ``to_timm(tensor, module)``, where ``module`` is the zoo module that owns the tensor (for shapes the tensor
    alone does not tell, such as DeiT's patch grid)."""

    name: str
    to_zoo: Callable[[Tensor, nn.Module], Tensor]
    to_timm: Callable[[Tensor, nn.Module], Tensor]


SAME = Layout("same", lambda t, m: t, lambda t, m: t)
# A 1x1 convolution in timm, a linear layer in the zoo (channels-last).
CONV1X1_AS_LINEAR = Layout("conv1x1_as_linear", lambda t, m: t.flatten(1), lambda t, m: t[:, :, None, None])


def _grid_pos_embed(tensor: Tensor, module: nn.Module) -> Tensor:
    """timm's (1, [1 +] H*W, C) token positions as the zoo's (H, W, C) grid; a class token's entry is dropped."""
    h, w, c = module.pos_embed.shape
    tokens = tensor.reshape(-1, tensor.shape[-1])
    if tokens.shape[0] == h * w + 1:
        tokens = tokens[1:]
    if tokens.shape != (h * w, c):
        raise InputError(f"pos_embed: checkpoint gives {tuple(tensor.shape)}, the zoo genome needs {h * w} "
                         f"positions of width {c} ({h}x{w} patches)")
    return tokens.reshape(h, w, c)


POS_EMBED_GRID = Layout("pos_embed_grid", _grid_pos_embed, lambda t, m: t.reshape(1, -1, t.shape[-1]))


def _tf_table_to_zoo(tensor: Tensor, module: nn.Module) -> Tensor:
    # (heads, 2w-1, 2w-1) indexed by key - query -> ((2w-1)^2, heads) indexed by query - key, as Swin's.
    return tensor.flip(1, 2).flatten(1).t()


def _zoo_table_to_tf(tensor: Tensor, module: nn.Module) -> Tensor:
    side = math.isqrt(tensor.shape[0])
    return tensor.t().reshape(-1, side, side).flip(1, 2)


# MaxViT's TensorFlow port keeps one (2w-1) x (2w-1) table per head, indexed by the key's offset from the query;
# the zoo, as Swin, one flat table of heads indexed by the query's offset from the key.
TF_RELATIVE_POSITION_TABLE = Layout("tf_relative_position_table", _tf_table_to_zoo, _zoo_table_to_tf)


@dataclass(frozen=True)
class Rule:
    """``timm`` key template -> ``zoo`` key template, with the tensor's layout change."""

    timm: str
    zoo: str
    layout: Layout = SAME


@dataclass(frozen=True)
class WeightMap:
    """How one reference model's checkpoint maps onto one zoo genome."""

    reference: str  # the timm model name whose checkpoints this reads
    rules: tuple[Rule, ...]
    dropped: tuple[tuple[str, str], ...] = ()  # (timm key regex, why the zoo genome has no place for it)
    note: str = ""  # how the zoo genome differs from the reference model, if it does


_FIELD = re.compile(r"\{(\w+)([+-]\d+)?\}")


@functools.lru_cache(maxsize=None)
def _pattern(template: str) -> tuple[re.Pattern[str], list[tuple[str, int]]]:
    """A template as a regex with one group per field, and each field's (name, offset)."""
    fields: list[tuple[str, int]] = []
    out, pos = "", 0
    for match in _FIELD.finditer(template):
        out += re.escape(template[pos:match.start()]) + r"(\d+)"
        fields.append((match.group(1), int(match.group(2) or 0)))
        pos = match.end()
    tail = template[pos:]
    if tail.endswith("*"):
        out += re.escape(tail[:-1]) + r"(.+)"
        fields.append(("*", 0))
    else:
        out += re.escape(tail)
    return re.compile(out + "$"), fields


def _translate(key: str, source: str, target: str) -> str | None:
    """``key`` matched against template ``source``, written out as template ``target``; None if no match."""
    pattern, fields = _pattern(source)
    match = pattern.match(key)
    if not match:
        return None
    values: dict[str, Any] = {}
    for (name, offset), text in zip(fields, match.groups()):
        values[name] = text if name == "*" else int(text) - offset
    out, pos = "", 0
    for field_match in _FIELD.finditer(target):
        offset = int(field_match.group(2) or 0)
        out += target[pos:field_match.start()] + str(values[field_match.group(1)] + offset)
        pos = field_match.end()
    tail = target[pos:]
    return out + (tail[:-1] + values["*"] if tail.endswith("*") else tail)


def _owner(model: nn.Module, key: str) -> nn.Module:
    return model.get_submodule(key.rpartition(".")[0])


def _shown(keys: list[str]) -> str:
    more = f", ... ({len(keys)} in all)" if len(keys) > SHOWN else ""
    return ", ".join(map(printable, keys[:SHOWN])) + more  # a checkpoint's key with a newline split the line


# ---------------------------------------------------------------------------------------------------------------
# The rules, per zoo genome. Shared pieces first.

def _metaformer_rules(conv_stages: tuple[int, ...]) -> tuple[Rule, ...]:
    """timm's metaformer.py (CAFormer, ConvFormer). Its blocks with a convolutional token mixer run NCHW, so
    their MLPs are 1x1 convolutions (``conv_stages``); attention blocks run channels-last with linear MLPs."""
    block = "stages.{s}.blocks.{b}."
    conv_mlps = tuple(Rule(f"stages.{s}.blocks.{{b}}.mlp.{fc}.weight", f"stages.{s}.blocks.{{b}}.mlp.{fc}.weight",
                           CONV1X1_AS_LINEAR) for s in conv_stages for fc in ("fc1", "fc2"))
    return conv_mlps + (
        Rule("stem.conv.*", "stem.conv.*"),
        Rule("stem.norm.*", "stem.post_norm.*"),
        Rule("stages.{s}.downsample.norm.*", "stages.{s}.downsample.pre_norm.*"),
        Rule("stages.{s}.downsample.conv.*", "stages.{s}.downsample.conv.*"),
        Rule(block + "token_mixer.pwconv1.weight", block + "mixer.pwconv1.weight", CONV1X1_AS_LINEAR),
        Rule(block + "token_mixer.pwconv2.weight", block + "mixer.pwconv2.weight", CONV1X1_AS_LINEAR),
        Rule(block + "token_mixer.*", block + "mixer.*"),
        Rule(block + "norm1.*", block + "norm1.*"),
        Rule(block + "norm2.*", block + "norm2.*"),
        Rule(block + "mlp.*", block + "mlp.*"),
        Rule(block + "res_scale1.scale", block + "res_scale1.scale"),
        Rule(block + "res_scale2.scale", block + "res_scale2.scale"),
        Rule("head.norm.*", "head.norm.*"),
        Rule("head.fc.fc1.*", "head.fc1.*"),
        Rule("head.fc.norm.*", "head.hidden_norm.*"),
        Rule("head.fc.fc2.*", "head.fc2.*"),
    )


def _window_attention_rules(timm_prefix: str, zoo_prefix: str, table: Layout = SAME,
                            qkv: Layout = SAME) -> tuple[Rule, ...]:
    return (
        Rule(timm_prefix + "relative_position_bias_table", zoo_prefix + "relative_position_bias_table", table),
        Rule(timm_prefix + "qkv.weight", zoo_prefix + "qkv.weight", qkv),
        Rule(timm_prefix + "qkv.bias", zoo_prefix + "qkv.bias", qkv),
        Rule(timm_prefix + "proj.*", zoo_prefix + "proj.*"),
    )


def _maxvit_rules() -> tuple[Rule, ...]:
    conv, zoo = "stages.{s}.blocks.{b}.conv.", "stages.{s}.blocks.{b}.0."
    rules = [
        Rule("stem.conv1.*", "stem.conv1.*"),
        Rule("stem.norm1.*", "stem.mid_norm.*"),
        Rule("stem.conv2.*", "stem.conv2.*"),
        Rule(conv + "shortcut.expand.*", zoo + "shortcut.proj.*"),
        Rule(conv + "pre_norm.*", zoo + "pre_norm.*"),
        Rule(conv + "conv1_1x1.*", zoo + "expand.0.*"),
        Rule(conv + "norm1.*", zoo + "expand.1.*"),
        Rule(conv + "conv2_kxk.*", zoo + "dwconv.0.*"),
        Rule(conv + "norm2.*", zoo + "dwconv.1.*"),
        Rule(conv + "se.fc1.weight", zoo + "se.reduce.weight", CONV1X1_AS_LINEAR),
        Rule(conv + "se.fc1.bias", zoo + "se.reduce.bias"),
        Rule(conv + "se.fc2.weight", zoo + "se.expand.weight", CONV1X1_AS_LINEAR),
        Rule(conv + "se.fc2.bias", zoo + "se.expand.bias"),
        Rule(conv + "conv3_1x1.*", zoo + "project.*"),
        Rule("head.norm.*", "head.norm.*"),
        Rule("head.pre_logits.fc.*", "head.fc1.*"),
        Rule("head.fc.*", "head.fc2.*"),
    ]
    for part, index in (("attn_block", 1), ("attn_grid", 2)):
        timm, ours = f"stages.{{s}}.blocks.{{b}}.{part}.", f"stages.{{s}}.blocks.{{b}}.{index}."
        rules += [
            Rule(timm + "norm1.*", ours + "norm1.*"),
            Rule(timm + "norm2.*", ours + "norm2.*"),
            Rule(timm + "mlp.*", ours + "mlp.*"),
            Rule(timm + "attn.rel_pos.relative_position_bias_table", ours + "mixer.relative_position_bias_table",
                 TF_RELATIVE_POSITION_TABLE),
            *_window_attention_rules(timm + "attn.", ours + "mixer."),
        ]
    return tuple(rules)


def _resnet_rules() -> tuple[Rule, ...]:
    block, zoo = "layer{s+1}.{b}.", "stages.{s}.blocks.{b}."
    return (
        Rule("conv1.*", "stem.conv.0.*"),
        Rule("bn1.*", "stem.conv.1.*"),
        Rule(block + "conv1.*", zoo + "reduce.0.*"),
        Rule(block + "bn1.*", zoo + "reduce.1.*"),
        Rule(block + "conv2.*", zoo + "conv.0.*"),
        Rule(block + "bn2.*", zoo + "conv.1.*"),
        Rule(block + "conv3.*", zoo + "expand.0.*"),
        Rule(block + "bn3.*", zoo + "expand.1.*"),
        Rule(block + "downsample.{i}.*", zoo + "shortcut.{i}.*"),
        Rule("fc.*", "head.fc.*"),
    )


WEIGHT_MAPS: dict[str, WeightMap] = {
    "convnext_t": WeightMap("convnext_tiny", (
        Rule("stem.0.*", "stem.conv.*"),
        Rule("stem.1.*", "stem.post_norm.*"),
        Rule("stages.{s}.downsample.0.*", "stages.{s}.downsample.pre_norm.*"),
        Rule("stages.{s}.downsample.1.*", "stages.{s}.downsample.conv.*"),
        Rule("stages.{s}.blocks.{b}.conv_dw.*", "stages.{s}.blocks.{b}.dwconv.*"),
        Rule("stages.{s}.blocks.{b}.norm.*", "stages.{s}.blocks.{b}.norm.*"),
        Rule("stages.{s}.blocks.{b}.mlp.*", "stages.{s}.blocks.{b}.mlp.*"),
        Rule("stages.{s}.blocks.{b}.gamma", "stages.{s}.blocks.{b}.layer_scale.scale"),
        Rule("head.norm.*", "head.norm.*"),
        Rule("head.fc.*", "head.fc.*"),
    )),
    "caformer_s18": WeightMap("caformer_s18", _metaformer_rules(conv_stages=(0, 1))),
    "convformer_s18": WeightMap("convformer_s18", _metaformer_rules(conv_stages=(0, 1, 2, 3))),
    "swin_t": WeightMap("swin_tiny_patch4_window7_224", (
        Rule("patch_embed.proj.*", "stem.conv.*"),
        Rule("patch_embed.norm.*", "stem.post_norm.*"),
        Rule("layers.{s}.downsample.*", "stages.{s}.downsample.*"),
        Rule("layers.{s}.blocks.{b}.norm1.*", "stages.{s}.blocks.{b}.norm1.*"),
        Rule("layers.{s}.blocks.{b}.norm2.*", "stages.{s}.blocks.{b}.norm2.*"),
        Rule("layers.{s}.blocks.{b}.mlp.*", "stages.{s}.blocks.{b}.mlp.*"),
        *_window_attention_rules("layers.{s}.blocks.{b}.attn.", "stages.{s}.blocks.{b}.mixer."),
        Rule("norm.*", "head.norm.*"),
        Rule("head.fc.*", "head.fc.*"),
    )),
    # The zoo genome makes the TensorFlow release's choices (padding: same, act: gelu_tanh, BatchNorm eps 1e-3),
    # so the published weights give the published model's outputs.
    "maxvit_t": WeightMap("maxvit_tiny_tf_224", _maxvit_rules()),
    "mambaout_t": WeightMap("mambaout_tiny", (
        Rule("stem.conv1.*", "stem.conv1.*"),
        Rule("stem.norm1.*", "stem.norm1.*"),
        Rule("stem.conv2.*", "stem.conv2.*"),
        Rule("stem.norm2.*", "stem.norm2.*"),
        Rule("stages.{s}.downsample.conv.*", "stages.{s}.downsample.conv.*"),
        Rule("stages.{s}.downsample.norm.*", "stages.{s}.downsample.post_norm.*"),
        Rule("stages.{s}.blocks.{b}.*", "stages.{s}.blocks.{b}.*"),
        Rule("head.norm.*", "head.norm.*"),
        Rule("head.pre_logits.fc.*", "head.fc1.*"),
        Rule("head.pre_logits.norm.*", "head.hidden_norm.*"),
        Rule("head.fc.*", "head.fc2.*"),
    )),
    "deit_s": WeightMap("deit_small_patch16_224", (
        Rule("patch_embed.proj.*", "stem.conv.*"),
        Rule("pos_embed", "stem.pos_embed", POS_EMBED_GRID),
        Rule("blocks.{b}.norm1.*", "stages.0.blocks.{b}.norm1.*"),
        Rule("blocks.{b}.norm2.*", "stages.0.blocks.{b}.norm2.*"),
        Rule("blocks.{b}.attn.*", "stages.0.blocks.{b}.mixer.*"),
        Rule("blocks.{b}.mlp.*", "stages.0.blocks.{b}.mlp.*"),
        Rule("norm.*", "head.norm.*"),
        Rule("head.*", "head.fc.*"),
    ), dropped=(("cls_token", "the zoo genome pools tokens by average instead of a class token"),),
        note="the zoo genome has no class token: it averages the patch tokens (timm's class_token=False, "
             "global_pool='avg', fc_norm=False); a published DeiT-S checkpoint loads (its class token and that "
             "token's position are dropped), but classifies through the class token, so its accuracy does not "
             "carry over without fine-tuning"),
    "resnet50": WeightMap("resnet50", _resnet_rules()),
}


def weight_map(name: str) -> WeightMap:
    """The mapping for zoo genome ``name``; a clear InputError if there is none."""
    from nas.io import zoo_names

    if name.startswith("zoo:"):
        name = name[4:]
    if name not in WEIGHT_MAPS:
        if name not in zoo_names():
            raise InputError(f"unknown zoo genome {name!r}; genomes with a weight mapping: {', '.join(WEIGHT_MAPS)}")
        raise InputError(f"zoo genome {name!r} has no weight mapping yet; mapped: {', '.join(WEIGHT_MAPS)}")
    return WEIGHT_MAPS[name]


# ---------------------------------------------------------------------------------------------------------------
# Reading checkpoint files.

def read_checkpoint(path: str | Path) -> StateDict:
    """A state dict from a ``.safetensors`` file, or a torch file read with ``weights_only=True`` (unwrapping the
    ``state_dict``/``model`` nesting trainers use). Anything else is one InputError line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such checkpoint file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same bad input
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "weights_only" in str(err) or "Unsupported global" in str(err):
            reason = "it holds Python objects besides tensors, which are not loaded (weights_only)"
        raise InputError(f"{path}: not a readable checkpoint ({reason[:200]})") from None
    for key in NESTED_KEYS:
        if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise InputError(f"{path}: not a checkpoint of tensors (expected a state dict)")
    # DataParallel / torch.compile wrappers prefix every key.
    for prefix in ("module.", "_orig_mod."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return dict(state)


@functools.lru_cache(maxsize=None)
def _reference_model(name: str) -> nn.Module:
    """The zoo genome built on the meta device, once per process: shapes and module attributes only."""
    from nas.io import load_genome
    from nas.network import Network  # not nas.compiler, which imports this module to load weights

    with torch.device("meta"):  # no memory, no init
        return Network(load_genome(f"zoo:{name}").to_dict())


# ---------------------------------------------------------------------------------------------------------------
# Mapping.

def convert_checkpoint(name: str, state: Mapping[str, Tensor], *, source: str = "checkpoint") -> StateDict:
    """The zoo genome ``name``'s state dict from a timm checkpoint's ``state``. Raises InputError naming the keys
    that do not map, the zoo keys left without a value, or a parameter whose shapes disagree."""
    spec = weight_map(name)
    name = name.removeprefix("zoo:")
    model = _reference_model(name)
    expected = model.state_dict()
    derived = [re.compile(p) for p in DERIVED_BUFFERS]
    dropped = [re.compile(p) for p, _ in spec.dropped]
    converted: StateDict = {}
    origin: dict[str, str] = {}
    unmapped: list[str] = []
    for key, tensor in state.items():
        if any(p.search(key) for p in derived) or any(p.fullmatch(key) for p in dropped):
            continue
        for rule in spec.rules:
            target = _translate(key, rule.timm, rule.zoo)
            if target is not None:
                break
        else:
            unmapped.append(key)
            continue
        if target not in expected:  # a rule's pattern matched, but the genome has no such parameter
            unmapped.append(key)
            continue
        if rule.layout is not SAME:
            try:
                tensor = rule.layout.to_zoo(tensor, _owner(model, target))
            except (IndexError, RuntimeError):  # a tensor of too few dimensions for the layout: an internal error
                raise InputError(f"{source}: {printable(key)} has shape {tuple(tensor.shape)}; zoo:{name}'s "
                                 f"{target} needs {tuple(expected[target].shape)}") from None
        converted[target] = tensor
        origin[target] = key
    if unmapped:
        raise InputError(f"{source}: {len(unmapped)} key(s) do not map onto zoo:{name} (is it a checkpoint of "
                         f"timm's {spec.reference}?): {_shown(unmapped)}")
    check_state(expected, converted, f"{source} -> zoo:{name}", origin)
    return converted


def to_reference(name: str, state: Mapping[str, Tensor]) -> StateDict:
    """The inverse of :func:`convert_checkpoint`: a zoo model's state dict in the timm model's layout."""
    spec = weight_map(name)
    model = _reference_model(name.removeprefix("zoo:"))
    out: StateDict = {}
    for key, tensor in state.items():
        for rule in spec.rules:
            target = _translate(key, rule.zoo, rule.timm)
            if target is not None:
                out[target] = rule.layout.to_timm(tensor, _owner(model, key)) if rule.layout is not SAME else tensor
                break
        else:
            raise InputError(f"zoo:{name}: no rule maps {key} back to timm's {spec.reference}")
    return out


def check_state(expected: Mapping[str, Tensor], given: Mapping[str, Tensor], source: str,
                origin: Mapping[str, str] | None = None) -> None:
    """Every expected key given once, with the expected shape; else one InputError naming what is wrong."""
    unexpected = [k for k in given if k not in expected]
    if unexpected:
        raise InputError(f"{source}: {len(unexpected)} key(s) the model does not have: {_shown(unexpected)}")
    missing = [k for k in expected if k not in given]
    if missing:
        raise InputError(f"{source}: {len(missing)} parameter(s) of the model have no value: {_shown(missing)}")
    for key, tensor in given.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            came = f" (from {printable(origin[key])})" if origin and origin.get(key, key) != key else ""
            raise InputError(f"{source}: shape mismatch for {key}{came}: the weights give "
                             f"{tuple(tensor.shape)}, the model needs {tuple(expected[key].shape)}")


def load_weights(model: nn.Module, weights: str | Path | Mapping[str, Tensor], source: str | None = None) -> nn.Module:
    """Load zoo-layout ``weights`` (a state dict, or a ``.pt``/``.safetensors`` file such as ``nas zoo weights``
    writes) into ``model``, after checking every key and shape; ``source`` names them in errors."""
    source = source or (str(weights) if isinstance(weights, (str, Path)) else "weights")
    state = read_checkpoint(weights) if isinstance(weights, (str, Path)) else dict(weights)
    check_state(model.state_dict(), state, source)
    model.load_state_dict(state)
    return model


def save_weights(state: Mapping[str, Tensor], path: str | Path) -> Path:
    """Write a state dict as ``.safetensors`` (by suffix) or a torch file that ``weights_only`` loading reads."""
    path = Path(path)
    tensors = {k: v.contiguous() for k, v in state.items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        with replacing(path) as tmp:
            save_file(tensors, str(tmp))
    else:
        with replacing(path) as tmp:
            torch.save(tensors, tmp)
    return path
