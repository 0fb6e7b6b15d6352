"""The version check every adapter makes before it touches a library's internals."""

from __future__ import annotations

import importlib.metadata
import logging

log = logging.getLogger(__name__)


def installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def matches(distribution: str, written_against: str, *, adapter: str) -> bool:
    """True when the installed `distribution` is the version the adapter was written
    against; otherwise one warning saying the library's own code path is used."""
    found = installed_version(distribution)
    if found == written_against:
        return True
    log.warning(
        "%s: written against %s %s but %s is installed; using the library's own code path "
        "(re-check the adapter against the new version, then update its pin)",
        adapter, distribution, written_against, found or "no version",
    )
    return False
