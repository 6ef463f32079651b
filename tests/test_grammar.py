"""The genome grammar: loading, defaults, canonical form and hash, the graph."""
from __future__ import annotations

import networkx as nx
import pytest
import yaml

from nas import Genome, GenomeError, build_graph, dump_genome, load_genome
from nas.io import parse_yaml
from tests.conftest import HYBRID_YAML


def hybrid() -> dict:
    return yaml.safe_load(HYBRID_YAML)


def test_dump_then_load_gives_an_equal_genome(tmp_path):
    for spec in ("zoo:caformer_s18", "zoo:deit_s", hybrid()):
        genome = load_genome(spec)
        path = tmp_path / "g.yaml"
        dump_genome(genome, path)
        again = load_genome(path)
        assert again == genome
        assert again.to_dict() == genome.to_dict()
        assert again.content_hash() == genome.content_hash()


def test_hash_ignores_key_order_and_name():
    data = hybrid()
    shuffled = {key: data[key] for key in reversed(list(data))}
    shuffled["stages"] = [{k: s[k] for k in reversed(list(s))} for s in data["stages"]]
    renamed = {**data, "name": "another_name"}
    reference = load_genome(data).content_hash()
    assert load_genome(shuffled).content_hash() == reference
    assert load_genome(renamed).content_hash() == reference
    assert load_genome(renamed) != load_genome(data)  # equality still sees the name


def test_hash_ignores_anchors_and_shorthand():
    anchored = parse_yaml("""
stem: {type: conv, kernel: 4, stride: 4, post_norm: &ln {type: layernorm}}
stages:
  - {depth: 2, width: 32, block: {mixer: &m {type: dwconv, kernel: 7}, norm: *ln}}
  - {depth: 2, width: 32, block: {mixer: *m, norm: *ln}}
""")
    spelled_out = parse_yaml("""
stem: {type: conv, kernel: 4, stride: 4, padding: 0, post_norm: layernorm}
stages:
  - {depth: 2, width: 32, block: {type: metaformer, mixer: {type: dwconv, kernel: 7}, norm: layernorm}}
  - {depth: 2, width: 32.0, block: {mixer: {type: dwconv}, norm: {type: layernorm, eps: 1.0e-6},
     mlp: {type: mlp, ratio: 4.0}}}
""")
    assert load_genome(anchored).content_hash() == load_genome(spelled_out).content_hash()


def test_defaults_give_the_same_genome_as_writing_them_out():
    with_defaults = hybrid()
    written_out = hybrid()
    defaults = written_out.pop("defaults")
    for i, stage in enumerate(written_out["stages"]):
        if i > 0:
            stage["downsample"] = defaults["downsample"]
        for block in stage.get("pattern", [stage.get("block")]):
            block.setdefault("norm", defaults["norm"])
            block.setdefault("mlp", defaults["mlp"])
    assert load_genome(with_defaults) == load_genome(written_out)
    assert load_genome(with_defaults).content_hash() == load_genome(written_out).content_hash()


def test_stage_settings_override_and_refine_defaults():
    data = parse_yaml("""
stem: {type: conv, kernel: 4, stride: 4}
defaults:
  mlp: {type: mlp, ratio: 4, act: star_relu}
  layer_scale: 1.0e-6
  downsample: {type: conv, kernel: 2, stride: 2}
stages:
  - {depth: 1, width: 32, block: {mixer: identity, mlp: {ratio: 2}}}
  - {depth: 1, width: 64, block: {mixer: identity, layer_scale: null}}
  - {depth: 1, width: 64, downsample: null, block: {mixer: identity, mlp: null}}
""")
    genome = load_genome(data)
    first, second, third = (stage.block for stage in genome.stages)
    assert (first.mlp.ratio, first.mlp.act) == (2.0, "star_relu")  # refined, not replaced
    assert first.layer_scale == 1e-6
    assert second.layer_scale is None  # an explicit null wins over the default
    assert third.mlp is None
    assert genome.stages[0].downsample is None  # the first stage never inherits a downsample
    assert genome.stages[1].downsample.kernel == 2
    assert genome.stages[2].downsample is None


def test_pattern_cycles_to_the_depth_and_canonicalises_to_its_period():
    data = hybrid()
    genome = load_genome(data)
    stage = genome.stages[2]
    assert [b.mixer.window for b in stage.blocks()] == [2, None]
    data["stages"][2]["depth"] = 5
    assert [b.mixer.window for b in load_genome(data).stages[2].blocks()] == [2, None, 2, None, 2]
    repeated = hybrid()
    repeated["stages"][0] = {**repeated["stages"][0], "pattern": [repeated["stages"][0]["block"]] * 2}
    del repeated["stages"][0]["block"]
    assert load_genome(repeated).content_hash() == genome.content_hash()
    assert "block" in load_genome(repeated).to_dict()["stages"][0]


def test_hash_changes_with_the_architecture():
    data = hybrid()
    reference = load_genome(data).content_hash()
    data["stages"][0]["width"] = 40
    assert load_genome(data).content_hash() != reference


def test_genomes_are_immutable_and_typed():
    genome = load_genome(hybrid())
    assert isinstance(genome, Genome)
    assert genome.input.resolution == (64, 64)
    assert genome.to_dict()["input"]["resolution"] == 64
    try:
        genome.num_classes = 3  # type: ignore[misc]
    except Exception as err:  # pydantic refuses assignment to frozen models
        assert "frozen" in str(err).lower()
    else:
        raise AssertionError("a genome must be frozen")


