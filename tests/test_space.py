"""Spaces: a genome whose values may be choices."""
from __future__ import annotations

import math
import random

import pytest
import torch

from nas import GenomeError, load_genome
from nas.io import parse_yaml
from nas.space import check_space, choices, instantiate, is_space, random_picker, read_space, space_size
from tests.conftest import run_nas

SPACE = """\
stem: {type: conv, kernel: 4, stride: 4}
input: {resolution: 64}
num_classes: 10
defaults:
  downsample: {type: conv, kernel: 2, stride: 2}
stages:
  - {depth: {int: [1, 2]}, width: {choice: [16, 32]}, block: {mixer: {type: dwconv, kernel: {choice: [3, 5, 7]}}}}
  - depth: 1
    width: 64
    block:
      mixer: {choice: [{type: attention, heads: {choice: [2, 3]}}, pooling]}
      mlp: {ratio: {float: [1.0, 4.0], step: 0.5}}
"""


def test_choices_are_named_by_their_yaml_path():
    space = parse_yaml(SPACE)
    assert is_space(space) and not is_space(load_genome("zoo:deit_s").to_dict())
    assert [c.path for c in choices(space)] == [
        "stages[0].depth", "stages[0].width", "stages[0].block.mixer.kernel", "stages[1].block.mixer",
        "stages[1].block.mixer.choice[0].heads", "stages[1].block.mlp.ratio"]
    # 2 depths x 2 widths x 3 kernels x (2 head counts + pooling) x 7 ratios
    assert space_size(space) == 2 * 2 * 3 * 3 * 7


def test_samples_are_concrete_genomes():
    space = parse_yaml(SPACE)
    rng = random.Random(0)
    for _ in range(20):
        data = instantiate(space, random_picker(rng))
        assert not is_space(data)
        stage = data["stages"][0]
        assert stage["depth"] in (1, 2) and stage["block"]["mixer"]["kernel"] in (3, 5, 7)
        assert data["stages"][1]["block"]["mlp"]["ratio"] in [1.0 + 0.5 * i for i in range(7)]
        try:
            load_genome(data)
        except GenomeError as err:  # three heads do not divide 64: the search skips such genomes
            assert err.path == "stages[1].block.mixer.heads"


def test_check_space_counts_valid_samples_and_skipped_problems():
    report = check_space(parse_yaml(SPACE), samples=40, seed=1)
    assert report.sampled == 40 + 2 + 3 + 2 + 2  # random draws plus each option forced once
    assert 0 < report.valid < report.sampled
    assert report.shape_problems[0][0] == "stages[1].block.mixer.heads: 3 does not divide width 64"


def test_check_space_forces_each_option_up_to_a_cap_and_says_how_many():
    from nas.space import MAX_FORCED

    report = check_space(parse_yaml(SPACE), samples=0)
    assert (report.options, report.forced, report.capped) == (9, 9, False)
    # 1,000 options would be 1,000 genomes checked: past MAX_FORCED, the rest are left to the random draws
    many = parse_yaml(SPACE.replace("{choice: [16, 32]}", "{choice: [%s]}" % ", ".join(["32"] * 1000)))
    report = check_space(many, samples=10)
    assert (report.options, report.forced, report.capped) == (1007, MAX_FORCED, True)
    assert report.sampled == MAX_FORCED + 10


def test_check_space_checks_one_genome_at_least():
    ranges_only = parse_yaml(SPACE.replace("{choice: [16, 32]}", "16").replace("{choice: [3, 5, 7]}", "3")
                             .replace("{choice: [{type: attention, heads: {choice: [2, 3]}}, pooling]}", "pooling"))
    assert [c.kind for c in choices(ranges_only)] == ["int", "float"]
    report = check_space(ranges_only, samples=0)
    assert report.sampled == report.valid == 1


def test_space_size_is_a_float_and_infinite_beyond_one():
    assert space_size(parse_yaml(SPACE)) == 252.0 and isinstance(space_size(parse_yaml(SPACE)), float)
    # 30 ranges of 6e10 values each: about 2e323 genomes, beyond a float; reports format it with :.3g
    big = parse_yaml(SPACE.replace("{float: [1.0, 4.0], step: 0.5}", "{float: [0.0, 60000.0], step: 1.0e-6}"))
    big["stages"] = [big["stages"][1]] * 30
    assert math.isinf(space_size(big)) and f"{space_size(big):.3g}" == "inf"
    wide = parse_yaml(SPACE.replace("{int: [1, 2]}", f"{{int: [1, 1{'0' * 400}]}}"))
    assert choices(wide)[0].size == math.inf


