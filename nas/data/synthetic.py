"""``synthetic``: where is the small square relative to the circle? A task colour statistics cannot solve.

Each image shows a large orange disc and a small cyan square (hues jittered per image) on a dark noisy
background of random colour. The label says where the square sits relative to the disc: ``left``, ``right``,
``above`` or ``below`` (the offset points within 30 degrees of that direction, 0.22 to 0.32 of the image side
away). Sizes, colours and the pair's place in the image are drawn independently of the label, so every class
has the same colour and brightness histogram: a model must find both shapes and compare their positions.
(Horizontal flips would swap ``left`` and ``right``.)

Rendered with torch at any resolution (soft, anti-aliased edges); a seed gives the same images every time.
"""
from __future__ import annotations

import math

import torch

CLASSES = ["left", "right", "above", "below"]
# Unit direction of the square from the disc, per class, in (x, y) image coordinates (y grows downwards).
_DIRECTIONS = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 1.0]])
TRAIN_SIZE, VAL_SIZE = 2000, 500
_DISC_COLOUR, _SQUARE_COLOUR = torch.tensor([0.9, 0.35, 0.25]), torch.tensor([0.3, 0.85, 0.9])


def make_synthetic(count: int, resolution: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` images ``(N, 3, R, R)`` in [0, 1] and their labels, balanced over the four classes."""
    gen = torch.Generator().manual_seed(seed)

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(*shape, generator=gen)

    labels = torch.arange(count) % len(CLASSES)
    labels = labels[torch.randperm(count, generator=gen)]
    # Geometry in units of the image side, so the task reads the same at every resolution.
    radius = uniform(0.09, 0.12, count)
    half_side = uniform(0.04, 0.06, count)
    angle = torch.atan2(_DIRECTIONS[labels, 1], _DIRECTIONS[labels, 0]) + uniform(-1, 1, count) * math.pi / 6
    distance = uniform(0.22, 0.32, count)
    offset = torch.stack([torch.cos(angle), torch.sin(angle)], dim=1) * distance[:, None]
    # Place the disc so that both shapes lie fully inside, with a small border.
    border = radius.maximum(half_side)[:, None] + 0.04
    low = border + (-offset).clamp_min(0)
    high = 1 - border - offset.clamp_min(0)
    disc = low + (high - low) * torch.rand(count, 2, generator=gen)
    square = disc + offset

    coords = (torch.arange(resolution, dtype=torch.float32) + 0.5) / resolution
    y, x = coords.view(1, -1, 1), coords.view(1, 1, -1)
    pixel = 1.0 / resolution
    disc_dist = torch.hypot(x - disc[:, 0, None, None], y - disc[:, 1, None, None])
    disc_mask = ((radius[:, None, None] - disc_dist) / pixel + 0.5).clamp(0, 1)
    square_dist = torch.maximum((x - square[:, 0, None, None]).abs(), (y - square[:, 1, None, None]).abs())
    square_mask = ((half_side[:, None, None] - square_dist) / pixel + 0.5).clamp(0, 1)

    background = uniform(0.0, 0.3, count, 3, 1, 1)
    images = background + 0.05 * torch.randn(count, 3, resolution, resolution, generator=gen)
    for mask, hue in ((disc_mask, _DISC_COLOUR), (square_mask, _SQUARE_COLOUR)):
        colour = (hue.view(1, 3, 1, 1) + uniform(-0.15, 0.15, count, 3, 1, 1)).clamp(0, 1)
        images = images + mask[:, None] * (colour - images)
    return images.clamp(0, 1), labels
