"""The weight mapping checked against timm itself: same weights, same outputs.

Needs timm, which needs a torch/torchvision pair that imports together (torch 2.14.1 with torchvision 0.29.1);
the project's own environment has neither, so this file skips there. `.ci/timm_tests` builds the second
environment and runs it. No download: each timm model is built with ``pretrained=False`` and seeded noise on every
tensor (layer scales that start at 1e-6 and zero-initialised norms would otherwise hide whole branches), saved as
a ``.safetensors`` file, mapped with ``nas.weights`` as ``nas zoo weights`` does, and loaded into the zoo model.
Both run in eval mode on the same random batch, in float64 (the mapping, exactly: the tolerance is 1e-9 of the
largest logit) and in float32 (as used: 1e-4 of it).
"""
from __future__ import annotations

import dataclasses

import pytest
import torch

from nas import compile_model, load_genome
from nas.weights import WEIGHT_MAPS, convert_checkpoint, read_checkpoint, save_weights

timm = pytest.importorskip("timm")

TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4}  # of the reference's largest |logit|
# DeiT-S as the zoo genome builds it: no class token, average pooling, the final norm on the tokens.
TIMM_KWARGS = {"deit_s": {"class_token": False, "global_pool": "avg", "fc_norm": False}}


def perturbed(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in model.state_dict().items():
        if value.is_floating_point():
            if key.endswith("running_var"):
                value = 0.5 + torch.rand(value.shape, generator=generator)
            else:
                value = value + 0.02 * torch.randn(value.shape, generator=generator)
        state[key] = value
    model.load_state_dict(state)
    return model.eval()


def max_differences(reference: torch.nn.Module, zoo: str, tmp_path,
                    genome: dict | None = None) -> dict[torch.dtype, tuple[float, float]]:
    """(largest |difference|, largest |reference logit|) per dtype, the zoo model (or ``genome``, an edit of it)
    loaded through the zoo genome's mapping."""
    checkpoint = save_weights(reference.state_dict(), tmp_path / "reference.safetensors")
    state = convert_checkpoint(zoo, read_checkpoint(checkpoint), source=str(checkpoint))
    model = compile_model(genome or f"zoo:{zoo}", weights=state).eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    out = {}
    for dtype in (torch.float64, torch.float32):
        with torch.no_grad():
            expected = reference.to(dtype)(x.to(dtype))
            got = model.to(dtype)(x.to(dtype))
        out[dtype] = ((got - expected).abs().max().item(), expected.abs().max().item())
    return out


def check(differences: dict[torch.dtype, tuple[float, float]], label: str) -> None:
    for dtype, (diff, scale) in differences.items():
        print(f"{label} {str(dtype).removeprefix('torch.')}: max |diff| {diff:.3g}, max |logit| {scale:.3g}, "
              f"tolerance {TOLERANCE[dtype] * scale:.3g}")
    for dtype, (diff, scale) in differences.items():
        assert diff <= TOLERANCE[dtype] * scale, f"{label} {dtype}: {diff:.3g} > {TOLERANCE[dtype]:g} x {scale:.3g}"


@pytest.mark.parametrize("zoo", [name for name in WEIGHT_MAPS if name != "maxvit_t"])  # MaxViT: below
def test_zoo_model_equals_timm_with_the_same_weights(zoo, tmp_path):
    torch.manual_seed(0)
    reference = perturbed(timm.create_model(WEIGHT_MAPS[zoo].reference, pretrained=False,
                                            **TIMM_KWARGS.get(zoo, {})))
    check(max_differences(reference, zoo, tmp_path), zoo)


def _maxvit(**conv_changes) -> torch.nn.Module:
    from timm.models.maxxvit import MaxxVit, model_cfgs

    cfg = model_cfgs["maxvit_tiny_tf"]
    act = {"act_layer": conv_changes["act_layer"]} if "act_layer" in conv_changes else {}
    cfg = dataclasses.replace(cfg, conv_cfg=dataclasses.replace(cfg.conv_cfg, **conv_changes),
                              transformer_cfg=dataclasses.replace(cfg.transformer_cfg, **act))
    torch.manual_seed(0)
    return perturbed(MaxxVit(cfg, img_size=224))


def test_maxvit_tiny_tf_224_itself(tmp_path):
    """The zoo genome makes the TensorFlow release's choices (``padding: same``, ``act: gelu_tanh``, BatchNorm
    eps 1e-3), so the published model's weights give its outputs."""
    torch.manual_seed(0)
    reference = perturbed(timm.create_model("maxvit_tiny_tf_224", pretrained=False))
    check(max_differences(reference, "maxvit_t", tmp_path), "maxvit_t (timm maxvit_tiny_tf_224)")


# The TensorFlow release's choices in the zoo genome, each with PyTorch's habit in its place.
PYTORCH_HABITS = {("padding", "same"): "symmetric", ("act", "gelu_tanh"): "gelu", ("norm_eps", 1e-3): 1e-5,
                  ("eps", 1e-3): 1e-5}


def _with_pytorch_habits(value):
    if isinstance(value, list):
        return [_with_pytorch_habits(v) for v in value]
    if isinstance(value, dict):
        return {k: _with_pytorch_habits(v) if isinstance(v, (dict, list)) else PYTORCH_HABITS.get((k, v), v)
                for k, v in value.items()}
    return value


def test_maxvit_with_symmetric_padding_exact_gelu_and_eps_1e5_still_maps_exactly(tmp_path):
    """The other side of the three options: the zoo genome with PyTorch's habits (symmetric padding, exact
    GELU, BatchNorm eps 1e-5) against timm's MaxViT-T configured alike: the mapping itself, qkv layout and
    flipped relative position tables included, is exact either way."""
    genome = _with_pytorch_habits(load_genome("zoo:maxvit_t").to_dict())
    assert genome != load_genome("zoo:maxvit_t").to_dict()
    check(max_differences(_maxvit(padding="", act_layer="gelu", norm_eps=1e-5), "maxvit_t", tmp_path, genome),
          "maxvit_t (symmetric padding, exact GELU, eps 1e-5)")
