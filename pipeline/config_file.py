"""The settings file, ``geoscout.yaml``: every resource's settings without writing Python.

Found at ``$GEOSCOUT_CONFIG`` or ``./geoscout.yaml``. Top-level keys are the resource keys
(``settings``, ``mapillary``, ``streetview``, ``local_folder``, ``dataset``, ``training``)
holding that resource's fields, plus an optional ``profile: demo`` to start from a named
profile (``pipeline/profiles.py``). Secrets are never written in the file: a secret field
takes ``{env: VARIABLE}``, which becomes ``dg.EnvVar`` (read when a run starts). The file is
validated on load by the resource classes themselves; every error names the file, the key
and what is allowed.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

import dagster as dg
import pydantic
import yaml
from pydantic import Field, create_model

from geo_assets.errors import InputError

CONFIG_ENV = "GEOSCOUT_CONFIG"
FILE_NAME = "geoscout.yaml"
PROFILE_KEY = "profile"
# (resource key, field) pairs that hold secrets: only {env: NAME} is accepted for them.
SECRET_FIELDS = {("mapillary", "access_token"), ("streetview", "api_key"),
                 ("streetview", "signing_secret")}


def config_path(cwd: str | Path | None = None) -> Path | None:
    """``$GEOSCOUT_CONFIG`` (which must exist), else ``geoscout.yaml`` in ``cwd`` if present."""
    named = os.environ.get(CONFIG_ENV)
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise InputError(f"{CONFIG_ENV}={named}: no such settings file (create one with "
                             "`geoscout init`)")
        return path
    path = Path(cwd or Path.cwd()) / FILE_NAME
    return path if path.is_file() else None


def read_file(path: str | Path) -> dict[str, Any]:
    """The file's YAML mapping (empty file: no overrides)."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of settings groups, got "
                         f"{type(data).__name__}")
    return data


def load_overrides(path: str | Path) -> dict[str, dict[str, Any]]:
    """Per-resource overrides from the file: profile first, then the file's own values,
    secrets as ``dg.EnvVar``; validated (``InputError`` naming file, key, allowed values)."""
    from pipeline.resources import RESOURCE_CLASSES

    data = read_file(path)
    allowed = sorted(RESOURCE_CLASSES) + [PROFILE_KEY]
    for key in data:
        if key not in allowed:
            raise InputError(f"{path}: unknown key {key!r}{_did_you_mean(key, allowed)}; "
                             f"allowed top-level keys: {', '.join(allowed)}")
    overrides = _profile(path, data.get(PROFILE_KEY))
    for group, cls in RESOURCE_CLASSES.items():
        values = data.get(group) or {}
        if not isinstance(values, dict):
            raise InputError(f"{path}: {group}: expected a mapping of fields, got "
                             f"{type(values).__name__}")
        own = {name: _value(path, group, name, value, cls) for name, value in values.items()}
        merged = {**overrides.get(group, {}), **own}
        _validate(path, group, cls, merged)
        if merged:
            overrides[group] = merged
    return overrides


def _profile(path: str | Path, name: Any) -> dict[str, dict]:
    from pipeline.profiles import PROFILES

    if name is None:
        return {}
    if name not in PROFILES:
        raise InputError(f"{path}: {PROFILE_KEY}: {name!r} is not a profile; allowed: "
                         f"{', '.join(sorted(PROFILES))}")
    return {group: dict(values) for group, values in PROFILES[name]().items()}


def _value(path, group: str, name: str, value: Any, cls: type) -> Any:
    """One field's value: unknown names and literal secrets are errors; {env: X} -> EnvVar."""
    fields = cls.model_fields
    if name not in fields:
        raise InputError(f"{path}: {group}.{name}: unknown setting"
                         f"{_did_you_mean(name, fields)}; allowed: {', '.join(sorted(fields))}")
    is_env = isinstance(value, dict) and set(value) == {"env"} and isinstance(value["env"], str)
    if (group, name) in SECRET_FIELDS and value is not None and not is_env:
        raise InputError(f"{path}: {group}.{name} is a secret: write {{env: VARIABLE}} and "
                         "export the variable; secrets are never stored in the file")
    if isinstance(value, dict) and "env" in value and not is_env:
        raise InputError(f"{path}: {group}.{name}: write {{env: VARIABLE}} with one "
                         "variable name")
    return dg.EnvVar(value["env"]) if is_env else value


def _validate(path, group: str, cls: type, values: dict[str, Any]) -> None:
    try:
        cls(**values)
    except pydantic.ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"])
        allowed = error.get("ctx", {}).get("expected")
        hint = f"; allowed: {allowed}" if allowed else ""
        if not field:  # a check across fields: its message names them
            raise InputError(f"{path}: {group}: {error['msg']}") from None
        raise InputError(f"{path}: {group}.{field}: {error['msg']} "
                         f"(got {error.get('input')!r}){hint}") from None


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def layered(resource: dg.ConfigurableResource) -> dg.ConfigurableResource:
    """The same resource, its configured values made the defaults of its config schema.

    Dagster's run config for a resource replaces the whole configured value (fields left
    out fall back to the class defaults); with this, run config overrides only the fields it
    gives: ``{"workers": 2}`` keeps the file's ``run_name``."""
    cls = type(resource)
    fields = {name: (cls.model_fields[name].annotation,
                     Field(default=getattr(resource, name),
                           description=cls.model_fields[name].description))
              for name in resource.model_fields_set}
    if not fields:
        return resource
    return create_model(cls.__name__, __base__=cls, __module__=cls.__module__,
                        __doc__=cls.__doc__, **fields)()


def file_resources(path: str | Path) -> dict[str, object]:
    """Every resource built from the settings file at ``path``."""
    from pipeline.resources import build_resources

    return build_resources(load_overrides(path))
