"""Static file routers that cannot be made to fail: one rule for every directory we serve.

Litestar's static files router hands the path to the file system as given: a NUL byte
made `os.stat` raise ValueError and an over-long name OSError (unhandled 500s), and a
404 echoed the server's absolute path. Every static router here (the console's files,
the LiveKit client, the API reference's assets) goes through `safe_static_files_router`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from litestar.connection import ASGIConnection
from litestar.datastructures import CacheControlHeader
from litestar.exceptions import NotFoundException
from litestar.handlers.base import BaseRouteHandler
from litestar.router import Router
from litestar.static_files import create_static_files_router

from app.api.errors import STATIC_FILE_HANDLERS

MAX_STATIC_PATH_CHARS = 512
MAX_FILE_NAME_BYTES = 255


async def file_path_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """A 404 for a static path that cannot name one of our files, before the file
    system sees it. async: Litestar runs a sync guard in a worker thread."""
    path = str(connection.path_params.get("file_path", ""))
    if (
        len(path) > MAX_STATIC_PATH_CHARS
        or any(ord(c) < 0x20 or c == "\x7f" for c in path)
        or any(len(part.encode(errors="replace")) > MAX_FILE_NAME_BYTES for part in path.split("/"))
    ):
        raise NotFoundException("file not found")


def safe_static_files_router(
    path: str,
    directories: Sequence[Path],
    *,
    name: str,
    cache_control: CacheControlHeader | None = None,
) -> Router:
    return create_static_files_router(
        path=path, directories=list(directories), name=name, cache_control=cache_control,
        guards=[file_path_guard], exception_handlers=STATIC_FILE_HANDLERS, include_in_schema=False,
    )
