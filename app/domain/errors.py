"""Domain errors: raised by the store and the domain rules, mapped to HTTP by the API."""

from __future__ import annotations


class DomainError(Exception):
    """Base class; `message` is safe to show to an API client."""

    def __init__(self, message: str, **extra: object) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class NotFound(DomainError):
    pass


class AlreadyExists(DomainError):
    pass


class VersionConflict(DomainError):
    """`expected_version` did not match, or a concurrent writer took the version first."""

    def __init__(self, agent_id: str, expected: int | None, actual: int | None) -> None:
        super().__init__(
            f"agent {agent_id!r} is at version {actual}, not {expected}",
            agent_id=agent_id,
            expected_version=expected,
            current_version=actual,
        )
        self.expected = expected
        self.actual = actual


class InUse(DomainError):
    """A delete would leave a dangling reference (e.g. a route pointing at the agent)."""


class NumberTaken(DomainError):
    """A phone number is already answered by another route (API: 409 naming both)."""

    def __init__(self, number: str, held_by: str, wanted_by: str) -> None:
        super().__init__(
            f"phone number {number} is already answered by route {held_by!r}",
            number=number, route=held_by, purpose=wanted_by,
        )


class InvalidInput(DomainError):
    """A write that is well-formed but breaks a rule spanning several records (API: 422)."""


class InvalidReference(InvalidInput):
    """A write names something that does not exist (e.g. a route to an unknown agent)."""


class StoreUnavailable(DomainError):
    """The backing database cannot be reached; callers degrade instead of failing."""


class CorruptRecord(DomainError):
    """A stored record does not validate against this build's model (edited by hand,
    or written by a newer build before a rollback of the app). Readers skip it in
    listings, so one bad record cannot hide the others; fetched alone it is a 500
    that names it."""


class WrongState(DomainError):
    """The request does not apply in the thing's current state (e.g. resuming a campaign that is not paused; API: 409)."""


class InProgress(DomainError):
    """The thing is busy right now (e.g. a webhook delivery attempt is running); retry later (API: 409)."""


class RolloutConflict(DomainError):
    """The rollout state does not allow this now: a publish, canary start or rollback
    while a canary runs (promote or abort it first), or a promote/abort with none (API: 409)."""


class ReleaseConflict(DomainError):
    """`If-Match` named another release revision than the current one, or a concurrent
    publisher changed it first (API: 412 with `If-Match`, else 409)."""

    def __init__(self, agent_id: str, expected: int | None, actual: int | None) -> None:
        super().__init__(
            f"agent {agent_id!r} release is at revision {actual}, not {expected}",
            agent_id=agent_id, expected_rev=expected, current_rev=actual,
        )
        self.expected = expected
        self.actual = actual


class PublishRefused(DomainError):
    """A pre-publish check refused the version (API: 409 naming what failed in `extra.failing`)."""

    def __init__(self, message: str, failing: list[str]) -> None:
        super().__init__(message, failing=list(failing))
        self.failing = list(failing)
