"""Who made a change and why: the `ChangeContext` every admin write hands to the store,
which stores it on the journal events the change commits (the audit trail).

The guard that let the request in names the caller (`connection.state.actor`,
`app.api.auth`): `admin` for `ADMIN_API_KEY`, a named key's own name otherwise. The optional
`X-Change-Note` header is the why; it is stored capped (`app.domain.events.cap_note`).
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request
from litestar.di import NamedDependency, Provide
from litestar.params import HeaderParameter, SkipValidation

from app.domain.events import MAX_NOTE_CHARS, ChangeContext

ADMIN_ACTOR = "admin"
"""The name changes made with `ADMIN_API_KEY` are recorded under."""
NOTE_HEADER = "X-Change-Note"


async def provide_change(
    request: Request[Any, Any, Any],
    change_note: Annotated[
        str | None,
        HeaderParameter(name=NOTE_HEADER, required=False,
                        description=f"Why this change was made; kept with it in the audit trail "
                        f"(at most {MAX_NOTE_CHARS} characters are stored)"),
    ] = None,
) -> ChangeContext:
    actor = getattr(request.state, "actor", None)
    return ChangeContext(actor=actor if isinstance(actor, str) else None, note=change_note)


Change = NamedDependency[SkipValidation[ChangeContext]]
"""A write handler's parameter `change`: who is making it and why."""

CHANGE_DEPENDENCY = {"change": Provide(provide_change)}
