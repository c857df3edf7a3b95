"""docker-compose.yml cannot run here (no Docker engine): check its structure instead."""

from __future__ import annotations

from pathlib import Path

import yaml

from engine.config import load_config

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def test_the_production_shaped_stack_is_there():
    assert {"kafka", "victoria", "grafana", "engine", "simulator"} <= set(SERVICES)
    assert SERVICES["kafka"]["image"].startswith("apache/kafka:4.")
    assert SERVICES["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"


def test_ports_bind_loopback_and_match_defaults():
    published = {s: svc.get("ports", []) for s, svc in SERVICES.items()}
    for ports in published.values():
        for p in ports:
            assert p.startswith("127.0.0.1:"), p
    assert "127.0.0.1:9092:9092" in published["kafka"]
    assert "127.0.0.1:8428:8428" in published["victoria"]


def test_mounts_exist_in_the_project():
    for name, svc in SERVICES.items():
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("./"):
                assert (ROOT / src).exists(), f"{name} mounts missing {src}"


def test_engine_and_simulator_use_a_valid_config_pointing_at_the_services():
    for name in ("engine", "simulator"):
        cmd = SERVICES[name]["command"]
        cfg_path = next(c for c in cmd if c.startswith("/etc/zot/"))
        mount = next(v for v in SERVICES[name]["volumes"] if v.endswith(":/etc/zot:ro"))
        local = ROOT / mount.split(":")[0] / Path(cfg_path).name
        cfg = load_config(local)
        host, port = cfg.kafka.bootstrap_servers.split(":")
        assert host in SERVICES and port == "9092"
        assert cfg.timeseries.url.startswith("http://victoria:8428")
    assert (ROOT / SERVICES["engine"]["build"] / "Dockerfile").exists()


def test_grafana_datasource_points_at_victoria():
    ds = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/victoria.yaml").read_text())
    (source,) = ds["datasources"]
    assert source["url"] == "http://victoria:8428" and source["type"] == "prometheus"
