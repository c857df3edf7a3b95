"""The project's own Kafka and VictoriaMetrics: start, answer, fail loudly, stop.

The lifecycle tests use their own servers on spare ports (not the session's),
so stopping them proves something without disturbing the other tests. The client
tests run against the session broker: they are the check that Kafka 4.x speaks
with the pinned kafka-python, aiokafka and Debian's kcat.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Iterator

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic

from engine.infra import (
    InfraError,
    KafkaBroker,
    VictoriaMetrics,
    pid_alive,
    infra_down,
    infra_status,
    infra_up,
    port_is_free,
)

ROOT = Path(__file__).resolve().parents[2]


def spare_ports(n: int) -> list[int]:
    """`n` distinct ports free right now (the kernel picks them, so parallel sessions don't clash)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.fixture
def held_port() -> Iterator[tuple[int, socket.socket]]:
    """A port that a listening socket of this test occupies."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        yield s.getsockname()[1], s
    finally:
        s.close()


def _cleanup(server: KafkaBroker | VictoriaMetrics) -> None:
    server.stop(timeout=15)
    server.purge()


# --------------------------------------------------------------------------- Kafka lifecycle


def test_broker_starts_answers_keeps_data_across_restart_and_stops() -> None:
    port, controller_port = spare_ports(2)
    broker = KafkaBroker(ROOT, port=port, controller_port=controller_port)
    topic = "zot-infra-restart"
    try:
        broker.start(fresh=True)
        pid = broker.pid()
        assert pid is not None and pid_alive(pid)
        assert broker.bootstrap == f"127.0.0.1:{port}"
        assert broker.answers()
        assert not port_is_free(port) and not port_is_free(controller_port)
        assert "Kafka Server started" in broker.log_file.read_text()

        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        brokers = admin.describe_cluster()["brokers"]
        admin.close()
        assert [(b["host"], b["port"]) for b in brokers] == [("127.0.0.1", port)]
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
        producer.send(topic, key=b"k", value=b"survives a restart").get(timeout=30)
        producer.close()

        assert broker.stop() is True
        assert not pid_alive(pid)
        assert not broker.is_running() and not broker.pid_file.exists()
        assert port_is_free(port) and port_is_free(controller_port)
        assert not broker.answers()
        assert broker.stop() is False  # nothing left to stop

        # Storage is formatted once: a restart serves what was accepted before it.
        broker.start()
        consumer = KafkaConsumer(topic, bootstrap_servers=broker.bootstrap,
                                 auto_offset_reset="earliest", consumer_timeout_ms=20000)
        values = [next(consumer).value]
        consumer.close()
        assert values == [b"survives a restart"]
    finally:
        _cleanup(broker)


def test_broker_that_cannot_bind_raises_with_its_log(held_port: tuple[int, socket.socket]) -> None:
    port, _sock = held_port
    (controller_port,) = spare_ports(1)
    broker = KafkaBroker(ROOT, port=port, controller_port=controller_port)
    try:
        with pytest.raises(InfraError) as err:
            broker.start(timeout=60, fresh=True)
        msg = str(err.value)
        assert f"127.0.0.1:{port}" in msg
        assert "Address already in use" in msg  # the cause, from the broker's own log
        assert f"last lines of {broker.log_file}" in msg
        assert not broker.is_running() and not broker.pid_file.exists()
        assert _wait_free(controller_port)  # the failed JVM is gone and released its other port
    finally:
        _cleanup(broker)


def _wait_free(port: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not port_is_free(port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_fetch_is_skipped_once_libs_match_the_pom(kafka_bootstrap: str) -> None:
    broker = KafkaBroker(ROOT)
    stamp = (broker.libs / ".pom-sha256").read_text().strip()
    assert stamp == hashlib.sha256(broker.pom.read_bytes()).hexdigest()
    assert broker.fetched()
    t0 = time.monotonic()
    assert broker.fetch() is False  # Maven not run at all
    assert time.monotonic() - t0 < 1.0
    jars = {p.name for p in broker.libs.glob("*.jar")}
    assert any(j.startswith("kafka_2.13-4.") for j in jars)
    # The SLF4J binding must match the slf4j-api Kafka pins, or the broker logs nothing.
    assert any(j.startswith("slf4j-api-1.7") for j in jars) and any(j.startswith("log4j-slf4j-impl-") for j in jars)


# --------------------------------------------------------------------------- Kafka clients


def _new_topic(bootstrap: str, partitions: int = 3) -> str:
    topic = f"zot-infra-{uuid.uuid4().hex[:10]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    admin.close()
    return topic


def test_kafka_python_idempotent_transactional_and_group_consume(kafka_bootstrap: str) -> None:
    topic = _new_topic(kafka_bootstrap)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True)
    sent = [producer.send(topic, key=f"user-{i % 7}".encode(), value=f"{i}".encode()) for i in range(300)]
    producer.flush()
    partition_of: dict[bytes, set[int]] = {}
    for i, fut in enumerate(sent):
        partition_of.setdefault(f"user-{i % 7}".encode(), set()).add(fut.get(timeout=30).partition)
    producer.close()
    assert all(len(p) == 1 for p in partition_of.values())  # a key always lands on one partition

    tx = KafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=f"zot-infra-{uuid.uuid4().hex[:6]}")
    tx.init_transactions()
    tx.begin_transaction()
    for i in range(10):
        tx.send(topic, key=b"tx", value=f"committed-{i}".encode())
    tx.commit_transaction()
    tx.begin_transaction()
    for i in range(5):
        tx.send(topic, key=b"tx", value=f"aborted-{i}".encode())
    tx.flush()
    tx.abort_transaction()
    tx.close()

    group = f"zot-infra-{uuid.uuid4().hex[:6]}"
    consumer = KafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, group_id=group,
                             auto_offset_reset="earliest", isolation_level="read_committed",
                             enable_auto_commit=False, consumer_timeout_ms=20000)
    values: list[str] = []
    for m in consumer:
        values.append(m.value.decode())
        if len(values) == 310:
            break
    # The aborted records are never delivered: nothing more arrives after the 310 committed ones.
    values += [m.value.decode() for msgs in consumer.poll(timeout_ms=1500).values() for m in msgs]
    consumer.commit()
    end = consumer.end_offsets(list(consumer.assignment()))
    consumer.close()
    assert sorted(v for v in values if v.isdigit()) == sorted(str(i) for i in range(300))
    assert sorted(v for v in values if not v.isdigit()) == sorted(f"committed-{i}" for i in range(10))

    # The group coordinator stored the commit: the group's offsets are at the end of each partition.
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    committed = admin.list_group_offsets(group)[group]  # kafka-python 3.x name (2.x: list_consumer_group_offsets)
    admin.close()
    assert {tp: meta.offset for tp, meta in committed.items()} == end


def test_aiokafka_idempotent_transactional_and_group_consume(kafka_bootstrap: str) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = _new_topic(kafka_bootstrap)

    async def run() -> list[str]:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True)
        await producer.start()
        try:
            for i in range(200):
                await producer.send(topic, key=f"cell-{i % 5}".encode(), value=f"{i}".encode())
            await producer.flush()
        finally:
            await producer.stop()
        tx = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=f"zot-infra-{uuid.uuid4().hex[:6]}")
        await tx.start()
        try:
            async with tx.transaction():
                for i in range(10):
                    await tx.send(topic, value=f"committed-{i}".encode())
        finally:
            await tx.stop()
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, group_id=f"g-{uuid.uuid4().hex[:6]}",
                                    auto_offset_reset="earliest", isolation_level="read_committed",
                                    enable_auto_commit=False)
        await consumer.start()
        got: list[str] = []
        try:
            deadline = time.monotonic() + 30
            while len(got) < 210 and time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=1000)
                got += [m.value.decode() for msgs in batch.values() for m in msgs]
            await consumer.commit()
        finally:
            await consumer.stop()
        return got

    got = asyncio.run(run())
    assert sorted(v for v in got if v.isdigit()) == sorted(str(i) for i in range(200))
    assert sorted(v for v in got if not v.isdigit()) == sorted(f"committed-{i}" for i in range(10))


def test_kcat_sees_the_broker(kcat_bin: str, kafka_bootstrap: str) -> None:
    out = subprocess.run([kcat_bin, "-b", kafka_bootstrap, "-L", "-m", "10"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert f"broker 1 at {kafka_bootstrap}" in out.stdout


# --------------------------------------------------------------------------- VictoriaMetrics


def test_victoria_metrics_imports_answers_queries_and_stops() -> None:
    (port,) = spare_ports(1)
    vm = VictoriaMetrics(ROOT, port=port)
    run = uuid.uuid4().hex[:8]
    try:
        vm.start()
        pid = vm.pid()
        assert pid is not None and vm.answers() and vm.url == f"http://127.0.0.1:{port}"
        ts_ms = int(time.time() * 1000) - 5000
        lines = f'zot_infra_probe{{run="{run}"}} 42.5 {ts_ms}\nzot_infra_probe{{run="{run}",n="2"}} 7 {ts_ms}\n'
        req = urllib.request.Request(f"{vm.url}/api/v1/import/prometheus", data=lines.encode(), method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 204
        # InfluxDB v2 line protocol, as influxdb-client writes it.
        req = urllib.request.Request(f"{vm.url}/api/v2/write?bucket=zot&precision=ms",
                                     data=f"zot_infra,run={run} lp=3.25 {ts_ms}".encode(), method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 204
        vm.flush()

        q = urllib.parse.urlencode({"query": f'sum(zot_infra_probe{{run="{run}"}})', "time": ts_ms / 1000 + 1})
        with urllib.request.urlopen(f"{vm.url}/api/v1/query?{q}", timeout=10) as resp:
            result = json.load(resp)["data"]["result"]
        assert [float(r["value"][1]) for r in result] == [49.5]

        q = urllib.parse.urlencode({"match[]": f'{{run="{run}"}}'})
        with urllib.request.urlopen(f"{vm.url}/api/v1/export?{q}", timeout=10) as resp:
            series = [json.loads(line) for line in resp.read().decode().splitlines()]
        exported = {(s["metric"]["__name__"], s["metric"].get("n")): (s["values"], s["timestamps"]) for s in series}
        assert exported == {
            ("zot_infra_probe", None): ([42.5], [ts_ms]),
            ("zot_infra_probe", "2"): ([7], [ts_ms]),
            ("zot_infra_lp", None): ([3.25], [ts_ms]),
        }

        assert vm.stop() is True
        assert not pid_alive(pid) and not vm.pid_file.exists()
        assert port_is_free(port) and not vm.answers()
    finally:
        _cleanup(vm)


def test_victoria_metrics_that_cannot_bind_raises_with_its_log(held_port: tuple[int, socket.socket]) -> None:
    port, _sock = held_port
    vm = VictoriaMetrics(ROOT, port=port)
    try:
        with pytest.raises(InfraError) as err:
            vm.start(timeout=20)
        msg = str(err.value)
        assert "address already in use" in msg and f"last lines of {vm.log_file}" in msg
        assert not vm.is_running() and not vm.pid_file.exists()
    finally:
        _cleanup(vm)


def test_infra_up_status_down_in_a_fresh_project_folder(tmp_path: Path) -> None:
    # A throwaway root: infra_down stops every server whose pid file is under it,
    # and in the real project that would include the session's broker.
    (port,) = spare_ports(1)
    with pytest.raises(InfraError, match="unknown service"):
        infra_up(tmp_path, services=("redis",))
    try:
        assert infra_up(tmp_path, services=("victoria",), vm_port=port) == {"victoria": f"http://127.0.0.1:{port}"}
        status = infra_status(tmp_path, vm_port=port)
        mine = [s for s in status["victoria"] if s["port"] == port]
        assert len(mine) == 1 and mine[0]["running"] and mine[0]["answers"]
        assert (tmp_path / ".zot" / "vm" / f"data-{port}").is_dir()
        # Up again is a no-op on a server that answers.
        pid = mine[0]["pid"]
        infra_up(tmp_path, services=("victoria",), vm_port=port)
        assert VictoriaMetrics(tmp_path, port).pid() == pid
        assert infra_down(tmp_path) == [f"victoria@127.0.0.1:{port}"]
        assert port_is_free(port) and infra_down(tmp_path) == []
        assert not [s for s in infra_status(tmp_path, vm_port=port)["victoria"] if s["running"]]
    finally:
        infra_down(tmp_path)
