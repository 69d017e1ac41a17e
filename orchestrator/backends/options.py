"""A backend's ``--backend-opt KEY=VALUE`` options: one frozen dataclass per backend, one parser.

Each field is one option: its name is the key, its type says how the text is read, its default
applies when the key is absent, and its metadata holds the help line and an example (shown in
the error that refuses a bad value)::

    @dataclass(frozen=True)
    class SlurmOptions:
        mode: str = option("direct", "direct or pilot", "pilot", choices=("direct", "pilot"))
        pilot_time: float = option(3600.0, "the pilot allocation's time", "1:00:00", seconds=True)

Types: ``str``, ``bool`` (``1/0``, ``true/false``, ``yes/no``), ``int`` (a count >= 0),
``float`` (``seconds=True``: a duration, ``90``, ``1:30``, ``1:00:00``), and ``X | None`` of
those (``none`` or an empty value: None).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from orchestrator.exceptions import InvalidRequestError

__all__ = ["option", "parse_options"]

T = TypeVar("T")

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def option(
    default: Any,
    help: str,
    example: str,
    *,
    seconds: bool = False,
    choices: Sequence[str] = (),
    minimum: float | None = None,
    above: float | None = None,
) -> Any:
    """A field of an options dataclass (see the module docstring); ``minimum`` and ``above``
    bound a number (``value >= minimum``, ``value > above``)."""
    metadata = {
        "help": help,
        "example": example,
        "seconds": seconds,
        "choices": tuple(choices),
        "minimum": minimum,
        "above": above,
    }
    return dataclasses.field(default=default, metadata=metadata)


def _convert(kind: Any, seconds: bool, key: str, text: str) -> Any:
    """The text as ``kind`` (raises ValueError or InvalidRequestError)."""
    if kind is bool:
        word = text.strip().lower()
        if word not in _TRUE + _FALSE:
            raise ValueError("expected 1 or 0")
        return word in _TRUE
    if kind is int:
        if not text.strip().isdigit():
            raise ValueError("expected a whole number")
        return int(text)
    if kind is float and seconds:
        from orchestrator.resources.request import parse_duration

        return float(parse_duration(text, key))
    if kind is float:
        return float(text)
    return text


def _bounds_error(meta: Mapping[str, Any], value: Any) -> str | None:
    if meta["choices"] and value not in meta["choices"]:
        return f"expected {' or '.join(meta['choices'])}"
    if meta["minimum"] is not None and value < meta["minimum"]:
        return f"expected at least {meta['minimum']:g}"
    if meta["above"] is not None and value <= meta["above"]:
        return f"expected more than {meta['above']:g}"
    return None


def _read(backend: str, field: dataclasses.Field[Any], kind: Any, text: str) -> Any:
    meta = field.metadata
    key, example = field.name, meta["example"]
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        if text.strip().lower() in ("", "none"):
            return None
        (kind,) = [k for k in typing.get_args(kind) if k is not type(None)]
    try:
        value = _convert(kind, meta["seconds"], key, text)
    except (ValueError, InvalidRequestError) as e:
        reason = e.reason if isinstance(e, InvalidRequestError) else str(e)
        raise InvalidRequestError(
            key, text, f"the {backend} backend's option {key}: {reason}", f"{key}={example}"
        ) from None
    problem = _bounds_error(meta, value)
    if problem is not None:
        raise InvalidRequestError(key, text, problem, f"{key}={example}")
    return value


def parse_options(options_class: type[T], options: Mapping[str, str], backend: str) -> T:
    """The options dataclass of ``backend`` from its ``--backend-opt`` pairs.

    Raises:
        InvalidRequestError: a key the backend does not know (the message lists those it
            does), or a value its field cannot read (the message names the key and the fix).
    """
    assert dataclasses.is_dataclass(options_class)
    fields = {f.name: f for f in dataclasses.fields(options_class)}
    unknown = sorted(set(options) - set(fields))
    if unknown:
        first = next(iter(fields.values()))
        raise InvalidRequestError(
            "backend-opt",
            unknown[0],
            f"the {backend} backend knows only {', '.join(fields)}",
            f"{first.name}={first.metadata['example']}",
        )
    hints = typing.get_type_hints(options_class)
    values = {key: _read(backend, fields[key], hints[key], text) for key, text in options.items()}
    return options_class(**values)