def test_graph_infers_shapes_at_every_node():
    graph = build_graph(load_genome(hybrid()))
    order = list(nx.topological_sort(graph))
    assert order[0] == "input" and order[-1] == "head"
    assert len([n for n in order if graph.nodes[n]["role"] == "block"]) == 7
    assert graph.nodes["stem"]["out_shape"] == (32, 16, 16)
    assert graph.nodes["stages[2].downsample"]["out_shape"] == (64, 4, 4)
    assert graph.nodes["stages[3].blocks[0]"]["in_shape"] == (96, 2, 2)
    assert graph.nodes["stages[2].blocks[1]"]["path"] == "stages[2].pattern[1]"
    assert graph.nodes["head"]["out_shape"] == (10, 1, 1)
    assert nx.is_directed_acyclic_graph(graph)


def test_graph_exports_for_drawing(tmp_path):
    from nas.graph import to_dot, write_graph

    graph = build_graph(load_genome("zoo:caformer_s18"))
    write_graph(graph, tmp_path / "g.graphml")
    loaded = nx.read_graphml(tmp_path / "g.graphml")
    assert loaded.number_of_nodes() == graph.number_of_nodes() == 1 + 1 + 3 + 18 + 1
    assert loaded.nodes["stages[2].blocks[0]"]["out_shape"] == "320x14x14"
    dot = to_dot(graph)
    assert dot.startswith('digraph "caformer_s18"') and '"stem" -> "stages[0].blocks[0]";' in dot


def test_blocks_inside_sequences_count_towards_the_block_limit():
    # a sequence is one block of its stage but builds every sub-block: 100 of 50 would build 5,000 blocks
    def genome(depth: int, block: dict) -> dict:
        return {"stem": {"type": "conv", "kernel": 4, "stride": 4},
                "stages": [{"depth": depth, "width": 16, "block": block}]}

    plain = {"mixer": "identity", "mlp": None}
    sequence = {"type": "sequence", "blocks": [plain] * 50}
    with pytest.raises(GenomeError) as info:
        load_genome(genome(100, sequence))
    assert info.value.path == "stages" and "5,000 blocks in all, counting each block inside a sequence" in str(
        info.value) and "at most 4,096" in str(info.value)
    nested = {"type": "sequence", "blocks": [{"type": "sequence", "blocks": [plain] * 64}] * 64}  # 64 x 64
    assert load_genome(genome(1, nested))  # 4,096 blocks: at the limit
    with pytest.raises(GenomeError, match="4,097 blocks in all"):
        load_genome(genome(1, {"type": "sequence", "blocks": [nested, plain]}))
    patterned = genome(81, None)  # a pattern cycled to the depth: 41 sequences of 100 and 40 plain blocks
    patterned["stages"][0].update(block=None, pattern=[{**sequence, "blocks": [plain] * 100}, plain])
    with pytest.raises(GenomeError, match="4,140 blocks in all"):
        load_genome(patterned)
    assert sum(stage.depth for stage in load_genome("zoo:maxvit_t").stages) == 11  # sequences of 3: 33 blocks


def _old_canonical_pattern(blocks: list) -> list:
    """The shortest period by trying each one: the canonical form as it was, quadratic in the length."""
    period = next(p for p in range(1, len(blocks) + 1) if all(blocks[i] == blocks[i % p] for i in range(len(blocks))))
    return blocks[:period]


@pytest.mark.parametrize(("pattern", "depth", "canonical"), [
    ("a", 3, "a"), ("aa", 2, "a"), ("aab", 2, "a"), ("ab", 5, "ab"), ("abab", 4, "ab"), ("aba", 3, "ab"),
    ("aba", 6, "aba"), ("abc", 2, "ab"), ("abcab", 5, "abc"), ("abcab", 10, "abcab"), ("aabaab", 12, "aab"),
    ("abababc", 7, "abababc"), ("ba", 1, "b"),
])
def test_a_pattern_canonicalises_to_its_shortest_period_as_before(pattern, depth, canonical):
    kernels = {"a": 3, "b": 5, "c": 7}
    blocks = [{"mixer": {"type": "dwconv", "kernel": kernels[letter]}} for letter in pattern]
    stage = load_genome({"stem": {"type": "conv", "kernel": 4, "stride": 4},
                         "stages": [{"depth": depth, "width": 16, "pattern": blocks}]}).to_dict()["stages"][0]
    found = [stage["block"]] if "block" in stage else stage["pattern"]
    assert "".join("abc"[[3, 5, 7].index(b["mixer"]["kernel"])] for b in found) == canonical
    assert canonical == "".join(_old_canonical_pattern([pattern[i % len(pattern)] for i in range(depth)]))


def test_a_long_pattern_canonicalises_in_linear_time():
    from nas.genome import shortest_period

    compared = 0

    class Key(int):
        def __eq__(self, other: object) -> bool:
            nonlocal compared
            compared += 1
            return int(self) == int(other)

        __hash__ = int.__hash__

        def __ne__(self, other: object) -> bool:
            return not self == other

    # 4,095 equal entries then another: trying each period compared about 4,096 x 4,096 / 2 pairs
    assert shortest_period([Key(0)] * 4095 + [Key(1)]) == 4096
    assert compared <= 3 * 4096
    blocks = [{"mixer": {"type": "dwconv", "kernel": 3}}] * 4095 + [{"mixer": {"type": "dwconv", "kernel": 5}}]
    genome = load_genome({"stem": {"type": "conv", "kernel": 4, "stride": 4},
                          "stages": [{"depth": 4096, "width": 16, "pattern": blocks}]})
    assert len(genome.to_dict()["stages"][0]["pattern"]) == 4096
