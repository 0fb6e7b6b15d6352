"""opentelemetry-sdk: a span's scalar attribute written straight into its attribute map.

Written against opentelemetry-sdk 1.45.2: `Span.set_attribute` and `Span.set_attributes`
of `opentelemetry.sdk.trace`, which take the span's lock, then the attribute map's
(`BoundedAttributes._lock`), and run the value through `_clean_attribute_value`, for
every attribute. `install()` checks the installed version first and leaves both alone,
with one warning, when it differs.

Why: LiveKit Agents writes ~50 attributes per traced turn (and `CallAttributes` three
per span), on the event loop that also serves live audio; the two locks and the value
check were the largest part of what recording them cost. For the common case, a `str`,
`bool`, `int` or `float` value under a non-empty string key, on a live span, with no
attribute-length limit set and room in the map (or the key already in it), the checks
cannot change the outcome, so the value is stored as the library would store it: a key
written again moves to the end of the map, as the library's delete-then-insert does.
Every other case (sequences, `None`, an ended span, a full map, a length limit) takes
the library's own path. The span's lock guards against a concurrent `end()`; spans are
written from the thread that runs them, and one dictionary store is atomic under the GIL,
so the worst a race with `end()` on another thread can do is keep one attribute the
library would have refused with a warning.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry.sdk.trace import Span
from opentelemetry.util import types

from app.adapters.pins import matches

DISTRIBUTION = "opentelemetry-sdk"
WRITTEN_AGAINST = "1.45.2"

_SCALARS = frozenset({str, bool, int, float})
_installed = False
_active = False
_library_set_attribute: Callable[[Span, str, types.AnyValue], None] = Span.set_attribute
_library_set_attributes: Callable[[Span, Mapping[str, types.AnyValue]], None] = Span.set_attributes


def _stored(span: Span, key: str, value: Any) -> bool:
    """Store `value` as the library would, where its checks cannot change the outcome."""
    if span._end_time is not None or type(value) not in _SCALARS or type(key) is not str or not key:
        return False
    bounded = span._attributes
    if bounded.max_value_len is not None:
        return False
    attributes = bounded._dict
    if key in attributes:
        del attributes[key]
    elif bounded.maxlen is not None and len(attributes) >= bounded.maxlen:
        return False  # full: the library drops the oldest and counts it
    attributes[key] = value
    return True


def set_attribute(self: Span, key: str, value: types.AnyValue) -> None:
    if not _stored(self, key, value):
        _library_set_attribute(self, key, value)


def set_attributes(self: Span, attributes: Mapping[str, types.AnyValue]) -> None:
    if self._end_time is not None:
        _library_set_attributes(self, attributes)  # one warning, as the library gives
        return
    for key, value in attributes.items():
        if not _stored(self, key, value):
            _library_set_attributes(self, {key: value})


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
