"""The team stack: MLflow (its basic-auth app) and Prefect servers on PostgreSQL, reachable only through Caddy's TLS.

`python -m medflow.team up --model NAME --maintainers alice` starts the three (the servers on loopback ports, Caddy
on the HTTPS ports), creates the team's MLflow users, grants them the experiment and the registered model NAME, and
waits; Ctrl-C or SIGTERM stops them all. Settings are MEDFLOW_TEAM_* variables (docs/team.md). Secrets come from
the environment or from files only their owner may read, under MEDFLOW_TEAM_STATE/secrets, made on first start;
none reaches a command line: the servers read theirs from their environment or a 0600 file.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from medflow.servers import WebServer, check_port
from medflow.tracking.audit import PREFIX as AUDIT_PREFIX

CADDYFILE = Path(__file__).resolve().parents[2] / "deploy" / "team" / "Caddyfile"
ADMIN = "medflow-admin"
WORKER = "medflow-worker"  # the service user of Prefect workers: registers versions, the gate moves aliases
WRITERS = "medflow-writers"
WORKSPACE = "default"  # MLflow's, where everything lives until a team adds workspaces
MIN_SECRET = 16
# Credentials published in MLflow's and Prefect's docs and older releases (MLflow's basic_auth.ini shipped
# admin/password1234, GHSA-gq3w-7jj3-x7gr): refused whatever their length.
KNOWN_DEFAULTS = {"password1234", "password", "admin", "changeme", "mlflow", "prefect"}
# A version may point only at what the server itself stores: a logged model or a run's artifacts, by id. No
# file://, s3:// or other run's absolute location, no `..` segment.
SOURCE_REGEX = r"^(models:/m-[0-9a-f]{32}|runs:/[0-9a-f]{32}(/[\w-][\w.-]*)+)$"
# The experiment medflow logs into is named after the registered model (tracking.store.experiment_id).
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


class TeamError(RuntimeError):
    """A one-line reason the stack cannot start, naming what to fix."""


@dataclass(frozen=True)
class Settings:
    state: Path
    host: str
    mlflow_port: int
    prefect_port: int
    mlflow_backend_port: int
    prefect_backend_port: int
    tls_cert: Path
    tls_key: Path
    mlflow_db: str
    auth_db: str
    prefect_db: str
    artifacts: str

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def get(name: str, default: str | None = None) -> str:
            value = env.get(f"MEDFLOW_TEAM_{name}", default)
            if not value:
                raise TeamError(f"team stack: MEDFLOW_TEAM_{name} is not set (docs/team.md lists the settings)")
            return value

        pg = "postgresql+psycopg2://postgres@127.0.0.1:5432"
        made = cls(
            state=Path(get("STATE", ".team")).resolve(),
            host=get("HOST", "127.0.0.1"),
            mlflow_port=int(get("MLFLOW_PORT", "8443")),
            prefect_port=int(get("PREFECT_PORT", "8444")),
            mlflow_backend_port=int(get("MLFLOW_BACKEND_PORT", "5000")),
            prefect_backend_port=int(get("PREFECT_BACKEND_PORT", "4200")),
            tls_cert=Path(get("TLS_CERT")).resolve(),
            tls_key=Path(get("TLS_KEY")).resolve(),
            mlflow_db=get("MLFLOW_DB", f"{pg}/medflow"),
            auth_db=get("AUTH_DB", f"{pg}/medflow_auth"),
            prefect_db=get("PREFECT_DB", "postgresql+asyncpg://postgres@127.0.0.1:5432/prefect"),
            artifacts=get("ARTIFACTS", str(Path("mlruns/server-artifacts").resolve())),
        )
        for name, uri in (("MLFLOW_DB", made.mlflow_db), ("AUTH_DB", made.auth_db), ("PREFECT_DB", made.prefect_db)):
            if urlsplit(uri).password:
                raise TeamError(
                    f"team stack: MEDFLOW_TEAM_{name} holds a password: drop it from the URL and put it in "
                    "~/.pgpass (mode 0600) or PGPASSFILE, which libpq and asyncpg read"
                )
        for path in (made.tls_cert, made.tls_key):
            if not path.is_file():
                raise TeamError(
                    f"team stack: {path} does not exist: set MEDFLOW_TEAM_TLS_CERT and MEDFLOW_TEAM_TLS_KEY"
                )
        return made

    @property
    def mlflow_url(self) -> str:
        return f"https://{self.host}:{self.mlflow_port}"

    @property
    def prefect_url(self) -> str:
        return f"https://{self.host}:{self.prefect_port}/api"


def write_private(path: Path, text: str) -> None:
    """Creates path readable and writable by its owner only, from the first byte (no window at the umask's mode)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def check_strong(what: str, value: str) -> str:
    password = value.partition(":")[2] if what.endswith("auth string") else value
    if what.endswith("auth string") and ":" not in value:
        raise TeamError(f"team stack: the {what} must be USER:PASSWORD")
    if password.lower() in KNOWN_DEFAULTS or len(password) < MIN_SECRET:
        raise TeamError(
            f"team stack: the {what} is a published default or shorter than {MIN_SECRET} characters: "
            "set a long random one (or remove it and its file to have one made)"
        )
    return value


def secret(state: Path, name: str, env_var: str | None = None, *, what: str, make: bool = True) -> str:
    """From env_var when set, else from state/secrets/name (made, random, when missing); refuses a file others can
    read and a weak value."""
    if env_var and os.environ.get(env_var):
        return check_strong(what, os.environ[env_var])
    path = state / "secrets" / name
    if not path.exists():
        if not make:
            raise TeamError(f"team stack: no {what}: {path} is missing")
        value = secrets.token_urlsafe(24)
        write_private(path, f"medflow:{value}\n" if what.endswith("auth string") else value + "\n")
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise TeamError(f"team stack: {path} is readable by others (mode {mode:o}): chmod 600 {path}")
    return check_strong(what, path.read_text().strip())


def auth_ini(settings: Settings, admin_password: str) -> Path:
    """MLflow's auth configuration, 0600: nobody reads or writes what they were not granted."""
    escaped = admin_password.replace("%", "%%")  # configparser's interpolation
    path = settings.state / "basic_auth.ini"
    write_private(
        path,
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = {settings.auth_db}\n"
        f"admin_username = {ADMIN}\n"
        f"admin_password = {escaped}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "grant_default_workspace_access = false\n"
        # One worker, so a password change through the API reaches the cache at once; without it every request
        # pays a PBKDF2 check (~0.3 s of CPU).
        "auth_cache_ttl_seconds = 60\n",
    )
    return path


def server_env(**extra: str) -> dict[str, str]:
    """The launcher's environment without any client's MLflow/Prefect settings (a user's token must not become the
    server's), telemetry off."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_", "MEDFLOW_TEAM_"))}
    env |= {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    return env | extra


def wait_listening(server: WebServer, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise TeamError(f"team stack: {server.last_words()} (log: {server.log})")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        if time.monotonic() > deadline:
            raise TeamError(f"team stack: nothing listens on port {port} after {timeout:.0f} s (log: {server.log})")
        time.sleep(0.2)


class Admin:
    """MLflow's REST API as the admin, on the server's loopback port (the proxy is for everyone else)."""

    def __init__(self, port: int, password: str):
        import requests

        self.session = requests.Session()
        self.session.auth = (ADMIN, password)
        self.base = f"http://127.0.0.1:{port}/api"

    def call(self, method: str, path: str, ok: tuple[str, ...] = (), **kwargs) -> dict:
        answer = self.session.request(method, f"{self.base}{path}", timeout=30, **kwargs)
        if answer.status_code != 200:
            body = answer.json() if answer.headers.get("content-type", "").startswith("application/json") else {}
            if body.get("error_code") in ok:
                return body
            raise TeamError(f"team stack: MLflow answered {answer.status_code} to {path}: {answer.text[:200]}")
        return answer.json()

    def user(self, name: str, password: str) -> None:
        self.call("POST", "/2.0/mlflow/users/create", ok=("RESOURCE_ALREADY_EXISTS",), json={
            "username": name, "password": password,
        })  # fmt: skip

    def experiment(self, name: str) -> str:
        found = self.call(
            "GET",
            "/2.0/mlflow/experiments/get-by-name",
            ok=("RESOURCE_DOES_NOT_EXIST",),
            params={"experiment_name": name},
        )
        if "experiment" in found:
            return found["experiment"]["experiment_id"]
        tags = [{"key": k, "value": v} for k, v in EXPERIMENT_TAGS.items()]
        return self.call("POST", "/2.0/mlflow/experiments/create", json={"name": name, "tags": tags})["experiment_id"]

    def grant(self, user: str, kind: str, resource: str, permission: str) -> None:
        self.call("POST", "/3.0/mlflow/users/permissions/grant", ok=("RESOURCE_ALREADY_EXISTS",), json={
            "username": user, "resource_type": kind, "resource_id": resource, "permission": permission,
        })  # fmt: skip

    def writers_role(self) -> int:
        """The role whose members may create experiments and models (one workspace-wide USE grant)."""
        roles = self.call("GET", "/3.0/mlflow/roles/list", params={"workspace": WORKSPACE})["roles"]
        found = [r["id"] for r in roles if r["name"] == WRITERS]
        if found:
            return found[0]
        made = self.call("POST", "/3.0/mlflow/roles/create", json={"workspace": WORKSPACE, "name": WRITERS})
        role = made["role"]["id"]
        self.call("POST", "/3.0/mlflow/roles/permissions/add", json={
            "role_id": role, "resource_type": "workspace", "resource_pattern": "*", "permission": "USE",
        })  # fmt: skip
        return role


def grant_team(admin: Admin, state: Path, model: str | None, maintainers: list[str], readers: list[str]) -> None:
    """Users as named (passwords in state/secrets/users/, 0600); the model's experiment and registered model made
    when missing and granted by name: the worker and maintainers may register versions and move aliases, readers
    only read."""
    role = admin.writers_role()
    for user in [WORKER, *maintainers, *readers]:
        admin.user(user, secret(state, f"users/{user}", what=f"MLflow password of {user}"))
    for user in [WORKER, *maintainers]:
        admin.call("POST", "/3.0/mlflow/roles/assign", ok=("RESOURCE_ALREADY_EXISTS",), json={
            "username": user, "role_id": role,
        })  # fmt: skip
    if model is None:
        return
    experiment = admin.experiment(model)
    # With workspaces on, MLflow answers 403, not 404, for a model that does not exist yet, so medflow's first
    # registration could not tell "missing" from "forbidden": the model exists, empty, from the start.
    admin.call("POST", "/2.0/mlflow/registered-models/create", ok=("RESOURCE_ALREADY_EXISTS",), json={"name": model})
    for user, level in [(WORKER, "EDIT")] + [(u, "MANAGE") for u in maintainers] + [(u, "READ") for u in readers]:
        admin.grant(user, "experiment", experiment, level)
        admin.grant(user, "registered_model", model, level)
    # The model's audit trail: whoever changes the registry or scores with it appends records (EDIT); no one but
    # the admin manages, so deletes, it. An edited or removed record shows in `medflow audit verify`.
    trail = admin.experiment(AUDIT_PREFIX + model)
    for user in [WORKER, *maintainers, *readers]:
        admin.grant(user, "experiment", trail, "EDIT")


def start(settings: Settings, args: argparse.Namespace) -> list[WebServer]:
    state, logs = settings.state, settings.state / "logs"
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    admin_password = secret(state, "mlflow-admin-password", "MLFLOW_AUTH_ADMIN_PASSWORD", what="MLflow admin password")
    auth_string = secret(state, "prefect-auth-string", "PREFECT_SERVER_API_AUTH_STRING", what="Prefect auth string")
    flask_key = secret(state, "flask-secret-key", "MLFLOW_FLASK_SERVER_SECRET_KEY", what="MLflow session key")
    caddy = shutil.which("caddy")
    if caddy is None:
        raise TeamError("team stack: caddy is not installed: `make test-debs` or `apt-get install caddy`")
    for port, option in (
        (settings.mlflow_backend_port, "MEDFLOW_TEAM_MLFLOW_BACKEND_PORT"),
        (settings.prefect_backend_port, "MEDFLOW_TEAM_PREFECT_BACKEND_PORT"),
        (settings.mlflow_port, "MEDFLOW_TEAM_MLFLOW_PORT"),
        (settings.prefect_port, "MEDFLOW_TEAM_PREFECT_PORT"),
    ):
        check_port("127.0.0.1", port, option)
    bin_dir = Path(sys.executable).parent
    servers: list[WebServer] = []
    try:
        mlflow_env = server_env(
            MLFLOW_AUTH_CONFIG_PATH=str(auth_ini(settings, admin_password)),
            MLFLOW_FLASK_SERVER_SECRET_KEY=flask_key,
            MLFLOW_BACKEND_STORE_URI=settings.mlflow_db,
            MLFLOW_ARTIFACTS_DESTINATION=settings.artifacts,
            MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
            MLFLOW_ENABLE_AI_GATEWAY="false",
            # Creating an experiment or a model needs a workspace grant: without one, a reader could create the
            # team's model name before its first registration and own it.
            MLFLOW_ENABLE_WORKSPACES="true",
            MLFLOW_CREATE_MODEL_VERSION_SOURCE_VALIDATION_REGEX=SOURCE_REGEX,
            MLFLOW_SERVER_ALLOWED_HOSTS=f"{settings.host}:{settings.mlflow_port},127.0.0.1:{settings.mlflow_backend_port}",
        )
        mlflow_cmd = [str(bin_dir / "mlflow"), "server", "--app-name", "basic-auth", "--workers", "1"]
        mlflow_cmd += ["--host", "127.0.0.1", "--port", str(settings.mlflow_backend_port)]
        servers.append(WebServer(mlflow_cmd, mlflow_env, logs / "mlflow-server.log"))
        prefect_env = server_env(
            PREFECT_SERVER_API_AUTH_STRING=auth_string,
            PREFECT_API_DATABASE_CONNECTION_URL=settings.prefect_db,
            PREFECT_UI_API_URL=settings.prefect_url,
            PREFECT_HOME=str(state / "prefect"),
        )
        prefect_cmd = [str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1"]
        prefect_cmd += ["--port", str(settings.prefect_backend_port)]
        servers.append(WebServer(prefect_cmd, prefect_env, logs / "prefect-server.log"))
        caddy_env = server_env(
            HOME=str(state / "caddy"),
            XDG_DATA_HOME=str(state / "caddy"),
            XDG_CONFIG_HOME=str(state / "caddy"),
            MEDFLOW_TEAM_STATE=str(state),
            MEDFLOW_TEAM_HOST=settings.host,
            MEDFLOW_TEAM_MLFLOW_PORT=str(settings.mlflow_port),
            MEDFLOW_TEAM_PREFECT_PORT=str(settings.prefect_port),
            MEDFLOW_TEAM_MLFLOW_BACKEND_PORT=str(settings.mlflow_backend_port),
            MEDFLOW_TEAM_PREFECT_BACKEND_PORT=str(settings.prefect_backend_port),
            MEDFLOW_TEAM_TLS_CERT=str(settings.tls_cert),
            MEDFLOW_TEAM_TLS_KEY=str(settings.tls_key),
        )
        caddy_cmd = [caddy, "run", "--config", str(CADDYFILE), "--adapter", "caddyfile"]
        servers.append(WebServer(caddy_cmd, caddy_env, logs / "caddy.log"))
        servers[0].wait_until_answers(f"http://127.0.0.1:{settings.mlflow_backend_port}/health", timeout=180)
        servers[1].wait_until_answers(f"http://127.0.0.1:{settings.prefect_backend_port}/api/health", timeout=180)
        wait_listening(servers[2], settings.mlflow_port, timeout=30)
        wait_listening(servers[2], settings.prefect_port, timeout=30)
        admin = Admin(settings.mlflow_backend_port, admin_password)
        grant_team(admin, state, args.model, args.maintainers, args.readers)
    except BaseException:
        for server in reversed(servers):
            server.stop()
        raise
    return servers


def names(text: str) -> list[str]:
    found = [n for n in text.split(",") if n]
    bad = [n for n in found if not re.fullmatch(r"[A-Za-z0-9_.@-]+", n) or n in (ADMIN, WORKER)]
    if bad:
        raise argparse.ArgumentTypeError(f"not user names medflow can grant: {bad}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medflow.team", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start MLflow, Prefect and Caddy; grant the team; stop all on Ctrl-C")
    up.add_argument("--model", help="the registered model (and experiment) to make and grant (docs/team.md)")
    up.add_argument("--maintainers", type=names, default=[], help="users who may register versions, move aliases")
    up.add_argument("--readers", type=names, default=[], help="users who may only read the model and its runs")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        servers = start(settings, args)
    except (TeamError, ValueError) as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"team stack up: MLflow {settings.mlflow_url}, Prefect {settings.prefect_url}", flush=True)
    print(f"passwords: {settings.state / 'secrets'} (mode 0600); logs: {settings.state / 'logs'}", flush=True)
    stopping = []
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: stopping.append(True))
    try:
        while not stopping and all(s.process.poll() is None for s in servers):
            time.sleep(0.5)
    finally:
        dead = [s for s in servers if s.process.poll() is not None]
        for server in servers:  # all told at once: each takes seconds to close its connections
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.process.pid, signal.SIGTERM)
        for server in reversed(servers):
            server.stop()
    if dead and not stopping:
        print(f"team stack: a server stopped: {dead[0].last_words()} (log: {dead[0].log})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
