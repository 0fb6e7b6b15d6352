"""openai (the Python SDK): skip its request-body transform where it provably changes nothing.

Written against openai 3.57.0 (`openai.resources.chat.completions.completions.
async_maybe_transform`); `install()` checks the installed version first and leaves the
SDK untouched, with one warning, when it differs.

Why: before every `chat.completions.create` the SDK walks the whole body (every
message of the growing chat context, every tool's JSON Schema) against the params'
`TypedDict` type hints, re-deriving the typing introspection at every node, to apply
key aliases and date/base64 formats. The chat-completions params declare none of
those, so the walk returns the body it was given, minus top-level omitted values,
yet it was the largest single CPU cost of a turn in `sim/bench/throughput.py`,
growing with the conversation — CPU taken from the event loop that also plays live
audio. Upstream knows
(openai/openai-python#3616; anthropic-sdk-python#1216 shipped a similar fix).

How it stays correct:
- at `install()`, the params types' full type tree is checked for any `PropertyInfo`
  with an alias or a format; a type that has one (an SDK upgrade that adds one) keeps
  the SDK's own transform;
- per request, the body must be plain JSON (dict with str keys, list, str, int,
  float, bool, None) below the top level; anything else (a pydantic model, a tuple, a
  date, a file, an omitted-value sentinel inside) goes through the SDK's transform.
Then the result is what the SDK's transform returns (tests compare both on bodies
LiveKit sends and on generated ones).
"""

from __future__ import annotations

import logging
import typing
from typing import Any

from typing_extensions import is_typeddict

from app.adapters.pins import matches

log = logging.getLogger(__name__)

DISTRIBUTION = "openai"
WRITTEN_AGAINST = "3.57.0"

_installed = False
_identity_types: set[object] = set()


def _declares_transform(root: object) -> bool:
    """Whether anything in `root`'s type tree carries a key alias or a value format."""
    from openai._utils._transform import PropertyInfo, get_type_hints

    seen: set[int] = set()
    stack: list[object] = [root]
    while stack:
        tp = stack.pop()
        if id(tp) in seen:
            continue
        seen.add(id(tp))
        for meta in getattr(tp, "__metadata__", ()):  # Annotated[...]
            if isinstance(meta, PropertyInfo) and (meta.alias is not None or meta.format is not None):
                return True
        if is_typeddict(tp):
            stack.extend(get_type_hints(tp, include_extras=True).values())
            continue
        origin = typing.get_origin(tp)
        if origin is not None:
            if is_typeddict(origin):
                stack.append(origin)
            stack.extend(a for a in typing.get_args(tp) if not isinstance(a, str | int | bool | bytes | float))
        inner = getattr(tp, "__value__", None)  # PEP 695 aliases
        if inner is not None:
            stack.append(inner)
    return False


def _plain(value: Any, depth: int = 0) -> bool:
    """JSON-native all the way down (the SDK's transform is the identity on these)."""
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return True
    if depth > 200:
        return False
    if kind is list:
        return all(_plain(v, depth + 1) for v in value)
    if kind is dict:
        return all(type(k) is str and _plain(v, depth + 1) for k, v in value.items())
    return False


def make_transform(original: Any) -> Any:
    """Wrap the SDK's `async_maybe_transform` with the fast path."""
    from openai._utils import is_given

    async def async_maybe_transform(data: object, expected_type: object) -> Any:
        if data is None:
            return None
        if expected_type in _identity_types and type(data) is dict:
            body: dict[str, Any] = {}
            for key, value in data.items():
                if not is_given(value):
                    continue  # omitted: the SDK drops these at the top level too
                if type(key) is not str or not _plain(value):
                    return await original(data, expected_type)
                body[key] = value
            return body
        return await original(data, expected_type)

    async_maybe_transform.__wrapped__ = original  # type: ignore[attr-defined]
    return async_maybe_transform


def install() -> bool:
    """Patch `openai.resources.chat.completions` (idempotent). True when active."""
    global _installed
    if _installed:
        return bool(_identity_types)
    _installed = True
    if not matches(DISTRIBUTION, WRITTEN_AGAINST, adapter=__name__):
        return False
    try:
        from openai.resources.chat.completions import completions as module
        from openai.types.chat import completion_create_params as params

        candidates = [params.CompletionCreateParamsStreaming, params.CompletionCreateParamsNonStreaming]
        _identity_types.update(t for t in candidates if not _declares_transform(t))
        if not _identity_types:
            log.info("OpenAI SDK chat params declare aliases/formats: keeping the SDK's transform")
            return False
        module.async_maybe_transform = make_transform(module.async_maybe_transform)  # type: ignore[attr-defined]
    except Exception:
        log.warning("OpenAI SDK fast path not installed (unexpected SDK layout)", exc_info=True)
        _identity_types.clear()
        return False
    return True
