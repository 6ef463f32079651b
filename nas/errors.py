"""Errors a person can act on: each problem is one line naming the YAML path and the reason."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError

from blocks import CONFIGS


@dataclass(frozen=True)
class Problem:
    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        line = f"line {self.line}" if self.line else ""
        where = f"{self.path} ({line})" if self.path and line else self.path or line
        return f"{where}: {self.message}" if where else self.message


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


def _clean_loc(loc: tuple[Any, ...], data: Any) -> list[Any]:
    """Drop the union-tag segments pydantic inserts, by walking the input alongside the location."""
    out: list[Any] = []
    node = data
    for key in loc:
        if isinstance(key, str) and isinstance(node, str) and key == node:
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


def _message(error: dict[str, Any]) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "union_tag_invalid":
        expected = ctx["expected_tags"].replace("'", "")
        return f"unknown type {ctx['tag']!r}; expected one of: {expected}"
    if kind == "union_tag_not_found":
        role = ctx.get("discriminator", "").rstrip("()")
        known = ", ".join(sorted(CONFIGS.get(role, {})))
        return f"missing 'type'; expected one of: {known}" if known else "missing 'type'"
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"expected a mapping, got {type(error['input']).__name__} {_short(error['input'])}"
    message = error["msg"]
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    message = message[:1].lower() + message[1:]
    if "input" in error and not isinstance(error["input"], (dict, list)):
        message += f" (got {_short(error['input'])})"
    return message


def from_validation_error(err: ValidationError, data: Any) -> GenomeError:
    problems = []
    for error in err.errors():
        path = format_path(_clean_loc(error["loc"], data))
        problem = Problem(path, _message(error))
        if problem not in problems:
            problems.append(problem)
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
