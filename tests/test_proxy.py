"""Training-free scores: the structural score from the genome alone, and the zero-cost scores (NASWOT, SynFlow,
grad-norm, SNIP, ZiCo, MeCo) from one small batch through tiny untrained networks at 32x32."""
from __future__ import annotations

import copy
import json
import math
import time

import pytest
import torch

from nas import analytic_cost, compile_model, load_genome
from nas.evaluate.proxy import genome_descriptors, proxy_score, structural_score, zero_cost_scores


def tiny(width: int = 16, depth: int = 1, mixer: str = "dwconv", norm: str = "layernorm") -> dict:
    """A two-stage MetaFormer at 32x32 for 10 classes."""
    return {
        "name": "tiny", "input": {"channels": 3, "resolution": 32}, "num_classes": 10,
        "stem": {"type": "conv", "kernel": 3, "stride": 2, "padding": 1, "post_norm": norm},
        "defaults": {"norm": "layernorm", "mlp": {"type": "mlp", "ratio": 2, "act": "gelu"},
                     "downsample": {"type": "conv", "kernel": 3, "stride": 2, "padding": 1}},
        "stages": [{"depth": depth, "width": width, "block": {"mixer": {"type": mixer}}},
                   {"depth": depth, "width": 2 * width, "block": {"mixer": {"type": mixer}}}],
        "head": {"type": "linear", "norm": "layernorm"},
    }


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(8, 3, 32, 32, generator=generator), torch.randint(0, 10, (8,), generator=generator)


def test_structural_score_prefers_the_wider_deeper_genome_and_is_cheap():
    small, big = load_genome(tiny(width=8, depth=1)), load_genome(tiny(width=32, depth=3))
    assert structural_score(big) > structural_score(small) > 0
    assert structural_score(load_genome(tiny(width=32, depth=1))) > structural_score(small)  # width alone
    start = time.perf_counter()
    for _ in range(20):
        structural_score(big)
    assert (time.perf_counter() - start) / 20 < 0.02  # ~0.3 ms measured; generous for a loaded CI machine


def test_zero_cost_scores_are_finite_and_deterministic(batch):
    model = compile_model(tiny(), seed=0)
    first = zero_cost_scores(model, *batch)
    assert set(first) == {"naswot", "synflow", "grad_norm", "snip", "zico", "meco"}
    assert all(math.isfinite(v) and v > 0 for v in first.values())
    assert zero_cost_scores(model, *batch) == first


def test_the_model_is_left_as_it_was(batch):
    """Weights, BatchNorm statistics, gradients and per-module modes are untouched."""
    model = compile_model(tiny(norm="batchnorm"), seed=0)
    model.eval()
    model.head.train()  # a mixed state must come back as it was, too
    state = copy.deepcopy(model.state_dict())
    modes = {name: m.training for name, m in model.named_modules()}
    zero_cost_scores(model, *batch)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert all(p.grad is None for p in model.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())


def with_weights(model: torch.nn.Module, change) -> torch.nn.Module:
    """A copy of ``model`` with ``change`` applied in place to every parameter."""
    changed = copy.deepcopy(model)
    with torch.no_grad():
        for p in changed.parameters():
            change(p)
    return changed


def test_naswot_separates_identical_units_from_a_normal_network(batch):
    """With all-zero weights every image gives the same activation pattern: the kernel is singular."""
    normal = compile_model(tiny(), seed=0)
    dead = with_weights(normal, torch.Tensor.zero_)
    assert math.isfinite(zero_cost_scores(normal, *batch)["naswot"])
    assert zero_cost_scores(dead, *batch)["naswot"] == -math.inf


def test_synflow_depends_on_weight_magnitudes_only(batch):
    model = compile_model(tiny(), seed=0)
    flipped = with_weights(model, torch.Tensor.neg_)
    assert zero_cost_scores(flipped, *batch)["synflow"] == pytest.approx(zero_cost_scores(model, *batch)["synflow"])


def test_a_network_without_activations_is_scored_on_its_block_outputs(batch):
    genome = tiny(mixer="pooling")
    genome["defaults"]["mlp"] = None
    scores = zero_cost_scores(compile_model(genome, seed=0), *batch)
    assert math.isfinite(scores["naswot"])


