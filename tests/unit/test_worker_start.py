"""A worker whose start fails (broker away) keeps no half-started producer: the
step's retry loop would take it for a started one and the next transaction would
wait forever (seen once in the broker restart test)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from engine.config import load_config, secrets_from_env
from engine.kafka_client import client_options
from engine.worker import TransactionalEngine

ROOT = Path(__file__).resolve().parents[2]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def test_a_failed_start_leaves_no_producer_behind():
    cfg = load_config(ROOT / "configs" / "example.yaml")
    cfg = cfg.model_copy(update={"kafka": cfg.kafka.model_copy(
        update={"bootstrap_servers": f"127.0.0.1:{_closed_port()}"})})
    engine = TransactionalEngine(cfg, client_options(cfg.kafka, secrets_from_env(cfg)), transactional_id="t-start")
    with pytest.raises(Exception):
        asyncio.run(engine.start())
    assert engine._producer is None and engine._reader is None
