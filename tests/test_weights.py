"""Pretrained weights: timm-layout checkpoints mapped onto zoo genomes, without timm.

The checkpoints are built here from a zoo model's own state dict through the inverse mapping
(``nas.weights.to_reference``), so every error case is a timm-style file with one thing wrong. The outputs
against timm itself are compared in tests/test_weights_timm.py (a second environment with timm).
"""
from __future__ import annotations

import functools
import pickle

import pytest
import torch

from nas import compile_model
from nas.cli import main
from nas.errors import InputError
from nas.weights import WEIGHT_MAPS, convert_checkpoint, read_checkpoint, save_weights, to_reference, weight_map
from tests.conftest import run_nas


@functools.lru_cache(maxsize=None)
def zoo_shapes(name: str) -> dict[str, tuple[torch.Size, torch.dtype]]:
    with torch.device("meta"):  # no memory, no init
        return {k: (v.shape, v.dtype) for k, v in compile_model(f"zoo:{name}").state_dict().items()}


def zoo_state(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with the zoo genome's state dict keys and shapes."""
    shapes = zoo_shapes(name)
    generator = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=generator) if dtype.is_floating_point else torch.zeros(shape, dtype=dtype)
            for k, (shape, dtype) in shapes.items()}


@pytest.mark.parametrize("name", sorted(WEIGHT_MAPS))
def test_mapping_round_trips_every_tensor(name):
    state = zoo_state(name)
    reference = to_reference(name, state)
    back = convert_checkpoint(name, reference)
    assert back.keys() == state.keys()
    assert all(torch.equal(back[k], state[k]) for k in state)


def test_layouts_that_differ_are_converted():
    """The tensors whose layout timm stores differently come back in the zoo's layout."""
    caformer = to_reference("caformer_s18", zoo_state("caformer_s18"))
    assert caformer["stages.0.blocks.0.mlp.fc1.weight"].shape == (256, 64, 1, 1)  # NCHW stage: 1x1 conv
    assert caformer["stages.2.blocks.0.mlp.fc1.weight"].shape == (1280, 320)  # attention stage: linear
    state = zoo_state("maxvit_t")
    maxvit = to_reference("maxvit_t", state)
    table = maxvit["stages.0.blocks.0.attn_block.attn.rel_pos.relative_position_bias_table"]
    assert table.shape == (2, 13, 13)
    # timm's TF port indexes by key - query, the zoo by query - key: offset (0, 0) sits in the middle of both,
    # the largest offset swaps ends.
    zoo_table = state["stages.0.blocks.0.1.mixer.relative_position_bias_table"]
    assert torch.equal(table[:, 6, 6], zoo_table[6 * 13 + 6])
    assert torch.equal(table[:, 0, 0], zoo_table[12 * 13 + 12])
    assert to_reference("deit_s", zoo_state("deit_s"))["pos_embed"].shape == (1, 196, 384)


def test_unmapped_keys_are_named_with_their_count():
    reference = to_reference("convnext_t", zoo_state("convnext_t"))
    reference["stages.0.blocks.0.extra.weight"] = torch.zeros(3)
    reference["aux_head.bias"] = torch.zeros(3)
    with pytest.raises(InputError, match=r"r50\.pth: 2 key\(s\) do not map onto zoo:convnext_t .*convnext_tiny.*"
                                         r"stages\.0\.blocks\.0\.extra\.weight, aux_head\.bias$"):
        convert_checkpoint("convnext_t", reference, source="r50.pth")


def test_a_checkpoint_of_another_model_names_the_first_keys_and_the_count():
    resnet = to_reference("resnet50", zoo_state("resnet50"))
    with pytest.raises(InputError) as err:
        convert_checkpoint("deit_s", resnet)
    message = str(err.value)
    assert f"{len(resnet)} key(s) do not map onto zoo:deit_s" in message and f"({len(resnet)} in all)" in message
    assert "conv1.weight" in message and "\n" not in message


def test_a_missing_parameter_is_named():
    reference = to_reference("swin_t", zoo_state("swin_t"))
    del reference["layers.2.blocks.3.attn.relative_position_bias_table"]
    with pytest.raises(InputError, match=r"1 parameter\(s\) of the model have no value: "
                                         r"stages\.2\.blocks\.3\.mixer\.relative_position_bias_table$"):
        convert_checkpoint("swin_t", reference)


def test_shape_mismatch_names_the_parameter_and_both_shapes():
    reference = to_reference("resnet50", zoo_state("resnet50"))
    reference["fc.weight"] = torch.zeros(10, 2048)  # a checkpoint fine-tuned on 10 classes
    with pytest.raises(InputError, match=r"shape mismatch for head\.fc\.weight \(from fc\.weight\): the weights "
                                         r"give \(10, 2048\), the model needs \(1000, 2048\)"):
        convert_checkpoint("resnet50", reference)


