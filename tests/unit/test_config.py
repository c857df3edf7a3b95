"""Operator config: the shipped configs load, bad ones are reported precisely."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import ConfigError, load_config, reference_markdown, secrets_from_env

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    cfg = load_config(path)
    assert cfg.population.users > 0


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def problems_of(path):
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


BASE = (ROOT / "configs" / "example.yaml").read_text()


def test_wrong_enum_reports_line_field_and_allowed(tmp_path):
    text = BASE.replace("scalarization: weighted_sum", "scalarization: pareto_front")
    line = next(i for i, l in enumerate(text.splitlines(), 1) if "pareto_front" in l)
    (p,) = problems_of(write(tmp_path, text))
    assert p.line == line and p.field == "objective.scalarization"
    assert "'pareto_front'" in p.message and "'epsilon_constraint'" in p.allowed
    assert str(p).startswith(f"{tmp_path / 'c.yaml'}:{line}:")


def test_unknown_field_lists_allowed_fields_and_hides_value(tmp_path):
    text = BASE.replace("  sasl_username_env: ZOT_KAFKA_USERNAME", "  sasl_password: hunter2")
    (p,) = problems_of(write(tmp_path, text))
    assert p.field == "kafka.sasl_password" and p.message == "unknown field"
    assert "sasl_password_env" in p.allowed and "bootstrap_servers" in p.allowed
    assert "hunter2" not in str(p)


def test_several_problems_all_reported(tmp_path):
    text = BASE.replace("carrier_ghz: 3.5", "carrier_ghz: 300").replace("users: 300", "users: -1")
    probs = problems_of(write(tmp_path, text))
    assert {p.field for p in probs} == {"radio.carrier_ghz", "population.users"}
    assert all(p.line is not None for p in probs)


def test_cross_field_rules(tmp_path):
    text = BASE.replace("app_mix: {video: 0.5, web: 0.4, download: 0.1}", "app_mix: {video: 0.5, voip: 0.4}")
    (p,) = problems_of(write(tmp_path, text))
    assert "voip" in p.message and "allowed" in p.message
    text = BASE.replace("web:      {adequate: {median: 4.0}, desired: {median: 1.5}}",
                        "web:      {adequate: {median: 1.0}, desired: {median: 1.5}}")
    (p,) = problems_of(write(tmp_path, text))
    assert "below" in p.message  # lower-is-better metric: desired must be below adequate


def test_prbs_must_fit_bandwidth(tmp_path):
    (p,) = problems_of(write(tmp_path, BASE.replace("prb_per_cell: 51", "prb_per_cell: 60")))
    assert p.field == "radio" and "exceeds" in p.message


def test_yaml_syntax_error_has_line(tmp_path):
    (p,) = problems_of(write(tmp_path, "name: x\nradio: [unclosed\n"))
    assert p.field == "<yaml>" and p.line is not None


def test_missing_file_and_non_mapping(tmp_path):
    (p,) = problems_of(tmp_path / "nope.yaml")
    assert "cannot read" in p.message
    (p,) = problems_of(write(tmp_path, "- just\n- a list\n"))
    assert p.field == "<root>"


def test_secrets_only_from_environment():
    cfg = load_config(ROOT / "configs" / "example.yaml")
    sec = secrets_from_env(cfg, {"ZOT_KAFKA_USERNAME": "op", "ZOT_KAFKA_PASSWORD": "s3cret-value"})
    assert sec.kafka_password == "s3cret-value"
    assert "s3cret-value" not in repr(sec) and "s3cret-value" not in str(sec)
    assert secrets_from_env(cfg, {}).ts_token is None


def test_reference_is_current():
    assert (ROOT / "docs" / "config.md").read_text() == reference_markdown(), "run `zot config-reference`"
