"""The deployment files are consistent: the compose file declares what it uses, Redis persists, units verify."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_compose_declares_every_service_and_volume_it_uses_and_redis_persists():
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services, volumes = compose["services"], set(compose.get("volumes") or {})
    assert {"orthanc", "redis", "scp", "worker"} <= set(services)
    for name, service in services.items():
        for dep in service.get("depends_on") or {}:
            assert dep in services, f"{name} depends on undeclared service {dep}"
        for mount in service.get("volumes") or []:
            source = mount.split(":", 1)[0] if isinstance(mount, str) else mount["source"]
            if not source.startswith((".", "/", "~")):
                assert source in volumes, f"{name} mounts undeclared volume {source}"
        build = service.get("build")
        if build:
            assert (DEPLOY / build["context"] / build["dockerfile"]).is_file(), f"{name} builds a missing Dockerfile"
        for env_file in service.get("env_file") or []:
            assert (DEPLOY / env_file).is_file(), f"{name} reads missing env file {env_file}"
    redis_cmd = " ".join(services["redis"]["command"]) if isinstance(services["redis"]["command"], list) \
        else services["redis"]["command"]
    assert "--appendonly yes" in redis_cmd
    assert any(str(m).startswith("redis-data:/data") for m in services["redis"]["volumes"])
    worker_env = services["worker"].get("environment") or {}
    assert str(worker_env.get("MCCAD_BROKER_URL", "")).startswith("redis://")
    assert services["worker"]["deploy"]["replicas"] >= 1


def test_example_configuration_loads_into_settings(monkeypatch):
    from settings.config import Settings

    monkeypatch.setenv("MCCAD_CONFIG", str(DEPLOY / "mccad.example.toml"))
    settings = Settings()
    assert settings.broker_url.startswith("redis://") and settings.destinations
    assert settings.visibility_timeout_s > 3600
    for line in (DEPLOY / "mccad.example.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key = line.split("=", 1)[0]
            assert key.startswith("MCCAD_") and key[6:].lower() in Settings.model_fields, key


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_units_verify(tmp_path):
    """Verified as installed: ExecStart points at this checkout's ``mccad`` instead of /opt/mccad's."""
    mccad = Path(shutil.which("mccad") or Path(sys.executable).with_name("mccad"))
    assert mccad.is_file()
    paths = []
    for src, name in [("mccad-serve.service", "mccad-serve.service"),
                      ("mccad-worker@.service", "mccad-worker@0.service")]:
        text = (DEPLOY / "systemd" / src).read_text().replace("/opt/mccad/.venv/bin/mccad", str(mccad))
        paths.append(tmp_path / name)  # a template unit verifies through one of its instances
        paths[-1].write_text(text)
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", *map(str, paths)],
                          capture_output=True, text=True, timeout=60)
    ours = [line for line in (proc.stdout + proc.stderr).splitlines() if "mccad" in line]
    assert proc.returncode == 0 and not ours, proc.stdout + proc.stderr