def test_nan_weights_give_nan_scores_instead_of_raising(batch):
    model = compile_model(tiny(), seed=0)
    with torch.no_grad():
        model.head.fc.weight[0, 0] = math.nan
    scores = proxy_score(load_genome(tiny()), model, *batch)
    assert math.isnan(scores["grad_norm"]) and math.isnan(scores["score"])
    assert math.isnan(scores["snip"]) and math.isnan(scores["zico"])
    assert math.isfinite(scores["structural"])


def test_a_nan_in_the_first_layer_makes_every_batch_score_nan(batch):
    model = compile_model(tiny(), seed=0)
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    with torch.no_grad():
        first_conv.weight[0, 0, 0, 0] = math.nan
    scores = zero_cost_scores(model, *batch)
    assert all(math.isnan(scores[k]) for k in ("naswot", "grad_norm", "snip", "zico", "meco")), scores


def test_proxy_score_adds_the_combined_objective(batch):
    genome = load_genome(tiny())
    scores = proxy_score(genome, compile_model(genome, seed=0), *batch)
    assert set(scores) == {"structural", "naswot", "synflow", "grad_norm", "snip", "zico", "meco", "score"}
    assert math.isfinite(scores["score"])
    assert scores["structural"] == structural_score(genome)


def test_the_search_objective_is_the_shipped_fit_of_standardised_terms(batch):
    """``score`` is ``sum w * (t - mean) / std`` over the terms of ``objectives/any.json`` (no space given);
    a width on a map the genome lacks (this one has two map sizes, the fit weighs four) adds nothing. Explicit
    ``weights`` give another combination of the same terms."""
    from nas.evaluate.proxy import TERMS, combine, fitted_objective

    genome = load_genome(tiny())
    cost = analytic_cost(genome)
    scores = proxy_score(genome, compile_model(genome, seed=0), *batch)
    described = genome_descriptors(genome)
    terms = {**scores, "params": cost.params, "flops": cost.flops, **described}

    def contribution(feature: dict) -> float:  # a score by its TERMS scaling; a descriptor as it is, 0 if absent
        name = feature["name"]
        if name.startswith("log_width_at:") and name not in described:
            return 0.0
        value = TERMS[name](terms[name], 8) if name in TERMS else described.get(name, 0.0)
        return feature["weight"] * (value - feature["mean"]) / feature["std"]

    features = fitted_objective()["features"]
    assert {"log_width_at:2", "log_width_at:3"} <= {f["name"] for f in features if f["weight"]} - set(described)
    assert scores["score"] == pytest.approx(sum(map(contribution, features)))
    assert combine(terms, 8, weights={"params": 1.0}) == pytest.approx(math.log(cost.params))
    assert math.isnan(combine({**terms, "synflow": math.nan}, 8))


def test_a_shipped_space_with_its_own_fit_is_scored_by_it_and_any_other_space_by_the_general_one(batch):
    """The default space's genomes are ranked by the fit on its own corpus (``objectives/metaformer_hybrid.json``),
    whether the space is named or given as its shipped file, and the tiny space's by its own (``tiny.json``); a
    shipped space without a corpus (``mobile``), a user's space file, or no space gets ``any.json``."""
    from nas.evaluate.proxy import OBJECTIVES, combine, fitted_objective, objective_name
    from nas.io import data_dir

    assert objective_name("metaformer_hybrid") == "metaformer_hybrid"
    assert objective_name(str(data_dir() / "metaformer_hybrid.yaml")) == "metaformer_hybrid"
    assert objective_name("tiny") == "tiny"
    assert objective_name("mobile") == objective_name("my_space.yaml") == objective_name(None) == "any"
    assert fitted_objective("metaformer_hybrid") == json.loads((OBJECTIVES / "metaformer_hybrid.json").read_text())
    genome = load_genome(tiny())
    cost = analytic_cost(genome)
    terms = {**proxy_score(genome, compile_model(genome, seed=0), *batch), "params": cost.params,
             "flops": cost.flops, **genome_descriptors(genome)}
    own = combine(terms, 8, fit="metaformer_hybrid")
    assert proxy_score(genome, compile_model(genome, seed=0), *batch, fit="metaformer_hybrid")["score"] == \
        pytest.approx(own)
    assert own != pytest.approx(combine(terms, 8))  # two fits, two weightings of the same terms


