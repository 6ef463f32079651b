"""Each zero-cost score on a case small enough to work out by hand, and NASWOT's activation sites in gated
blocks."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from blocks.base import CONFIGS, create
from nas.evaluate.zero_cost import (
    activation_sites,
    agreement_kernel,
    grad_norm,
    meco,
    min_correlation_eigenvalue,
    naswot,
    snip,
    zero_cost_scores,
    zico,
)

# A one-layer linear classifier: logits = W x + b, two classes, two inputs, four images.
W = [[1.0, 2.0], [3.0, -1.0]]
B = [0.5, -0.5]
X = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 2.0]]
Y = [0, 1, 1, 0]


def linear_classifier() -> nn.Linear:
    layer = nn.Linear(2, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(W))
        layer.bias.copy_(torch.tensor(B))
    return layer


def cross_entropy_gradient(images: list[int]) -> tuple[list[list[float]], list[float]]:
    """dL/dW and dL/db of the mean cross-entropy over ``images``, in closed form: with p the softmax of the
    logits and e_y the one-hot label, dL/dlogits = (p - e_y) / n, so dL/dW = sum (p - e_y) x^T / n."""
    grad_w, grad_b = [[0.0, 0.0], [0.0, 0.0]], [0.0, 0.0]
    for i in images:
        logits = [sum(W[k][j] * X[i][j] for j in range(2)) + B[k] for k in range(2)]
        total = sum(math.exp(v) for v in logits)
        for k in range(2):
            delta = (math.exp(logits[k]) / total - (k == Y[i])) / len(images)
            grad_b[k] += delta
            for j in range(2):
                grad_w[k][j] += delta * X[i][j]
    return grad_w, grad_b


def test_grad_norm_and_snip_of_a_linear_classifier_match_the_closed_form():
    grad_w, grad_b = cross_entropy_gradient([0, 1, 2, 3])
    scores = zero_cost_scores(linear_classifier(), torch.tensor(X), torch.tensor(Y))
    expected_norm = math.sqrt(sum(g * g for row in grad_w for g in row)) + math.sqrt(sum(g * g for g in grad_b))
    expected_snip = (sum(abs(W[k][j] * grad_w[k][j]) for k in range(2) for j in range(2))
                     + sum(abs(B[k] * grad_b[k]) for k in range(2)))
    assert scores["grad_norm"] == pytest.approx(expected_norm, rel=1e-5)
    assert scores["snip"] == pytest.approx(expected_snip, rel=1e-5)


def test_zico_of_a_linear_classifier_reads_the_gradients_of_the_two_halves_of_the_batch():
    (w1, b1), (w2, b2) = cross_entropy_gradient([0, 1]), cross_entropy_gradient([2, 3])

    def log_inverse_cv(first: list[float], second: list[float]) -> float:
        # mean |g| over std g across two batches: (|a| + |b|) / 2 over |a - b| / 2
        return math.log(sum((abs(a) + abs(b)) / abs(a - b) for a, b in zip(first, second) if a != b))

    expected = log_inverse_cv(sum(w1, []), sum(w2, [])) + log_inverse_cv(b1, b2)
    scores = zero_cost_scores(linear_classifier(), torch.tensor(X), torch.tensor(Y))
    assert scores["zico"] == pytest.approx(expected, rel=1e-5)


def test_zico_sums_the_log_of_each_tensors_mean_over_std():
    t = torch.tensor
    first = [t([1.0, -2.0]), t([0.0, 2.0]), None, t([5.0])]
    second = [t([3.0, -2.0]), t([4.0, -2.0]), None, t([5.0])]
    # tensor 0: (|1| + |3|) / 2 = 2 over std 1, the second weight's gradient does not vary: log 2
    # tensor 1: 2 / 2 + 2 / 2 = 2: log 2; tensor 2 has no gradient, tensor 3 no spread: both left out
    assert zico([first, second]) == pytest.approx(2 * math.log(2))
    assert zico([[t([5.0])], [t([5.0])]]) == -math.inf  # nothing varies
    assert math.isnan(zico([first]))  # one batch has no spread
    assert math.isnan(zico([[t([math.nan])], [t([1.0])]]))


def test_meco_is_the_smallest_eigenvalue_of_the_channel_correlation():
    a = [1.0, 1.0, -1.0, -1.0]
    b = [1.0, 1.0, 1.0, -1.0]  # correlation with a: cov 0.5 over std 1 * sqrt(0.75) = 1 / sqrt(3)
    pair = torch.tensor([a, b]).T  # (samples, channels)
    # [[1, r], [r, 1]] has eigenvalues 1 - r and 1 + r
    assert min_correlation_eigenvalue(pair) == pytest.approx(1 - 1 / math.sqrt(3))
    uncorrelated = torch.tensor([a, [1.0, -1.0, 1.0, -1.0]]).T
    assert min_correlation_eigenvalue(uncorrelated) == pytest.approx(1.0)
    assert meco([pair, uncorrelated]) == pytest.approx(2 - 1 / math.sqrt(3))


def test_meco_of_identical_or_dead_channels_is_zero():
    a = torch.tensor([0.3, -1.2, 2.0, 0.1, 0.7])
    assert min_correlation_eigenvalue(torch.stack([a, a, -a + 1], dim=1)) == pytest.approx(0.0, abs=1e-12)
    assert min_correlation_eigenvalue(torch.stack([a, torch.zeros(5)], dim=1)) == 0.0
    assert min_correlation_eigenvalue(torch.randn(3, 4)) == 0.0  # more channels than samples
    assert math.isnan(min_correlation_eigenvalue(torch.stack([a, a * math.nan], dim=1)))


def test_naswot_is_the_log_determinant_of_the_code_agreements():
    # codes: image 0 = (1, 0), image 1 = (1, 1): they agree on one unit of two
    kernel = agreement_kernel(torch.tensor([[0.5, -2.0], [1.0, 3.0]]))
    assert kernel.tolist() == [[2.0, 1.0], [1.0, 2.0]]
    assert naswot(kernel) == pytest.approx(math.log(3))
    assert naswot(agreement_kernel(torch.tensor([[1.0, -1.0], [2.0, -3.0]]))) == -math.inf  # the same code
    assert math.isnan(naswot(agreement_kernel(torch.tensor([[math.nan, 1.0], [1.0, 1.0]]))))


def test_grad_norm_and_snip_skip_parameters_without_gradient():
    params = [torch.tensor([2.0, -1.0]), torch.tensor([4.0])]
    grads = [torch.tensor([3.0, 4.0]), None]
    assert grad_norm(grads) == pytest.approx(5.0)
    assert snip(params, grads) == pytest.approx(2 * 3 + 1 * 4)


@pytest.mark.parametrize("role, config, gate", [
    ("mixer", {"type": "mamba", "d_state": 2}, "gate_act"),
    ("mixer", {"type": "vim", "d_state": 2}, "gate_act"),
    ("mixer", {"type": "ss2d", "d_state": 2, "gate": True}, "gate_act"),
    ("block", {"type": "gated", "kernel": 3}, "act"),
    ("mlp", {"type": "glu", "act": "silu"}, "act"),
])
def test_the_gate_activation_of_a_gated_block_is_a_naswot_site(role, config, gate):
    """NASWOT codes a gate's units by the sign of its activation's input: that activation must be a module
    the scores can hook (the SSM mixers once called F.silu)."""
    full = CONFIGS[role][config["type"]].model_validate(config).model_dump()  # with the defaults written out
    module = create(role, full, dim=16, size=(4, 4), in_chs=16, out_chs=16)
    sites = activation_sites(module)
    assert any(site is getattr(module, gate) for site in sites)
    if config["type"] in ("mamba", "vim", "ss2d"):  # and the SiLU after the conv, a hidden layer's units
        assert any(site is module.act for site in sites)
    seen = []
    handle = getattr(module, gate).register_forward_pre_hook(lambda m, inputs: seen.append(inputs[0].shape))
    module(torch.randn(2, 4, 4, 16))
    handle.remove()
    assert seen and seen[0][0] == 2  # it runs in the forward pass, on the batch


def test_a_search_computes_only_the_scores_its_objective_weighs_and_gets_the_same_values():
    from nas import compile_model, load_genome
    from nas.evaluate.proxy import objective_scores, proxy_score
    from tests.test_proxy import tiny

    model = compile_model(tiny(), seed=0)
    x, y = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1)), torch.arange(8) % 10
    everything = zero_cost_scores(model, x, y)
    for which in ({"synflow"}, {"grad_norm", "snip"}, {"naswot"}):
        some = zero_cost_scores(model, x, y, which=which)
        assert set(some) >= which and set(some) < set(everything)
        for key, value in some.items():  # a full backward pass gives the split one's gradients
            assert value == pytest.approx(everything[key], rel=1e-5), key
    with pytest.raises(ValueError, match="unknown zero-cost scores"):
        zero_cost_scores(model, x, y, which={"synflw"})
    genome = load_genome(tiny())
    assert proxy_score(genome, model, x, y, which=objective_scores())["score"] == pytest.approx(
        proxy_score(genome, model, x, y)["score"])
