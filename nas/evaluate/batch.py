"""The proxy batch a search scores untrained networks on when it is given no data."""
from __future__ import annotations

import torch

from nas.data.dataset import channel_statistics
from nas.data.patterns import make_patterns

# Rendering the patterns holds this many float32 images of one channel per image at its peak (the cut's five
# distances and their stack, the textures, the noise): 22, measured at 1024 and 2048 pixels a side.
RENDER_PLANES = 22


def proxy_batch_bytes(channels: int, resolution: int, count: int) -> int:
    """Bytes ``proxy_batch`` holds at its peak: the rendering's planes, or the batch fitted to ``channels``
    beside its centred and its normalised copies, whichever is more (48 planes measured at 16 channels)."""
    return 4 * count * resolution * resolution * max(RENDER_PLANES, 3 * channels)


def proxy_batch(channels: int, resolution: int, num_classes: int, count: int, seed: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` images ``(count, channels, resolution, resolution)`` and labels from the procedural
    ``patterns`` task (``nas.data.patterns``): stripes and checks in one of ten layouts, so the zero-cost scores
    see edges, textures and layout, as in real images, rather than white noise.

    The task's three colour channels are fitted to ``channels``: one is their mean, more repeat them in turn
    (R, G, B, R, ...), two are R and G. Each channel is then normalised by the batch's own mean and standard
    deviation, as ``nas.data.dataset.build_dataset`` normalises a data set by its train split. Labels are the
    pattern labels modulo ``num_classes``. The same arguments give the same batch."""
    images, labels = make_patterns(count, resolution, seed)
    if channels == 1:
        images = images.mean(dim=1, keepdim=True)
    else:
        images = images[:, [c % images.shape[1] for c in range(channels)]]
    mean, std = channel_statistics(images)
    images = (images - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    return images.contiguous(), labels % num_classes