def test_deit_class_token_is_dropped_with_its_position():
    reference = to_reference("deit_s", zoo_state("deit_s"))
    grid = reference["pos_embed"]
    reference["pos_embed"] = torch.cat([torch.full((1, 1, 384), 7.0), grid], dim=1)  # (1, 197, 384) as published
    reference["cls_token"] = torch.zeros(1, 1, 384)
    state = convert_checkpoint("deit_s", reference)
    assert torch.equal(state["stem.pos_embed"], grid.reshape(14, 14, 384))
    assert "no class token" in weight_map("deit_s").note  # the CLI prints the difference when it maps one


def test_derived_buffers_of_older_checkpoints_are_ignored():
    reference = to_reference("swin_t", zoo_state("swin_t"))
    reference["layers.0.blocks.1.attn.relative_position_index"] = torch.zeros(49, 49, dtype=torch.long)
    reference["layers.0.blocks.1.attn_mask"] = torch.zeros(64, 49, 49)
    assert len(convert_checkpoint("swin_t", reference)) == len(zoo_state("swin_t"))


def test_unknown_and_unmapped_names():
    with pytest.raises(InputError, match=r"^unknown zoo genome 'convnext_xxl'; genomes with a weight mapping: "):
        weight_map("convnext_xxl")
    with pytest.raises(InputError, match=r"^zoo genome 'vmamba_t' has no weight mapping yet"):
        convert_checkpoint("vmamba_t", {})


class _RunsCode:
    def __reduce__(self):
        return (exec, ("open(__import__('os').environ['NAS_PWNED'], 'w').write('ran')",))


def test_weights_only_loading_refuses_a_pickle_that_runs_code(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("NAS_PWNED", str(marker))
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"state_dict": {"conv1.weight": _RunsCode()}}, protocol=2))
    with pytest.raises(InputError, match=r"evil\.pth: not a readable checkpoint \(it holds Python objects "
                                         r"besides tensors, which are not loaded \(weights_only\)\)"):
        read_checkpoint(path)
    assert not marker.exists()


def test_checkpoint_files_nested_and_prefixed(tmp_path):
    state = {"a.weight": torch.ones(2, 2), "b": torch.zeros(3)}
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in state.items()}}, tmp_path / "train.pth")
    save_weights(state, tmp_path / "w.safetensors")
    for name in ("train.pth", "w.safetensors"):
        loaded = read_checkpoint(tmp_path / name)
        assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
    (tmp_path / "junk.safetensors").write_bytes(b"not a file of tensors")
    with pytest.raises(InputError, match=r"junk\.safetensors: not a readable checkpoint"):
        read_checkpoint(tmp_path / "junk.safetensors")


def test_compile_model_loads_weights_from_a_dict_or_file_and_checks_them(tmp_path, hybrid_file):
    state = compile_model(hybrid_file, seed=1).state_dict()
    model = compile_model(hybrid_file, seed=2, weights=state)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    save_weights(state, tmp_path / "hybrid.safetensors")
    backbone = compile_model(hybrid_file, weights=tmp_path / "hybrid.safetensors", features_only=True)  # no head
    assert torch.equal(backbone.state_dict()["stem.conv.weight"], state["stem.conv.weight"])
    bad = dict(state, **{"head.fc2.weight": torch.zeros(5, 192)})
    with pytest.raises(InputError, match=r"shape mismatch for head\.fc2\.weight: the weights give \(5, 192\), "
                                         r"the model needs \(10, 192\)"):
        compile_model(hybrid_file, weights=bad)


def test_cli_maps_a_checkpoint_and_refuses_bad_input_in_one_line(tmp_path, capsys):
    state = zoo_state("resnet50")
    save_weights(to_reference("resnet50", state), tmp_path / "resnet50.safetensors")
    out = tmp_path / "zoo_r50.pt"
    result = run_nas("zoo", "weights", "resnet50", "--from", tmp_path / "resnet50.safetensors", "-o", out)
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}: 320 tensors of zoo:resnet50" in result.stdout
    written = torch.load(out, weights_only=True)
    assert all(torch.equal(written[k], state[k]) for k in state)
    result = run_nas("zoo", "weights", "deit_s", "--from", tmp_path / "resnet50.safetensors")  # the wrong model
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    source = tmp_path / "resnet50.safetensors"
    assert result.stderr.startswith(f"error: {source}: 320 key(s) do not map onto zoo:deit_s")

    bad = [  # the same entry point in-process: a subprocess each costs seconds of imports
        (("zoo", "weights", "nope", "--from", out), "unknown zoo genome 'nope'"),
        (("zoo", "weights", "resnet50", "--from", tmp_path / "missing.pth"), "no such checkpoint file"),
        (("zoo", "weights", "resnet50"), "needs a NAME and --from CHECKPOINT"),
        (("zoo", "weights", "resnet50", "--from", out, "-o", tmp_path / "w.txt"), "unknown format '.txt'"),
    ]
    for args, message in bad:
        assert main([str(a) for a in args]) == 2, args
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "w.txt").exists() and not (tmp_path / "nope.pt").exists()
