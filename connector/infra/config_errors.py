"""Configuration errors that name the environment variable, the problem and the fix.

Pydantic reports a bad value by its field path (``delivery.max_in_flight``); an
operator set ``CONNECTOR_DELIVERY__MAX_IN_FLIGHT``. :func:`load_settings` reads
the settings and turns every validation error into one line::

    CONNECTOR_DELIVERY__MAX_IN_FLIGHT='lots': not a whole number;
    fix: set a whole number greater than 0 (default: 256)

(one line, wrapped here)
and raises :class:`ConfigError` (the CLI prints the lines and exits with 2). A
secret's value is never printed. :func:`unknown_variables` finds ``CONNECTOR_``
variables that name no setting (a typo is otherwise silently ignored) and
suggests the closest real one.

The environment itself is read only by :mod:`connector.settings`; this module
gets it from there.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import SettingsError

from connector.settings import Settings, connector_environment, get_settings

__all__ = [
    "ConfigError",
    "env_name",
    "known_variables",
    "load_settings",
    "unknown_variables",
]

logger = logging.getLogger(__name__)

PREFIX = "CONNECTOR_"
# Parts of a variable name that mark a secret: its value is never echoed.
_SECRET_WORDS = ("KEY", "TOKEN", "PASSWORD", "SECRET")
# Segment of a variable that is a name the operator chooses (an account, a customer).
_ANY = "*"


class ConfigError(Exception):
    """The configuration is unusable; ``lines`` says what to fix, one problem each."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def env_name(loc: tuple[int | str, ...]) -> str:
    """The variable that sets the field at pydantic location ``loc``."""
    parts = [str(p) for p in loc if not isinstance(p, int)]
    return PREFIX + "__".join(p.upper() for p in parts)


def _is_secret(variable: str) -> bool:
    name = variable.removesuffix("_FILE")
    return variable == name and any(word in name for word in _SECRET_WORDS)


def _shown(variable: str, value: Any) -> str:
    if _is_secret(variable):
        return "(hidden)"
    text = value if isinstance(value, str) else repr(value)
    return repr(text[:80] + ("..." if len(text) > 80 else ""))


def _field(loc: tuple[int | str, ...]) -> FieldInfo | None:
    """The settings field at pydantic location ``loc``, if it is one."""
    model: Any = Settings
    field = None
    for part in loc:
        if isinstance(part, int) or not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        model = field.annotation
    return field


def _default(field: FieldInfo | None) -> Any:
    """The field's default as an operator writes it, or ``...`` when none is worth showing."""
    if field is None or field.default_factory is not None:
        return ...
    default = field.default
    if default is None or isinstance(default, BaseModel) or default == "":
        return ...
    if isinstance(default, bool):
        return str(default).lower()
    return getattr(default, "get_secret_value", lambda: default)()


def _bound(field: FieldInfo | None, ctx: Mapping[str, Any]) -> str:
    """ " greater than 0" and the like, from the error or the field's constraints."""
    limits = dict(ctx)
    for item in field.metadata if field is not None else ():
        for key in ("gt", "ge", "lt", "le"):
            if getattr(item, key, None) is not None:
                limits.setdefault(key, getattr(item, key))
    words = {"gt": "greater than", "ge": "at least", "lt": "less than", "le": "at most"}
    return "".join(f" {words[k]} {limits[k]}" for k in words if k in limits)


