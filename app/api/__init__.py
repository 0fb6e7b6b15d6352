"""Admin API: Litestar app factory, controllers, auth guard and error mapping."""

from app.api.app import API_PREFIX, create_app
from app.api.status import Readiness, RuntimeStatus

__all__ = ["API_PREFIX", "Readiness", "RuntimeStatus", "create_app"]
