"""Structured logs: one parseable line per event, and secrets from the environment never appear."""

from __future__ import annotations

import io
import json
import logging
import re
import socket
import time
from pathlib import Path

import pytest

from engine import logs, metrics
from engine.config import load_config, secrets_from_env

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "tsTok-9f8e7d6c5b4a"
PASSWORD = "kafka-Pa55word-xyz"
URL_PASSWORD = "urlPass-q1w2e3"
LOGFMT = re.compile(r'^(\w+=("([^"\\]|\\.)*"|\S*))( \w+=("([^"\\]|\\.)*"|\S*))*$')


@pytest.fixture(params=["logfmt", "json"])
def captured(request):
    stream = io.StringIO()
    handler = logs.configure(request.param, "INFO", stream)
    yield request.param, stream
    logging.getLogger().removeHandler(handler)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_secrets_never_appear_in_log_output(captured, tmp_path):
    fmt, stream = captured
    base = load_config(ROOT / "configs" / "example.yaml")
    cfg = base.model_copy(update={
        "engine": base.engine.model_copy(update={"metrics": "timeseries"}),
        "timeseries": base.timeseries.model_copy(
            update={"url": f"http://zot:{URL_PASSWORD}@127.0.0.1:{_closed_port()}"}),
    })
    env = {cfg.timeseries.token_env: TOKEN, cfg.kafka.sasl_password_env: PASSWORD}
    logs.register_secrets(secrets_from_env(cfg, env))
    sink = metrics.sink_for(cfg, tmp_path, environ=env)
    ts_sink = next(s for s in sink.sinks if isinstance(s, metrics.TimeSeriesSink))
    ts_sink.max_retries, ts_sink.close_timeout_s = 0, 1.0
    sink.write([metrics.point("zot_engine", {"scenario": "s", "worker": "w"}, {"lag": 1}, 1)])
    deadline = time.monotonic() + 10
    while ts_sink.connected is not False and time.monotonic() < deadline:
        time.sleep(0.05)
    stats = sink.close()
    assert stats["dropped"] == 1
    # Careless callers: the secret as a field, inside a message, in an exception, in a library's record.
    log = logs.get("zot.test")
    logs.event(log, "connect", token=TOKEN, detail=f"using {TOKEN}", password=PASSWORD)
    logging.getLogger("urllib3.test").warning("Authorization: Token %s", TOKEN)
    try:
        raise RuntimeError(f"login failed for {PASSWORD}")
    except RuntimeError:
        log.exception("kafka login")

    out = stream.getvalue()
    for secret in (TOKEN, PASSWORD, URL_PASSWORD):
        assert secret not in out
    lines = out.splitlines()
    events = []
    for line in lines:
        if fmt == "json":
            rec = json.loads(line)
        else:
            assert LOGFMT.match(line), line
            rec = dict(re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)', line))
            rec = {k: json.loads(v) if v.startswith('"') else v for k, v in rec.items()}
        assert {"ts", "level", "logger", "event"} <= set(rec)
        events.append(rec)
    names = [e["event"] for e in events]
    assert "metrics_server_down" in names
    closed = next(e for e in events if e["event"] == "metrics_sink_closed")
    assert str(closed["dropped"]) == "1" and closed["level"] == "warning"
    assert "***" in out
    connect = next(e for e in events if e["event"] == "connect")
    assert connect["token"] == "***" and connect["detail"] == "using ***"
    assert any("kafka login" in str(e.get("msg")) and "RuntimeError" in str(e.get("error")) for e in events)


def test_redact_masks_url_credentials_and_short_values_are_not_registered():
    logs.register_secrets(["abc"])  # too short to be a credential; masking it would garble words
    assert logs.redact("abc http://u:p4ss@host:8086/x") == "abc http://***@host:8086/x"
