"""The attention family (window, grid, neighborhood, spatial-reduction attention) against naive per-token
references written from the papers' definitions, plus Swin's rules and the shape errors a genome author sees.

Every mixer takes and returns channels-last maps (B, H, W, C); ``create("mixer", cfg, dim=, size=)`` builds it.
"""
from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from blocks import CONFIGS, ShapeError, create

DIM, HEADS = 16, 2


def build(config: dict, size=(8, 8), dim=DIM):
    torch.manual_seed(0)
    return create("mixer", CONFIGS["mixer"][config["type"]].model_validate(config).model_dump(), dim=dim, size=size)


def heads_qkv(module, tokens):
    """(heads, n, d) queries, keys and values of (n, C) tokens through the module's qkv projection."""
    qkv = module.qkv(tokens).reshape(len(tokens), 3, module.heads, module.head_dim)
    return qkv.permute(1, 2, 0, 3)


def attend(q, k, v, bias):
    """Softmax attention written out: (heads, n, d) queries against (heads, m, d) keys, additive (heads, n, m)."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + bias
    return scores.softmax(-1) @ v


def merge_heads(x):
    return x.transpose(0, 1).reshape(x.shape[1], -1)


def naive_window_attention(module, x, window, shift=0, grid=False):
    """Loop over windows, listing each window's pixels explicitly. With a shift, two tokens of a window attend
    to each other only if both or neither wrapped around the border in each axis (Swin's regions)."""
    _, h, w, _ = x.shape
    rolled = torch.roll(x, (-shift, -shift), (1, 2))[0]
    out = torch.zeros_like(rolled)
    table = module.relative_position_bias_table
    for wr in range(h // window):
        for wc in range(w // window):
            if grid:  # window (wr, wc) holds pixels spaced h // window apart
                step_h, step_w = h // window, w // window
                pixels = [(i * step_h + wr, j * step_w + wc) for i in range(window) for j in range(window)]
            else:
                pixels = [(wr * window + i, wc * window + j) for i in range(window) for j in range(window)]
            local = [(i, j) for i in range(window) for j in range(window)]  # position within the window
            tokens = torch.stack([rolled[r, c] for r, c in pixels])
            bias = torch.zeros(module.heads, len(pixels), len(pixels))
            for a, (ra, ca) in enumerate(local):
                for b, (rb, cb) in enumerate(local):
                    if table is not None:
                        bias[:, a, b] = table[(ra - rb + window - 1) * (2 * window - 1) + (ca - cb + window - 1)]
                    (pa, qa), (pb, qb) = pixels[a], pixels[b]
                    same_region = ((pa + shift >= h) == (pb + shift >= h)) and ((qa + shift >= w) == (qb + shift >= w))
                    if shift and not same_region:
                        bias[:, a, b] = -100.0
            y = module.proj(merge_heads(attend(*heads_qkv(module, tokens), bias)))
            for (r, c), value in zip(pixels, y):
                out[r, c] = value
    return torch.roll(out, (shift, shift), (0, 1))[None]


@pytest.mark.parametrize(("window", "shift", "partition"), [(4, 0, "block"), (4, 2, "block"), (2, 1, "block"),
                                                             (4, 0, "grid"), (2, 0, "grid")])
def test_window_attention_equals_a_per_window_loop(window, shift, partition):
    module = build({"type": "window_attention", "window": window, "shift": shift, "partition": partition,
                    "heads": HEADS})
    x = torch.randn(1, 8, 8, DIM)
    with torch.no_grad():
        expected = naive_window_attention(module, x, window, shift, grid=partition == "grid")
        torch.testing.assert_close(module(x), expected, rtol=1e-4, atol=1e-5)


def test_block_windows_do_not_see_each_other():
    module = build({"type": "window_attention", "window": 4, "heads": HEADS})
    x = torch.randn(1, 8, 8, DIM)
    y = x.clone()
    y[0, 4:, 4:] += 1.0  # only the bottom-right window changes
    with torch.no_grad():
        a, b = module(x), module(y)
    torch.testing.assert_close(a[0, :4], b[0, :4])
    torch.testing.assert_close(a[0, 4:, :4], b[0, 4:, :4])
    assert not torch.allclose(a[0, 4:, 4:], b[0, 4:, 4:])


def test_a_map_no_larger_than_the_window_is_one_unshifted_window():
    """Swin's rule, as at its last stage (7x7 map, window 7): shift is dropped, the window fits the map, and
    the result is global attention plus a bias."""
    config = CONFIGS["mixer"]["window_attention"](window=7, shift=3, heads=HEADS)
    module = build(config.model_dump(), size=(4, 4))
    assert (module.window, module.shift) == (4, 0)
    assert config.params((DIM, 4, 4), DIM) == sum(p.numel() for p in module.parameters())
    glob = create("mixer", {"type": "attention", "heads": HEADS, "qkv_bias": True, "proj_bias": True}, dim=DIM)
    glob.load_state_dict({k: v for k, v in module.state_dict().items() if k.startswith(("qkv", "proj"))})
    with torch.no_grad():
        module.relative_position_bias_table.zero_()
        x = torch.randn(2, 4, 4, DIM)
        torch.testing.assert_close(module(x), glob(x))


def line_keys(i, length, kernel, dilation):
    """NATTEN's neighbourhood of position i on a line: among the positions of i's dilation group, the
    ``kernel`` centred on i, slid inwards at the ends."""
    group = [p for p in range(length) if p % dilation == i % dilation]
    start = min(max(group.index(i) - kernel // 2, 0), len(group) - kernel)
    return group[start:start + kernel]


@pytest.mark.parametrize(("kernel", "dilation", "size"), [(3, 1, (8, 8)), (5, 1, (7, 9)), (3, 2, (8, 7)),
                                                          (3, 3, (10, 9))])
def test_neighborhood_attention_equals_a_per_pixel_loop(kernel, dilation, size):
    module = build({"type": "neighborhood_attention", "kernel": kernel, "dilation": dilation, "heads": HEADS},
                   size=size)
    h, w = size
    x = torch.randn(1, h, w, DIM)
    expected = torch.zeros(1, h, w, DIM)
    with torch.no_grad():
        q_all, k_all, v_all = heads_qkv(module, x.reshape(h * w, DIM))
        for r in range(h):
            for c in range(w):
                rows, cols = line_keys(r, h, kernel, dilation), line_keys(c, w, kernel, dilation)
                keys = [kr * w + kc for kr in rows for kc in cols]
                # NAT's bias: by the key's offset from the query in its dilation group, in [-(k-1), k-1].
                bias = torch.stack([module.rpb[:, (kr - r) // dilation + kernel - 1, (kc - c) // dilation + kernel - 1]
                                    for kr in rows for kc in cols], -1)[:, None]
                q = q_all[:, r * w + c][:, None]
                y = attend(q, k_all[:, keys], v_all[:, keys], bias)
                expected[0, r, c] = module.proj(merge_heads(y))[0]
        torch.testing.assert_close(module(x), expected, rtol=1e-4, atol=1e-5)


def test_neighborhood_over_the_whole_map_is_global_attention():
    module = build({"type": "neighborhood_attention", "kernel": 5, "heads": HEADS, "rel_pos": False}, size=(5, 5))
    glob = create("mixer", {"type": "attention", "heads": HEADS, "qkv_bias": True, "proj_bias": True}, dim=DIM)
    glob.load_state_dict(module.state_dict())
    x = torch.randn(2, 5, 5, DIM)
    with torch.no_grad():
        torch.testing.assert_close(module(x), glob(x))


def test_reduction_attention_attends_to_a_shrunk_map():
    module = build({"type": "reduction_attention", "sr_ratio": 2, "heads": HEADS})
    x = torch.randn(1, 8, 8, DIM)
    with torch.no_grad():
        tokens = x.reshape(64, DIM)
        reduced = torch.nn.functional.conv2d(x.permute(0, 3, 1, 2), module.sr.weight, module.sr.bias, stride=2)
        reduced = module.norm(reduced.permute(0, 2, 3, 1)).reshape(16, DIM)
        q = module.q(tokens).reshape(64, HEADS, -1).transpose(0, 1)
        k, v = module.kv(reduced).reshape(16, 2, HEADS, -1).permute(1, 2, 0, 3)
        expected = module.proj(merge_heads(attend(q, k, v, torch.zeros(1)))).reshape(1, 8, 8, DIM)
        torch.testing.assert_close(module(x), expected, rtol=1e-4, atol=1e-5)


def test_reduction_ratio_one_is_global_attention():
    module = build({"type": "reduction_attention", "sr_ratio": 1, "heads": HEADS})
    assert module.sr is None and module.norm is None
    glob = create("mixer", {"type": "attention", "heads": HEADS, "qkv_bias": True, "proj_bias": True}, dim=DIM)
    state = module.state_dict()
    glob.load_state_dict({"qkv.weight": torch.cat([state["q.weight"], state["kv.weight"]]),
                          "qkv.bias": torch.cat([state["q.bias"], state["kv.bias"]]),
                          "proj.weight": state["proj.weight"], "proj.bias": state["proj.bias"]})
    x = torch.randn(2, 8, 8, DIM)
    with torch.no_grad():
        torch.testing.assert_close(module(x), glob(x))


def test_patch_merging_concatenates_2x2_neighbourhoods_in_swin_order():
    config = CONFIGS["downsample"]["patch_merging"]()
    merge = create("downsample", config.model_dump(), in_chs=4, out_chs=8)
    x = torch.randn(1, 6, 6, 4)
    expected = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
    with torch.no_grad():
        torch.testing.assert_close(merge(x), merge.reduction(merge.norm(expected)))
    assert config.out_shape((4, 7, 7), 8) == (8, 4, 4) and merge(torch.randn(1, 7, 7, 4)).shape == (1, 4, 4, 8)


@pytest.mark.parametrize(("config", "shape", "field", "message"), [
    ({"type": "window_attention", "window": 3, "heads": 2}, (DIM, 8, 8), "window", "window 3 does not divide the 8x8"),
    ({"type": "window_attention", "window": 3, "partition": "grid", "heads": 2}, (DIM, 8, 8), "window",
     "grid 3 does not"),
    ({"type": "window_attention", "window": 4, "heads": 3}, (DIM, 8, 8), "heads", "3 does not divide width 16"),
    ({"type": "neighborhood_attention", "kernel": 3, "dilation": 3, "heads": 2}, (DIM, 8, 8), "dilation",
     "at least 9x9"),
    ({"type": "neighborhood_attention", "kernel": 9, "heads": 2}, (DIM, 8, 8), "kernel", "this stage's is 8x8"),
    ({"type": "reduction_attention", "sr_ratio": 16, "heads": 2}, (DIM, 8, 8), "sr_ratio", "16 is larger than the 8x8"),
])
def test_shape_errors_name_the_field(config, shape, field, message):
    with pytest.raises(ShapeError) as err:
        CONFIGS["mixer"][config["type"]].model_validate(config).check(shape, shape[0])
    assert err.value.field == field and message in err.value.message


@pytest.mark.parametrize("config", [{"window": 4, "shift": 4}, {"window": 4, "shift": 2, "partition": "grid"}])
def test_bad_shifts_fail_at_load_time(config):
    with pytest.raises(ValidationError):
        CONFIGS["mixer"]["window_attention"].model_validate(config)
