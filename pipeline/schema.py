"""Dagster resource fields built from the library's settings schemas.

A resource embeds a schema's fields (type, default, description) instead of copying them:
``schema_fields(SplitSettings)`` gives what ``pydantic.create_model`` needs, and
``library_field(IngestSettings, "workers")`` one field under the resource's own name.
Schemas are the dataclasses of ``geo_assets.settings`` and the pydantic
``training.config.TrainConfig``. Tuples become lists (Dagster config has no tuples);
``to_library`` turns the values back into the library's dataclass.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import types
import typing
from typing import Any

from pydantic import BaseModel, Field
from pydantic.fields import FieldInfo


def _as_config_type(annotation: Any) -> Any:
    """``tuple[X, ...]`` / ``tuple[X, X]`` -> ``list[X]``, inside ``| None`` as well."""
    origin = typing.get_origin(annotation)
    if origin is tuple:
        return list[typing.get_args(annotation)[0]]
    if origin in (typing.Union, types.UnionType):
        return functools.reduce(operator.or_, map(_as_config_type, typing.get_args(annotation)))
    return annotation


def _as_config_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def schema_defaults(schema: type) -> dict[str, tuple[Any, Any, str]]:
    """name -> (annotation, default, description) for each plain field of ``schema``.

    Nested settings (a dataclass field holding another settings dataclass) are left out."""
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return {name: (info.annotation, info.default, info.description or "")
                for name, info in schema.model_fields.items() if not info.is_required()}
    hints = typing.get_type_hints(schema)
    out = {}
    for f in dataclasses.fields(schema):
        if f.default is dataclasses.MISSING:
            continue  # nested settings (default_factory) are configured on their own
        out[f.name] = (hints[f.name], f.default, f.metadata.get("description", ""))
    return out


def library_field(schema: type, name: str, **overrides: Any) -> FieldInfo:
    """One schema field as a pydantic ``Field`` (for a resource that names it its own way)."""
    _, default, description = schema_defaults(schema)[name]
    return Field(**{"default": _as_config_value(default), "description": description,
                    **overrides})


def schema_fields(schema: type, exclude: typing.Iterable[str] = (), prefix: str = ""
                  ) -> dict[str, tuple]:
    """``{name: (type, Field)}`` for ``pydantic.create_model``: every field of ``schema``,
    each named ``prefix + name`` (``filter_min_brightness`` for ``FilterSettings``)."""
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return {prefix + name: (info.annotation, info)
                for name, info in schema.model_fields.items()
                if name not in set(exclude) and not info.is_required()}
    return {prefix + name: (_as_config_type(annotation),
                            Field(default=_as_config_value(default), description=description))
            for name, (annotation, default, description) in schema_defaults(schema).items()
            if name not in set(exclude)}


def to_library(schema: type, values: dict[str, Any], prefix: str = "", **extra: Any) -> Any:
    """The library dataclass from a resource's values (lists back to tuples); with
    ``prefix``, the values named ``prefix + field``."""
    hints = typing.get_type_hints(schema)
    kwargs = {}
    for f in dataclasses.fields(schema):
        if prefix + f.name in values:
            value = values[prefix + f.name]
            is_tuple = typing.get_origin(hints[f.name]) is tuple
            kwargs[f.name] = tuple(value) if is_tuple and value is not None else value
    return schema(**{**kwargs, **extra})
