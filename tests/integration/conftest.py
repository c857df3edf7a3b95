"""Real servers for the integration tests.

`kafka_bootstrap` and `victoria_url` start Kafka and VictoriaMetrics on 127.0.0.1
only when nothing answers on their ports already (a developer's `zot infra up`,
or another test session, is reused), and at the end of the session stop only
what they started. Ports: 9092 (controller 9093) and 8428 by default, or
ZOT_TEST_KAFKA_PORT / ZOT_TEST_VM_PORT to keep a session apart from others.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from engine.infra import KafkaBroker, VictoriaMetrics, ensure_debian_package

ROOT = Path(__file__).resolve().parents[2]  # the project: parent of tests/
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # This hook sees the whole session's items: mark only the ones under tests/integration.
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)


def _port(var: str, default: int) -> int:
    return int(os.environ.get(var, default))


@pytest.fixture(scope="session")
def project_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap address ("127.0.0.1:PORT") of a running single-node Kafka 4.x broker."""
    port = _port("ZOT_TEST_KAFKA_PORT", 9092)
    broker = KafkaBroker(ROOT, port=port, controller_port=port + 1)
    started = not broker.answers()
    if started:
        broker.start()
    try:
        yield broker.bootstrap
    finally:
        if started:
            broker.stop()


@pytest.fixture(scope="session")
def victoria_url() -> Iterator[str]:
    """Base URL ("http://127.0.0.1:PORT") of a running VictoriaMetrics."""
    port = _port("ZOT_TEST_VM_PORT", 8428)
    vm = VictoriaMetrics(ROOT, port=port)
    started = not vm.answers()
    if started:
        vm.start()
    try:
        yield vm.url
    finally:
        if started:
            vm.stop()


@pytest.fixture(scope="session")
def kcat_bin() -> str:
    """Path of Debian's `kcat` (a Kafka client we did not write), installed if missing."""
    return ensure_debian_package("kcat", "kcat")
