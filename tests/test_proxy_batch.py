"""The default proxy batch: structured images from the ``patterns`` task, fitted to the genome's input."""
from __future__ import annotations

import torch

from nas.data.patterns import make_patterns
from nas.evaluate.batch import proxy_batch
from nas.search.options import SearchOptions
from nas.search.scoring import search_inputs


def test_the_batch_is_normalised_patterns_with_the_genomes_channels_and_classes():
    x, y = proxy_batch(channels=3, resolution=32, num_classes=4, count=12, seed=0)
    assert x.shape == (12, 3, 32, 32) and x.dtype == torch.float32
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-5)
    assert torch.equal(y, make_patterns(12, 32, seed=0)[1] % 4)
    assert y.min() >= 0 and y.max() < 4


def test_channels_are_averaged_to_one_or_repeated_to_more():
    one, _ = proxy_batch(channels=1, resolution=16, num_classes=10, count=4, seed=1)
    five, _ = proxy_batch(channels=5, resolution=16, num_classes=10, count=4, seed=1)
    images, _ = make_patterns(4, 16, seed=1)
    grey = images.mean(dim=1)
    assert one.shape == (4, 1, 16, 16)
    assert torch.allclose(one[:, 0], (grey - grey.mean()) / grey.std(), atol=1e-5)
    assert five.shape == (4, 5, 16, 16)
    assert torch.equal(five[:, 3], five[:, 0]) and torch.equal(five[:, 4], five[:, 1])


def test_the_batch_is_structured_and_seeded():
    x, _ = proxy_batch(channels=3, resolution=32, num_classes=10, count=8, seed=0)
    neighbours = torch.corrcoef(torch.stack([x[..., :-1].flatten(), x[..., 1:].flatten()]))[0, 1]
    assert neighbours > 0.05  # white noise: 0 within 0.01 over these 24k pairs (per-pixel noise keeps it low)
    assert torch.equal(x, proxy_batch(3, 32, 10, 8, seed=0)[0])
    assert not torch.equal(x, proxy_batch(3, 32, 10, 8, seed=1)[0])


def test_a_search_without_data_scores_on_the_proxy_batch():
    space = {"input": {"channels": 1, "resolution": 16}, "num_classes": 3}
    inputs, _ = search_inputs(space, SearchOptions(proxy_batch=6, seed=2))
    x, y = proxy_batch(channels=1, resolution=16, num_classes=3, count=6, seed=2)
    assert torch.equal(inputs.x, x) and torch.equal(inputs.y, y)
