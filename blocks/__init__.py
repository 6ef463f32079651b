"""The block library. Every module in this package, and every ``nas.blocks`` entry point, is imported
and registered on import, so adding a block type is one new file."""
from __future__ import annotations

import importlib
import pkgutil
import sys
from importlib.metadata import entry_points
from typing import Annotated, Any, Union

from pydantic import BeforeValidator, Discriminator, Tag

from blocks.base import CONFIGS, MODULES, ROLES, BlockConfig, BlockModule, Shape, ShapeError, create, register

__all__ = ["BlockConfig", "BlockModule", "CONFIGS", "MODULES", "ROLES", "Shape", "ShapeError", "create", "register",
           "union", "UNION_NAMES", "Stem", "Downsample", "Block", "Mixer", "ChannelMixer", "Norm", "Head", "Neck"]

# The name composite configs use in annotations for each role's discriminated union.
UNION_NAMES = {"stem": "Stem", "downsample": "Downsample", "block": "Block", "mixer": "Mixer",
               "mlp": "ChannelMixer", "norm": "Norm", "head": "Head",
               "neck": "Neck"}
_DEFAULT_TYPE = {"block": "metaformer", "mlp": "mlp"}  # types that may be left out


def _type_of(role: str):
    default = _DEFAULT_TYPE.get(role)

    def tag(value: Any) -> str | None:
        if isinstance(value, dict):
            return value.get("type", default)
        return getattr(value, "type", None)

    tag.__name__ = role  # error messages name the role through the discriminator
    return tag


def _shorthand(value: Any) -> Any:
    """``norm: layernorm`` means ``norm: {type: layernorm}``."""
    return {"type": value} if isinstance(value, str) else value


def union(role: str) -> Any:
    """The pydantic type accepting any registered config of ``role``, chosen by its ``type``."""
    members = tuple(Annotated[cls, Tag(tag)] for tag, cls in sorted(CONFIGS[role].items()))
    choice = Annotated[Union[members], Discriminator(_type_of(role))]  # noqa: UP007
    return Annotated[choice, BeforeValidator(_shorthand)]


def _import_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    for entry in entry_points(group="nas.blocks"):
        entry.load()


_import_all()

# Each role's discriminated union, by the name configs use in annotations (``mixer: Mixer``). Built once every
# type is registered, so a union holds types from files imported after the one that names it. Family files
# import these names under ``TYPE_CHECKING`` only (an import at run time would be circular).
Stem = union("stem")
Downsample = union("downsample")
Block = union("block")
Mixer = union("mixer")
ChannelMixer = union("mlp")
Norm = union("norm")
Head = union("head")
Neck = union("neck")


def _resolve_unions() -> None:
    """Bind the union names in the module of every registered config (and of its config bases), where pydantic
    resolves annotations, then rebuild the configs."""
    unions = {name: globals()[name] for name in UNION_NAMES.values()}
    registered = {cls for configs in CONFIGS.values() for cls in configs.values()}
    for module in {sys.modules[base.__module__] for cls in registered for base in cls.__mro__
                   if issubclass(base, BlockConfig)}:
        for name, value in unions.items():
            if getattr(module, name, value) is not value:
                raise ImportError(f"{module.__name__} defines {name!r}, the name of a role's union")
            setattr(module, name, value)
    for cls in registered:
        cls.model_rebuild(force=True)


_resolve_unions()