def test_a_search_given_data_is_scored_by_the_twin_fitted_on_scores_of_real_images():
    """With ``--data`` the zero-cost scores see the task's images, whose spread over genomes differs from the
    structured batch's: every shipped fit has a ``.data`` twin fitted on such scores, and a search (or ``nas
    score``) given data uses it. On the tiny corpus all seven scores carry weight there, three without data."""
    from nas.evaluate.proxy import fitted_objective, objective_name, objective_scores
    from nas.search import SearchOptions

    for space, fit in (("tiny", "tiny"), ("metaformer_hybrid", "metaformer_hybrid"), ("mobile", "any")):
        assert objective_name(space, data=True) == fit + ".data"
        assert fitted_objective(fit + ".data")["batch"] == "task" and fitted_objective(fit)["batch"] == "default"
        assert SearchOptions(space=space).objective_fit == fit
        assert SearchOptions(space=space, data="digits").objective_fit == fit + ".data"
    assert objective_scores("tiny.data") == {"grad_norm", "meco", "snip", "zico", "synflow", "naswot"}
    assert objective_scores("tiny") == {"grad_norm", "meco"}
    with pytest.raises(ValueError, match="no shipped objective is named 'tiny.yaml'"):
        fitted_objective("tiny.yaml")  # a space is not a fit: objective_name resolves it


def test_a_recorded_fit_is_described_with_its_corpus_and_held_out_tau_while_this_nas_ships_it():
    from nas.evaluate.proxy import describe_objective, fitted_objective, objective_identity

    own = objective_identity("metaformer_hybrid")
    assert describe_objective(own) == (f"fit `metaformer_hybrid.json` ({own['digest']}) on 200 trained genomes "
                                       "(benchmarks/results/corpus_hybrid32); Kendall tau on held-out genomes "
                                       "+0.554 (patterns)")
    assert describe_objective({"name": "any", "digest": "0123456789ab"}) == (
        "fit `any.json` (0123456789ab), which this nas no longer ships")
    assert describe_objective({"name": "gone.data", "digest": "0123456789ab"}) == (
        "fit `gone.data.json` (0123456789ab), which this nas no longer ships")
    twin = objective_identity("tiny.data")
    recorded = fitted_objective("tiny.data")  # as objective_fit.py --write recorded it
    folders = recorded["corpora"]  # the tiny corpus and the fresh folders drawn after it
    assert list(folders)[:2] == ["corpus", "corpus_fresh"]
    where = ", ".join(f"benchmarks/results/{folder}: {n}" for folder, n in folders.items())
    assert describe_objective(twin).startswith(
        f"fit `tiny.data.json` ({twin['digest']}), {recorded['model']}, on {sum(folders.values())} trained genomes "
        f"({where}) (scores of the tasks' images); Kendall tau")
    shared = objective_identity("any")
    tiny, hybrid32, fresh = fitted_objective("any")["corpora"].values()
    assert describe_objective(shared).startswith(
        f"fit `any.json` ({shared['digest']}) on {tiny + hybrid32 + fresh} trained genomes "
        f"(benchmarks/results/corpus: {tiny}, benchmarks/results/corpus_hybrid32: {hybrid32}, "
        f"benchmarks/results/corpus_fresh: {fresh}); Kendall tau")


def test_the_descriptors_say_which_family_holds_the_compute_and_how_deep_and_wide():
    """A conv stage then an attention stage: each family's share of the blocks' FLOPs, the last block's family,
    the number of blocks and their widths (16 and 32 channels)."""
    genome = load_genome({**tiny(depth=2), "stages": [
        {"depth": 2, "width": 16, "block": {"mixer": {"type": "dwconv"}}},
        {"depth": 1, "width": 32, "block": {"mixer": {"type": "attention", "head_dim": 8}}}]})
    described = genome_descriptors(genome)
    assert described["flops_share:conv"] + described["flops_share:attention"] == pytest.approx(1.0)
    assert 0 < described["flops_share:attention"] < 1
    assert described["last:attention"] == 1.0 and "last:conv" not in described
    assert described["blocks"] == 3
    assert described["log_mean_width"] == pytest.approx(math.log((16 + 16 + 32) / 3))
    assert described["log_max_width"] == pytest.approx(math.log(32))
    assert "width_falls" not in described  # 16, 16, 32: no width falls


