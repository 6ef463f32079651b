"""The block library. Every module in this package, and every ``nas.blocks`` entry point, is imported
and registered on import, so adding a block type is one new file."""
from __future__ import annotations

import importlib
import pkgutil
from importlib.metadata import entry_points
from typing import Annotated, Any, Union

from pydantic import BeforeValidator, Discriminator, Tag

from blocks.base import CONFIGS, MODULES, ROLES, BlockConfig, Shape, ShapeError, create, register

__all__ = ["BlockConfig", "CONFIGS", "MODULES", "ROLES", "Shape", "ShapeError", "create", "register", "union",
           "UNION_NAMES"]

# The name composite configs use in annotations for each role's discriminated union.
UNION_NAMES = {"stem": "Stem", "downsample": "Downsample", "block": "Block", "mixer": "Mixer",
               "mlp": "ChannelMixer", "norm": "Norm", "head": "Head"}
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


def _resolve_unions() -> None:
    """Composite configs name other roles' unions; build those now that every type is registered."""
    namespace = {name: union(role) for role, name in UNION_NAMES.items()}
    for configs in CONFIGS.values():
        for cls in configs.values():
            cls.model_rebuild(force=True, _types_namespace=namespace)


_import_all()
_resolve_unions()
