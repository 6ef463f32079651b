"""Scaling a found design to another FLOPs target (``nas scale``).

A rule fixes how the FLOPs factor ``s`` is shared between depth, width and resolution. Following Dollar, Singh
and Girshick, "Fast and Accurate Model Scaling" (CVPR 2021, Sec. 4 and Table 4), a rule is three flop exponents
``e_d + e_w + e_r = 1``: depth is multiplied by ``s**e_d``, width by ``s**(e_w / 2)`` and resolution by
``s**(e_r / 2)`` (FLOPs grow linearly in depth and quadratically in width and resolution). Their fast compound
scaling, written dWr in the paper, is the family ``e_w = alpha``, ``e_d = e_r = (1 - alpha) / 2`` at
``alpha = 0.8``: ``e_d = 0.1, e_w = 0.8, e_r = 0.1`` (their code's scaling type ``d1_w8_r1``), so 4x the FLOPs
is 1.15x the depth, 1.74x the width and 1.07x the resolution. ``compound`` is EfficientNet's (Tan and Le, ICML
2019): depth 1.2^phi, width 1.1^phi, resolution 1.15^phi, i.e. exponents proportional to ln 1.2, 2 ln 1.1 and
2 ln 1.15. ``width``, ``depth`` and ``resolution`` scale one dimension alone.

Rounding keeps the genome's own constraints: a stage's width stays a multiple of 8 where the genome's widths all
are, of each attention head's width (the head width is kept and heads are added, as ViT-S to ViT-B does), of a
modulation's head count, a group norm's groups and a gnConv's 2^(order-1); a depth stays a whole number of its
stage's ``pattern`` periods where it was one, except that a stage whose one period is runs of equal blocks
(SpectFormer's 4 spectral then 8 attention blocks) is not periodic: its depth moves by single blocks and each run
is scaled in proportion (at least one block each); the resolution stays a multiple of the network's total
stride, so every feature map divides evenly as it did. Windows are refitted to the new maps (the nearest size
that tiles every map it runs on, Swin's shift staying half the window), and dilations that span the map keep
spanning it. Rounding moves FLOPs in steps, so the scale factor is found by bisection on a continuous multiplier,
then a short greedy fix-up moves single stages by one step until the analytic FLOPs are within half the
tolerance. The fix-up may also take finer steps than rounding does: a width between the head-width steps where
each attention keeps its head count instead (its head width staying a multiple of 8), and a resolution between
the stride's steps in multiples of 8 where the genome has no windows.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from blocks import CONFIGS
from blocks.attention import HeadsConfig
from nas.cost import Cost, analytic_cost
from nas.cost.budget import format_count
from nas.errors import GenomeError, InputError, printable
from nas.genome import Genome
from nas.io import load_genome, parse_genome

# Flop exponents (depth, width, resolution) of each rule; each sums to 1.
_EFFICIENTNET = (math.log(1.2), 2 * math.log(1.1), 2 * math.log(1.15))
RULES: dict[str, tuple[float, float, float]] = {
    "dWR": (0.1, 0.8, 0.1),
    "compound": tuple(e / sum(_EFFICIENTNET) for e in _EFFICIENTNET),  # type: ignore[dict-item]
    "width": (0.0, 1.0, 0.0),
    "depth": (1.0, 0.0, 0.0),
    "resolution": (0.0, 0.0, 1.0),
}
TOLERANCE = 0.05  # the analytic FLOPs land within this fraction of the target, or scaling fails
_BISECTION_STEPS = 40
_MAX_MULTIPLIER = 1e4  # the bracket of the continuous multiplier: 1e-4 to 1e4 times the FLOPs


class ScaleError(InputError):
    """A target the rule cannot reach on this genome (bad input: exit 2)."""


@dataclass(frozen=True)
class ScaledGenome:
    """The scaled genome with its analytic cost, the base's, and how it was scaled."""

    genome: Genome
    cost: Cost
    base_cost: Cost
    rule: str
    target_flops: int
    factors: dict[str, float]  # the continuous depth, width and resolution multipliers the rule gave
    adjustments: list[str] = field(default_factory=list)  # the fix-up's single-stage moves, as YAML paths

    @property
    def ratio(self) -> float:
        """Achieved FLOPs over the target."""
        return self.cost.flops / self.target_flops

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.genome.name, "rule": self.rule, "target_flops": self.target_flops,
                "flops": self.cost.flops, "params": self.cost.params, "ratio": self.ratio,
                "base": {"flops": self.base_cost.flops, "params": self.base_cost.params},
                "factors": self.factors, "adjustments": self.adjustments, "hash": self.genome.content_hash(),
                "genome": self.genome.to_dict()}


