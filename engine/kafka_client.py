"""Kafka connection options and topic creation, from the config and the registry.

kafka-python is used here for admin, producers and tools; the Faust workers get
the same options. Credentials come only from the environment (`Secrets`).
"""

from __future__ import annotations

import time
from typing import Any, Iterable

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from engine import topics as registry
from engine.config import Kafka, Secrets


class KafkaSetupError(RuntimeError):
    """The configured Kafka cannot be used as configured (missing secret, etc.)."""


def client_options(kafka: Kafka, secrets: Secrets) -> dict[str, Any]:
    """kafka-python keyword arguments for the configured cluster and security."""
    opts: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers.split(","),
        "security_protocol": kafka.security_protocol,
    }
    if kafka.security_protocol.startswith("SASL"):
        if kafka.sasl_mechanism is None:
            raise KafkaSetupError("kafka.sasl_mechanism is required with a SASL security_protocol")
        if not secrets.kafka_username or not secrets.kafka_password:
            raise KafkaSetupError(
                f"SASL needs the environment variables {kafka.sasl_username_env} and "
                f"{kafka.sasl_password_env} to be set"
            )
        opts.update(
            sasl_mechanism=kafka.sasl_mechanism,
            sasl_plain_username=secrets.kafka_username,
            sasl_plain_password=secrets.kafka_password,
        )
    return opts


def topic_name(topic: registry.Topic, kafka: Kafka) -> str:
    return registry.with_prefix(topic, kafka.topic_prefix)


def ensure_topics(
    options: dict[str, Any],
    kafka: Kafka,
    topics: Iterable[registry.Topic] = registry.ALL,
    timeout_s: float = 30.0,
) -> dict[str, int]:
    """Create the registry's topics that do not exist yet; return name -> partitions.

    Keyed topics get `kafka.partitions` partitions (the registry's count is the
    default), the dead-letter topic keeps its own. Existing topics are left as
    they are: re-partitioning a live topic would move keys between partitions.
    """
    admin = KafkaAdminClient(client_id="zot-admin", **options)
    try:
        wanted = {}
        for t in topics:
            parts = t.partitions if t.key is None else kafka.partitions
            wanted[topic_name(t, kafka)] = NewTopic(
                name=topic_name(t, kafka),
                num_partitions=parts,
                replication_factor=1 if _single_node(admin) else 3,
                topic_configs=t.topic_configs(),
            )
        existing = set(admin.list_topics())
        missing = [nt for name, nt in wanted.items() if name not in existing]
        if missing:
            try:
                admin.create_topics(missing, timeout_ms=int(timeout_s * 1000))
            except TopicAlreadyExistsError:
                pass  # raced with another worker: fine
        deadline = time.monotonic() + timeout_s
        while True:
            described = {d["name"]: len(d["partitions"]) for d in admin.describe_topics(list(wanted)) if d["error_code"] == 0}
            if all(described.get(n, 0) > 0 for n in wanted) or time.monotonic() > deadline:
                return described
            time.sleep(0.2)
    finally:
        admin.close()


def _single_node(admin: KafkaAdminClient) -> bool:
    return len(admin.describe_cluster()["brokers"]) < 3
