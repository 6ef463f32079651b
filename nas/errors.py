"""Errors a person can act on: each problem is one line naming the YAML path and the reason."""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError

from blocks import CONFIGS
from nas.genome import Defaults, Genome, InputSpec, StageSpec


@dataclass(frozen=True)
class Problem:
    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        line = f"line {self.line}" if self.line else ""
        where = f"{self.path} ({line})" if self.path and line else self.path or line
        return f"{where}: {self.message}" if where else self.message


def printable(name: str) -> str:
    """A name from the user's YAML as it goes into one line of output: as given, or its repr when it holds a
    newline or another unprintable character, which would break a one-line error or a line that is parsed, such as
    the YAML comments ahead of ``nas scale``'s genome on stdout."""
    return name if name.isprintable() else repr(name)


class NasError(Exception):
    """Any error the CLI reports without a traceback; ``exit_code`` 2 means bad input."""

    exit_code = 1


class InputError(NasError):
    exit_code = 2


class GenomeError(InputError):
    """A genome or space that cannot be built, with every problem found."""

    def __init__(self, problems: Problem | list[Problem], source: str | None = None):
        self.problems = [problems] if isinstance(problems, Problem) else list(problems)
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        prefix = f"{self.source}: " if self.source else ""
        return "\n".join(prefix + str(p) for p in self.problems)

    @property
    def path(self) -> str:
        return self.problems[0].path

    def located(self, source: str | None, text: str | None = None) -> GenomeError:
        """The same problems, labelled with the file and, where it can be found, the line."""
        problems = [Problem(p.path, p.message, p.line or line_of(text, p.path)) for p in self.problems]
        return GenomeError(problems, source or self.source)


def format_path(loc: tuple[Any, ...] | list[Any]) -> str:
    out = ""
    for key in loc:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else str(key))
    return out


def parse_path(path: str) -> list[Any]:
    return [int(i) if i else k for k, i in re.findall(r"([A-Za-z_]\w*)|\[(\d+)\]", path)]


_ALL_TYPES = {tag for configs in CONFIGS.values() for tag in configs}
_CHOICE_KEYS = ("choice", "int", "float")  # nas.space's keywords, spelt out here to suggest them


