"""compile_model: a genome becomes a network with timm's habits."""
from __future__ import annotations

import pytest
import torch
import yaml

from nas import GenomeError, analytic_cost, compile_model, load_genome
from nas.network import count_parameters
from tests.conftest import HYBRID_YAML


@pytest.fixture(scope="module")
def genome():
    return load_genome(yaml.safe_load(HYBRID_YAML))


@pytest.fixture(scope="module")
def model(genome):
    return compile_model(genome, seed=0).eval()


def test_parameter_count_equals_the_analytic_count(genome, model):
    assert count_parameters(model) == analytic_cost(genome).params


def test_forward_features_and_head(model):
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        features = model.forward_features(x)
        assert features.shape == (2, 96, 2, 2)  # NCHW, stride 32
        assert model.forward_head(features, pre_logits=True).shape == (2, 96)
        assert model.forward_head(features).shape == (2, 10)
        assert torch.allclose(model(x), model.forward_head(features), atol=1e-6)


def test_intermediates_and_features_only(genome, model):
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        final, stages = model.forward_intermediates(x)
        assert [tuple(f.shape[1:]) for f in stages] == [(32, 16, 16), (48, 8, 8), (64, 4, 4), (96, 2, 2)]
        assert torch.equal(final, stages[-1])
        picked = model.forward_intermediates(x, indices=[1, -1], intermediates_only=True)
        assert [f.shape[1] for f in picked] == [48, 96]
    assert [i["reduction"] for i in model.feature_info] == [4, 8, 16, 32]
    backbone = compile_model(genome, features_only=True, seed=0).eval()
    backbone.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("head.")})
    with torch.inference_mode():
        maps = backbone(x)
    assert len(maps) == 4 and all(torch.allclose(a, b, atol=1e-6) for a, b in zip(maps, stages))


def test_reset_classifier(genome):
    model = compile_model(genome).eval()
    model.reset_classifier(3)
    with torch.inference_mode():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)
        model.reset_classifier(0)
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 96)


def test_seed_makes_weights_reproducible(genome):
    a, b = compile_model(genome, seed=1).state_dict(), compile_model(genome, seed=1).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = compile_model(genome, seed=2).state_dict()
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_trains_one_step(genome):
    model = compile_model({**yaml.safe_load(HYBRID_YAML), "drop_path_rate": 0.2}, seed=0).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(4, 3, 64, 64), torch.randint(0, 10, (4,))
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)


def test_compile_refuses_invalid_genomes_before_torch():
    data = yaml.safe_load(HYBRID_YAML)
    data["stages"][3]["block"]["mixer"]["heads"] = 5
    with pytest.raises(GenomeError, match=r"stages\[3\]\.block\.mixer\.heads: 5 does not divide width 96"):
        compile_model(data)


def test_non_square_inputs(genome):
    data = yaml.safe_load(HYBRID_YAML)
    data["input"] = {"channels": 1, "resolution": [64, 128]}
    data["stages"][2]["pattern"][0]["mixer"]["window"] = 4
    model = compile_model(data).eval()
    with torch.inference_mode():
        assert model.forward_features(torch.randn(1, 1, 64, 128)).shape == (1, 96, 2, 4)
