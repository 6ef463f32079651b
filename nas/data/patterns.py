"""``patterns``: which texture lies where? Ten classes that combine a local cue (texture) with a global one
(layout), so that networks which mix tokens only locally and networks which mix them globally fare differently.

Each image is cut into two regions by one of five layouts: a vertical split, a horizontal split, a centre square
in a frame, and the two diagonal splits; the cut is jittered by up to a tenth of the side. One region is filled
with stripes (any orientation), the other with a checkerboard of the same period range; both textures use the
same two colours, drawn per image, in equal shares, so every class has the same colour histogram. The label is
the layout and which region holds the stripes (``vertical/stripes-left``, ...): telling stripes from checks needs
a few pixels of context, placing them needs the whole image.

Rendered with torch at any resolution (periods and cuts are in units of the image side, edges anti-aliased) with
per-pixel noise; a seed gives the same images every time. Flips would swap labels, so it takes no augmentation.
"""
from __future__ import annotations

import math

import torch

LAYOUTS = ["vertical", "horizontal", "centre", "diagonal", "antidiagonal"]
# Per layout, the two regions' names: the label says which of them holds the stripes.
_REGIONS = {"vertical": ("left", "right"), "horizontal": ("top", "bottom"), "centre": ("centre", "frame"),
            "diagonal": ("lower-left", "upper-right"), "antidiagonal": ("upper-left", "lower-right")}
CLASSES = [f"{layout}/stripes-{region}" for layout in LAYOUTS for region in _REGIONS[layout]]
TRAIN_SIZE, VAL_SIZE = 1500, 1000
# Texture period as a fraction of the image side: 3.2 to 5.8 pixels at 32x32.
PERIOD = (0.10, 0.18)
JITTER = 0.1  # how far a cut may move from the middle, as a fraction of the side
NOISE = (0.02, 0.45)  # the per-pixel noise's standard deviation, drawn per image


def make_patterns(count: int, resolution: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` images ``(N, 3, R, R)`` in [0, 1] and their labels, balanced over the ten classes."""
    gen = torch.Generator().manual_seed(seed)

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(*shape, generator=gen)

    labels = torch.arange(count) % len(CLASSES)
    labels = labels[torch.randperm(count, generator=gen)]
    layout, stripes_first = labels // 2, labels % 2 == 0

    coords = (torch.arange(resolution, dtype=torch.float32) + 0.5) / resolution
    y, x = coords.view(1, -1, 1), coords.view(1, 1, -1)
    pixel = 1.0 / resolution
    # Signed distance to the cut, positive inside the first region; one formula per layout, picked per image.
    shift = uniform(-JITTER, JITTER, count, 1, 1)
    half = uniform(0.22, 0.3, count, 1, 1)  # the centre square's half side
    cx, cy = 0.5 + uniform(-JITTER, JITTER, count, 1, 1), 0.5 + uniform(-JITTER, JITTER, count, 1, 1)
    zero = torch.zeros(count, resolution, resolution)
    distances = torch.stack([zero + d for d in (
        (0.5 + shift) - x,                                                # vertical: left is first
        (0.5 + shift) - y,                                                # horizontal: top is first
        half - torch.maximum((x - cx).abs(), (y - cy).abs()),             # centre: the square is first
        (y - x - shift) / math.sqrt(2),                                   # diagonal: below y = x is first
        (1 + shift - x - y) / math.sqrt(2),                               # antidiagonal: above x + y = 1 is first
    )], dim=1)
    distance = distances[torch.arange(count), layout]
    first = (distance / pixel + 0.5).clamp(0, 1)
    stripe_region = torch.where(stripes_first[:, None, None], first, 1 - first)

    period = uniform(*PERIOD, count, 1, 1)
    angle = uniform(0, math.pi, count, 1, 1)
    phase = uniform(0, 1, count, 1, 1)
    along = (x * torch.cos(angle) + y * torch.sin(angle)) / period + phase
    stripes = _square_wave(along, period, pixel)
    check_period = uniform(*PERIOD, count, 1, 1)
    u = x / check_period + uniform(0, 1, count, 1, 1)
    v = y / check_period + uniform(0, 1, count, 1, 1)
    checks = _square_wave(u, check_period, pixel) * _square_wave(v, check_period, pixel)
    checks = checks + (1 - _square_wave(u, check_period, pixel)) * (1 - _square_wave(v, check_period, pixel))
    texture = stripe_region * stripes + (1 - stripe_region) * checks

    dark, light = uniform(0.0, 0.45, count, 3, 1, 1), uniform(0.55, 1.0, count, 3, 1, 1)
    images = dark + texture[:, None] * (light - dark)
    # Noise varies from faint to strong, so accuracy grades with how well a network reads texture through it.
    noise = uniform(*NOISE, count, 1, 1, 1)
    images = images + noise * torch.randn(count, 3, resolution, resolution, generator=gen)
    return images.clamp(0, 1), labels


def _square_wave(t: torch.Tensor, period: torch.Tensor, pixel: float) -> torch.Tensor:
    """1 on the first half of each unit of ``t``, 0 on the second, with edges blurred over about a pixel."""
    edge = pixel / period  # one pixel, in units of t
    frac = t - torch.floor(t)
    rise = (frac / edge + 0.5).clamp(0, 1) * ((0.5 - frac) / edge + 0.5).clamp(0, 1)
    fall = ((frac - 1) / edge + 0.5).clamp(0, 1)  # wraps the rising edge at the start of the next unit
    return (rise + fall).clamp(0, 1)
