"""The admin API application factory.

`create_app` wires explicit dependencies (settings, store, runtime status, optional
config cache) into a Litestar app: no module-level state, so tests, the supervisor and
the benchmark each build their own app around their own store. Dependencies reach
handlers through Litestar DI (`app.api.deps`) and are also on `app.state` for code
that is not a handler (the supervisor, middleware, the token endpoint).

Layout:
- `/healthz`, `/readyz`: open (probes carry no credentials);
- `/api/v1/...`: the admin controllers behind the role guard (`app.api.auth`: the
  bootstrap `ADMIN_API_KEY` or a named key whose role covers the handler);
- `extra_route_handlers`: mounted at the app root as given, *outside* the admin guard,
  so an endpoint with its own auth (`POST /api/v1/token`, its own key) is added by
  passing a handler with the full path and its own guard.
- `/schema` (UI) and `/schema/openapi.json`: the OpenAPI document, open; the UI's
  Swagger assets come from `assets` (`app.api.docs`).
"""

from __future__ import annotations

from collections.abc import Sequence

from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components
from litestar.plugins import PluginProtocol
from litestar.types import ControllerRouterHandler

from app.api.agent_tests import AgentTestController
from app.api.agents import AgentConfigController
from app.api.audit import AuditController
from app.api.auth import SECURITY_SCHEME, SECURITY_SCHEME_NAME, KeyRing, check_declared_roles, role_guard
from app.api.calls import CampaignController, calls_controller
from app.api.changes import ADMIN_ACTOR, CHANGE_DEPENDENCY
from app.api.deps import constant, dependencies
from app.api.docs import SelfHostedSwaggerPlugin, schema_router
from app.api.errors import EXCEPTION_HANDLERS
from app.api.health import HealthController
from app.api.keys import KeyController
from app.api.latency import LatencyController
from app.api.metrics import metrics_router
from app.api.openapi import AccurateJsonRenderPlugin, fix_allow_header
from app.api.resolve import ResolveController
from app.api.rollout import RolloutController
from app.api.routes import RouteController
from app.api.sessions import SessionController
from app.api.status import RuntimeStatus
from app.api.tokens import VersionTokenController
from app.api.usage import UsageController
from app.api.webhooks import WebhookController
from app.assets.browser import BrowserAssets
from app.domain.agent_tests import TestRunQueue
from app.observability import tracing
from app.settings import Settings
from app.store.base import ConfigStore
from app.store.cache import ConfigCache
from app.store.rollout_guard import guard_policy
from app.store.sources import SnapshotSource, config_source
from app.webhooks.safety import UrlPolicy

API_PREFIX = "/api/v1"
API_VERSION = "1.0.0"


def create_app(
    settings: Settings,
    store: ConfigStore,
    *,
    status: RuntimeStatus | None = None,
    cache: ConfigCache | None = None,
    configs: SnapshotSource | None = None,
    extra_route_handlers: Sequence[ControllerRouterHandler] = (),
    assets: BrowserAssets | None = None,
    test_runs: TestRunQueue | None = None,
) -> Litestar:
    """Build the admin API around an already started `store`.

    The caller owns the store's lifecycle (the supervisor starts it before serving and
    closes it after the worker drains), so the app registers no startup/shutdown hooks
    for it. The same goes for `cache`: pass the process's started `ConfigCache` (the
    worker's) to serve `GET /agents/config/{id}` from memory while it is fresh; without
    one every read goes to the store. `assets` locates (and in the serving process
    fetches) Swagger UI for `/schema`; without it, only what is on disk is used.

    `configs`: the process's config source (what `/resolve` and `/token` resolve
    against, as session starts do); by default the one `config_source` picks for the
    settings, over `cache` when given.

    `test_runs`: where `POST …/test-runs` hands a queued run (the process's
    `app.agents.test_pool.TestRunPool`); without one that endpoint answers 503.
    """
    status = status if status is not None else RuntimeStatus()
    assets = assets if assets is not None else BrowserAssets.from_settings(settings)
    configs = configs if configs is not None else config_source(settings, store, cache=cache)
    keyring = KeyRing(store)
    guard = role_guard(settings.admin_api_key, keyring, ADMIN_ACTOR)
    admin = Router(
        path=API_PREFIX,
        route_handlers=[
            AgentConfigController, LatencyController, RouteController, SessionController, UsageController,
            ResolveController, AuditController, WebhookController, KeyController, RolloutController,
            VersionTokenController, AgentTestController, calls_controller(settings), CampaignController,
        ],
        guards=[guard],
        dependencies={**CHANGE_DEPENDENCY, "keyring": constant(keyring)},
        security=[{SECURITY_SCHEME_NAME: []}],
    )
    open_metrics = settings.metrics_access == "open"
    plugins: list[PluginProtocol] = []
    tracer_provider = tracing.provider()
    if tracer_provider is not None:  # tracing on (OTEL_*): a span per admin request
        from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin

        plugins.append(OpenTelemetryPlugin(OpenTelemetryConfig(
            tracer_provider=tracer_provider,
            # probes and scrapes every few seconds would drown the admin requests
            exclude=["^/healthz$", "^/readyz$", "^/metrics$"],
            exclude_spans=["receive", "send"],  # one span per request, not three
        )))
    app = Litestar(
        route_handlers=[
            HealthController,
            metrics_router(None if open_metrics else guard),
            admin, *extra_route_handlers,
        ],
        dependencies=dependencies(store, cache, status, configs, UrlPolicy.from_settings(settings),
                                  guard_policy(settings)),
        state=State({"settings": settings, "store": store, "status": status, "cache": cache, "configs": configs,
                     "keyring": keyring, "test_runs": test_runs}),
        exception_handlers=EXCEPTION_HANDLERS,
        plugins=plugins,
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="Voice platform admin API",
            version=API_VERSION,
            openapi_router=schema_router("/schema"),
            render_plugins=[SelfHostedSwaggerPlugin(assets, path="/"), AccurateJsonRenderPlugin()],
            components=Components(security_schemes={SECURITY_SCHEME_NAME: SECURITY_SCHEME}),
        ),
        # Logging belongs to the process (the supervisor configures text or JSON logs);
        # Litestar's default config would reconfigure the root logger behind its back.
        logging_config=None,
        debug=False,
    )
    fix_allow_header(app)
    check_declared_roles(app)
    return app
