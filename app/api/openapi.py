"""The OpenAPI document, made to say exactly what the server validates.

Why: Litestar 2 translates pydantic models into OpenAPI itself and loses rules on the
way (found by fuzzing the live API with schemathesis, tests/reliability): a
`dict[<constrained str>, VariableSpec]` came out as an *array*, `ge=0` bounds and the
slug/purpose patterns of nested fields vanished, and `max_length` on a dict became
`maxLength`. Clients generated from `/schema/openapi.json` then sent bodies the server
rejects, and the server's own responses did not match the document.

The fix keeps Litestar's paths, parameters and responses and replaces the component
schemas of our pydantic models with pydantic's own JSON Schema (draft 2020-12, which
OpenAPI 3.1 uses), generated from the same classes that validate requests. Models
outside `app.domain` register themselves with `register_models`.

Also here: Litestar 2's automatic OPTIONS handler lists only the methods of the first
handler registered on a path (litestar-org/litestar#4169, fixed in v3);
`fix_allow_header` answers with every method the path really has.
"""

from __future__ import annotations

import threading
from typing import Any

from litestar import Litestar, Request
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.routes import HTTPRoute
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from app.domain import AgentConfig, AgentConfigInput, Route, RouteInput, SessionRecord
from app.domain.events import Event
from app.domain.webhooks import (
    Delivery,
    RotateSecretInput,
    SecretRotation,
    Webhook,
    WebhookCreated,
    WebhookInput,
)

_REF = "#/components/schemas/{model}"
_models: list[type[BaseModel]] = [
    AgentConfig, AgentConfigInput, Route, RouteInput, SessionRecord, Event,
    WebhookInput, Webhook, WebhookCreated, SecretRotation, RotateSecretInput, Delivery,
]
_components: dict[str, Any] | None = None
_lock = threading.Lock()


def register_models(*models: type[BaseModel]) -> None:
    """Document these pydantic models (and what they reference) from pydantic's schema."""
    global _components
    with _lock:
        for m in models:
            if m not in _models:
                _models.append(m)
        _components = None


def _tidy(node: Any) -> Any:
    """pydantic writes a constrained-key dict as `patternProperties` alone, which lets any
    other key through; the server rejects those, so say `propertyNames` + values."""
    if isinstance(node, list):
        return [_tidy(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _tidy(v) for k, v in node.items()}
    pp = out.get("patternProperties")
    if isinstance(pp, dict) and len(pp) == 1 and "additionalProperties" not in out:
        (pattern, schema), = pp.items()
        del out["patternProperties"]
        out["propertyNames"] = {"pattern": pattern}
        out["additionalProperties"] = schema
    return out


def model_components() -> dict[str, Any]:
    """Component schemas for every registered model and everything they reference."""
    global _components
    with _lock:
        if _components is None:
            _, top = models_json_schema([(m, "validation") for m in _models], ref_template=_REF)
            _components = {name: _tidy(schema) for name, schema in top.get("$defs", {}).items()}
        return _components


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def merge_patch_schema(schema: dict[str, Any], components: dict[str, Any], depth: int = 0) -> dict[str, Any]:
    """The RFC 7386 merge patch of documents valid under `schema`: every member optional,
    `null` deletes it, objects merge recursively (so their members are patches too),
    anything else (arrays, scalars) is replaced whole and keeps its schema."""
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/components/schemas/") and depth < 8:
        schema = components.get(ref.rsplit("/", 1)[-1], {})
    if "properties" in schema and depth < 8:
        out = {k: v for k, v in schema.items() if k not in ("required", "properties", "title")}
        out["properties"] = {
            name: _nullable(merge_patch_schema(sub, components, depth + 1))
            for name, sub in schema["properties"].items()
        }
        return out
    if isinstance(schema.get("anyOf"), list) and depth < 8:  # an optional object: patch its object branch
        return {**schema, "anyOf": [merge_patch_schema(s, components, depth + 1) for s in schema["anyOf"]]}
    if schema.get("type") == "object" and isinstance(schema.get("additionalProperties"), dict) and depth < 8:
        return {**schema, "additionalProperties": _nullable(
            merge_patch_schema(schema["additionalProperties"], components, depth + 1))}
    return schema


_PATCH_BODIES = {
    ("/api/v1/agents/config/{agent_id}", "patch"): ("AgentConfigPatch", "AgentConfigInput"),
    ("/api/v1/webhooks/{webhook_id}", "patch"): ("WebhookPatch", "WebhookInput"),
}
"""Operations whose body is a JSON merge patch of a model: (path, method) -> (component, model)."""


def refine(doc: dict[str, Any]) -> dict[str, Any]:
    """Replace the component schemas Litestar generated for our models, and describe what
    webhook receivers get (`webhooks`); idempotent."""
    from app.api.webhook_docs import payload_models, webhooks_section

    register_models(*payload_models())
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(model_components())
    doc["webhooks"] = webhooks_section()
    for (path, method), (name, model) in _PATCH_BODIES.items():
        op = doc.get("paths", {}).get(path, {}).get(method)
        if op is None or model not in schemas:
            continue
        if name not in schemas:
            patch = merge_patch_schema(schemas[model], schemas)
            patch["description"] = f"An RFC 7386 JSON merge patch of {model}: `null` removes a member."
            schemas[name] = patch
        for media in op.get("requestBody", {}).get("content", {}).values():
            media["schema"] = {"$ref": f"#/components/schemas/{name}"}
    return doc


class AccurateJsonRenderPlugin(JsonRenderPlugin):
    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return super().render(request, refine(openapi_schema))


def fix_allow_header(app: Litestar) -> None:
    """Make automatic OPTIONS answers list every method of the path (Litestar #4169)."""
    allow: dict[int, str] = {}  # id(OPTIONS handler) -> the path's full method list
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            for handler in route.route_handlers:
                if "OPTIONS" in handler.http_methods:
                    allow[id(handler)] = ", ".join(sorted(route.methods))

    app.asgi_handler = _AllowFix(app.asgi_handler, allow)


class _AllowFix:
    """ASGI wrapper: on an OPTIONS answer with an `allow` header, put the real method set."""

    def __init__(self, inner: Any, allow: dict[int, str]) -> None:
        self._inner = inner
        self._allow = allow

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or scope.get("method") != "OPTIONS":
            await self._inner(scope, receive, send)
            return

        async def send_fixed(message: Any) -> None:
            if message.get("type") == "http.response.start":
                methods = self._allow.get(id(scope.get("route_handler")))
                if methods is not None:
                    headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"]
                    headers.append((b"allow", methods.encode()))
                    message = {**message, "headers": headers}
            await send(message)

        await self._inner(scope, receive, send_fixed)
