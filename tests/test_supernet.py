"""The weight-sharing supernet (issue #7, first part): every genome of a space runs from one set of largest
weights, and ``extract`` gives a plain network that computes the same thing."""
from __future__ import annotations

import random

import pytest
import torch

from nas.io import read_yaml
from nas.space import instantiate, random_picker
from nas.supernet import Supernet, SupernetCoverageError


@pytest.fixture(scope="module")
def tiny() -> tuple[dict, Supernet]:
    space, _, _ = read_yaml("tiny")
    return space, Supernet.from_space(space, samples=8)


def test_extract_computes_what_the_supernet_computes_for_random_genomes(tiny):
    space, net = tiny
    rng = random.Random(3)
    x = torch.randn(2, 3, 32, 32)
    net.eval()
    for _ in range(6):
        genome = instantiate(space, random_picker(rng))
        net.set_active(genome)
        with torch.no_grad():
            expected = net(x)
            got = net.extract(genome).eval()(x)
        assert torch.allclose(expected, got, atol=1e-5)


def test_a_narrower_genome_reads_the_leading_channels_of_the_same_weights(tiny):
    space, net = tiny
    rng = random.Random(0)
    genomes = [instantiate(space, random_picker(rng)) for _ in range(12)]
    by_width = {g["stages"][0]["width"]: g for g in genomes}
    narrow, wide = by_width[min(by_width)], by_width[max(by_width)]
    small, big = net.sliced(narrow)["stem.conv.weight"], net.sliced(wide)["stem.conv.weight"]
    assert small.shape[0] < big.shape[0]
    assert torch.equal(small, big[:small.shape[0]])
    assert small.data_ptr() == big.data_ptr()  # one storage: training either trains both


def test_gradients_of_a_genome_reach_the_shared_weights(tiny):
    space, net = tiny
    genome = instantiate(space, random_picker(random.Random(5)))
    net.train()
    net.set_active(genome)
    net.zero_grad()
    net(torch.randn(2, 3, 32, 32)).sum().backward()
    touched = [p for p in net.parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert touched and len(touched) < len(list(net.parameters()))  # only the active genome's weights


def test_a_genome_wider_than_the_space_is_refused_with_the_parameter_named(tiny):
    space, net = tiny
    genome = instantiate(space, random_picker(random.Random(1)))
    genome["stages"][0]["width"] = 512
    with pytest.raises(SupernetCoverageError, match=r"stem\.conv\.weight: needs \(512"):
        net.set_active(genome)