def test_a_width_that_falls_from_one_stage_to_the_next_is_a_descriptor_the_objective_weighs():
    """64 channels, then 32, then 128: ``width_falls`` is log(64 / 32). The tiny space widens at every stage,
    but the hybrid32 corpus's stages may narrow, so the shipped objective, fitted on both, weighs it and
    ``nas score`` does not list it as unweighed."""
    from nas.evaluate.proxy import objective_terms, unweighed_descriptors

    genome = load_genome({**tiny(), "stages": [
        {"depth": 1, "width": 64, "block": {"mixer": {"type": "dwconv"}}},
        {"depth": 1, "width": 32, "block": {"mixer": {"type": "dwconv"}}},
        {"depth": 1, "width": 128, "block": {"mixer": {"type": "dwconv"}}}]})
    described = genome_descriptors(genome)
    assert described["width_falls"] == pytest.approx(math.log(2))
    assert "width_falls" not in unweighed_descriptors(objective_terms(genome, {}))


def test_the_data_free_score_is_the_part_of_the_proxy_score_that_runs_no_network():
    """``combine``'s score less ``data_free_score`` is what the zero-cost scores add; other zero-cost scores
    move the score, never the data-free part."""
    from nas.evaluate.proxy import combine, data_free_score, objective_contributions, objective_terms
    from nas.evaluate.zero_cost import SCORES

    genome = load_genome({**tiny(), "stages": [
        {"depth": 1, "width": 16, "block": {"mixer": {"type": "dwconv"}}},
        {"depth": 2, "width": 32, "block": {"mixer": {"type": "attention"}}}]})
    known = data_free_score(genome)
    for grad_norm, meco in ((1.0, 0.5), (40.0, 3.0)):
        scores = {"structural": structural_score(genome), "grad_norm": grad_norm, "meco": meco, "naswot": 1.0,
                  "synflow": 1.0, "snip": 1.0, "zico": 1.0}
        terms = objective_terms(genome, scores)
        zero_cost = sum(v for k, v in objective_contributions(terms, 8).items() if k in SCORES)
        assert combine(terms, 8) - known == pytest.approx(zero_cost)
        assert zero_cost != 0


def test_a_fit_with_a_kernel_adds_what_scikit_learns_kernel_ridge_predicts(tmp_path, monkeypatch):
    """A fit written by ``objective_fit.py --model kernel`` scores its ridge's sum plus a kernel ridge's
    prediction, ``sum_i dual_i * exp(-gamma * |z - s_i|^2)`` of the genome's standardised terms ``z``: what
    scikit-learn's ``KernelRidge`` predicts. Its data-free part holds every zero-cost score at the corpus's mean,
    in the kernel as in the sum, and the kernel's share is one more entry of the contributions."""
    import numpy as np
    from sklearn.kernel_ridge import KernelRidge

    import nas.evaluate.proxy as proxy
    from nas.evaluate.proxy import (
        KERNEL_PART,
        TERMS,
        combine,
        data_free_score,
        objective_contributions,
        objective_scores,
        objective_terms,
    )

    names, weights = ["params", "flops", "grad_norm", "blocks"], [0.2, -0.1, 0.3, 0.0]
    rng = np.random.default_rng(0)
    support = rng.normal(size=(30, len(names)))
    kernel = KernelRidge(alpha=0.1, kernel="rbf").fit(support, rng.normal(size=30))
    features = [{"name": n, "mean": m, "std": s, "weight": w}
                for n, m, s, w in zip(names, (11.0, 15.0, 3.0, 4.0), (0.5, 0.4, 0.3, 1.5), weights)]
    (tmp_path / "kernel.json").write_text(json.dumps({"features": features, "kernel": {
        "gamma": 1 / len(names), "support": support.tolist(), "dual": kernel.dual_coef_.tolist()}}))
    monkeypatch.setattr(proxy, "OBJECTIVES", tmp_path)
    proxy.fitted_objective.cache_clear()
    proxy._kernel.cache_clear()
    try:
        genome = load_genome(tiny())
        terms = objective_terms(genome, {"structural": structural_score(genome), "grad_norm": 20.0})
        z = np.array([((TERMS[f["name"]](terms[f["name"]], 8) if f["name"] in TERMS else terms[f["name"]])
                       - f["mean"]) / f["std"] for f in features])
        assert combine(terms, 8, fit="kernel") == pytest.approx(z @ weights + kernel.predict(z[None])[0])
        at_mean = np.where([n == "grad_norm" for n in names], 0.0, z)
        assert data_free_score(genome, fit="kernel") == pytest.approx(at_mean @ weights
                                                                      + kernel.predict(at_mean[None])[0])
        parts = objective_contributions(terms, 8, fit="kernel")
        assert parts[KERNEL_PART] == pytest.approx(kernel.predict(z[None])[0])
        assert set(parts) == {"params", "flops", "grad_norm", KERNEL_PART}  # blocks: weight 0, read by the kernel
        assert objective_scores("kernel") == {"grad_norm"}
    finally:
        proxy.fitted_objective.cache_clear()
        proxy._kernel.cache_clear()


