"""`python -m app dev|start|seed|chat|models`: the entry points users rely on."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import TYPE_CHECKING

from pydantic import ValidationError

from app.settings import Settings

if TYPE_CHECKING:
    from app.localmodels.settings import LocalModelSettings
    from app.localmodels.sidecar import ModelSidecar


def _load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as e:
        from app.domain.field_errors import field_errors

        for loc, message in field_errors(e):
            name = ".".join(str(p) for p in loc).upper()
            print(f"error: setting {name}: {message}" if name else f"error: settings: {message}", file=sys.stderr)
        raise SystemExit(2) from None


def _model_server(kind: str | None, *, json_logs: bool, log_level: str | None = None) -> ModelSidecar | None:
    """`--local-models` / `--demo`: the model server to run beside the platform."""
    if kind is None:
        return None
    from app.localmodels.sidecar import ModelSidecar

    return ModelSidecar("demo" if kind == "demo" else "local", _load_local_settings(None), json_logs=json_logs,
                        log_level=log_level)


def _cmd_serve(dev: bool, models: str | None = None) -> int:
    from app.observability import processes

    settings = _load_settings()  # a bad setting stops here, before anything else
    processes.share_across_processes()  # before anything imports prometheus_client
    try:
        return _serve(settings, dev, models)
    finally:
        processes.close()


def _serve(settings: Settings, dev: bool, models: str | None) -> int:
    from app.logging_setup import configure_logging
    from app.supervisor import Supervisor, prepare_settings

    weak_secret = settings.weak_livekit_secret()
    if not dev:
        problems = [f"`start` needs {name} to be set" for name in settings.missing_for_production()]
        if weak_secret:
            problems.append(f"{weak_secret}: `start` refuses it (`dev` accepts it with a warning)")
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        if problems:
            return 2
    json_logs = settings.log_format == "json" or (settings.log_format == "auto" and not dev)
    redactor = configure_logging(settings, json_logs=json_logs)
    if weak_secret:  # dev only (start refused above): say it once, not at every token signed
        import warnings

        # PyJWT's InsecureKeyLengthWarning, at every token signed (tests/test_supervisor.py
        # notices if its wording changes and it comes through again)
        warnings.filterwarnings("ignore", message=r"The HMAC key is \d+ bytes long")
        logging.getLogger("app.cli").warning(
            "%s; fine for a local LiveKit dev server, refused by `start`", weak_secret
        )
    model_server = _model_server(models, json_logs=json_logs)
    if model_server is not None:
        settings = model_server.point(settings)
    settings, generated = prepare_settings(settings, dev=dev)
    if generated:
        redactor.add(generated)
        # Printed once, straight to the terminal, never through the (redacted) logs.
        print(f"\n  admin API key for this run: {generated}\n"
              f"  (set ADMIN_API_KEY to choose your own)\n"
              f"  console: http://127.0.0.1:{settings.port}/\n", file=sys.stderr, flush=True)
    return asyncio.run(Supervisor(settings, dev=dev, model_server=model_server).run())


def _cmd_seed() -> int:
    from app.domain.loading import ConfigFileError
    from app.logging_setup import configure_logging
    from app.seed import seed
    from app.store import open_store

    settings = _load_settings()
    configure_logging(settings, json_logs=False)

    async def run() -> int:
        store = open_store(settings.database_url)
        await store.start()
        try:
            report = await seed(store, settings.prompts_dir)
        except ConfigFileError as e:  # names the file and the field
            print(f"error: {e}", file=sys.stderr)
            return 2
        finally:
            await store.aclose()
        print(report)
        return 0

    return asyncio.run(run())


def _cmd_chat(args: argparse.Namespace) -> int:
    from app.chat import run_chat
    from app.logging_setup import configure_logging

    settings = _load_settings()
    debug = settings.log_level == "DEBUG"
    configure_logging(settings.model_copy(update={"log_level": "DEBUG" if debug else "WARNING"}), json_logs=False)
    if not debug:
        # The terminal is the conversation: chat reports failures in one line of its own;
        # LiveKit's retry warnings and tracebacks (and our worker's line for the same
        # failure) show with LOG_LEVEL=DEBUG.
        logging.getLogger("livekit").setLevel(logging.CRITICAL)
        logging.getLogger("app.worker.model_unavailable").setLevel(logging.ERROR)
    if settings.webhook_url_policy == "auto":  # a developer's command: webhooks as under `dev`
        settings = settings.model_copy(update={"webhook_url_policy": "any"})
    variables: dict[str, str] = {}
    for item in args.var or []:
        if "=" not in item:
            print(f"error: --var expects key=value, got {item!r}", file=sys.stderr)
            return 2
        k, v = item.split("=", 1)
        variables[k] = v
    if args.version is not None and not args.agent_id:
        print("error: --version needs --agent-id (a version belongs to one agent)", file=sys.stderr)
        return 2
    model_server = _model_server(args.models, json_logs=False, log_level="WARNING")

    async def run() -> int:
        chat_settings = settings
        if model_server is not None:  # one already running (a `dev --local-models`) is used as it is
            from app.localmodels.sidecar import ModelServerError

            try:
                await model_server.start()
            except ModelServerError as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
            chat_settings = model_server.point(settings)
        try:
            return await run_chat(chat_settings, purpose=args.purpose, agent_id=args.agent_id,
                                  variables=variables, user_id=args.user_id, version=args.version)
        finally:
            if model_server is not None:
                await model_server.aclose()

    return asyncio.run(run())


def _load_local_settings(port: int | None) -> LocalModelSettings:
    from app.localmodels.settings import LocalModelSettings

    try:
        settings = LocalModelSettings()
    except ValidationError as e:
        from app.domain.field_errors import field_errors

        for loc, message in field_errors(e):
            name = "LOCAL_" + ".".join(str(p) for p in loc).upper()
            print(f"error: setting {name}: {message}", file=sys.stderr)
        raise SystemExit(2) from None
    return settings if port is None else settings.model_copy(update={"models_port": port})


def _cmd_models(args: argparse.Namespace) -> int:
    from app.localmodels.cli import serve
    from app.logging_setup import configure_logging

    configure_logging(_load_settings(), json_logs=args.json_logs)
    return serve(_load_local_settings(args.port), demo=args.demo)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    dev = sub.add_parser("dev", help="run API + worker locally (SQLite, seeded, readable logs)")
    start = sub.add_parser("start", help="run API + worker in production (needs keys, JSON logs)")
    for p, flags in ((dev, ("--local-models", "--demo")), (start, ("--local-models",))):
        group = p.add_mutually_exclusive_group()
        if "--local-models" in flags:
            group.add_argument("--local-models", dest="models", action="store_const", const="local",
                               help="start the local model server (the `local` extra) beside the platform "
                               "and use it for every agent's default LLM, STT and TTS")
        if "--demo" in flags:
            group.add_argument("--demo", dest="models", action="store_const", const="demo",
                               help="start the scripted demo model instead: try the seeded support agent "
                               "with no key and nothing to download")
    sub.add_parser("seed", help="load the example agents and routes from prompts/ (idempotent)")
    chat = sub.add_parser("chat", help="talk to a routed agent in the terminal (text mode)")
    who = chat.add_mutually_exclusive_group()
    who.add_argument("--purpose", help="route by purpose, as a token's metadata would")
    who.add_argument("--agent-id", help="talk to this agent directly")
    chat.add_argument("--version", type=int, metavar="N",
                      help="talk to this version of --agent-id (a draft, say) instead of the published one")
    chat.add_argument("--var", action="append", metavar="KEY=VALUE", help="a prompt variable")
    chat.add_argument("--user-id", default="terminal", help="user id stored on the session")
    models_flag = chat.add_mutually_exclusive_group()
    models_flag.add_argument("--local-models", dest="models", action="store_const", const="local",
                             help="talk through the local model server (the one `dev --local-models` "
                             "runs, else one started for this chat)")
    models_flag.add_argument("--demo", dest="models", action="store_const", const="demo",
                             help="talk to the scripted demo model (no key, nothing to download)")
    models = sub.add_parser("models", help="model servers on this machine (no cloud key needed)")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    serve = models_sub.add_parser(
        "serve", help="serve local models (the `local` extra) as an OpenAI-compatible API on 127.0.0.1")
    serve.add_argument("--demo", action="store_true",
                       help="serve the scripted demo model instead (no downloads, no extra)")
    serve.add_argument("--port", type=int, default=None, help="port (default LOCAL_MODELS_PORT, 8097)")
    serve.add_argument("--json-logs", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.command == "models":
        return _cmd_models(args)
    if args.command in ("dev", "start"):
        return _cmd_serve(dev=args.command == "dev", models=args.models)
    if args.command == "seed":
        return _cmd_seed()
    return _cmd_chat(args)


if __name__ == "__main__":
    raise SystemExit(main())
