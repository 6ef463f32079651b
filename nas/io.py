"""Reading and writing genomes: YAML files (``yaml.safe_load`` only), ``zoo:NAME`` references, mappings."""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from nas.errors import GenomeError, InputError, Problem, from_validation_error
from nas.genome import Genome
from nas.graph import check_genome

ZOO_PREFIX = "zoo:"


def data_dir() -> Path:
    """The shipped ``search_spaces`` folder, from a source checkout or an installed copy."""
    return Path(str(files("search_spaces")))


def zoo_dir() -> Path:
    return data_dir() / "zoo"


def zoo_names() -> list[str]:
    return sorted(p.stem for p in zoo_dir().glob("*.yaml") if p.stem != "reference")


def resolve(spec: str | Path) -> Path:
    """The file behind a path, ``zoo:NAME`` or the name of a shipped space."""
    text = str(spec)
    if text.startswith(ZOO_PREFIX):
        name = text[len(ZOO_PREFIX):]
        path = zoo_dir() / f"{name}.yaml"
        if name == "reference" or not path.is_file():
            raise InputError(f"unknown zoo genome {name!r}; known: {', '.join(zoo_names())}")
        return path
    path = Path(text)
    if not path.exists():
        shipped = data_dir() / f"{text}.yaml"
        if "/" not in text and shipped.is_file():
            return shipped
        raise InputError(f"{text}: no such file")
    if path.is_dir():
        raise InputError(f"{text}: is a directory, expected a YAML file")
    return path


def read_yaml(spec: str | Path) -> tuple[Any, str, str]:
    """(data, text, label) for a YAML file; syntax errors, empty files and non-mappings are InputErrors."""
    path = resolve(spec)
    label = str(spec)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{label}: cannot read: {err}") from None
    return parse_yaml(text, label), text, label


def parse_yaml(text: str, label: str = "<string>") -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        reason = " ".join(str(part) for part in (err.context, err.problem) if part)
        column = f" at column {mark.column + 1}" if mark else ""
        raise GenomeError(Problem("", f"YAML syntax error{column}: {reason}", mark.line + 1 if mark else None),
                          label) from None
    except yaml.YAMLError as err:
        raise GenomeError(Problem("", f"YAML error: {err}"), label) from None
    if data is None:
        raise GenomeError(Problem("", "the file is empty; expected a mapping with at least 'stem' and 'stages'"),
                          label)
    if not isinstance(data, dict):
        raise GenomeError(Problem("", f"the top level must be a mapping (stem:, stages:, ...), got a "
                                      f"{type(data).__name__}"), label)
    return data


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
        Path(path).write_text(text)
    return text