@pytest.mark.parametrize(("edit", "path", "words"), [
    (("[3, 5, 7]", "[3, 5, 8]"), "stages[0].block.mixer.kernel", "must be odd"),
    (("type: attention, heads", "type: atention, heads"), "stages[1].block.mixer", "unknown type 'atention'"),
    (("{int: [1, 2]}", "{int: [2, 1]}"), "stages[0].depth.int", "low 2 is above high 1"),
    (("{choice: [16, 32]}", "{choice: []}"), "stages[0].width.choice", "non-empty list"),
    (("{int: [1, 2]}", "{int: [1, 2], stepp: 1}"), "stages[0].depth", "remove stepp"),
    (("{choice: [{type: attention, heads: {choice: [2, 3]}}, pooling]}", "{type: attention, heads: {choice: [3, 5]}}"),
     "stages[1].block.mixer.heads", "no valid genome"),
    (("step: 0.5", "step: 5.0e-324"), "stages[1].block.mlp.ratio.step", "more values than a float can count"),
    (("[1.0, 4.0]", "[1.0, .inf]"), "stages[1].block.mlp.ratio.float", "two finite floats"),
    (("[1.0, 4.0]", f"[1.0, 1{'0' * 400}]"), "stages[1].block.mlp.ratio.float", "two finite floats"),
])
def test_bad_spaces_name_the_path(edit, path, words):
    with pytest.raises(GenomeError) as info:
        check_space(parse_yaml(SPACE.replace(*edit)))
    assert info.value.path == path and words in str(info.value)


def test_cli_validates_a_space(tmp_path):
    file = tmp_path / "space.yaml"
    file.write_text(SPACE)
    result = run_nas("validate", file, "--samples", 16)
    assert result.returncode == 0, result.stderr
    assert "is a space with 6 choices (252 genomes)" in result.stdout
    assert "3 does not divide width 64" in result.stdout
    file.write_text(SPACE.replace("[3, 5, 7]", "[3, 4]"))
    result = run_nas("validate", file)
    assert result.returncode == 2 and "stages[0].block.mixer.kernel" in result.stderr and "line 7" in result.stderr


def _first_config(cls) -> dict:
    tag = cls.model_fields["type"].default
    return {"type": tag, **(cls.examples[0] if cls.examples else {})}


@pytest.mark.parametrize("role", ["mixer", "mlp", "block"])
def test_every_registered_type_can_be_a_choice(role):
    """Principle 3: a new block type is searchable with no extra code. One choice lists every type of the
    role; forcing each option gives a genome that validates, compiles and runs."""
    from blocks import CONFIGS
    from nas import compile_model

    options = [_first_config(cls) for _, cls in sorted(CONFIGS[role].items())]
    last = {"block": {"choice": options}} if role == "block" else {"block": {role: {"choice": options}}}
    if role == "mlp":
        last["block"]["mixer"] = "pooling"
    space = {"input": {"resolution": 32}, "num_classes": 5, "stem": {"type": "conv", "kernel": 4, "stride": 4},
             "stages": [{"depth": 1, "width": 32, **last}]}
    path = "stages[0].block" if role == "block" else f"stages[0].block.{role}"
    assert [c.path for c in choices(space)][0] == path
    for index in range(len(options)):
        genome = load_genome(instantiate(space, random_picker(random.Random(0), {path: index})))
        model = compile_model(genome).eval()
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_sample_genomes_draws_distinct_valid_genomes_and_more_keeps_the_first():
    from nas.space import sample_genomes

    space = read_space("tiny")[0]
    few, more = sample_genomes(space, 5, seed=3), sample_genomes(space, 12, seed=3)
    assert len(more) == 12 and len({g.content_hash() for g in more}) == 12
    assert [g.content_hash() for g in more[:5]] == [g.content_hash() for g in few]
    assert [g.content_hash() for g in sample_genomes(space, 5, seed=4)] != [g.content_hash() for g in few]
    only = sample_genomes(few[0].to_dict(), 3)  # a space of one genome gives that one, not three
    assert [g.content_hash() for g in only] == [few[0].content_hash()]