def _fix(error: Mapping[str, Any], field: FieldInfo | None) -> tuple[str, str]:
    """(problem, fix) for one pydantic error."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    bound = _bound(field, ctx)
    default = _default(field)
    problem = str(error["msg"]).removeprefix("Value error, ")
    if kind in ("int_parsing", "int_type", "int_from_float"):
        problem, fix = "not a whole number", "set a whole number" + bound
    elif kind in ("float_parsing", "float_type"):
        problem, fix = "not a number", "set a number" + bound
    elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        problem, fix = f"out of range ({problem.lower()})", "set a number" + bound
    elif kind in ("bool_parsing", "bool_type"):
        problem, fix = "not a boolean", "set true or false"
    elif kind in ("literal_error", "enum"):
        problem, fix = "not an allowed value", f"use one of {ctx.get('expected', '')}"
    elif kind == "missing":
        problem, fix = "required and not set", "set it"
    elif kind in ("too_short", "list_type", "dict_type", "json_invalid", "json_type"):
        fix = 'set a JSON list or object, e.g. ["a", "b"]'
    elif "secret file" in problem:
        problem, _, own_fix = problem.partition(": ")
        fix = own_fix or "create the file, or point the variable at the right path"
    else:
        fix = "set a valid value, or unset it for the default"
    if default is not ...:
        fix += f" (default: {default})"
    return problem, fix


def _file_variable(message: str, env: Mapping[str, str]) -> str | None:
    """The ``…_FILE`` variable whose path a secret-file error names."""
    for variable, value in env.items():
        if variable.upper().endswith("_FILE") and value and value in message:
            return variable.upper()
    return None


def _lines(exc: ValidationError, env: Mapping[str, str]) -> list[str]:
    upper = {k.upper(): v for k, v in env.items()}
    lines = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        message = str(error["msg"])
        variable = _file_variable(message, env) or env_name(loc)
        if loc == ("kafka", "bootstrap_servers") and variable not in upper:
            variable = "KAFKA_BOOTSTRAP_SERVERS"
        if variable in upper:
            subject = f"{variable}={_shown(variable, upper[variable])}"
        elif "secret file" in message or not _is_group_field(_field(loc)):
            subject = variable
        else:
            # A whole group or account set as one value: name its variables' prefix.
            subject = f"{variable} (or the {variable}__* variables)"
        problem, fix = _fix(error, _field(loc))
        lines.append(f"{subject}: {problem}; fix: {fix}")
    return lines


def load_settings() -> Settings:
    """The settings, or :class:`ConfigError` with one line per problem."""
    env = connector_environment()
    try:
        return get_settings()
    except ValidationError as exc:
        raise ConfigError(_lines(exc, env)) from None
    except SettingsError as exc:
        # pydantic-settings could not even parse a value: JSON expected for a list, a dict
        # or a group, and it names only the top-level field. Find the variable.
        lines = [
            f"{variable}={_shown(variable, value)}: not JSON, and this setting takes a JSON "
            f"{kind}; fix: set it as JSON, e.g. {example}"
            for variable, value, kind, example in _unparsable(env)
        ]
        raise ConfigError(lines or [f"{exc}; fix: set list and group values as JSON"]) from None


def _is_group_field(field: FieldInfo | None) -> bool:
    return field is not None and _model_of(field.annotation)[0] is not None


def _variable_field(variable: str) -> FieldInfo | None:
    """The settings field a variable sets (names chosen by the operator skipped)."""
    parts = variable.upper().removeprefix(PREFIX).lower().split("__")
    model: Any = Settings
    field = None
    skip = False
    for part in parts:
        if skip:
            skip = False
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = model.model_fields.get(part)
        if field is None:
            return None
        model, skip = _model_of(field.annotation)
        if model is None:
            model = field.annotation
    return field  # with a name still expected: the variable sets the whole dict


def _unparsable(env: Mapping[str, str]) -> Iterator[tuple[str, str, str, str]]:
    """(variable, value, kind, example) for each value that must be JSON and is not."""
    for variable, value in sorted(env.items()):
        field = _variable_field(variable)
        if field is None:
            continue
        origin = typing.get_origin(field.annotation)
        if origin is list:
            kind, example = "list", '["us-1", "us-*"]'
        elif origin is dict or _is_group_field(field):
            kind, example = "object", '{"name": "value"}'
        else:
            continue
        try:
            json.loads(value)
        except ValueError:
            yield variable.upper(), value, kind, example


# -- unknown variables ------------------------------------------------------------------------
def _model_of(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """(model, keyed): the settings model a field holds, and whether it is a dict of them."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is dict and len(args) == 2:
        inner, _ = _model_of(args[1])
        return inner, True
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            inner, keyed = _model_of(arg)
            if inner is not None:
                return inner, keyed
    return None, False


def _walk(model: type[BaseModel], prefix: str) -> Iterator[str]:
    for name, field in model.model_fields.items():
        variable = f"{prefix}{name.upper()}"
        yield variable
        inner, keyed = _model_of(field.annotation)
        if inner is not None:
            yield from _walk(inner, f"{variable}__{_ANY + '__' if keyed else ''}")


def known_variables() -> list[str]:
    """Every variable the settings read; ``*`` stands for a name the operator picks."""
    return list(_walk(Settings, PREFIX))


def _matches(pattern: str, variable: str) -> bool:
    if _ANY not in pattern:
        return pattern == variable
    regex = re.escape(pattern).replace(re.escape(_ANY), "[^_]+(?:_[^_]+)*")
    return re.fullmatch(regex, variable) is not None


def unknown_variables(env: Mapping[str, str] | None = None) -> list[str]:
    """A warning line for each ``CONNECTOR_`` variable that names no setting."""
    env = connector_environment() if env is None else env
    known = known_variables()
    plain = [k for k in known if _ANY not in k]
    warnings = []
    for variable in sorted(env):
        upper = variable.upper()
        if any(_matches(pattern, upper) for pattern in known):
            continue
        close = difflib.get_close_matches(upper, plain, n=1, cutoff=0.75)
        hint = f"did you mean {close[0]}?" if close else "see README 'Configuration'"
        warnings.append(f"{variable} is not a setting and is ignored (probable typo): {hint}")
    return warnings
