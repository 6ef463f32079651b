"""Errors a person can act on: each problem is one line naming the YAML path and the reason."""
from __future__ import annotations

import difflib
import re
from collections import Counter
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


MAX_LISTED = 20  # problems an error lists; a file wrong throughout ends "(and N more)"


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
        lines = [prefix + str(p) for p in self.problems[:MAX_LISTED]]
        if len(self.problems) > MAX_LISTED:
            lines[-1] += f" (and {len(self.problems) - MAX_LISTED} more)"
        return "\n".join(lines)

    @property
    def path(self) -> str:
        return self.problems[0].path

    def located(self, source: str | None, text: str | None = None) -> GenomeError:
        """The same problems, labelled with the file and, where it can be found, the line."""
        lines = YamlLines(text) if text and any(p.path and not p.line for p in self.problems) else None
        problems = [Problem(p.path, p.message, p.line or (lines.line(p.path) if lines else None))
                    for p in self.problems]
        return GenomeError(problems, source or self.source)


def format_path(loc: tuple[Any, ...] | list[Any]) -> str:
    out = ""
    for key in loc:
        # A key is the user's text: a newline in it would split a one-line error.
        out += f"[{key}]" if isinstance(key, int) else (f".{printable(str(key))}" if out else printable(str(key)))
    return out


def parse_path(path: str) -> list[Any]:
    return [int(i) if i else k for k, i in re.findall(r"([A-Za-z_]\w*)|\[(\d+)\]", path)]


_Composer = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

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
    try:
        text = repr(value)
    except ValueError:  # an int of more digits than Python writes out (``width: 0xfff...``)
        return f"an integer of {value.bit_length():,} bits"
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
    # Looked up, not searched for in the list: a file wrong throughout has thousands of problems.
    first_at: dict[str, int] = {}  # path -> index of its first problem
    listed: Counter[Problem] = Counter()  # how often ``problems`` holds each
    misspelt_at: set[str] = set()
    for error in err.errors():
        loc = _clean_loc(error["loc"], data)
        misspelt = _misspelt_choice(error)
        if misspelt:
            misspelt_at.add(format_path(loc))
            problem = Problem(format_path([*loc, misspelt[0]]), misspelt[1])
        else:
            problem = Problem(format_path(loc), _message(error, data))
        earlier = first_at.get(problem.path)
        if _union_member(error["loc"][-1]) and earlier is not None and problems[earlier] != problem:
            listed[problems[earlier]] -= 1
            problems[earlier] = Problem(problem.path, _either(problems[earlier].message, problem.message))
            listed[problems[earlier]] += 1
        elif listed[problem] <= 0:
            first_at.setdefault(problem.path, len(problems))
            problems.append(problem)
            listed[problem] += 1
    # A misspelt choice is why every member of a union refused the mapping: it alone is named.
    problems = [p for p in problems if p.path not in misspelt_at]
    # A bad ``defaults:`` entry also fails in every stage that inherits it: report it once, at its source.
    from_defaults = [p for p in problems if p.path.startswith("defaults")]
    return GenomeError(from_defaults or problems)


class YamlLines:
    """The lines of one YAML text's nodes: the text is composed once, however many problems are looked up (reading
    it anew for each took half a minute for a file with 400)."""

    def __init__(self, text: str | None):
        try:
            # libyaml where the wheel has it, as nas.io parses with: the same marks, so the same lines.
            self.root: yaml.Node | None = yaml.compose(text, Loader=_Composer) if text else None
        except yaml.YAMLError:
            self.root = None
        self._keys: dict[int, dict[str, tuple[yaml.Node, yaml.Node]]] = {}  # id(mapping) -> key -> its nodes

    def line(self, path: str) -> int | None:
        """1-based line of the node at ``path``, or of its deepest existing parent."""
        node, line = self.root, None
        for key in parse_path(path) if path else []:
            if isinstance(node, yaml.MappingNode):
                match = self._mapping(node).get(key) if isinstance(key, str) else None
                if match is None:
                    break
                key_node, node = match
                line = key_node.start_mark.line + 1
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
                node = node.value[key]
                line = node.start_mark.line + 1
            else:
                break
        return line

    def _mapping(self, node: yaml.MappingNode) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        # Indexed on first use, not for the whole tree up front: an alias may repeat a mapping many times over.
        if id(node) not in self._keys:
            self._keys[id(node)] = {k.value: (k, v) for k, v in reversed(node.value) if isinstance(k, yaml.ScalarNode)}
        return self._keys[id(node)]
