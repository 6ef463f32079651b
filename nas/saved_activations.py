"""What autograd keeps for the backward pass, per block type: the tensors (their sizes in float32 elements per
image, one entry per storage), from the block's config and input shape; no model is built. ``nas.memory`` sums
them over a genome's graph for the training estimate, and sorts them by size for the CPU allocator's share.

A rule counts every tensor the block's forward saves for backward, once per storage: its input when its first
op saves it (a linear, a conv, a norm), each intermediate map some later op needs (a norm's input, an
activation's input or output, both sides of a product), and the extra maps an op makes to save (a permuted copy
before a linear). It counts what CPU autograd keeps in torch 2.x (``tests/test_memory.py`` checks every rule
against the tensors autograd actually saves): the fused attention kernel keeps q, k, v, its output and one
log-sum-exp per query, not the score matrix, unless the attention takes a learned bias or a mask, which runs
the unfused path that keeps the softmax. Terms that do not grow with the batch (index buffers, BatchNorm
statistics) are left out; an int64 index or a complex value counts as two float32 elements.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from blocks.base import BlockConfig, Shape, conv_out
from blocks.gated import gated_widths
from blocks.layers import pads_each_input, same_padding, scaled_width
from blocks.mobile import mbconv_mid
from blocks.modulation import gnconv_widths
from blocks.norm import LayerNormConfig
from blocks.ssm import auto_dt_rank

# Maps an activation keeps, per element of its input: (maps it saves itself, whether one of them is its output).
# GELU (exact or tanh), SiLU, hardswish and ReLU6 save their input; ReLU, sigmoid and tanh their output, which the
# next layer saves too (one storage); StarReLU (s * relu(x)^2 + b) keeps relu(x) and its square; SquaredReLU keeps
# relu(x).
ACTIVATIONS: dict[str, tuple[int, bool]] = {
    "identity": (0, False), "relu": (1, True), "sigmoid": (1, True), "tanh": (1, True), "relu6": (1, False),
    "gelu": (1, False), "gelu_tanh": (1, False), "silu": (1, False), "hardswish": (1, False),
    "squared_relu": (1, False), "star_relu": (2, False),
}


Tensors = list[int]  # sizes in elements per image, one entry per tensor (storage)


def act_maps(act: str, elements: int, next_saves: bool = True) -> Tensors:
    """The tensors kept by an activation of ``elements`` inputs and by the op after it, when that op saves the
    activation's output (a linear or a conv does; a residual add or a pooling does not)."""
    own, keeps_output = ACTIVATIONS.get(act, (1, False))
    return [elements] * (own + (next_saves and not keeps_output))


def _map(shape: Shape, channels: int | None = None) -> int:
    """Elements of a (channels, H, W) map at ``shape``'s size, ``shape``'s own channels by default."""
    c, h, w = shape
    return (c if channels is None else channels) * h * w


def _padded(shape: Shape, kernel: int, stride: int, padding: Any) -> int:
    """Elements of the padded copy of a ``shape`` input that a conv padded as TensorFlow's "same" keeps instead of
    its input (blocks.layers.SameConv2d); 0 where the conv pads inside itself or the input needs no pad."""
    if not pads_each_input(padding, kernel, stride):
        return 0
    (top, bottom), (left, right) = (same_padding(size, kernel, stride) for size in shape[1:])
    if not (top or bottom or left or right):
        return 0
    return shape[0] * (shape[1] + top + bottom) * (shape[2] + left + right)


# ----------------------------------------------------------------------------------------------------------
# The rules: config, input shape, output channels -> the tensors autograd keeps, input first. By type name.

Rule = Callable[[Any, Shape, int], Tensors]
RULES: dict[str, Rule] = {}


