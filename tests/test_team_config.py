"""The team stack's rules that need no server: versions past the published security fixes, and secrets that are
neither weak, nor readable by others, nor placed where the servers would show them (docs/team.md)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from medflow import team

REPO = Path(__file__).resolve().parents[1]

# Published advisories against the servers the team stack runs: (package, id, what, first fixed release). The
# floor in pyproject.toml and the pin in constraints.txt must both be at or past each fixed release.
ADVISORIES = [
    ("mlflow", "GHSA-gq3w-7jj3-x7gr / CVE-2026-2635", "basic_auth.ini shipped admin/password1234", "3.16.1"),
    ("mlflow", "GHSA-7qhf-v65m-g5f3 / CVE-2026-0545", "job API (/ajax-api/3.0/jobs/*) without auth", "3.11.0"),
    ("mlflow", "CVE-2026-2652", "basic-auth guarded only /gateway/ of the FastAPI routes (jobs, /v1/traces)", "3.10.0"),
    ("mlflow", "CVE-2026-2651", "multipart upload (mlflow-artifacts/mpu/*) without permission checks", "3.11.0"),
    ("mlflow", "CVE-2025-11201", "model version source path traversal to code execution", "3.0.0"),
    ("prefect", "CVE-2026-3514", "auth string not asked of paths ending in health/ready", "3.6.22"),
    ("prefect", "GHSA-7pm4-56h2-5rxr / CVE-2026-5366", "git flag injection via commit_sha, to RCE", "3.6.25"),
]


def floors() -> dict[str, Version]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    found = {}
    for dep in map(Requirement, deps):
        lows = [Version(s.version) for s in dep.specifier if s.operator in (">=", "==", "~=")]
        if lows:
            found[dep.name.lower()] = max(lows)
    return found


def pins() -> dict[str, Version]:
    found = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if m := re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line.strip()):
            found[m[1].lower()] = Version(m[2])
    return found


@pytest.mark.parametrize(("package", "advisory", "what", "fixed"), ADVISORIES, ids=[a[1] for a in ADVISORIES])
def test_versions_are_past_each_published_fix(package, advisory, what, fixed):
    floor, pin = floors().get(package), pins().get(package)
    assert floor is not None and floor >= Version(fixed), f"pyproject.toml lets {package} {floor} in: {advisory}"
    assert pin is not None and pin >= Version(fixed), f"constraints.txt pins {package} {pin}: {advisory}"


@pytest.mark.parametrize("weak", ["password1234", "short-one", "admin", "x" * 15])
def test_a_weak_or_published_password_is_refused(weak, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", weak)
    with pytest.raises(team.TeamError, match="published default or shorter than 16"):
        team.secret(tmp_path, "mlflow-admin-password", "MLFLOW_AUTH_ADMIN_PASSWORD", what="MLflow admin password")


def test_a_secret_file_others_can_read_is_refused_and_made_ones_are_private(tmp_path):
    made = team.secret(tmp_path, "prefect-auth-string", what="Prefect auth string")
    path = tmp_path / "secrets" / "prefect-auth-string"
    assert path.stat().st_mode & 0o777 == 0o600 and (tmp_path / "secrets").stat().st_mode & 0o077 == 0
    user, _, password = made.partition(":")
    assert user == "medflow" and len(password) >= team.MIN_SECRET
    assert team.secret(tmp_path, "prefect-auth-string", what="Prefect auth string") == made  # kept, not remade
    path.chmod(0o640)
    with pytest.raises(team.TeamError, match="readable by others .*chmod 600"):
        team.secret(tmp_path, "prefect-auth-string", what="Prefect auth string")


def test_mlflow_reads_the_written_auth_config_as_meant(tmp_path, monkeypatch):
    from mlflow.server.auth.config import read_auth_config

    password = "pa%ss" + "w" * 20  # a % would break configparser's interpolation unescaped
    settings = team.Settings.from_env(
        {"MEDFLOW_TEAM_STATE": str(tmp_path), "MEDFLOW_TEAM_TLS_CERT": __file__, "MEDFLOW_TEAM_TLS_KEY": __file__}
    )
    ini = team.auth_ini(settings, password)
    assert ini.stat().st_mode & 0o777 == 0o600
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_USERNAME", raising=False)
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(ini))
    config = read_auth_config()
    assert (config.admin_username, config.admin_password) == (team.ADMIN, password)
    assert config.default_permission == "NO_PERMISSIONS"
    assert config.database_uri == settings.auth_db


def test_a_database_url_with_a_password_is_refused():
    env = {"MEDFLOW_TEAM_TLS_CERT": __file__, "MEDFLOW_TEAM_TLS_KEY": __file__}
    env["MEDFLOW_TEAM_PREFECT_DB"] = "postgresql+asyncpg://prefect:hunter2@db:5432/prefect"
    with pytest.raises(team.TeamError, match="MEDFLOW_TEAM_PREFECT_DB holds a password.*pgpass"):
        team.Settings.from_env(env)


def test_up_refuses_the_published_default_in_one_line_and_starts_nothing(tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "MEDFLOW_TEAM_STATE": str(tmp_path / ".team"),
        "MEDFLOW_TEAM_TLS_CERT": __file__,
        "MEDFLOW_TEAM_TLS_KEY": __file__,
        "MLFLOW_AUTH_ADMIN_PASSWORD": "password1234",
    }
    done = subprocess.run(
        [sys.executable, "-m", "medflow.team", "up", "--model", "m"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().count("\n") == 0 and "MLflow admin password is a published default" in done.stderr
    assert not (tmp_path / ".team" / "logs").exists()
