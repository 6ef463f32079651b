"""Command-line flags made from an options model (pydantic), so that an option is written once: its field.

Each field becomes ``--name-with-dashes``. Its type gives the flag's: ``int``, ``float`` or ``str``, the
choices of a ``Literal``, or a switch for a ``bool`` (``--no-name`` when it is on by default). Its
``description`` is the help, and its default is appended to it, so the two cannot drift apart. What the type
cannot say goes in a ``Flag`` in the field's ``Annotated`` metadata.

Every flag defaults to ``None``, "not given": a command passes on only what the person wrote, and the model
fills in the rest. A resumed run relies on that to refuse an option that contradicts its own.
"""
from __future__ import annotations

import argparse
import types
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from nas.errors import InputError

# Every --seed is below this: NumPy's RandomState and scikit-learn take 32 bits (torch takes 64; Optuna's samplers
# take any, modulo 2**32), and a seed that passed here failed only after the work, as an internal error.
SEED_LIMIT = 2**32


def check_seed(seed: int, flag: str = "--seed") -> None:
    """Bad input (exit 2) unless ``0 <= seed < SEED_LIMIT``."""
    if seed < 0:
        raise InputError(f"{flag} must not be negative, got {seed}")
    if seed >= SEED_LIMIT:
        raise InputError(f"{flag} must be below 2**32 ({SEED_LIMIT:,}), got {seed}")


@dataclass(frozen=True)
class Flag:
    """What a field's type cannot say about its flag: ``Annotated[float | None, Flag(text=True)]``."""

    metavar: str | None = None
    text: bool = False  # the flag passes the text as written, for the field's validator to read (a duration: 2h)
    python_only: tuple[str, ...] = ()  # choices the command line does not offer (a value only Python can mean)
    cli: bool = True  # False: recorded by the run, never set by a person, so no flag


def option_fields(model: type[BaseModel]) -> dict[str, FieldInfo]:
    """The fields that are options a person sets: each has a flag and a keyword of the same name."""
    return {name: field for name, field in model.model_fields.items() if _mark(field).cli}


def flag_name(model: type[BaseModel], name: str) -> str:
    """The flag of field ``name`` as a person types it: ``--data-limit``, ``--no-distill``."""
    field = model.model_fields[name]
    negated = _type(field) is bool and field.default is True
    return ("--no-" if negated else "--") + name.replace("_", "-")


def add_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, model: type[BaseModel],
              only: tuple[str, ...] | None = None) -> None:
    """A flag for every option of ``model`` (or those named in ``only``), in the order of its fields."""
    for name, field in option_fields(model).items():
        if only is not None and name not in only:
            continue
        parser.add_argument(flag_name(model, name), dest=name, default=None, help=_help(model, name, field),
                            **_parse(name, field))


def given_flags(args: argparse.Namespace, model: type[BaseModel]) -> dict[str, Any]:
    """The options of ``model`` that the command line gave, by field name."""
    return {name: getattr(args, name) for name in option_fields(model) if getattr(args, name, None) is not None}


def _mark(field: FieldInfo) -> Flag:
    return next((m for m in field.metadata if isinstance(m, Flag)), Flag())


def _type(field: FieldInfo) -> Any:
    """The field's type without ``None`` (an optional flag is simply one not given)."""
    annotation = field.annotation
    if get_origin(annotation) in (Union, types.UnionType):
        kept = [a for a in get_args(annotation) if a is not type(None)]
        annotation = kept[0] if len(kept) == 1 else annotation
    return annotation


def _parse(name: str, field: FieldInfo) -> dict[str, Any]:
    """add_argument's keywords that read the flag's text."""
    mark, kind = _mark(field), _type(field)
    if kind is bool:
        return {"action": "store_const", "const": not field.default}
    if get_origin(kind) is Literal:
        return {"choices": [c for c in get_args(kind) if c not in mark.python_only], "metavar": mark.metavar}
    if mark.text:
        return {"type": str, "metavar": mark.metavar}
    if kind not in (int, float, str):
        raise TypeError(f"option {name!r}: no flag reads a {kind}; give it Flag(text=True) and a validator")
    return {"type": kind, "metavar": mark.metavar}


def _help(model: type[BaseModel], name: str, field: FieldInfo) -> str:
    """The description, with the default appended; a default that depends on other options is None here, and
    its description says it."""
    if not field.description:
        raise TypeError(f"option {name!r} of {model.__name__} has no description: it is the flag's help")
    text, default = field.description, field.default
    if isinstance(default, bool):
        text += f" (on by default; {flag_name(model, name)} turns it off)" if default else " (off by default)"
    elif default is not None:
        text += f" (default: {default:g})" if isinstance(default, float) else f" (default: {default})"
    return text.replace("%", "%%")  # argparse formats help with %