def rule(*types: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        for name in types:
            RULES[name] = fn
        return fn
    return register


def network_saved_tensors(nodes: list[tuple[BlockConfig, Shape, int]]) -> Tensors:
    """The tensors autograd keeps for a chain of blocks (config, input shape, output channels), each once: a
    block whose last activation keeps its output (a ReLU) hands the next block an input already kept."""
    found: Tensors = []
    kept = 0
    for cfg, shape, out in nodes:
        tensors = saved_tensors(cfg, shape, out)
        found += tensors[1:] if kept and tensors and tensors[0] == kept else tensors
        kept = _map(cfg.out_shape(shape, out)) if _keeps_output(cfg) else 0
    return found


def _keeps_output(cfg: BlockConfig) -> bool:
    """Whether a block's last op keeps its output: an activation that saves its result ends it."""
    result_saved = ACTIVATIONS.get(getattr(cfg, "act", "identity"), (0, False))[1]
    if cfg.type == "conv":
        return result_saved and not cfg.pos_embed
    if cfg.type == "resnet":
        return result_saved and not cfg.pool
    return cfg.type == "bottleneck" and result_saved


def saved_tensors(cfg: BlockConfig, shape: Shape, out: int) -> Tensors:
    """The tensors autograd keeps for ``cfg`` run on a ``shape`` input with ``out`` output channels, in
    elements per image. A type without a rule (a block registered outside this package) is estimated as its
    input, its output and twice its largest temporary (``workspace``): about what a linear-activation-linear
    block keeps."""
    found = RULES.get(cfg.type)
    if found is None:
        return [_map(shape), _map(cfg.out_shape(shape, out))] + [cfg.workspace(shape, out)] * 2
    return [int(n) for n in found(cfg, shape, out) if n]


def saved_elements(cfg: BlockConfig, shape: Shape, out: int) -> int:
    """Elements per image autograd keeps for ``cfg`` (``saved_tensors`` summed)."""
    return sum(saved_tensors(cfg, shape, out))


# Norms keep their input; LayerNorm also a mean and an inverse deviation per token.
@rule("layernorm")
def _layernorm(cfg, shape, out):
    return [_map(shape), shape[1] * shape[2], shape[1] * shape[2]]


@rule("groupnorm", "batchnorm")
def _norm(cfg, shape, out):
    return [_map(shape)]


# Channel mixers ------------------------------------------------------------------------------------------
def _hidden(shape: Shape, ratio: float) -> int:
    return _map(shape, scaled_width(shape[0], ratio))


@rule("mlp")
def _mlp(cfg, shape, out):
    return [_map(shape)] + act_maps(cfg.act, _hidden(shape, cfg.ratio))


@rule("convffn")
def _convffn(cfg, shape, out):
    hidden = _hidden(shape, cfg.ratio)
    return [_map(shape), hidden] + act_maps(cfg.act, hidden)  # fc1's output feeds the conv


@rule("glu")
def _glu(cfg, shape, out):
    hidden = _hidden(shape, cfg.ratio)  # fc1's output (gate and value) is one tensor; then act(gate), the product
    return [_map(shape), 2 * hidden] + [hidden] * (cfg.act != "identity") + [hidden]


@rule("convglu")
def _convglu(cfg, shape, out):
    hidden = _hidden(shape, cfg.ratio)
    return [_map(shape), 2 * hidden] + act_maps(cfg.act, hidden) + [hidden]


@rule("channel_aggregation")
def _channel_aggregation(cfg, shape, out):
    c, h, w = shape
    hidden = _map(shape, cfg._hidden(c))
    # fc1's output feeds the conv; the activated map feeds decompose; decompose's one channel its activation;
    # x - act(decompose(x)) the sigma product; the sum fc2
    return ([_map(shape), hidden] + act_maps(cfg.act, hidden) + act_maps(cfg.act, h * w, next_saves=False)
            + [hidden, hidden])


# Token mixers --------------------------------------------------------------------------------------------
@rule("identity", "random")  # a frozen mixing matrix needs no input to pass gradients back
def _nothing(cfg, shape, out):
    return []


@rule("dwconv", "pooling", "inception")
def _input_only(cfg, shape, out):
    return [_map(shape)]


@rule("largekernel")
def _largekernel(cfg, shape, out):
    return [_map(shape)] * (2 + len(cfg.branches))  # each branch's conv output feeds its BatchNorm


@rule("sepconv")
def _sepconv(cfg, shape, out):
    mid = _hidden(shape, cfg.expansion)
    return [_map(shape)] + act_maps(cfg.act1, mid) + act_maps(cfg.act2, mid)


@rule("shift_mlp")
def _shift_mlp(cfg, shape, out):  # the shifted copy, not the activation's output, feeds fc2
    return [_map(shape)] + act_maps(cfg.act, _map(shape), next_saves=False) + [_map(shape)]


@rule("token_mlp")
def _token_mlp(cfg, shape, out):
    return [_map(shape)] + act_maps(cfg.act, shape[0] * cfg._hidden(shape))


@rule("global_filter")
def _global_filter(cfg, shape, out):
    c, h, w = shape
    return [_map(shape), 2 * c * h * (w // 2 + 1)]  # and the complex spectrum the filter multiplies


@rule("focal_modulation")
def _focal(cfg, shape, out):
    c, h, w = shape
    f_out = (2 * c + cfg.focal_level + 1) * h * w  # q, context and gates: one tensor
    levels = act_maps(cfg.act, _map(shape)) * cfg.focal_level
    return [_map(shape), f_out] + levels + [_map(shape)] * 3  # + the summed context, h's output, q * h


@rule("gnconv")
def _gnconv(cfg, shape, out):
    widths = gnconv_widths(shape[0], cfg.order)
    # proj_in's output; the scaled branches; each product's output, and the projections the products take
    return ([_map(shape), _map(shape, 2 * shape[0]), _map(shape, sum(widths))]
            + [_map(shape, w) for w in widths] + [_map(shape, w) for w in widths[1:]])


@rule("lka")
def _lka(cfg, shape, out):
    m = _map(shape)
    gate = act_maps(cfg.act, m) + [m] if cfg.gated else []  # proj_1's activation; u * attn's output
    return [m] + gate + [m] * 3  # conv0, the dilated conv and conv1 outputs


@rule("scale_aware_modulation")
def _sam(cfg, shape, out):
    m, expanded = _map(shape), _map(shape) * cfg.expand_ratio
    # x, s(x), the stacked scales, proj1's output, v(x), their product; proj0's output and its BatchNorm
    return [m] * 6 + [expanded] + act_maps(cfg.act, expanded)


@rule("gated_aggregation")
def _gated_aggregation(cfg, shape, out):
    m = _map(shape)
    # x; x - mean for sigma (the 1x1 mean keeps nothing); the value activation, whose output gate and dw_conv0
    # read; dw_conv0's output; pw_conv's input; the gate's and the value's activations, both sides of their
    # product; the product for proj_2
    return [m, m] + act_maps(cfg.act, m) + [m, m] + act_maps(cfg.act, m) * 2 + [m]


@rule("attention")
def _attention(cfg, shape, out):
    c, h, w = shape
    heads, _ = cfg.heads_of(c)
    inner = _map(shape, cfg.inner(c))
    # input (or its window copy), q k v (one tensor), the fused kernel's output and log-sum-exp
    found = [_map(shape), 3 * inner, inner, heads * h * w]
    return found + [inner] * (cfg.window is not None) + [inner] * (cfg.local_conv is not None)


@rule("single_head_attention")
def _single_head_attention(cfg, shape, out):
    c, h, w = shape
    tokens, partial = h * w, cfg.partial(c)
    qkv = tokens * (2 * cfg.qk_dim + partial)
    # the channel split's contiguous copy and its GroupNorm output, q k v before and after their BatchNorm; q and
    # k are narrower than v, so the CPU kernel takes the unfused path: scaled copies of q and k, and the softmax;
    # then the joined map's ReLU output and the projection's BatchNorm input
    return ([tokens * partial] * 2 + [qkv] * 2 + [2 * tokens * cfg.qk_dim, tokens * tokens]
            + [_map(shape)] * 2)


@rule("conv_attention")
def _conv_attention(cfg, shape, out):
    c, h, w = shape
    heads, _ = cfg.heads_of(c)
    inner, tokens, keys = cfg.inner(c), h * w, cfg.keys(shape)
    # the input (all three convs read it); each conv's output (its BatchNorm's input) and the channels-last
    # copy its linear reads; q, k and v; the fused kernel's output (laid out token-major, so proj reads it as
    # it is) and log-sum-exp
    return ([_map(shape)] + [tokens * c, keys * c, keys * c] * 2 + [inner * tokens, inner * keys, inner * keys]
            + [inner * tokens, heads * tokens])


@rule("glmix")
def _glmix(cfg, shape, out):
    c, h, w = shape
    heads, _ = cfg.heads_of(c)
    inner, tokens, slots = cfg.inner(c), h * w, cfg.slots
    m = tokens * c
    # the slots' normalisation: pooled slots and their norm (learned ones are the same for every image)
    init = [slots * c, slots, slots] if cfg.slot_init == "pool" else [slots, slots]
    # the input; the tokens' norm, normalised and scaled copies; the normalised slots, the clustering softmax, the
    # clustered slots; the slot attention's q k v, log-sum-exp and output; the dispatching softmax and the
    # attended slots; the local branch's depthwise input and its channels-last copy
    return ([m] + init + [tokens, tokens, m, m] + [slots * c, slots * tokens, slots * c]
            + [3 * slots * inner, heads * slots, slots * inner] + [tokens * slots, slots * c]
            + [m, m] * (cfg.local_kernel is not None))


@rule("outlook_attention")
def _outlook_attention(cfg, shape, out):
    c, h, w = shape
    windows, window = cfg._windows(shape), cfg.kernel**2
    heads, _ = cfg.heads_of(c)
    # the input (v's and the pool's), the unfolded values, the softmax, the folded map proj keeps, and the
    # pooled map the logits layer keeps when the positions are pooled
    return ([_map(shape), windows * window * c, heads * windows * window**2, _map(shape)]
            + [windows * c] * (cfg.stride > 1))


@rule("window_attention")
def _window_attention(cfg, shape, out):
    c, h, w = shape
    heads, _ = cfg.heads_of(c)
    inner = _map(shape, cfg.inner(c))
    window = min(cfg.window, h, w)
    found = [_map(shape), 3 * inner, inner]  # the windowed copy, q k v, the attention output
    if cfg.rel_pos or (cfg.shift and min(h, w) > cfg.window):  # a bias: the unfused path keeps the softmax
        scaled = [] if heads > 1 and window == h == w else [inner, inner]  # and scaled copies of q and k
        return found + scaled + [heads * h * w * window**2]
    return found + [heads * h * w] + [inner] * (heads > 1)  # + log-sum-exp; the heads joined for proj


@rule("channel_attention")
def _channel_attention(cfg, shape, out):
    heads, head_dim = cfg.heads_of(shape[0])
    inner = _map(shape, cfg.inner(shape[0]))
    # input; the batched matmuls keep contiguous copies of k * scale, v and q; the softmax; proj's input
    return [_map(shape), inner, inner, inner, heads * head_dim**2, inner]


@rule("neighborhood_attention")
def _neighborhood(cfg, shape, out):
    c, h, w = shape
    heads, _ = cfg.heads_of(c)
    inner = _map(shape, cfg.inner(c))
    span = cfg.kernel**2
    q = 3 * inner if heads == 1 else inner  # q is a view of the qkv output with one head, else a copy
    return [_map(shape), q, span * inner, span * inner, inner, heads * h * w]  # + gathered keys and values


@rule("reduction_attention")
def _reduction(cfg, shape, out):
    c, h, w = shape
    heads, _ = cfg.heads_of(c)
    inner = cfg.inner(c)
    found = [_map(shape), _map(shape, inner), _map(shape, inner), heads * h * w]  # x, q, the output, its lse
    if cfg.sr_ratio > 1:
        reduced = (c, h // cfg.sr_ratio, w // cfg.sr_ratio)
        norm = cfg.norm or LayerNormConfig(eps=1e-5)  # the module's default
        return found + saved_tensors(norm, reduced, c) + [_map(reduced), _map(reduced, 2 * inner)]
    return found + [_map(shape, 2 * inner)]  # k and v: one tensor


@rule("ss2d")
def _ss2d(cfg, shape, out):
    c, h, w = shape
    tokens, width = h * w, scaled_width(c, cfg.ratio, "floor")
    rank, state = auto_dt_rank(c, cfg.dt_rank), cfg.d_state
    wide = width * tokens
    # in_proj's output, the conv output, the 4-direction copy, x_proj's output, the scan's delta, B and C
    found = [_map(shape), (2 if cfg.gate else 1) * wide, wide, 4 * wide, 4 * tokens * (rank + 2 * state),
             4 * wide, 4 * tokens * state, 4 * tokens * state]
    found += [wide, wide] + [wide, wide] * cfg.gate  # the norm's input and output; silu(z) and the product
    return found + _broadcast_projections(4, width, rank, state)


@rule("mamba", "vim")
def _mamba(cfg, shape, out):
    c, h, w = shape
    tokens, k, width = h * w, cfg.directions, scaled_width(c, cfg.expand, "floor")
    wide = width * tokens
    rank, state = auto_dt_rank(c, cfg.dt_rank), cfg.d_state
    # in_proj's output (x, z), silu(z), the scan output and the gated product; for the k directions the padded
    # input, the conv output and its activation, x_proj's output, the scan's delta, B and C
    found = [_map(shape), 2 * wide, wide, wide, wide]
    found += [k * wide] * 3 + [k * tokens * (rank + 2 * state), k * wide, k * tokens * state, k * tokens * state]
    return found + (_broadcast_projections(k, width, rank, state) if k > 1 else [])


def _broadcast_projections(directions: int, width: int, rank: int, state: int) -> Tensors:
    """Per-direction projections are batched matmuls whose (directions, width, ...) weights autograd keeps
    expanded to the batch: a copy of x_proj and of dt_proj per image."""
    return [directions * width * (rank + 2 * state), directions * width * rank]


# Blocks --------------------------------------------------------------------------------------------------
def _scale(value: float | None, shape: Shape) -> Tensors:
    return [_map(shape)] if value is not None else []  # layer scale keeps its input


@rule("metaformer")
def _metaformer(cfg, shape, out):
    c = shape[0]
    found = saved_tensors(cfg.norm, shape, c) + saved_tensors(cfg.mixer, shape, c) + _scale(cfg.layer_scale, shape)
    if cfg.mlp is not None:
        found += (saved_tensors(cfg.norm, shape, c) + saved_tensors(cfg.mlp, shape, c)
                  + _scale(cfg.layer_scale, shape))
    return found  # res_scale keeps the block input, which the norm keeps already


@rule("cpe_metaformer")
def _cpe_metaformer(cfg, shape, out):
    # each position encoding's conv keeps its input; the rest is the MetaFormer block's
    return [_map(shape)] * cfg._sub_blocks() + _metaformer(cfg, shape, out)


@rule("glnet")
def _glnet(cfg, shape, out):
    # the positional encoding's conv keeps the block input (which GLMix also pools its slots from); the rest is
    # the MetaFormer block's
    return [_map(shape)] * (cfg.pos_conv is not None) + _metaformer(cfg, shape, out)


@rule("sequence")
def _sequence(cfg, shape, out):
    return [n for _, block, site in cfg._sites(shape, out) for n in saved_tensors(block, site, out)]


@rule("convnext")
def _convnext(cfg, shape, out):
    c = shape[0]
    return ([_map(shape)] + saved_tensors(cfg.norm, shape, c) + saved_tensors(cfg.mlp, shape, c)
            + _scale(cfg.layer_scale, shape))


@rule("metanext")
def _metanext(cfg, shape, out):
    c = shape[0]
    return (saved_tensors(cfg.mixer, shape, c) + saved_tensors(cfg.norm, shape, c)
            + saved_tensors(cfg.mlp, shape, c) + _scale(cfg.layer_scale, shape))


@rule("gfnet")
def _gfnet(cfg, shape, out):
    c = shape[0]
    return (saved_tensors(cfg.norm, shape, c) + saved_tensors(cfg.mixer, shape, c) + saved_tensors(cfg.norm, shape, c)
            + saved_tensors(cfg.mlp, shape, c) + _scale(cfg.layer_scale, shape))


@rule("gated")
def _gated(cfg, shape, out):
    hidden_width, _ = gated_widths(shape[0], cfg.expansion, cfg.conv_ratio)
    hidden = _map(shape, hidden_width)
    # the norm, fc1's input and output; act(gate), the joined value and their product
    return (saved_tensors(cfg.norm, shape, shape[0]) + [_map(shape), 2 * hidden]
            + [hidden] * (cfg.act != "identity") + [hidden, hidden])


@rule("unireplknet")
def _unireplknet(cfg, shape, out):
    c = shape[0]
    m, hidden = _map(shape), _hidden(shape, cfg.ratio)
    found = saved_tensors(cfg.mixer, shape, c) + [m] + [m] * (2 if cfg.se else 1)  # BatchNorm, squeeze-excite
    found += act_maps(cfg.act, hidden) + [hidden, hidden] * cfg.grn  # GRN keeps x * relative and its output
    return found + [m] + _scale(cfg.layer_scale, shape)  # the output BatchNorm


def _conv_bn(act: str, elements: int, next_saves: bool = True) -> Tensors:
    """conv -> BatchNorm -> act: the conv output (BatchNorm's input) and what the activation keeps."""
    return [elements] + act_maps(act, elements, next_saves)


@rule("mbconv")
def _mbconv(cfg, shape, out):
    o_c, o_h, o_w = cfg.out_shape(shape, out)
    mid = mbconv_mid(shape[0], out, cfg.expansion, cfg.expand_from)
    padded = _padded((mid, *shape[1:]), cfg.kernel, cfg.stride, cfg.padding)  # the depthwise conv's input, padded
    found = [_map(shape)] * (1 + cfg.pre_norm)  # the input, and the pre-norm's output, each kept by the next op
    if cfg.expansion != 1:
        found += _conv_bn(cfg.act, _map(shape, mid), next_saves=not padded)
    elif padded and (cfg.pre_norm or not (cfg.shortcut == "pool_conv" and cfg.stride > 1)):
        found.pop()  # the depthwise conv keeps its padded copy instead (the shortcut's pooling keeps the input)
    found += [padded] if padded else []
    strided = mid * o_h * o_w
    found += _conv_bn(cfg.act, strided) + [strided] * bool(cfg.se)  # the excited copy feeds the projection
    found += [o_c * o_h * o_w] * cfg.out_norm
    if cfg.shortcut == "pool_conv" and cfg.stride != 1 and shape[0] != out:
        found.append(_map((shape[0], o_h, o_w)))  # the pooled input the shortcut's 1x1 conv keeps
    return found


@rule("bottleneck")
def _bottleneck(cfg, shape, out):
    o_c, o_h, o_w = cfg.out_shape(shape, out)
    mid, o_map = cfg._mid(out), o_c * o_h * o_w
    found = [_map(shape)] + _conv_bn(cfg.act, _map(shape, mid)) + _conv_bn(cfg.act, mid * o_h * o_w)
    found += [o_map] * (1 + cfg._projects(shape, out))  # expand's (and the shortcut's) BatchNorm input
    return found + act_maps(cfg.act, o_map, next_saves=False)


@rule("shvit")
def _shvit(cfg, shape, out):
    m, hidden = _map(shape), _map(shape, scaled_width(shape[0], cfg.ffn_ratio, "floor"))
    found = [m, m] + (saved_tensors(cfg.mixer, shape, shape[0]) if cfg.mixer else [])  # dwconv and its BatchNorm
    return found + [m] + _conv_bn("relu", hidden) + [m]  # the FFN: its input, hidden map, output BatchNorm


# Stems and downsamples -----------------------------------------------------------------------------------
@rule("conv")
def _conv_downsample(cfg, shape, out):
    o_shape = cfg.out_shape(shape, out)
    conv_input = _padded(shape, cfg.kernel, cfg.stride, cfg.padding) or _map(shape)  # what the conv keeps
    found = saved_tensors(cfg.pre_norm, shape, shape[0]) + [conv_input] if cfg.pre_norm else [conv_input]
    if cfg.post_norm:
        found += saved_tensors(cfg.post_norm, o_shape, out)
    return found + act_maps(cfg.act, _map(o_shape), next_saves=False)


@rule("shvit_downsample")
def _shvit_downsample(cfg, shape, out):
    blocks = cfg._blocks()
    o_shape = cfg.out_shape(shape, out)
    hidden = cfg._hidden(shape)
    strided = hidden * o_shape[1] * o_shape[2]
    found = saved_tensors(blocks, shape, shape[0]) + [_map(shape)] + _conv_bn(cfg.act, _map(shape, hidden))
    found += _conv_bn(cfg.act, strided, next_saves=not cfg.se)
    if cfg.se:  # the pooled vector, the reduced act, the gate, and the gated map the projection keeps
        reduced = scaled_width(hidden, cfg.se, "floor")
        found += [hidden] + act_maps("relu", reduced) + [hidden, strided]
    return found + [_map(o_shape)] + saved_tensors(blocks, o_shape, out)


@rule("patchify_convs")
def _patchify_convs(cfg, shape, out):
    shapes = cfg._shapes(shape, out)
    found = [_map(shape)]
    for i, s in enumerate(shapes):
        last = i == len(shapes) - 1
        found += _conv_bn("identity" if last else cfg.act, _map(s), next_saves=not last)
    return found


@rule("conv_patch_embed")
def _conv_patch_embed(cfg, shape, out):
    hidden = _map((cfg.hidden, *cfg._sizes(shape)[0]))
    return [_map(shape)] + _conv_bn(cfg.act, hidden) * (1 + cfg.convs)  # the last act's output feeds proj


@rule("patch_merging")
def _patch_merging(cfg, shape, out):
    c, h, w = shape
    merged = (4 * c, (h + 1) // 2, (w + 1) // 2)
    return saved_tensors(cfg.norm, merged, 4 * c) + [_map(merged)]  # the merged copy, the norm's output


@rule("conv_pair")
def _conv_pair(cfg, shape, out):
    mid_shape = (scaled_width(out, cfg.mid_ratio), *conv_out(shape[1:], cfg.kernel, cfg.strides[0], cfg.kernel // 2))
    first = _padded(shape, cfg.kernel, cfg.strides[0], cfg.padding) or _map(shape)  # what each conv keeps
    second = _padded(mid_shape, cfg.kernel, cfg.strides[1], cfg.padding)
    found = [first] + (saved_tensors(cfg.mid_norm, mid_shape, mid_shape[0]) if cfg.mid_norm else [])
    found += act_maps(cfg.act, _map(mid_shape), next_saves=not second) + ([second] if second else [])
    if cfg.post_norm:
        found += saved_tensors(cfg.post_norm, cfg.out_shape(shape, out), out)
    return found


@rule("two_conv")
def _two_conv(cfg, shape, out):
    mid_shape = (scaled_width(out, cfg.mid_ratio, "floor"), *conv_out(shape[1:], cfg.kernel, cfg.stride,
                                                                      cfg.kernel // 2))
    return ([_map(shape)] + saved_tensors(cfg.norm, mid_shape, mid_shape[0]) + act_maps(cfg.act, _map(mid_shape))
            + saved_tensors(cfg.norm, cfg.out_shape(shape, out), out))


@rule("resnet")
def _resnet_stem(cfg, shape, out):
    width = cfg.width or out
    conv_shape = (width, *conv_out(shape[1:], cfg.kernel, cfg.stride, cfg.kernel // 2))
    found = [_map(shape)] + _conv_bn(cfg.act, _map(conv_shape), next_saves=cfg.pool)
    return found + [2 * _map(cfg.out_shape(shape, out))] * cfg.pool  # the max-pool's int64 indices


# Heads ---------------------------------------------------------------------------------------------------
def _pooled(cfg, shape) -> Tensors:
    """A head's norm (on the map, or on the pooled vector) and the pooled features its first layer keeps."""
    c = shape[0]
    if cfg.norm is None:
        return [c]
    return saved_tensors(cfg.norm, shape if cfg.norm_tokens else (c, 1, 1), c) + [c]


@rule("linear")
def _linear_head(cfg, shape, out):
    return _pooled(cfg, shape) + [shape[0]] * (cfg.dropout > 0)  # dropout's mask


@rule("mlp_head")
def _mlp_head(cfg, shape, out):
    hidden = scaled_width(shape[0], cfg.ratio)
    found = _pooled(cfg, shape) + act_maps(cfg.act, hidden, next_saves=cfg.hidden_norm is None)
    if cfg.hidden_norm is not None:
        found += saved_tensors(cfg.hidden_norm, (hidden, 1, 1), hidden) + [hidden]
    return found + [hidden] * (cfg.dropout > 0)


@rule("class_attention")
def _class_attention(cfg, shape, out):
    c, h, w = shape
    tokens = h * w + 1  # with the class token
    every, one = (c, 1, tokens), (c, 1, 1)
    heads = cfg.heads
    mlp = cfg._mlp()
    # per layer: norm1 over every token and its output (k v's and q's input), k and v, the class token's q,
    # attention output and log-sum-exp, then norm2 and the MLP on the class token alone
    block = (saved_tensors(cfg.norm, every, c) + [tokens * c, 2 * tokens * c, c, c, heads]
             + saved_tensors(cfg.norm, one, c) + saved_tensors(mlp, one, c))
    found = block * cfg.depth + saved_tensors(cfg.norm, every, c) + [tokens * c]  # the final norm and its output
    if out and cfg.aux_weight:  # the patch tokens' copy, their logits and the maximum's result
        found += [(tokens - 1) * c, (tokens - 1) * out, out]
    return found


@rule("conv_head")
def _conv_head(cfg, shape, out):
    if not out:  # no classifier: the head only pools
        return []
    return [_map(shape)] + _conv_bn(cfg.act, _map(shape, cfg.width), next_saves=False)