def test_the_descriptors_say_which_mixer_type_sits_on_each_map_size():
    """Two dwconv blocks and a pooling block on the 16x16 map (the pooling stage keeps the map), then a
    separable-conv block on 8x8: ``at_level:K:T`` is type T's share of the blocks on the K-th largest map."""
    genome = load_genome({**tiny(), "stages": [
        {"depth": 2, "width": 16, "block": {"mixer": {"type": "dwconv"}}},
        {"depth": 1, "width": 16, "downsample": None, "block": {"mixer": {"type": "pooling"}}},
        {"depth": 1, "width": 32, "block": {"mixer": {"type": "sepconv"}}}]})
    levels = {k: v for k, v in genome_descriptors(genome).items() if k.startswith("at_level:")}
    assert levels == pytest.approx({"at_level:0:dwconv": 2 / 3, "at_level:0:pooling": 1 / 3,
                                    "at_level:1:sepconv": 1.0})


def test_the_descriptors_say_how_wide_the_blocks_are_on_each_map_size():
    """Two 16-channel blocks and a 24-channel block (widened in place) on the 16x16 map, then a 64-channel block
    on 8x8: ``log_width_at:K`` is the log of the mean width on the K-th largest map. Scaling every width by one
    factor moves each by the same log, which a linear objective reads as a constant."""
    def stages(scale: int) -> list[dict]:
        return [{"depth": 2, "width": 16 * scale, "block": {"mixer": {"type": "dwconv"}}},
                {"depth": 1, "width": 24 * scale, "downsample": {"type": "conv", "kernel": 1, "stride": 1},
                 "block": {"mixer": {"type": "dwconv"}}},
                {"depth": 1, "width": 64 * scale, "block": {"mixer": {"type": "dwconv"}}}]

    def widths(scale: int) -> dict[str, float]:
        described = genome_descriptors(load_genome({**tiny(), "stages": stages(scale)}))
        return {k: v for k, v in described.items() if k.startswith("log_width_at:")}

    assert widths(1) == pytest.approx({"log_width_at:0": math.log((16 + 16 + 24) / 3), "log_width_at:1": math.log(64)})
    assert {k: v - widths(1)[k] for k, v in widths(2).items()} == pytest.approx(dict.fromkeys(widths(1), math.log(2)))


def test_descriptors_the_objective_has_no_weight_for_are_named():
    """A mixer type on a map size the corpus never had (a fifth map), or a family it never held, gets weight 0:
    ``unweighed_descriptors`` names them so ``nas score`` can say the score is silent on them."""
    from nas.evaluate.proxy import fitted_objective, unweighed_descriptors

    weighed = {f["name"] for f in fitted_objective()["features"] if f["weight"]}
    assert "at_level:0:dwconv" in weighed
    terms = {"params": 1e6, "blocks": 3.0, "at_level:0:dwconv": 0.5, "at_level:4:dwconv": 0.5,
             "flops_share:no_such_family": 1.0, "at_level:1:attention": 0.0}
    assert unweighed_descriptors(terms) == ["at_level:4:dwconv", "flops_share:no_such_family"]


def test_an_objective_weighing_a_family_absent_from_the_genome_counts_it_as_zero():
    from nas.evaluate.proxy import combine

    terms = {"params": 1e6, **genome_descriptors(load_genome(tiny()))}
    assert combine(terms, 8, weights={"flops_share:ssm": 5.0, "flops_share:conv": 2.0}) == pytest.approx(2.0)
