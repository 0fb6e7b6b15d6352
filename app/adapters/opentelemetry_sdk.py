"""opentelemetry-sdk: a span's scalar attribute written straight into its attribute map.

Written against opentelemetry-sdk 1.45.2: `Span.set_attribute` and `Span.set_attributes`
of `opentelemetry.sdk.trace`, which take the span's lock, then the attribute map's
(`BoundedAttributes._lock`), and run the value through `_clean_attribute_value`, for
every attribute. `install()` checks the installed version first and leaves both alone,
with one warning, when it differs.

Why: LiveKit Agents writes dozens of attributes per traced turn (and `CallAttributes`
three per span) on the event loop that also serves live audio, and each write paid for
both locks and the check. For the common case, a `str`, `bool`, `int` or `float` value
(or a list or tuple of them) under a non-empty string key, on a live span, with no
attribute-length limit set and room in the map (or the key already in it), the checks
cannot change the outcome, so the value is stored as the library would store it (a
sequence as a tuple; a key written again moves to the end of the map, as the library's
delete-then-insert does). Every other case (`None`, bytes, nested or mixed values, an
ended span, a full map, a length limit) takes the library's own path, a mapping of
several attributes whole, so its warnings come in its order. The span's lock guards
against a concurrent `end()`; spans are written from the thread that runs them, and one
dictionary store is atomic under the GIL, so the worst a race with `end()` on another
thread can do is keep one attribute the library would have refused with a warning.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import Span
from opentelemetry.util import types

from app.adapters.pins import matches

DISTRIBUTION = "opentelemetry-sdk"
WRITTEN_AGAINST = "1.45.2"

_SCALARS = frozenset({str, bool, int, float})
_NOT_PLAIN = object()
_installed = False
_active = False
_library_set_attribute: Callable[[Span, str, types.AnyValue], None] = Span.set_attribute
_library_set_attributes: Callable[[Span, Mapping[str, types.AnyValue]], None] = Span.set_attributes


def _room(span: Span, keys: Iterable[Any]) -> dict[str, Any] | None:
    """The span's attribute map when these keys can be stored as the library would store
    them without its checks changing the outcome (module doc); else None."""
    if span._end_time is not None:
        return None
    bounded = cast(BoundedAttributes, span._attributes)  # a live span's: the SDK's bounded map
    if bounded.max_value_len is not None:
        return None
    attributes = bounded._dict
    new = 0
    for key in keys:
        if type(key) is not str or not key:
            return None
        new += key not in attributes
    if bounded.maxlen is not None and len(attributes) + new > bounded.maxlen:
        return None  # full: the library drops the oldest and counts it
    return attributes


def _plain(value: Any) -> Any:
    """`value` as the library stores it, when its checks cannot change it: a scalar as it
    is, a list or tuple of scalars as a tuple; else `_NOT_PLAIN`."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is tuple or kind is list:
        for item in value:
            if type(item) not in _SCALARS:
                return _NOT_PLAIN
        return tuple(value)
    return _NOT_PLAIN


def set_attribute(self: Span, key: str, value: types.AnyValue) -> None:
    plain = _plain(value)
    attributes = None if plain is _NOT_PLAIN else _room(self, (key,))
    if attributes is None:
        _library_set_attribute(self, key, value)
        return
    attributes.pop(key, None)  # a key written again moves to the end, as in the library
    attributes[key] = plain


def set_attributes(self: Span, attributes: Mapping[str, types.AnyValue]) -> None:
    plain = [(key, _plain(value)) for key, value in attributes.items()]
    stored = None if any(value is _NOT_PLAIN for _, value in plain) else _room(self, attributes.keys())
    if stored is None:
        _library_set_attributes(self, attributes)  # its warnings, in its order
        return
    for key, value in plain:
        stored.pop(key, None)
        stored[key] = value


def install() -> bool:
    """Put the fast attribute writes on the SDK's `Span` (idempotent)."""
    global _installed, _active
    if _installed:
        return _active
    _installed = True
    if not matches(DISTRIBUTION, WRITTEN_AGAINST, adapter=__name__):
        return False
    set_attribute.__wrapped__ = _library_set_attribute  # type: ignore[attr-defined]
    set_attributes.__wrapped__ = _library_set_attributes  # type: ignore[attr-defined]
    Span.set_attribute = set_attribute  # type: ignore[method-assign]
    Span.set_attributes = set_attributes  # type: ignore[method-assign]
    _active = True
    return True


def active() -> bool:
    return _active
