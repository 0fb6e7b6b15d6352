"""Logging: readable lines in dev, one JSON object per line in production.

Python warnings (a library's `warnings.warn`, such as PyJWT's about a short HMAC key)
are routed through logging too (`logging.captureWarnings`), as one line on the
`py.warnings` logger: printed as plain text they broke the JSON stream, and they
bypassed the redaction filter.

A redaction filter replaces any configured secret value that reaches a log record
(message, arguments, exception text, string `extra` fields) with `***`, so a stray
`log.info(settings)` or an exception that echoes a header cannot leak a key. It runs
when the record is created (a log-record factory), not only in our own handler: any
other handler (pytest's capture, a log shipper added later, LiveKit's job-process
forwarding) gets the redacted record too. The secrets are the configured keys and the
password inside DATABASE_URL, if any.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from urllib.parse import unquote, urlsplit

from app.settings import Settings

_STD_ATTRS = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class RedactSecrets(logging.Filter):
    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def add(self, secret: str) -> None:
        if secret and len(secret) >= 6 and secret not in self._secrets:
            self._secrets.append(secret)
            self._secrets.sort(key=len, reverse=True)

    def _clean(self, text: str) -> str:
        for s in self._secrets:
            text = text.replace(s, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        try:
            msg = record.getMessage()
        except Exception:  # a broken format string: leave it to the handler to report
            return True
        cleaned = self._clean(msg)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._clean(record.exc_text)
        if record.stack_info:
            record.stack_info = self._clean(record.stack_info)
        if cleaned != msg or record.args:
            record.msg, record.args = cleaned, None
        # `extra=` fields are set after the record is made, so only the handler's pass
        # sees them (the factory's pass cannot).
        for key, value in list(record.__dict__.items()):
            if key not in _STD_ATTRS and isinstance(value, str):
                setattr(record, key, self._clean(value))
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in record.__dict__.items():
            if k not in _STD_ATTRS and not k.startswith("_"):
                doc[k] = v if isinstance(v, str | int | float | bool | type(None)) else repr(v)
        if record.exc_text or record.exc_info:
            doc["exc"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
        return json.dumps(doc, ensure_ascii=False)


_redactor: RedactSecrets | None = None


def secret_values(settings: Settings) -> list[str]:
    values = [
        s.get_secret_value()
        for s in (
            settings.admin_api_key,
            settings.token_api_key,
            settings.livekit_api_secret,
            settings.livekit_api_key,
            settings.openai_api_key,
        )
        if s is not None
    ]
    password = urlsplit(settings.database_url).password if "@" in settings.database_url else None
    if password:  # as written in the URL (percent-encoded) and as the driver sees it
        values += [password, unquote(password)]
    return values


_base_factory = logging.getLogRecordFactory()


def _install_record_factory(redactor: RedactSecrets) -> None:
    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = _base_factory(*args, **kwargs)
        redactor.filter(record)
        return record

    logging.setLogRecordFactory(factory)


class OneLineWarning(logging.Filter):
    """`warnings.formatwarning` text as one line: `file:line: Category: message`, without
    the quoted source line it appends (a second, unformatted line in text logs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg).rstrip("\n")
        head, sep, last = text.rpartition("\n  ")
        if sep and "\n" not in last:
            text = head
        record.msg = " ".join(line.strip() for line in text.splitlines())
        return True


_one_line_warning = OneLineWarning()


def configure_logging(settings: Settings, *, json_logs: bool) -> RedactSecrets:
    """Install one handler on the root logger and the redacting record factory; returns
    the redaction filter so a key generated later (dev mode) can be added to it."""
    global _redactor
    handler = logging.StreamHandler(sys.stderr)
    if json_logs:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
    _redactor = RedactSecrets(secret_values(settings))
    handler.addFilter(_redactor)  # belt and braces: records made before the factory
    _install_record_factory(_redactor)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").addFilter(_one_line_warning)  # once: a Logger dedups filters
    # Third-party chatter that drowns our own lines at INFO.
    for name in ("httpx", "httpcore", "aiosqlite", "urllib3", "openai._base_client"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    return _redactor