@dataclass(frozen=True)
class _Knobs:
    """The integers a scaled genome is built from; ``width`` is the continuous factor for widths outside the
    stages (a stem's or a head's own width, a token MLP's hidden width)."""

    widths: tuple[int, ...]
    depths: tuple[int, ...]
    resolution: tuple[int, int]
    width: float


def _configs(value: Any) -> Iterator[dict[str, Any]]:
    """Every config mapping (one with a ``type``) in a stage's blocks, nested ones included, depth first."""
    if isinstance(value, dict):
        if "type" in value:
            yield value
        for child in value.values():
            yield from _configs(child)
    elif isinstance(value, list):
        for child in value:
            yield from _configs(child)


def _is_heads_config(cfg: dict[str, Any]) -> bool:
    cls = CONFIGS["mixer"].get(cfg["type"])
    return cls is not None and issubclass(cls, HeadsConfig)


def _round_to(value: float, step: int) -> int:
    """The nearest multiple of ``step``, at least ``step``."""
    return max(step, step * round(value / step))


class _Plan:
    """What scaling one base genome needs: its canonical form, each stage's width step and depth period, the
    resolution step, and the base feature maps."""

    def __init__(self, genome: Genome):
        self.genome = genome
        self.base = genome.to_dict()
        stages = self.base["stages"]
        widths = [s["width"] for s in stages]
        base_step = 8 if all(w % 8 == 0 for w in widths) else 1
        # A stage without a downsample keeps the width of the one before (VOLO's last three): they share one
        # width, moved together, in the step every one of them allows.
        self.leader = list(range(len(stages)))
        for i in range(1, len(stages)):
            if stages[i].get("downsample") is None and widths[i] == widths[i - 1]:
                self.leader[i] = self.leader[i - 1]
        rules = [self._width_rules(stage, base_step) for stage in stages]
        # the head works at the last stage's width: its heads divide it too (VOLO's class attention)
        head_step, head_heads = self._width_rules({"block": self.base["head"], "width": widths[-1]}, 1)
        rules[-1] = (math.lcm(rules[-1][0], head_step), rules[-1][1] + head_heads)
        # fine_steps and heads: what a finer width of the fix-up keeps (see finer_widths)
        self.fine_steps = [step for step, _ in rules]
        self.heads = [heads for _, heads in rules]
        steps = [math.lcm(step, *(width for _, width in heads)) for step, heads in rules]
        for i, lead in enumerate(self.leader):
            steps[lead] = math.lcm(steps[lead], steps[i])
        self.steps = [steps[lead] for lead in self.leader]
        # a stage of one period made of runs of equal blocks scales each run; its depth moves by single blocks
        self.runs = [_runs(s) for s in stages]
        self.periods = [1 if runs else len(s["pattern"]) if s.get("pattern") else 1
                        for s, runs in zip(stages, self.runs)]
        self.least_depths = [len(runs) if runs else p if s["depth"] % p == 0 else 1
                             for s, runs, p in zip(stages, self.runs, self.periods)]
        self.maps = _stage_maps(genome)
        self.windowed = any(cfg.get("window") for cfg in _configs(stages))
        height, width = genome.input.resolution
        final = self.maps[-1]
        stride = max(1, height // final[0]) if height % final[0] == 0 else 1
        self.res_step = stride if height % stride == 0 and width % stride == 0 else 1
        self.knobs = _Knobs(tuple(widths), tuple(s["depth"] for s in stages), (height, width), 1.0)

    @staticmethod
    def _width_rules(stage: dict[str, Any], step: int) -> tuple[int, list[tuple[int, int]]]:
        """The step every width of the stage must be a multiple of (8 where the genome's widths all are, a
        modulation's head count, groups, a gnConv's 2^(order-1), a given head width), and the heads and head
        width of each attention whose head width follows the stage's width."""
        heads: list[tuple[int, int]] = []
        for cfg in _configs([stage.get("block"), stage.get("pattern")]):
            if _is_heads_config(cfg):
                if cfg["head_dim"]:
                    step = math.lcm(step, cfg["head_dim"])
                else:  # rounding keeps the head's width: heads = width / head width
                    heads.append((cfg["heads"], stage["width"] // cfg["heads"]))
            elif isinstance(cfg.get("heads"), int):
                step = math.lcm(step, cfg["heads"])
            if cfg["type"] == "gnconv":
                step = math.lcm(step, 2 ** (cfg["order"] - 1))
            if cfg["type"] == "groupnorm":
                step = math.lcm(step, cfg["groups"])
        return step, heads

    def finer_widths(self, stage: int, width: int) -> list[int]:
        """The nearest widths below and above ``width``, less than a rounding step away, that the stages tied to
        ``stage`` allow when an attention keeps its head count instead of its head width: every fixed step still
        divides them, and each attention's head width either divides them or, with the base's heads, stays a
        multiple of 8 (as the base's was). DeiT-S's 6 heads of 64: 336 and 432 around 384, as well as 320, 448."""
        group = [j for j, lead in enumerate(self.leader) if lead == stage]
        step = math.lcm(*(self.fine_steps[j] for j in group))

        def allowed(w: int) -> bool:
            return all(w % head_width == 0 or (head_width % 8 == 0 and w % (8 * heads) == 0)
                       for j in group for heads, head_width in self.heads[j])

        found = []
        for sign in (-1, 1):
            w = width + sign * step
            while 0 < w and abs(w - width) < self.steps[stage] and not allowed(w):
                w += sign * step
            if 0 < w and abs(w - width) < self.steps[stage]:
                found.append(w)
        return found

    def knobs_for(self, depth: float, width: float, resolution: float) -> _Knobs:
        widths = tuple(_round_to(w * width, q) for w, q in zip(self.knobs.widths, self.steps))
        depths = []
        for d, p, least in zip(self.knobs.depths, self.periods, self.least_depths):
            whole = d % p == 0  # a depth of whole pattern periods stays whole
            depths.append(max(least, _round_to(d * depth, p) if whole else round(d * depth)))
        res = tuple(_round_to(r * resolution, self.res_step) for r in self.knobs.resolution)
        return _Knobs(widths, tuple(depths), res, width)  # type: ignore[arg-type]

    def build(self, knobs: _Knobs, name: str) -> dict[str, Any]:
        """The scaled genome's mapping (not yet validated)."""
        data = copy.deepcopy(self.base)
        data["name"] = name
        height, width = knobs.resolution
        data["input"]["resolution"] = height if height == width else [height, width]
        for stage, base, new_width, depth, runs in zip(data["stages"], self.base["stages"], knobs.widths,
                                                       knobs.depths, self.runs):
            stage["width"], stage["depth"] = new_width, depth
            if runs and depth != base["depth"]:
                lengths = _apportion([n for _, n in runs], depth)
                stage["pattern"] = [copy.deepcopy(block) for (block, _), n in zip(runs, lengths) for _ in range(n)]
            for cfg in _configs([stage.get("block"), stage.get("pattern")]):
                head_width = base["width"] // cfg["heads"] if _is_heads_config(cfg) and cfg["heads"] else 0
                if head_width and cfg["head_dim"] is None and new_width % head_width == 0:
                    cfg["heads"] = new_width // head_width  # otherwise the heads are kept (finer_widths)
                if cfg["type"] == "token_mlp" and cfg.get("tokens_hidden"):
                    cfg["tokens_hidden"] = _round_to(cfg["tokens_hidden"] * knobs.width, 8)
        for part in ("stem", "head"):
            if isinstance(data[part].get("width"), int):  # ResNet's stem, MobileNet's head: widths of their own
                data[part]["width"] = _round_to(data[part]["width"] * knobs.width, 8)
        if knobs.resolution != self.knobs.resolution:
            self._refit(data)
        return data

    def _refit(self, data: dict[str, Any]) -> None:
        """Windows, dilations and reduction ratios made valid on the new feature maps."""
        try:
            maps = _stage_maps(Genome.model_validate(data))
        except ValueError:
            return  # validation will say what is wrong
        for stage, old, new in zip(data["stages"], self.maps, maps):
            for cfg in _configs([stage.get("block"), stage.get("pattern")]):
                if cfg["type"] in ("window_attention", "attention") and cfg.get("window"):
                    window = _fit_window(new, cfg["window"], whole_map=cfg["type"] == "window_attention")
                    if cfg.get("shift"):
                        cfg["shift"] = window // 2  # Swin's shift: half the window
                    cfg["window"] = window
                elif cfg["type"] == "neighborhood_attention" and cfg["dilation"] > 1:
                    spread = round(cfg["dilation"] * min(new) / min(old))  # DiNAT: the dilated kernel spans the map
                    cfg["dilation"] = max(1, min(spread, min(new) // cfg["kernel"]))
                elif cfg["type"] == "reduction_attention":
                    cfg["sr_ratio"] = max(1, min(cfg["sr_ratio"], min(new)))


def _runs(stage: dict[str, Any]) -> list[tuple[dict[str, Any], int]] | None:
    """A stage's blocks as runs of equal blocks, (block, length), where its one period covers the whole stage and
    some run is longer than one block (SpectFormer: 4 spectral, then 8 attention); None for a periodic stage
    (Swin's plain and shifted pair, a repeated block)."""
    pattern = stage.get("pattern")
    if not pattern or len(pattern) != stage["depth"]:
        return None
    runs: list[tuple[dict[str, Any], int]] = []
    for block in pattern:
        if runs and runs[-1][0] == block:
            runs[-1] = (block, runs[-1][1] + 1)
        else:
            runs.append((block, 1))
    return runs if len(runs) < len(pattern) else None


def _apportion(lengths: list[int], total: int) -> list[int]:
    """``lengths`` scaled to sum to ``total`` (at least the number of them), each at least 1: the largest
    remainders round up, the earlier run on ties. 4 and 8 to 14 blocks: 5 and 9."""
    shares = [n * total / sum(lengths) for n in lengths]
    out = [max(1, math.floor(x)) for x in shares]
    order = sorted(range(len(out)), key=lambda i: -(shares[i] - math.floor(shares[i])))
    while sum(out) < total:
        for i in order:
            if sum(out) < total:
                out[i] += 1
    while sum(out) > total:  # only where the floor of 1 lifted a run: take from the longest
        out[max(range(len(out)), key=lambda i: out[i])] -= 1
    return out


def _fit_window(size: tuple[int, int], window: int, whole_map: bool) -> int:
    """The window nearest ``window`` (within half to twice it, larger on ties) that tiles a ``size`` map; a
    window attention also takes a map no larger than its window whole. ``window`` itself when none does."""
    def fits(v: int) -> bool:
        return (whole_map and min(size) <= v) or (size[0] % v == 0 and size[1] % v == 0)

    candidates = [v for v in range(max(1, -(-window // 2)), 2 * window + 1) if fits(v)]
    return min(candidates, key=lambda v: (abs(v - window), -v)) if candidates else window


def _stage_maps(genome: Genome) -> list[tuple[int, int]]:
    """Each stage's feature map after its downsample and first block (where its mixers run); no checks."""
    height, width = genome.input.resolution
    shape = (genome.input.channels, height, width)
    shape = genome.stem.out_shape(shape, genome.stages[0].width)
    maps = []
    for stage in genome.stages:
        if stage.downsample is not None:
            shape = stage.downsample.out_shape(shape, stage.width)
        shape = stage.blocks()[0].out_shape(shape, stage.width)
        maps.append((shape[1], shape[2]))
    return maps


class _Search:
    """Evaluations of knobs, cached: a built, validated genome and its cost, or None where it is invalid."""

    def __init__(self, plan: _Plan, name: str, target: int, base_flops: int):
        self.plan, self.name, self.target, self.base_flops = plan, name, target, base_flops
        self.seen: dict[_Knobs, tuple[Genome, Cost] | None] = {}
        self.invalid: dict[_Knobs, str] = {}  # why each invalid genome is, for the error when nothing fits

    def evaluate(self, knobs: _Knobs) -> tuple[Genome, Cost] | None:
        if knobs not in self.seen:
            try:
                genome = parse_genome(self.plan.build(knobs, self.name))
                self.seen[knobs] = (genome, analytic_cost(genome))
            except (GenomeError, ValueError) as err:
                self.seen[knobs] = None
                self.invalid[knobs] = str(err).splitlines()[0]
        return self.seen[knobs]

    def error(self, knobs: _Knobs) -> float:
        found = self.evaluate(knobs)
        return math.inf if found is None else abs(math.log(found[1].flops / self.target))

    def best(self) -> _Knobs | None:
        valid = [k for k, v in self.seen.items() if v is not None]
        return min(valid, key=self.error) if valid else None


def scale_genome(genome: Genome | str | dict[str, Any], flops: float | str, rule: str = "dWR",
                 tolerance: float = TOLERANCE, name: str | None = None) -> ScaledGenome:
    """``genome`` scaled by ``rule`` (see ``RULES`` and the module docstring) to ``flops`` multiply-accumulates
    (a number, or a string such as ``8G`` as ``nas search --budget`` takes it), within ``tolerance`` of it by
    the analytic count. Raises ScaleError when the rule cannot get that close on this genome."""
    from nas.cost.budget import parse_flops

    if rule not in RULES:
        raise InputError(f"unknown scaling rule {rule!r}; rules are {', '.join(RULES)}")
    target = parse_flops(flops)
    base = load_genome(genome)
    base_cost = analytic_cost(base)
    plan = _Plan(base)
    e_d, e_w, e_r = RULES[rule]
    search = _Search(plan, name or f"{base.name}_{rule}_{format_count(target)}", target,
                     base_cost.flops)

    def factors(t: float) -> tuple[float, float, float]:
        return t**e_d, t ** (e_w / 2), t ** (e_r / 2)

    def flops_at(t: float) -> float | None:
        found = search.evaluate(plan.knobs_for(*factors(t)))
        return None if found is None else found[1].flops

    # Bisection on log t, the continuous FLOPs multiplier; invalid genomes count as overshooting when t > 1.
    lo, hi = math.log(1 / _MAX_MULTIPLIER), math.log(_MAX_MULTIPLIER)
    guess = math.log(target / base_cost.flops)
    lo_t, hi_t = max(lo, guess - 1.0), min(hi, guess + 1.0)
    while lo_t > lo and (flops_at(math.exp(lo_t)) or math.inf) > target:
        lo_t = max(lo, lo_t - 2.0)
    while hi_t < hi and (flops_at(math.exp(hi_t)) or 0) < target:
        hi_t = min(hi, hi_t + 2.0)
    for _ in range(_BISECTION_STEPS):
        mid = (lo_t + hi_t) / 2
        value = flops_at(math.exp(mid))
        if value is None:
            value = math.inf if mid > 0 else 0.0
        if value < target:
            lo_t = mid
        else:
            hi_t = mid
    best = search.best()
    if best is None:
        raise ScaleError(f"{printable(base.name)}: no valid genome found scaling by {rule!r} towards "
                         f"{format_count(target)}FLOPs")
    used = factors(math.exp((lo_t + hi_t) / 2))
    start = best
    best, adjustments = _fix_up(search, start, rule, tolerance / 2, keep_side=True, finer=False)
    # Only where the target is still farther than the tolerance may a stage move back past the base genome, and
    # only where it is farther than half the tolerance may a width leave the rounding steps (an attention keeping
    # its head count); each try is kept where it lands nearer.
    for keep_side, finer in ((False, False), (True, True), (False, True)):
        if search.error(best) <= math.log1p(tolerance if not keep_side else tolerance / 2):
            continue
        again, moves = _fix_up(search, start, rule, tolerance / 2, keep_side=keep_side, finer=finer)
        if search.error(again) < search.error(best):
            best, adjustments = again, moves
    found = search.evaluate(best)
    assert found is not None
    scaled, cost = found
    if abs(cost.flops / target - 1) > tolerance:
        raise ScaleError(
            f"{printable(base.name)}: rule {rule!r} cannot reach {format_count(target)}FLOPs within {tolerance:.0%}: "
            f"the nearest valid genome has {format_count(cost.flops)}FLOPs ({cost.flops / target - 1:+.2%}; the base "
            f"has {format_count(base_cost.flops)}); {_why(search, rule, best)}")
    return ScaledGenome(scaled, cost, base_cost, rule, target,
                        {"depth": used[0], "width": used[1], "resolution": used[2]}, adjustments)


def _why(search: _Search, rule: str, knobs: _Knobs) -> str:
    """Why the nearest genome is as far as it is, in the rule's terms."""
    plan = search.plan
    found = search.evaluate(knobs)
    overshoot = found is not None and found[1].flops > search.target
    # the invalid genomes on the target's side of the nearest valid one, the closest first
    beyond = [k for k in search.invalid if (_size(k) < _size(knobs)) == overshoot]
    if beyond:
        knob = min(beyond, key=lambda k: abs(math.log(_size(k) / _size(knobs))))
        reason = search.invalid[knob]
        return (f"the genome does not validate at {knob.resolution[0]}x{knob.resolution[1]}, "
                f"{', '.join(map(str, knob.widths))} wide and {', '.join(map(str, knob.depths))} deep: "
                f"{reason.split(': ', 1)[-1]}; {_other_rule(rule)}")
    if rule == "resolution":
        return f"the resolution moves in steps of {plan.res_step}, the network's stride; {_other_rule(rule)}"
    if rule == "depth":
        least = "every stage is at its least depth; " if knobs.depths == tuple(plan.least_depths) else ""
        return f"{least}stage depths move in steps of {', '.join(map(str, plan.periods))}; {_other_rule(rule)}"
    least = "every stage is at its least width; " if knobs.widths == tuple(plan.steps) else ""
    finer = "; finer where an attention keeps its head count" if any(plan.heads) else ""
    return (f"{least}stage widths move in steps of {', '.join(map(str, plan.steps))} (multiples of 8, head "
            f"widths, head counts, groups{finer}); {_other_rule(rule)}")


def _other_rule(rule: str) -> str:
    """Another rule spreads the factor differently, so its rounding may land nearer."""
    return "try --rule compound" if rule == "dWR" else "try --rule dWR"


def _size(knobs: _Knobs) -> float:
    """A rough FLOPs proxy, to order genomes by size: pixels times the sum of depth times width squared."""
    return knobs.resolution[0] * knobs.resolution[1] * sum(d * w * w for d, w in zip(knobs.depths, knobs.widths))


def _fix_up(search: _Search, start: _Knobs, rule: str, aim: float, keep_side: bool,
            finer: bool) -> tuple[_Knobs, list[str]]:
    """Greedy moves of one rounding step, along the rule's own dimensions, at most one per stage and dimension
    and, with ``keep_side``, none back past the base genome (so the rule's proportions stay), while they bring
    the FLOPs closer to the target and it is farther than ``aim``. With ``finer``, a width may also move to the
    nearest one either side where the attentions keep their head counts (``_Plan.finer_widths``)."""
    e_d, e_w, e_r = RULES[rule]
    plan, knobs, moves = search.plan, start, []
    used: set[tuple[str, int]] = set()
    grow = search.target >= search.base_flops

    def same_side(new: int, base: int) -> bool:  # growing a genome never shrinks a stage, nor the reverse
        return not keep_side or (new >= base if grow else new <= base)

    while search.error(knobs) > math.log1p(aim):
        options: list[tuple[_Knobs, str, tuple[str, int]]] = []
        for i in range(len(knobs.widths)):
            if e_w and plan.leader[i] == i and ("width", i) not in used:
                # a rounding step either way, or a finer one where the attentions keep their head counts
                for new in (knobs.widths[i] + plan.steps[i], knobs.widths[i] - plan.steps[i],
                            *(plan.finer_widths(i, knobs.widths[i]) if finer else ())):
                    if new >= plan.fine_steps[i] and same_side(new, plan.knobs.widths[i]):
                        # a stage's width moves with the stages tied to it
                        widths = tuple(new if lead == i else w for w, lead in zip(knobs.widths, plan.leader))
                        options.append((replace(knobs, widths=widths),
                                        f"stages[{i}].width {new - knobs.widths[i]:+d}", ("width", i)))
            for sign in (1, -1):
                depths = list(knobs.depths)
                depths[i] += sign * plan.periods[i]
                if e_d and ("depth", i) not in used and depths[i] >= plan.least_depths[i] \
                        and same_side(depths[i], plan.knobs.depths[i]):
                    options.append((replace(knobs, depths=tuple(depths)), f"stages[{i}].depth "
                                    f"{sign * plan.periods[i]:+d}", ("depth", i)))
        if e_r and ("resolution", 0) not in used:
            # finer than the stride too, in multiples of 8, where the genome validates and has no windows (a
            # window refitted to an uneven map would no longer be the genome's own)
            fine = range(8, plan.res_step, 8) if not plan.windowed else ()
            for step in sorted({plan.res_step, *fine}):
                for sign in (1, -1):
                    res = tuple(r + sign * step for r in knobs.resolution)
                    if min(res) >= plan.res_step and same_side(res[0], plan.knobs.resolution[0]):
                        options.append((replace(knobs, resolution=res), f"input.resolution {sign * step:+d}",
                                        ("resolution", 0)))
        if not options:
            break
        candidate, move, knob = min(options, key=lambda option: search.error(option[0]))
        if search.error(candidate) >= search.error(knobs):
            break
        knobs = candidate
        moves.append(move)
        used.add(knob)
    return knobs, moves
