"""Reading and writing genomes: YAML files (safe loading only), ``zoo:NAME`` references, mappings.

Input limits, stated in the README: a YAML document of at most ``MAX_YAML_BYTES``, nested at most
``MAX_DEPTH`` deep, holding at most ``MAX_VALUES`` values once its aliases are expanded (a 1 KB "billion laughs"
file expands to 10^9), with no duplicate keys. Numbers inside a genome have their own limits
(``blocks.base.MAX_NUMBER``).
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from nas.errors import GenomeError, InputError, Problem, format_path, from_validation_error, parse_path
from nas.genome import Genome
from nas.graph import check_genome
from nas.outputs import write_atomic

ZOO_PREFIX = "zoo:"
MAX_YAML_BYTES = 1 << 20  # 1 MiB: the largest shipped space is 5 KB
MAX_VALUES = 100_000  # values after alias expansion; the largest shipped space holds about 1,000
MAX_DEPTH = 64  # nesting of mappings and lists; genomes and spaces nest about 12 deep

# libyaml's parser where the wheel has it (10x faster); the pure-Python one otherwise.
_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    """Safe loading that refuses duplicate keys (YAML says the last wins, which hides a typo)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # ``<<: *base``: keys written beside it may override the merged ones
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:
                continue  # an unhashable key: the base class reports it
            if duplicate:  # on the first key's line too: ``{kernel: 3, kernel: 7}``
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r} (first on line "
                                                        f"{seen[key]})", key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as err:  # a date that does not exist, an int of 5,000 digits
            reason = str(err).split("; use sys.")[0]  # Python's advice to raise its limit is not for the user
            raise yaml.constructor.ConstructorError(None, None, f"cannot read the value: {reason[:1].lower()}"
                                                    f"{reason[1:]}", node.start_mark) from None


def data_dir() -> Path:
    """The shipped ``search_spaces`` folder, from a source checkout or an installed copy."""
    return Path(str(files("search_spaces")))


def shipped_space_name(spec: str | Path) -> str | None:
    """The name of the shipped space ``spec`` is (its name, or the path of its file), or ``None`` for anything
    else, such as a user's space file."""
    text = str(spec)
    if "/" not in text and not text.endswith((".yaml", ".yml")):
        return text if (data_dir() / f"{text}.yaml").is_file() else None
    path = Path(text)
    return path.stem if path.is_file() and path.resolve().parent == data_dir().resolve() else None


def zoo_dir() -> Path:
    return data_dir() / "zoo"


def zoo_names() -> list[str]:
    return sorted(p.stem for p in zoo_dir().glob("*.yaml") if p.stem != "reference")


def resolve(spec: str | Path) -> Path:
    """The file behind a path, ``zoo:NAME`` or the name of a shipped space."""
    text = str(spec)
    if text.startswith(ZOO_PREFIX):
        name = text[len(ZOO_PREFIX):]
        if name not in zoo_names():  # a name from the list, never a path
            raise InputError(f"unknown zoo genome {name!r}; known: {', '.join(zoo_names())}")
        return zoo_dir() / f"{name}.yaml"
    path = Path(text)
    if not path.exists():
        shipped = data_dir() / f"{text}.yaml"
        if "/" not in text and shipped.is_file():
            return shipped
        raise InputError(f"{text}: no such file")
    if path.is_dir():
        raise InputError(f"{text}: is a directory, expected a YAML file")
    return path


def file_read(spec: str | Path | None) -> Path | None:
    """The file a command reads for ``spec`` (a path, ``zoo:NAME`` or a shipped space's name), or None where there
    is none (the read reports it): what ``nas.outputs.distinct_outputs`` keeps a command's outputs off, so that
    ``nas scale zoo:convnext_t -o search_spaces/zoo/convnext_t.yaml`` cannot replace the zoo's own file."""
    if spec is None:
        return None
    try:
        path = resolve(spec)
    except InputError:
        return None
    return path if path.is_file() else None


def read_yaml(spec: str | Path) -> tuple[Any, str, str]:
    """(data, text, label) for a YAML file; syntax errors, empty files and non-mappings are InputErrors."""
    path = resolve(spec)
    label = str(spec)
    if not path.is_file():  # a FIFO or a device (/dev/zero) would block the read, or never end
        raise InputError(f"{label}: not a regular file; expected a YAML file")
    try:
        with path.open("rb") as f:
            data = f.read(MAX_YAML_BYTES + 1)  # no more: the file may grow while it is read
        if len(data) > MAX_YAML_BYTES:
            raise InputError(f"{label}: {max(path.stat().st_size, len(data)):,} bytes; a genome or space file may "
                             f"hold at most {MAX_YAML_BYTES:,}")
        text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")  # as read_text's newlines
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{label}: cannot read: {err}") from None
    return parse_yaml(text, label), text, label


def parse_yaml(text: str, label: str = "<string>") -> dict[str, Any]:
    """A YAML mapping, within the module's input limits; anything else is a GenomeError naming ``label``."""
    if len(text) > MAX_YAML_BYTES:
        raise GenomeError(Problem("", f"{len(text):,} characters; a genome or space may hold at most "
                                      f"{MAX_YAML_BYTES:,}"), label)
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except RecursionError:
        raise GenomeError(Problem("", f"nested more than {MAX_DEPTH} levels deep"), label) from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        reason = " ".join(str(part) for part in (err.context, err.problem) if part)
        column = f" at column {mark.column + 1}" if mark else ""
        kind = "YAML error" if isinstance(err, yaml.constructor.ConstructorError) else "YAML syntax error"
        raise GenomeError(Problem("", f"{kind}{column}: {reason}", mark.line + 1 if mark else None),
                          label) from None
    except yaml.YAMLError as err:
        raise GenomeError(Problem("", f"YAML error: {err}"), label) from None
    except (ValueError, OverflowError) as err:  # what a constructor refused outside _Loader.construct_object
        raise GenomeError(Problem("", f"YAML error: cannot read a value: {err}"), label) from None
    if data is None:
        raise GenomeError(Problem("", "the file is empty; expected a mapping with at least 'stem' and 'stages'"),
                          label)
    if not isinstance(data, dict):
        raise GenomeError(Problem("", f"the top level must be a mapping (stem:, stages:, ...), got a "
                                      f"{type(data).__name__}"), label)
    problem = _size_problem(data)
    if problem:
        raise GenomeError(problem, label)
    return data


def _size_problem(data: Any) -> Problem | None:
    """Aliases share one object, so a small file can stand for a huge or endless tree; count what it expands to
    (each shared object once per use, its count memoised) before anything walks it."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()

    def size(value: Any, path: str, depth: int) -> int:
        if not isinstance(value, (dict, list)):
            return 1
        key = id(value)
        if key in sizes:
            return sizes[key]
        if key in open_:
            raise _Refused(Problem(path, "an alias refers to a value that contains it (an endless value)"))
        if depth > MAX_DEPTH:
            raise _Refused(Problem(path, f"nested more than {MAX_DEPTH} levels deep"))
        open_.add(key)
        items = value.items() if isinstance(value, dict) else enumerate(value)
        total = 1
        for k, v in items:
            total += size(v, format_path([*parse_path(path), k]), depth + 1)
            if total > MAX_VALUES:
                raise _Refused(Problem(path, f"expands to more than {MAX_VALUES:,} values (through YAML aliases?); "
                                             f"a genome or space may hold at most {MAX_VALUES:,}"))
        open_.discard(key)
        sizes[key] = total
        return total

    try:
        size(data, "", 0)
    except _Refused as refused:
        return refused.problem
    return None


class _Refused(Exception):
    def __init__(self, problem: Problem):
        self.problem = problem


def parse_genome(data: Any, source: str | None = None, text: str | None = None) -> Genome:
    """Validate a mapping as a genome, shapes included; every failure is a GenomeError with YAML paths."""
    try:
        genome = Genome.model_validate(data)
        check_genome(genome)
    except ValidationError as err:
        raise from_validation_error(err, data).located(source, text) from None
    except GenomeError as err:
        raise err.located(source, text) from None
    return genome


def load_genome(spec: str | Path | dict[str, Any] | Genome) -> Genome:
    """A validated genome from a file, ``zoo:NAME``, a shipped space name, a mapping, or a Genome."""
    if isinstance(spec, Genome):
        check_genome(spec)
        return spec
    if isinstance(spec, dict):
        return parse_genome(spec)
    data, text, label = read_yaml(spec)
    return parse_genome(data, label, text)


def dump_genome(genome: Genome, path: str | Path | None = None) -> str:
    """The canonical form as YAML; written to ``path`` when given."""
    text = yaml.safe_dump(genome.to_dict(), sort_keys=False, default_flow_style=None, width=120)
    if path is not None:
        write_atomic(path, text)
    return text
