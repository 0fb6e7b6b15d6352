"""`python -m app models serve [--demo]`: run one model server in this process.

Refuses to start, with one line naming the setting to fix, when a model path is wrong,
the `local` extra is missing or the port is taken; otherwise loads the models, then
serves on 127.0.0.1 until SIGTERM/SIGINT. `dev --local-models` / `--demo` run this same
command as a child process (`app.localmodels.sidecar`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import importlib.util
import logging
import os
import signal
import socket
import sys
import tempfile
from pathlib import Path

import uvicorn

from app.localmodels.backend import LocalBackend, ModelBackend, StartupError
from app.localmodels.locate import INSTALL_HINT, ModelFileError, locate_all
from app.localmodels.server import create_model_app
from app.localmodels.settings import LocalModelSettings

log = logging.getLogger(__name__)

LOCAL_PACKAGES = {"xllamacpp": "xllamacpp", "faster_whisper": "faster-whisper", "piper": "piper-tts"}


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return 2


def missing_packages() -> list[str]:
    import importlib.util

    return [dist for mod, dist in LOCAL_PACKAGES.items() if importlib.util.find_spec(mod) is None]


def bind_loopback(port: int) -> socket.socket:
    """The listening socket, bound before any model loads so a taken port fails fast."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as e:
        sock.close()
        why = "is in use" if e.errno == errno.EADDRINUSE else f"cannot be used ({e.strerror})"
        raise StartupError(f"LOCAL_MODELS_PORT: 127.0.0.1:{port} {why}") from None
    sock.listen(128)
    return sock


_REEXEC = "_APP_OPENMP_REEXEC"


def ensure_openmp() -> None:
    """llama.cpp's wheel links the system's OpenMP runtime (`libgomp.so.1`), which a
    minimal OS image (a machine with only Python and uv) lacks; ctranslate2's wheel, in
    the same extra, carries a copy. Without a system one, run this command again with
    that copy on the library path (read by the loader only at process start), so the
    model server needs nothing from the OS package manager."""
    if os.environ.get(_REEXEC):
        return
    try:
        ctypes.CDLL("libgomp.so.1")
        return
    except OSError:
        pass
    spec = importlib.util.find_spec("ctranslate2")
    roots = [Path(p).parent / "ctranslate2.libs" for p in (spec.submodule_search_locations or [])] if spec else []
    copies = sorted(c for root in roots if root.is_dir() for c in root.glob("libgomp-*.so*"))
    if not copies:
        return  # llama.cpp then names the missing library itself
    libdir = Path(tempfile.gettempdir()) / f"voice-platform-openmp-{os.getuid()}"
    libdir.mkdir(mode=0o700, exist_ok=True)
    link = libdir / "libgomp.so.1"
    if not link.exists():
        tmp = libdir / f".libgomp.{os.getpid()}"
        tmp.symlink_to(copies[0])
        os.replace(tmp, link)  # atomic: several servers may start at once
    paths = [str(libdir), *filter(None, os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep))]
    env = {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(paths), _REEXEC: "1"}
    os.execve(sys.executable, sys.orig_argv, env)


def serve(settings: LocalModelSettings, *, demo: bool) -> int:
    backend: ModelBackend
    if demo:
        from app.localmodels.demo import DemoBackend

        backend = DemoBackend()
    else:
        try:  # a wrong path is named first: it is the user's to fix whatever is installed
            files = locate_all(settings)
        except ModelFileError as e:
            return _fail(str(e))
        missing = missing_packages()
        if missing:
            return _fail(f"the local model server needs {', '.join(missing)}: {INSTALL_HINT}")
        ensure_openmp()
        backend = LocalBackend(files, settings)
    try:
        sock = bind_loopback(settings.models_port)
    except StartupError as e:
        return _fail(str(e))
    try:
        return asyncio.run(_run(backend, settings, sock))
    except StartupError as e:
        return _fail(str(e))
    finally:
        sock.close()


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[no-untyped-def]
        yield  # ours: stop on SIGTERM/SIGINT below


async def _run(backend: ModelBackend, settings: LocalModelSettings, sock: socket.socket) -> int:
    start = getattr(backend, "start", None)
    if start is not None:
        await start()
    server = _Server(uvicorn.Config(create_model_app(backend, settings), log_config=None, access_log=False,
                                    lifespan="off", timeout_graceful_shutdown=2))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    names = ", ".join(f"{k}={v}" for k, v in backend.describe().items())
    log.info("%s model server ready on %s (%s)", backend.kind, settings.base_url, names)
    try:
        await server.serve(sockets=[sock])
    finally:
        await backend.aclose()
    return 0