def did_you_mean(word: str, known: Any) -> str:
    """`` (did you mean 'kernel'?)`` for the nearest known name, or nothing."""
    close = difflib.get_close_matches(str(word), sorted(set(known)), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _fields_at(raw_loc: tuple[Any, ...], data: Any) -> set[str]:
    """The field names the mapping holding ``raw_loc``'s last key accepts. Pydantic puts a union member's tag
    before its fields, so a tag there names the config; otherwise the place in the genome does."""
    parent = raw_loc[:-1]
    if parent and isinstance(parent[-1], str) and parent[-1] in _ALL_TYPES:
        return {name for configs in CONFIGS.values() if parent[-1] in configs
                for name in configs[parent[-1]].model_fields}
    keys = [k for k in parent if isinstance(k, str)]
    model = {(): Genome, ("stages",): StageSpec, ("input",): InputSpec, ("defaults",): Defaults}.get(tuple(keys))
    if model is not None:
        return set(model.model_fields)
    return {name for configs in CONFIGS.values() for cls in configs.values() for name in cls.model_fields}


def _union_member(key: Any) -> bool:
    """Whether a location segment is pydantic's name for a member of a union of plain types (``padding: 0`` or
    ``same``): ``int``, ``constrained-int``, ``literal['same']``..."""
    return isinstance(key, str) and (key in ("int", "float", "str", "bool") or key.startswith(("constrained-",
                                                                                            "literal[")))


def _clean_loc(loc: tuple[Any, ...], data: Any) -> list[Any]:
    """Drop the union-tag segments pydantic inserts, by walking the input alongside the location: a config's type,
    and the member of a union of plain types that refused a value."""
    out: list[Any] = []
    node = data
    for key in loc:
        if isinstance(key, str) and isinstance(node, str) and key == node:
            continue
        if _union_member(key) and not (isinstance(node, dict) and key in node):
            continue
        if isinstance(key, str) and isinstance(node, dict) and key not in node:
            if key == node.get("type") or ("type" not in node and key in _ALL_TYPES):
                continue
        out.append(key)
        if isinstance(node, dict):
            node = node.get(key)
        elif isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
            node = node[key]
        else:
            node = None
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _message(error: dict[str, Any], data: Any = None) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "union_tag_invalid":
        expected = ctx["expected_tags"].replace("'", "")
        hint = did_you_mean(ctx["tag"], expected.split(", "))
        return f"unknown type {ctx['tag']!r}{hint}; expected one of: {expected}"
    if kind == "union_tag_not_found":
        role = ctx.get("discriminator", "").rstrip("()")
        known = ", ".join(sorted(CONFIGS.get(role, {})))
        return f"missing 'type'; expected one of: {known}" if known else "missing 'type'"
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown field" + did_you_mean(error["loc"][-1], _fields_at(error["loc"], data))
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"expected a mapping, got {type(error['input']).__name__} {_short(error['input'])}"
    message = error["msg"]
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    message = message[:1].lower() + message[1:]
    if "input" in error and not isinstance(error["input"], (dict, list)):
        message += f" (got {_short(error['input'])})"
    return message


def _misspelt_choice(error: dict[str, Any]) -> tuple[str, str] | None:
    """A value that should be a number or a name but is a mapping with a key like ``choise``: a choice
    misspelt in a space. The key and the message that names it."""
    value, kind = error.get("input"), error["type"]
    scalar_expected = kind.endswith(("_type", "_parsing")) or kind == "union_tag_not_found"
    if not isinstance(value, dict) or not scalar_expected or kind in ("model_type", "dict_type",
                                                                      "model_attributes_type"):
        return None
    for key in value:
        hint = did_you_mean(key, _CHOICE_KEYS)
        if hint and key not in _CHOICE_KEYS:
            return str(key), f"unknown key{hint}; a space makes a value a choice with {', '.join(_CHOICE_KEYS)}"
    return None


def _either(first: str, second: str) -> str:
    """Two reasons one value was refused, by two members of a union, as one: "input should be a valid integer,
    unable to parse string as an integer, or 'same' (got 'valid')"."""
    got = re.search(r" \(got .*\)$", second)
    first = first.removesuffix(got.group()) if got else first
    return f"{first}, or {second.removeprefix('input should be ')}"


def from_validation_error(err: ValidationError, data: Any) -> GenomeError:
    problems: list[Problem] = []
    misspelt_at: set[str] = set()
    for error in err.errors():
        loc = _clean_loc(error["loc"], data)
        misspelt = _misspelt_choice(error)
        if misspelt:
            misspelt_at.add(format_path(loc))
            problem = Problem(format_path([*loc, misspelt[0]]), misspelt[1])
        else:
            problem = Problem(format_path(loc), _message(error, data))
        earlier = next((i for i, p in enumerate(problems) if p.path == problem.path), None)
        if _union_member(error["loc"][-1]) and earlier is not None and problems[earlier] != problem:
            problems[earlier] = Problem(problem.path, _either(problems[earlier].message, problem.message))
        elif problem not in problems:
            problems.append(problem)
    # A misspelt choice is why every member of a union refused the mapping: it alone is named.
    problems = [p for p in problems if p.path not in misspelt_at]
    # A bad ``defaults:`` entry also fails in every stage that inherits it: report it once, at its source.
    from_defaults = [p for p in problems if p.path.startswith("defaults")]
    return GenomeError(from_defaults or problems)


def line_of(text: str | None, path: str) -> int | None:
    """1-based line of the YAML node at ``path``, or of its deepest existing parent."""
    if not text or not path:
        return None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    line = None
    for key in parse_path(path):
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if k.value == key]
            if not match:
                break
            key_node, node = match[0]
            line = key_node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return line
