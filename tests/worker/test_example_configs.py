"""Every configuration shipped in ``deploy/`` loads, and each of its keys reaches the setting it names.

A key that reaches nothing is an error at start naming the key and its file (or the environment): a misplaced TOML
key (written after ``[[destinations]]``) or a misspelt variable must not be ignored silently.
"""
from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from settings.config import Settings, UnknownSettingError

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No MCCAD_* variable of the machine, no ./mccad.toml: only what a test sets."""
    import os

    for name in [n for n in os.environ if n.startswith("MCCAD_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def _as_given(raw: str) -> Any:
    """An environment value as a keyword argument would carry it (lists and objects are JSON)."""
    return json.loads(raw) if raw.strip().startswith(("[", "{")) else raw


def _settings_from_kwargs(monkeypatch, **values: Any) -> Settings:
    import os

    for name in [n for n in os.environ if n.startswith("MCCAD_")]:
        monkeypatch.delenv(name)
    return Settings(**values)


def _env_file_pairs(path: Path) -> list[tuple[str, str]]:
    pairs = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            pairs.append((key.strip(), value.strip()))
    return pairs


def test_env_example_every_variable_reaches_its_setting(clean_env):
    pairs = _env_file_pairs(DEPLOY / "mccad.example.env")
    assert pairs
    for key, value in pairs:
        clean_env.setenv(key, value)
    loaded = Settings()  # the comma-separated allow-list made this raise (pydantic-settings decoded it as JSON)
    for key, value in pairs:
        field = key[len("MCCAD_"):].lower()
        expected = getattr(_settings_from_kwargs(clean_env, **{field: _as_given(value)}), field)
        assert getattr(loaded, field) == expected, key
    assert loaded.allowed_calling_aes == ["ORTHANC", "PACS1"]


def test_toml_example_every_key_reaches_its_setting(clean_env):
    path = DEPLOY / "mccad.example.toml"
    data = tomllib.loads(path.read_text())
    clean_env.setenv("MCCAD_CONFIG", str(path))
    loaded = Settings()
    clean_env.delenv("MCCAD_CONFIG")
    # the keys the runbook tells operators to change are top-level settings, not part of a destination table
    assert {"device", "detector_runtime", "max_pixels", "http_port", "log_level"} <= set(data)
    for key, value in data.items():
        expected = getattr(_settings_from_kwargs(clean_env, **{key: value}), key)
        assert getattr(loaded, key) == expected, key
    assert [d.model_dump() for d in loaded.destinations] == data["destinations"]


def test_compose_environment_variables_are_settings(clean_env):
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    for service in ("scp", "worker"):
        for key, value in (compose["services"][service].get("environment") or {}).items():
            clean_env.setenv(key, str(value))
        loaded = Settings()
        for key, value in (compose["services"][service].get("environment") or {}).items():
            field = key[len("MCCAD_"):].lower()
            assert getattr(loaded, field) == getattr(_settings_from_kwargs(clean_env, **{field: str(value)}), field)


def test_unknown_toml_key_is_an_error_naming_key_and_file(clean_env, tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text('devce = "cpu"\n')
    clean_env.setenv("MCCAD_CONFIG", str(path))
    with pytest.raises(UnknownSettingError, match=r"'devce'.*typo\.toml"):
        Settings()


def test_key_after_a_destinations_table_is_an_error(clean_env, tmp_path):
    path = tmp_path / "misplaced.toml"
    path.write_text('[[destinations]]\nae_title = "PACS"\nhost = "pacs"\nport = 104\n\ndevice = "cpu"\n')
    clean_env.setenv("MCCAD_CONFIG", str(path))
    with pytest.raises(UnknownSettingError, match=r"'device'.*destinations.*misplaced\.toml.*move it above"):
        Settings()


def test_unknown_environment_variable_is_an_error(clean_env):
    clean_env.setenv("MCCAD_ALLOWED_CALING_AES", "PACS1")
    with pytest.raises(UnknownSettingError, match="MCCAD_ALLOWED_CALING_AES"):
        Settings()


def test_allow_list_as_json_or_comma_separated(clean_env):
    clean_env.setenv("MCCAD_ALLOWED_CALLING_AES", '["A", "B"]')
    assert Settings().allowed_calling_aes == ["A", "B"]
    clean_env.setenv("MCCAD_ALLOWED_CALLING_AES", "A, B")
    assert Settings().allowed_calling_aes == ["A", "B"]


def test_cli_starts_with_the_env_example(clean_env):
    """``mccad status`` with the example environment exits 0 (it exited 2: a configuration error)."""
    from mccad.cli import main

    for key, value in _env_file_pairs(DEPLOY / "mccad.example.env"):
        clean_env.setenv(key, value)
    clean_env.setenv("MCCAD_DATA_DIR", str(Path.cwd() / "data"))
    clean_env.setenv("MCCAD_BROKER_URL", "redis://127.0.0.1:1/0")  # unreachable: status still answers
    assert main(["status", "--json"]) == 0
