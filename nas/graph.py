"""The genome as a networkx graph of stem, downsamples, blocks and head, with shapes inferred at every node.

Building the graph is the validation pass for everything that depends on feature-map shapes (heads that
divide the width, windows that tile the map, a resolution large enough for every downsampling), and it
carries each node's analytic params and FLOPs for the cost model.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import networkx as nx

from blocks import BlockConfig, Shape, ShapeError
from blocks.base import NeckConfig, join_path
from nas.errors import GenomeError, InputError, Problem, printable
from nas.genome import Genome
from nas.outputs import replacing, write_atomic


def build_graph(genome: Genome) -> nx.DiGraph:
    """Nodes in forward order (a neck's levels after the head), each with role, type, its config and the output
    channels it is given, YAML path, stage, shapes, params, frozen, flops and workspace (see ``BlockConfig``)."""
    graph = nx.DiGraph(name=genome.name)
    res = genome.input.resolution
    shape: Shape = (genome.input.channels, res[0], res[1])
    graph.add_node("input", role="input", type="image", config=None, out=shape[0], path="input", stage=-1,
                   in_shape=shape, out_shape=shape, params=0, frozen=0, flops=0, workspace=0)
    last = "input"
    seen: dict[tuple[int, Shape, int, bool], dict] = {}  # a stage repeats the same config objects
    stage_ends: list[tuple[str, Shape]] = []  # each stage's last node and output map, for a neck

    def add(node: str, role: str, cfg: BlockConfig, path: str, stage: int, out: int, token: bool = False) -> None:
        """``token``: a block of a stage with a class token, which costs that token's share too."""
        nonlocal shape, last
        known = seen.get((id(cfg), shape, out, token))
        if known is not None:
            graph.add_node(node, **{**known, "path": path, "stage": stage})
            graph.add_edge(last, node)
            shape, last = known["out_shape"], node
            return
        try:
            cfg.check(shape, out)
        except ShapeError as err:
            if role in ("stem", "downsample") and err.field is None:
                raise GenomeError(Problem("input.resolution", f"{res[0]}x{res[1]} is too small for this genome's "
                                          f"downsampling: at {path}, {err.message}")) from None
            raise GenomeError(Problem(join_path(path, err.field) or path, err.message)) from None
        out_shape = cfg.out_shape(shape, out)
        flops = cfg.flops(shape, out) + (cfg.class_token_flops(shape, out) if token else 0)
        data = dict(role=role, type=cfg.type, config=cfg, out=out, path=path, stage=stage, in_shape=shape,
                    out_shape=out_shape,
                    params=cfg.params(shape, out), frozen=cfg.frozen_params(shape, out), flops=flops,
                    workspace=cfg.workspace(shape, out))
        seen[(id(cfg), shape, out, token)] = data
        graph.add_node(node, **data)
        graph.add_edge(last, node)
        shape, last = out_shape, node

    add("stem", "stem", genome.stem, "stem", -1, genome.stages[0].width)
    for i, stage in enumerate(genome.stages):
        if stage.downsample is not None:
            add(f"stages[{i}].downsample", "downsample", stage.downsample, f"stages[{i}].downsample", i, stage.width)
        blocks = stage.blocks()
        if shape[0] != stage.width and not blocks[0].resamples:
            raise GenomeError(Problem(f"stages[{i}].width", f"{stage.width} differs from the {shape[0]} channels "
                                      "entering the stage; add a downsample to change the width"))
        if stage.class_token:
            check_class_token(genome, i)
        for j, block in enumerate(blocks):
            if stage.pattern:
                path = f"stages[{i}].pattern[{j % len(stage.pattern)}]"
            else:
                path = f"stages[{i}].block"
            add(f"stages[{i}].blocks[{j}]", "block", block, path, i, stage.width, stage.class_token)
        stage_ends.append((last, shape))  # a neck reads the map, never the class token
        if stage.class_token:
            graph.nodes[f"stages[{i}].blocks[0]"]["params"] += stage.width  # the token, with the first block
            shape = (shape[0], 1, 1)  # what the head classifies: the token, as a 1x1 map
    add("head", "head", genome.head, "head", len(genome.stages), genome.num_classes)
    if genome.neck is not None:
        add_neck(graph, genome.neck, stage_ends)
    return graph


def _mixer_or_self(config: Any) -> Any:
    """A MetaFormer-style block's token mixer config (every block config's ``mixer`` field is a ``Mixer`` or
    null), else the node's own config."""
    mixer = getattr(config, "mixer", None)
    return config if mixer is None else mixer


def node_family(config: Any) -> str:
    """A graph node's block family (what a latency calibration charges its time to, and what the objective's
    descriptors count): its token mixer's file for a MetaFormer-style block (``blocks/attention.py`` ->
    ``attention``), else its own (``stems``, ``heads``, ``reduction`` ...)."""
    return type(_mixer_or_self(config)).__module__.rpartition(".")[2]


def node_mixer_type(config: Any) -> str:
    """A graph node's token mixer type for a MetaFormer-style block (``dwconv``, ``window_attention``, ...), else
    its own type (``bottleneck`` ...): finer than ``node_family``, which names the mixer's file."""
    return getattr(_mixer_or_self(config), "type", "")


def add_neck(graph: nx.DiGraph, neck: NeckConfig, stage_ends: list[tuple[str, Shape]]) -> None:
    """One node per pyramid level (``neck.levels[k]``, finest first) with the cost of computing that level,
    fed by the stage it reads (or, for an extra level, the level below), and ``neck.shared`` for weights
    every level uses."""
    for k, index in enumerate(neck.in_stages):
        if index >= len(stage_ends):
            raise GenomeError(Problem(f"neck.in_stages[{k}]", f"{index}: the genome has {len(stage_ends)} stages, "
                                      f"numbered 0 to {len(stage_ends) - 1}"))
    inputs = [stage_ends[i] for i in neck.in_stages]
    shapes = [shape for _, shape in inputs]
    try:
        neck.check_levels(shapes)
    except ShapeError as err:
        raise GenomeError(Problem(join_path("neck", err.field) or "neck", err.message)) from None
    outs, costs = neck.out_shapes(shapes), neck.level_costs(shapes)
    common = dict(role="neck", type=neck.type, config=neck, out=neck.out_channels, path="neck",
                  stage=len(stage_ends), frozen=0, workspace=0)
    previous = None
    for k, (out_shape, (params, flops)) in enumerate(zip(outs, costs)):
        source, in_shape = inputs[k] if k < len(inputs) else (previous, outs[k - 1])
        node = f"neck.levels[{k}]"
        graph.add_node(node, **common, in_shape=in_shape, out_shape=out_shape, params=params, flops=flops)
        graph.add_edge(source, node)
        if previous is not None:
            graph.add_edge(previous, node)
        previous = node
    shared = neck.shared_params(shapes)
    if shared:
        graph.add_node("neck.shared", **common, in_shape=outs[0], out_shape=outs[0], params=shared, flops=0)


def check_class_token(genome: Genome, i: int) -> None:
    """A class token sits in the last stage, among blocks that pass it through."""
    stage = genome.stages[i]
    if i != len(genome.stages) - 1:
        raise GenomeError(Problem(f"stages[{i}].class_token", "only the last stage may have a class token: the "
                                  "head classifies it"))
    for j, block in enumerate(stage.pattern or [stage.block]):
        if not block.takes_class_token():
            path = f"stages[{i}].pattern[{j}]" if stage.pattern else f"stages[{i}].block"
            raise GenomeError(Problem(path, f"a {block.type} block with these parts cannot take the stage's class "
                                      "token; it needs a metaformer block with a mixer that attends with one "
                                      "(conv_attention) and a token-wise norm and mlp (layernorm, mlp)"))


def check_genome(genome: Genome) -> None:
    """Raise GenomeError for anything shape-dependent that would fail in torch."""
    build_graph(genome)


def _flat(graph: nx.DiGraph) -> nx.DiGraph:
    """A copy with tuple shapes written as strings and configs left out, which GraphML and DOT accept."""
    flat = graph.copy()
    # the genome's name is the user's: a control character is not allowed in XML, nor a newline in a DOT id
    flat.graph["name"] = printable(str(graph.graph.get("name", "genome")))
    for _, data in flat.nodes(data=True):
        del data["config"]
        for key in ("in_shape", "out_shape"):
            data[key] = "x".join(str(v) for v in data[key])
    return flat


def to_dot(graph: nx.DiGraph) -> str:
    flat = _flat(graph)
    name = flat.graph["name"].replace("\\", "\\\\").replace('"', '\\"')  # a quoted DOT id: \ and " escaped
    lines = [f'digraph "{name}" {{', "  rankdir=TB;", "  node [shape=box];"]
    for node, data in flat.nodes(data=True):
        label = f"{node}\\n{data['type']}  {data['out_shape']}\\n{data['params']:,} params"
        lines.append(f'  "{node}" [label="{label}"];')
    lines += [f'  "{a}" -> "{b}";' for a, b in graph.edges]
    return "\n".join(lines + ["}"]) + "\n"


GRAPH_SUFFIXES = (".dot", ".gv", ".graphml")


def write_graph(graph: nx.DiGraph, path: str | Path) -> None:
    """Write DOT (``.dot``/``.gv``) or GraphML (``.graphml``), by the file's suffix."""
    path = Path(path)
    if path.suffix in (".dot", ".gv"):
        write_atomic(path, to_dot(graph))
    elif path.suffix == ".graphml":
        with replacing(path) as tmp:
            nx.write_graphml(_flat(graph), tmp)
    else:
        raise InputError(f"{path}: unknown graph format {path.suffix!r}; use {', '.join(GRAPH_SUFFIXES)}")
