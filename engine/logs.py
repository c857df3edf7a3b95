"""Structured logs: one line per event of interest, logfmt (default) or JSON, never a secret.

    log = logs.get("zot.metrics")
    logs.event(log, "metrics_server_down", url=url, error="ConnectionError", level="warning")
    # ts=2026-11-26T22:01:02.123Z level=warning logger=zot.metrics event=metrics_server_down url=... error=...

`configure()` installs the formatter on the root logger, so library records
(influxdb-client, kafka-python, urllib3) come out as one line too. Secrets are
kept out three ways, all applied to the finished line: values registered with
`register_secrets` (the credentials read from the environment variables a
config names) are replaced by `***`; fields whose name says secret (token,
password, secret, credential, sasl) are masked; `user:pass@` in URLs is masked.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from typing import Any, Iterable, TextIO

MASK = "***"
_SECRET_KEY = re.compile(r"token|password|passwd|secret|credential|sasl|authorization|api_?key", re.I)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)[^/@\s:]+(?::[^/@\s]*)?@")
_BARE = re.compile(r"^[A-Za-z0-9_.:/@+\-]+$")

_secrets: set[str] = set()
_lock = threading.Lock()
_HANDLER_FLAG = "_zot_structured"


def register_secrets(values: Iterable[str | None] | Any) -> None:
    """Never print these values. Accepts strings or an `engine.config.Secrets`."""
    if hasattr(values, "ts_token"):  # engine.config.Secrets
        values = (values.kafka_username, values.kafka_password, values.ts_token)
    with _lock:
        for v in values:
            # Very short values would mask ordinary words; credentials are not that short.
            if v and len(v) >= 4:
                _secrets.add(v)


def redact(text: str) -> str:
    """The text with registered secrets and URL credentials masked."""
    with _lock:
        found = sorted(_secrets, key=len, reverse=True)
    for s in found:
        if s in text:
            text = text.replace(s, MASK)
    return _URL_USERINFO.sub(lambda m: m.group("scheme") + MASK + "@", text)


def get(name: str) -> logging.Logger:
    return logging.getLogger(name)


def event(logger: logging.Logger, name: str, level: str = "info", **fields: Any) -> None:
    """Log one event: a name and flat fields (None values are left out)."""
    lvl = logging.getLevelName(level.upper())
    if not logger.isEnabledFor(lvl):
        return
    clean = {k: v for k, v in fields.items() if v is not None}
    logger.log(lvl, name, extra={"zot_event": name, "zot_fields": clean})


def _fields_of(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
        "level": record.levelname.lower(),
        "logger": record.name,
    }
    name = getattr(record, "zot_event", None)
    if name is not None:
        out["event"] = name
        for k, v in getattr(record, "zot_fields", {}).items():
            out[k] = MASK if _SECRET_KEY.search(k) else v
    else:
        out["event"] = "log"
        out["msg"] = record.getMessage()
    if record.exc_info and record.exc_info[0] is not None:
        # The exception type and message only: tracebacks span lines and may carry locals.
        out["error"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
    return out


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = []
        for k, v in _fields_of(record).items():
            s = v if isinstance(v, str) else json.dumps(v, default=str)
            s = s.replace("\n", "\\n")
            parts.append(f"{k}={s}" if _BARE.match(s) else f"{k}={json.dumps(s)}")
        return redact(" ".join(parts))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(json.dumps(_fields_of(record), default=str, separators=(",", ":")))


def configure(fmt: str = "logfmt", level: str = "INFO", stream: TextIO | None = None) -> logging.Handler:
    """Send all logging to `stream` (stderr) as one structured line per record; idempotent."""
    if fmt not in ("logfmt", "json"):
        raise ValueError(f"log format {fmt!r}: allowed 'logfmt' or 'json'")
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, _HANDLER_FLAG, False):
            root.removeHandler(h)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    setattr(handler, _HANDLER_FLAG, True)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
