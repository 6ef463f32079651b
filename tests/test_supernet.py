"""The weight-sharing supernet: every genome of a space runs from one set of largest weights, and ``extract``
gives a plain network that computes the same thing."""
from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from nas.io import read_yaml
from nas.space import instantiate, random_picker
from nas.supernet import (
    Supernet,
    SupernetCoverageError,
    recalibrate_norms,
    sample_genome,
)
from nas.supernet.supernet import coverage_genomes


@pytest.fixture(scope="module")
def tiny() -> tuple[dict, Supernet]:
    space, _, _ = read_yaml("tiny")
    return space, Supernet.from_space(space, samples=8)


# The default space's supernet holds every one of its 23 mixer types at full width: one draw there, three elsewhere.
# Its stages are cut to depths 1-2: at full depth (up to 18 blocks) building it takes two minutes, and depth adds
# only more of the same blocks.
@pytest.mark.parametrize(("name", "draws"), [("tiny", 3), ("mobile", 3), ("isotropic", 3), ("metaformer_hybrid", 1)])
def test_extract_computes_what_the_supernet_computes_in_every_shipped_space(name, draws):
    space, _, _ = read_yaml(name)
    if name == "metaformer_hybrid":
        for stage in space["stages"]:
            stage["depth"] = {"int": [1, 2]}
    net = Supernet.from_space(space, samples=0).eval()  # sized by every option at both ends only
    rng = random.Random(7)
    res = space["input"]["resolution"]
    x = torch.randn(1, 3, res, res, generator=torch.Generator().manual_seed(0))
    for _ in range(draws):
        genome = sample_genome(space, rng)
        net.set_active(genome)
        with torch.no_grad():
            expected = net(x)
            got = net.extract(genome).eval()(x)
        assert expected.shape == (1, space["num_classes"])
        assert torch.allclose(expected, got, atol=1e-5)


def test_random_genomes_of_tiny_use_their_own_weights_and_are_all_covered(tiny):
    space, net = tiny
    rng = random.Random(3)
    x = torch.randn(2, 3, 32, 32)
    net.eval()
    outputs = []
    for _ in range(12):
        genome = sample_genome(space, rng)  # raises SupernetCoverageError if the sizing missed a structure
        net.set_active(genome)
        with torch.no_grad():
            outputs.append(net(x))
            assert torch.allclose(outputs[-1], net.extract(genome).eval()(x), atol=1e-5)
    assert len({tuple(o.flatten().tolist()) for o in outputs}) > 9  # genomes differ, not one shared function


def test_coverage_reaches_options_nested_inside_other_options():
    space, _, _ = read_yaml("tiny")
    # gnconv's order is a choice inside the mixer choice: order 2 must appear with gnconv actually chosen
    orders = {g["stages"][1]["block"]["mixer"].get("order") for g in coverage_genomes(space, samples=0)
              if g["stages"][1]["block"]["mixer"]["type"] == "gnconv"}
    assert orders == {2, 3}


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


def test_fused_qkv_is_sliced_per_q_k_and_v_so_fewer_heads_reuse_the_first_heads(tiny):
    space, net = tiny
    genome = sample_genome(space, random.Random(0)).to_dict()
    stage = genome["stages"][2]
    stage.update(depth=1, block={**stage["block"], "mixer": {"type": "attention", "head_dim": 16}})
    weights = {}
    for width in (64, 128):
        stage["width"] = width
        weights[width] = net.sliced(genome)["stages.2.blocks.0.mixer.qkv.weight"]
    q64, k64, v64 = weights[64].chunk(3)
    q128, k128, v128 = weights[128].chunk(3)
    for small, big in ((q64, q128), (k64, k128), (v64, v128)):  # 4 heads of 16 are the first 4 of 8
        assert torch.equal(small, big[:64, :64])


def test_mixer_types_keep_weights_of_their_own_and_activations_share(tiny):
    space, net = tiny
    keys = set()
    for mixer in ({"type": "dwconv", "kernel": 3}, {"type": "sepconv", "kernel": 3}):
        genome = sample_genome(space, random.Random(2)).to_dict()
        genome["stages"][0]["block"]["mixer"] = mixer
        ptrs = {n: t.data_ptr() for n, t in net.sliced(genome).items() if n.startswith("stages.0.blocks.0.mixer")}
        keys.add(frozenset(ptrs.values()))
    assert len(keys) == 2 and not set.intersection(*map(set, keys))


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


def test_the_sandwich_ends_are_the_genomes_of_most_and_fewest_flops(tiny):
    from nas.cost import analytic_cost
    from nas.io import load_genome

    space, net = tiny
    largest, smallest = analytic_cost(load_genome(net.largest)).flops, analytic_cost(load_genome(net.smallest)).flops
    drawn = [analytic_cost(sample_genome(space, random.Random(i))).flops for i in range(30)]
    assert smallest <= min(drawn) and largest >= max(drawn)


def test_recalibration_replaces_batchnorm_statistics_by_the_average_over_the_batches():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    model[1].running_mean.fill_(5.0)
    batches = [torch.randn(8, 3, 6, 6) + i for i in range(3)]
    assert recalibrate_norms(model.eval(), batches) == 1
    with torch.no_grad():
        features = torch.cat([model[0](b) for b in batches])
    assert torch.allclose(model[1].running_mean, features.mean(dim=(0, 2, 3)), atol=1e-5)
    assert not model.training and model[1].momentum == 0.1  # left as it was found
    assert recalibrate_norms(nn.Sequential(nn.LayerNorm(3)), batches) == 0


def test_a_saved_supernet_loads_with_the_same_weights_and_outputs(tiny, tmp_path):
    space, net = tiny
    torch.save({"supernet": net.header(), "weights": net.state_dict()}, tmp_path / "supernet.pt")
    loaded, _ = Supernet.load(tmp_path)
    genome = sample_genome(space, random.Random(4))
    x = torch.randn(2, 3, 32, 32)
    for model in (net, loaded):
        model.eval().set_active(genome)
    with torch.no_grad():
        assert torch.equal(net(x), loaded(x))
    assert loaded.largest == net.largest
