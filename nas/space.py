"""Search spaces: a genome in which any value may be a choice.

``{choice: [a, b]}`` picks one of the listed values (scalars, mappings or whole mixers);
``{int: [lo, hi], step: s}`` and ``{float: [lo, hi], log: true}`` pick from a range. Choices may nest inside
the options of other choices. A choice's name is its YAML path, so Optuna parameters read like the file.
"""
from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from nas.errors import GenomeError, Problem, did_you_mean, format_path, from_validation_error
from nas.genome import Genome
from nas.graph import check_genome
from nas.io import read_yaml

_KINDS = {"choice": set(), "int": {"step", "log"}, "float": {"step", "log"}}
# Options check_space forces a sample to take, in all: each sample is a genome validated and shape-checked
# (about 50 ms at MAX_BLOCKS), and the largest shipped space has 185 options.
MAX_FORCED = 256


@dataclass(frozen=True)
class Choice:
    path: str
    kind: str  # choice | int | float
    options: tuple[Any, ...] = ()
    low: float = 0
    high: float = 0
    step: float | None = None
    log: bool = False

    @property
    def size(self) -> float:
        """How many values the choice offers: a float, math.inf for a continuous range or beyond a float."""
        if self.kind == "choice":
            return float(len(self.options))
        if self.kind == "int":
            return _as_float((int(self.high) - int(self.low)) // int(self.step or 1) + 1)
        return math.inf if self.step is None else math.floor((self.high - self.low) / self.step) + 1.0


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond any float
        return False


def _as_float(count: int) -> float:
    try:
        return float(count)
    except OverflowError:  # an int range wider than any float: counted as endless, like a continuous one
        return math.inf


def parse_choice(node: Any, path: str) -> Choice | None:
    """The choice a mapping declares, None for an ordinary mapping; malformed choices are GenomeErrors."""
    if not isinstance(node, dict):
        return None
    kinds = [k for k in _KINDS if k in node]
    if not kinds:
        return None
    kind = kinds[0]
    extra = set(node) - {kind} - _KINDS[kind]
    if len(kinds) > 1 or extra:
        bad = sorted(extra | set(kinds[1:]), key=str)
        allowed = [kind, *sorted(_KINDS[kind])]
        raise GenomeError(Problem(path, f"a '{kind}' choice takes only {', '.join(allowed)}; remove "
                                        f"{', '.join(map(str, bad))}{did_you_mean(bad[0], allowed)}"))
    spec = node[kind]
    if kind == "choice":
        if not isinstance(spec, list) or not spec:
            raise GenomeError(Problem(f"{path}.choice", "expected a non-empty list of options"))
        return Choice(path, kind, tuple(spec))
    number = int if kind == "int" else (int, float)
    if (not isinstance(spec, list) or len(spec) != 2 or not all(isinstance(v, number) for v in spec)
            or any(isinstance(v, bool) for v in spec)):
        raise GenomeError(Problem(f"{path}.{kind}", f"expected [low, high] as two {kind}s, got {spec!r}"))
    if kind == "float" and not all(_finite(v) for v in spec):  # a draw computes in floats
        raise GenomeError(Problem(f"{path}.{kind}", f"expected [low, high] as two finite floats, got {spec!r}"))
    low, high = spec
    step = node.get("step", 1 if kind == "int" else None)
    if low > high:
        raise GenomeError(Problem(f"{path}.{kind}", f"low {low} is above high {high}"))
    if step is not None and (not isinstance(step, number) or step <= 0):
        raise GenomeError(Problem(f"{path}.step", f"must be a positive {kind}, got {step!r}"))
    if kind == "float" and step is not None and not _finite((high - low) / step):
        # a step so small (or a range so wide) that its values cannot be counted, nor one drawn by its index
        raise GenomeError(Problem(f"{path}.step", f"[{low}, {high}] in steps of {step!r} holds more values than "
                                                  "a float can count"))
    log = bool(node.get("log", False))
    if log and low <= 0:
        raise GenomeError(Problem(f"{path}.{kind}", "a log-scaled range needs low > 0"))
    return Choice(path, kind, (), low, high, step, log)


def _child(path: str, key: Any) -> str:
    return format_path([path, key]) if path else format_path([key])


def choices(space: Any, path: str = "") -> list[Choice]:
    """Every choice, nested ones included, in document order."""
    choice = parse_choice(space, path)
    if choice is not None:
        found = [choice]
        if choice.kind == "choice":
            for i, option in enumerate(choice.options):
                found += choices(option, f"{path}.choice[{i}]")
        return found
    if isinstance(space, dict):
        return [c for key, value in space.items() for c in choices(value, _child(path, key))]
    if isinstance(space, list):
        return [c for i, value in enumerate(space) for c in choices(value, _child(path, i))]
    return []


def read_space(spec: str | Path) -> tuple[dict[str, Any], str, str]:
    """(data, text, label) of a space file or shipped space, its choices checked: a malformed choice is a
    GenomeError naming the file, the YAML path and the line."""
    data, text, label = read_yaml(spec)
    try:
        choices(data)
    except GenomeError as err:
        raise err.located(label, text) from None
    return data, text, label


def space_resolution(space: dict[str, Any]) -> int:
    """The input resolution a space (or genome) declares, 224 when it declares none."""
    res = (space.get("input") or {}).get("resolution", 224)
    return int(res[0] if isinstance(res, (list, tuple)) else res)


def fit_space_to_data(space: dict[str, Any], dataset: Any) -> dict[str, Any]:
    """The classes and channels come from the data; the resolution stays the space's (data is loaded at it)."""
    space = dict(space)
    space["num_classes"] = dataset.num_classes
    space["input"] = {**space.get("input", {}), "channels": dataset.channels}
    return space


def is_space(data: Any) -> bool:
    return bool(choices(data))


Picker = Callable[[Choice], Any]


def instantiate(space: Any, pick: Picker, path: str = "") -> Any:
    """A concrete genome mapping: every choice replaced by ``pick(choice)``."""
    choice = parse_choice(space, path)
    if choice is not None:
        value = pick(choice)
        if choice.kind == "choice":
            index = next(i for i, option in enumerate(choice.options) if option is value or option == value)
            return instantiate(value, pick, f"{path}.choice[{index}]")
        return value
    if isinstance(space, dict):
        return {key: instantiate(value, pick, _child(path, key)) for key, value in space.items()}
    if isinstance(space, list):
        return [instantiate(value, pick, _child(path, i)) for i, value in enumerate(space)]
    return space


def random_picker(rng: random.Random, forced: dict[str, int] | None = None) -> Picker:
    """Uniform picks; ``forced`` maps choice paths to the option index to take."""

    def pick(choice: Choice) -> Any:
        if choice.kind == "choice":
            index = (forced or {}).get(choice.path, rng.randrange(len(choice.options)))
            return choice.options[index]
        if choice.kind == "int":
            return rng.randrange(int(choice.low), int(choice.high) + 1, int(choice.step or 1))
        if choice.step is not None:
            return choice.low + choice.step * rng.randint(0, int((choice.high - choice.low) // choice.step))
        if choice.log:
            return math.exp(rng.uniform(math.log(choice.low), math.log(choice.high)))
        return rng.uniform(choice.low, choice.high)

    return pick


@dataclass(frozen=True)
class SpaceReport:
    choices: list[Choice]
    size: float  # number of distinct genomes the choices allow (inf with continuous ranges)
    sampled: int
    valid: int
    shape_problems: list[tuple[str, int]]  # (problem, how many samples hit it), most common first
    options: int = 0  # options of all the choices
    forced: int = 0  # of those, how many a sample was forced to take: fewer only past MAX_FORCED

    @property
    def capped(self) -> bool:
        """Whether some options were left to the random samples rather than each tried once."""
        return self.forced < self.options


def space_size(space: Any, path: str = "") -> float:
    choice = parse_choice(space, path)
    if choice is not None:
        if choice.kind != "choice":
            return choice.size
        return sum(space_size(o, f"{path}.choice[{i}]") for i, o in enumerate(choice.options))
    items = space.items() if isinstance(space, dict) else enumerate(space) if isinstance(space, list) else []
    return math.prod(space_size(value, _child(path, key)) for key, value in items)


MOST_MISSES = 2_000  # sample_genomes: draws in a row without a new valid genome before it gives up


def sample_genomes(space: Any, count: int, seed: int = 0) -> list[Genome]:
    """``count`` distinct valid genomes (by content hash) drawn with ``random.Random(seed)``; a prefix of one
    fixed sequence, so asking for more keeps the first ones. Fewer when 200 draws per genome asked for, or
    ``MOST_MISSES`` draws in a row, find no more."""
    rng, found, seen = random.Random(seed), [], set()
    misses = 0  # draws since the last new genome
    for _ in range(200 * count):
        # A space of few genomes asked for a million (nas latency calibrate --genomes) drew 200 million times
        # before its first line of output; a run of misses this long ends it (where one draw in 200 is valid and
        # new, such a run has a chance of 1 in 20,000)
        if misses >= MOST_MISSES:
            break
        misses += 1
        try:
            genome = Genome.model_validate(instantiate(space, random_picker(rng)))
            check_genome(genome)
        except (ValidationError, GenomeError):  # a ValidationError escaped as an internal error
            continue
        if genome.content_hash() not in seen:
            seen.add(genome.content_hash())
            found.append(genome)
            misses = 0
        if len(found) == count:
            break
    return found


def _forced_plans(found: list[Choice]) -> tuple[list[dict[str, int]], int]:
    """One plan per option of each choice, and the number of options; past ``MAX_FORCED`` options, the first
    ``MAX_FORCED`` plans taken round-robin over the choices (option 0 of each, then option 1, ...), so that every
    choice has some of its options tried."""
    listed = [c for c in found if c.kind == "choice"]
    options = sum(len(c.options) for c in listed)
    if options <= MAX_FORCED:
        return [{c.path: i} for c in listed for i in range(len(c.options))], options
    plans: list[dict[str, int]] = []
    for i in range(max(len(c.options) for c in listed)):
        plans += [{c.path: i} for c in listed if i < len(c.options)][:MAX_FORCED - len(plans)]
        if len(plans) == MAX_FORCED:
            break
    return plans, options


def check_space(space: Any, samples: int = 64, seed: int = 0) -> SpaceReport:
    """Validate a space by sampling it. Every option of every choice is tried at least once, up to
    ``MAX_FORCED`` options in all (the report says how many were); then ``samples`` random draws, at least one.

    A structural problem (unknown type, bad value) in any sample is an error; a shape problem (heads that do
    not divide a width) only is when no sample at all is valid, since the search skips such genomes.
    """
    found = choices(space)
    rng = random.Random(seed)
    forced, options = _forced_plans(found)
    shape_problems: Counter[str] = Counter()
    valid = 0
    plans = forced + [{}] * max(samples, 0 if forced else 1)  # never no sample: a check of nothing is no check
    for plan in plans:
        data = instantiate(space, random_picker(rng, plan))
        try:
            check_genome(Genome.model_validate(data))
            valid += 1
        except ValidationError as err:
            raise from_validation_error(err, data) from None
        except GenomeError as err:
            shape_problems.update(str(p) for p in err.problems)
    if not valid:  # one line: the most common problem, where it is
        (problem, n), *others = shape_problems.most_common()
        path, _, message = problem.partition(": ")
        more = f"; {len(others)} other problems too" if others else ""
        raise GenomeError(Problem(path, f"no valid genome in {len(plans)} samples of this space; in {n} of them: "
                                        f"{message}{more}"))
    return SpaceReport(found, space_size(space), len(plans), valid, shape_problems.most_common(), options,
                       len(forced))
