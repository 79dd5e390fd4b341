"""The team stack as docs/team.md prints it, tried as an attacker would: MLflow (basic-auth) and Prefect (auth string)
on PostgreSQL databases of this test's own, behind Caddy's TLS with a CA made here. Every write endpoint of both
servers, and the paths published advisories bypassed, asked without credentials and as the wrong user, must be
refused; the worker and a maintainer succeed through the clients' environment alone; the seeded secrets appear in no
command line, log or database."""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import json
import os
import re
import shlex
import shutil
import ssl
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from test_monitor import COHORT, SALT, TINY, visits
from test_readme import Background, postgres_up
from usercmd import VENV_BIN, free_port, scratch_clone, sh

pytestmark = pytest.mark.e2e  # three servers on PostgreSQL: `make test`, not `make test-fast`

DOCS = Path(__file__).resolve().parents[1] / "docs" / "team.md"
CREATEDBS = (
    "createdb -h 127.0.0.1 -U postgres medflow",
    "createdb -h 127.0.0.1 -U postgres medflow_auth",
    "createdb -h 127.0.0.1 -U postgres prefect",
)
TLS = "export MEDFLOW_TEAM_TLS_CERT=/etc/medflow/tls/server.pem MEDFLOW_TEAM_TLS_KEY=/etc/medflow/tls/server.key"
UP = ".venv/bin/python -m medflow.team up --model medflow-breast-cancer --maintainers alice --readers bob &"
CLIENT = '''export REQUESTS_CA_BUNDLE=/etc/medflow/tls/ca.pem SSL_CERT_FILE=/etc/medflow/tls/ca.pem
export MLFLOW_TRACKING_URI=https://127.0.0.1:8443 MLFLOW_TRACKING_USERNAME=alice
export MLFLOW_TRACKING_PASSWORD="$(cat .team/secrets/users/alice)"
export PREFECT_API_URL=https://127.0.0.1:8444/api
export PREFECT_API_AUTH_STRING="$(cat .team/secrets/prefect-auth-string)"'''
MODEL = "medflow-breast-cancer"
NO_ID = "00000000-0000-0000-0000-000000000000"

# What an attacker tries. Each row: server, method, path, JSON body; {exp} {run} {model} are filled in. Every row is
# asked with no credentials and as the wrong user (MLflow: `bob`, who may only read the model; Prefect: a wrong auth
# string); each must be answered 401 or 403 (`anon`, `wrong` columns: the codes this stack gives).
ENDPOINTS = [
    # MLflow's registry: the writes that decide what scores patients
    ("mlflow", "POST", "/api/2.0/mlflow/registered-models/create", {"name": "{model}"}, 401, 403),
    ("mlflow", "POST", "/api/2.0/mlflow/registered-models/create", {"name": "squatted"}, 401, 403),
    ("mlflow", "POST", "/api/2.0/mlflow/model-versions/create", {"name": "{model}", "source": "runs:/{run}/model"}, 401, 403),  # noqa: E501
    ("mlflow", "POST", "/api/2.0/mlflow/registered-models/alias", {"name": "{model}", "alias": "champion", "version": "1"}, 401, 403),  # noqa: E501
    ("mlflow", "DELETE", "/api/2.0/mlflow/registered-models/alias", {"name": "{model}", "alias": "champion"}, 401, 403),
    ("mlflow", "PATCH", "/api/2.0/mlflow/registered-models/update", {"name": "{model}", "description": "x"}, 401, 403),
    ("mlflow", "POST", "/api/2.0/mlflow/model-versions/set-tag", {"name": "{model}", "version": "1", "key": "medflow.state", "value": "x"}, 401, 403),  # noqa: E501
    ("mlflow", "DELETE", "/api/2.0/mlflow/model-versions/delete", {"name": "{model}", "version": "1"}, 401, 403),
    ("mlflow", "DELETE", "/api/2.0/mlflow/registered-models/delete", {"name": "{model}"}, 401, 403),
    # the same through the UI's ajax-api prefix
    ("mlflow", "POST", "/ajax-api/2.0/mlflow/registered-models/create", {"name": "squatted"}, 401, 403),
    ("mlflow", "POST", "/ajax-api/2.0/mlflow/model-versions/create", {"name": "{model}", "source": "runs:/{run}/model"}, 401, 403),  # noqa: E501
    ("mlflow", "POST", "/ajax-api/2.0/mlflow/registered-models/alias", {"name": "{model}", "alias": "champion", "version": "1"}, 401, 403),  # noqa: E501
    ("mlflow", "DELETE", "/ajax-api/2.0/mlflow/registered-models/delete", {"name": "{model}"}, 401, 403),
    # runs and artifacts: the artifact proxy, its multipart upload, the UI's upload
    ("mlflow", "POST", "/api/2.0/mlflow/experiments/create", {"name": "elsewhere"}, 401, 403),
    ("mlflow", "POST", "/api/2.0/mlflow/runs/create", {"experiment_id": "{exp}"}, 401, 403),
    ("mlflow", "POST", "/api/2.0/mlflow/runs/log-parameter", {"run_id": "{run}", "key": "k", "value": "v"}, 401, 403),
    ("mlflow", "PUT", "/api/2.0/mlflow-artifacts/artifacts/{exp}/{run}/artifacts/model/weights.txt", None, 401, 403),
    ("mlflow", "DELETE", "/api/2.0/mlflow-artifacts/artifacts/{exp}/{run}/artifacts/model/weights.txt", None, 401, 403),
    ("mlflow", "POST", "/api/2.0/mlflow-artifacts/mpu/create/{exp}/{run}/artifacts/model/w.bin", {"path": "w.bin", "num_parts": 1}, 401, 403),  # noqa: E501
    ("mlflow", "POST", "/api/2.0/mlflow-artifacts/mpu/complete/{exp}/{run}/artifacts/model/w.bin", {"path": "w.bin", "upload_id": "u", "parts": []}, 401, 403),  # noqa: E501
    ("mlflow", "POST", "/api/2.0/mlflow-artifacts/mpu/abort/{exp}/{run}/artifacts/model/w.bin", {"path": "w.bin", "upload_id": "u"}, 401, 403),  # noqa: E501
    ("mlflow", "POST", "/ajax-api/2.0/mlflow/upload-artifact?run_uuid={run}&path=model%2Fw.txt", None, 401, 403),
    # jobs, traces, gateway, assistant: routes that run code or had auth holes (refused by Caddy: 403 for all)
    ("mlflow", "POST", "/ajax-api/3.0/jobs/", {"job_name": "x", "params": {}}, 403, 403),
    ("mlflow", "POST", "/ajax-api/3.0/jobs/search", {}, 403, 403),
    ("mlflow", "PATCH", "/ajax-api/3.0/jobs/cancel/1", None, 403, 403),
    ("mlflow", "POST", "/api/3.0/mlflow/traces", {"trace": {"trace_info": {"trace_location": {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": "{exp}"}}}}}, 401, 403),  # noqa: E501
    ("mlflow", "POST", "/ajax-api/3.0/mlflow/traces", {"trace": {}}, 401, 403),
    ("mlflow", "POST", "/v1/traces", None, 401, 403),
    ("mlflow", "POST", "/gateway/mlflow/v1/chat/completions", {}, 403, 403),
    ("mlflow", "POST", "/ajax-api/2.0/mlflow/gateway-proxy", {}, 403, 403),
    ("mlflow", "POST", "/api/3.0/mlflow/gateway/secrets/create", {}, 403, 403),
    ("mlflow", "PUT", "/ajax-api/3.0/mlflow/assistant/config", {}, 403, 403),
    # users and grants: only the admin
    ("mlflow", "POST", "/api/2.0/mlflow/users/create", {"username": "eve", "password": "e" * 20}, 401, 403),
    ("mlflow", "PATCH", "/api/2.0/mlflow/users/update-admin", {"username": "bob", "is_admin": True}, 401, 403),
    ("mlflow", "POST", "/api/3.0/mlflow/users/permissions/grant", {"username": "bob", "resource_type": "registered_model", "resource_id": "{model}", "permission": "MANAGE"}, 401, 403),  # noqa: E501
    # paths that look like the open health probe
    ("mlflow", "POST", "/api/2.0/mlflow/registered-models/create/health", {"name": "squatted"}, 401, 403),
    ("mlflow", "POST", "/health/../api/2.0/mlflow/registered-models/create", {"name": "squatted"}, 401, 403),
    # Prefect: what starts code on a worker, and what a flow reads
    ("prefect", "POST", "/api/flows/", {"name": "intruder"}, 401, 401),
    ("prefect", "POST", "/api/deployments/", {"name": "d", "flow_id": NO_ID}, 401, 401),
    ("prefect", "POST", "/api/flow_runs/", {"flow_id": NO_ID}, 401, 401),
    ("prefect", "POST", "/api/deployments/{dep}/create_flow_run", {}, 401, 401),
    ("prefect", "POST", "/api/variables/", {"name": "intruder", "value": "1"}, 401, 401),
    ("prefect", "PATCH", "/api/variables/name/team_check", {"value": "x"}, 401, 401),
    ("prefect", "POST", "/api/block_documents/", {"name": "b"}, 401, 401),
    ("prefect", "POST", "/api/work_pools/", {"name": "p", "type": "process"}, 401, 401),
    ("prefect", "GET", "/api/admin/settings", None, 401, 401),
    # Prefect's health/ready bypass (suffix matching): only the exact GET /api/health and /api/ready are open
    ("prefect", "GET", "/api/variables/name/health", None, 401, 401),
    ("prefect", "PATCH", "/api/variables/name/health", {"value": "x"}, 401, 401),
    ("prefect", "DELETE", "/api/variables/name/ready", None, 401, 401),
    ("prefect", "POST", "/api/flows/health", {"name": "f"}, 401, 401),
    ("prefect", "POST", "/api/health", {}, 401, 401),
    ("prefect", "GET", "/api/health/../variables/", None, 401, 401),
]  # fmt: skip
# Reads need credentials too: nobody without them sees a run, a model or an artifact.
READS = [
    ("mlflow", "/api/2.0/mlflow/registered-models/search"),
    ("mlflow", "/api/2.0/mlflow/experiments/search?max_results=10"),
    ("mlflow", "/api/2.0/mlflow-artifacts/artifacts/{exp}/{run}/artifacts/model/weights.txt"),
    ("mlflow", "/get-artifact?path=model/weights.txt&run_uuid={run}"),
    ("prefect", "/api/variables/name/team_check"),
    ("prefect", "/api/deployments/{dep}"),
]
# Prefect's events websocket: without the `prefect` subprotocol the upgrade is refused (HTTP 403); with it, an auth
# message with no or a wrong token is answered by closing with 1008 (policy violation).
WEBSOCKETS = [("/api/events/in", "http 403", "close 1008"), ("/api/events/out", "http 403", "close 1008")]


def make_tls(folder: Path, host: str = "127.0.0.1") -> None:
    """A CA of this test's own and a server certificate for host it signed: ca.pem, server.pem, server.key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    valid = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder(name("medflow test CA"), name("medflow test CA"), ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )  # digital signature, cert sign, CRL sign
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server = (
        x509.CertificateBuilder(ca.subject, name(host), key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True)
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "server.pem").write_bytes(server.public_bytes(serialization.Encoding.PEM))
    (folder / "server.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (folder / "server.key").chmod(0o600)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if not postgres_up():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not listening on 127.0.0.1:5432")
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    if shutil.which("caddy") is None:
        if os.environ.get("CI"):
            pytest.fail("caddy is not installed: make test-debs")
        pytest.skip("caddy is not installed: make test-debs")
    docs = DOCS.read_text()
    assert all(c in docs for c in (*CREATEDBS, TLS, UP, CLIENT)), "docs/team.md no longer prints these commands"
    root = tmp_path_factory.mktemp("team")
    (root / ".venv").symlink_to(VENV_BIN.parent, target_is_directory=True)
    make_tls(root / "tls")
    tag = f"{os.getpid()}_{free_port()}"
    dbs = {name: f"medflow_team_{name}_{tag}" for name in ("medflow", "medflow_auth", "prefect")}
    ports = {name: str(free_port()) for name in ("8443", "8444", "5000", "4200")}

    def mine(command: str) -> str:
        """The docs' command on this test's own databases, ports and certificates."""
        command = command.replace("/etc/medflow/tls", str(root / "tls"))
        command = re.sub(r":(8443|8444|5000|4200)\b", lambda m: f":{ports[m[1]]}", command)  # one pass: no chains
        return re.sub(r"(-U postgres )(\w+)$", lambda m: m[1] + dbs[m[2]], command)

    pg = "postgresql+psycopg2://postgres@127.0.0.1:5432"
    env = {
        "MEDFLOW_TEAM_MLFLOW_PORT": ports["8443"],
        "MEDFLOW_TEAM_PREFECT_PORT": ports["8444"],
        "MEDFLOW_TEAM_MLFLOW_BACKEND_PORT": ports["5000"],
        "MEDFLOW_TEAM_PREFECT_BACKEND_PORT": ports["4200"],
        "MEDFLOW_TEAM_MLFLOW_DB": f"{pg}/{dbs['medflow']}",
        "MEDFLOW_TEAM_AUTH_DB": f"{pg}/{dbs['medflow_auth']}",
        "MEDFLOW_TEAM_PREFECT_DB": f"postgresql+asyncpg://postgres@127.0.0.1:5432/{dbs['prefect']}",
    }
    log = root / "team-up.log"
    started = time.monotonic()
    for command in CREATEDBS:
        sh(mine(command), root)
    up = Background(f"{mine(TLS)}\n{UP}", root, log, **env)
    try:
        while "team stack up" not in log.read_text():
            assert up.proc.poll() is None, f"`{UP}` exited {up.proc.returncode}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() - started < 300, f"the stack did not come up in 300 s:\n{log.read_text()}"
            time.sleep(0.5)
        secrets = {p.relative_to(root / ".team" / "secrets").as_posix(): p.read_text().strip()
                   for p in (root / ".team" / "secrets").rglob("*") if p.is_file()}  # fmt: skip
        yield SimpleNamespace(
            root=root,
            ca=str(root / "tls" / "ca.pem"),
            mlflow=f"https://127.0.0.1:{ports['8443']}",
            prefect=f"https://127.0.0.1:{ports['8444']}",
            secrets=secrets,
            client=lambda user: mine(CLIENT.replace("alice", user)),
            log=log,
            dbs=dbs,
            up_seconds=time.monotonic() - started,
        )
    finally:
        up.stop()
        for db in dbs.values():
            sh(f"dropdb -h 127.0.0.1 -U postgres --if-exists --force {db}", root, check=False)


WORKER_REGISTERS = """
import json, tempfile
from mlflow import MlflowClient
c = MlflowClient()
exp = c.get_experiment_by_name("{model}").experiment_id
run = c.create_run(exp).info.run_id
folder = tempfile.mkdtemp()
open(folder + "/weights.txt", "w").write("weights")
c.log_artifact(run, folder + "/weights.txt", "model")  # through the artifact proxy
c.log_param(run, "lr", "0.1")
c.set_terminated(run)
versions = [c.create_model_version("{model}", f"runs:/{{run}}/model", run_id=run).version for _ in range(2)]
c.set_registered_model_alias("{model}", "champion", versions[0])
try:
    c.create_model_version("{model}", "file:///etc", run_id=run)
    refused = None
except Exception as exc:
    refused = getattr(exc, "error_code", repr(exc))
print(json.dumps({{"exp": exp, "run": run, "versions": versions, "outside_source": refused}}))
"""
MAINTAINER = """
import asyncio
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import VariableCreate

c = MlflowClient()
c.set_registered_model_alias("{model}", "champion", "3")
champion = c.get_model_version_by_alias("{model}", "champion").version

async def schedule():
    async with get_client() as p:
        flow = await p.create_flow_from_name("team-check")
        deployment = await p.create_deployment(flow_id=flow, name="team-check")
        await p.create_variable(VariableCreate(name="team_check", value="ok"))
        run = await p.create_flow_run_from_deployment(deployment)
        return deployment, run.id

print(champion, *asyncio.run(schedule()))
"""


def as_client(stack, user: str, code: str) -> str:
    """Runs code with the client environment docs/team.md prints for user; returns its last line of output."""
    done = sh(f"{stack.client(user)}\n.venv/bin/python -c {shlex.quote(code.format(model=MODEL))}", stack.root)
    return done.stdout.strip().splitlines()[-1]


async def websocket_answer(url: str, ca: str, token: str | None, subprotocol: bool) -> str:
    import websockets

    context = ssl.create_default_context(cafile=ca)
    try:
        async with websockets.connect(
            url, ssl=context, subprotocols=["prefect"] if subprotocol else None, open_timeout=20
        ) as ws:
            await ws.send(json.dumps({"type": "auth", "token": token}))
            return json.loads(await asyncio.wait_for(ws.recv(), 20))["type"]
    except websockets.exceptions.InvalidStatus as exc:
        return f"http {exc.response.status_code}"
    except websockets.exceptions.ConnectionClosed as exc:
        return f"close {exc.rcvd.code if exc.rcvd else None}"


def test_nobody_writes_where_not_granted_and_no_secret_leaks(stack, tmp_path):
    secrets = stack.secrets
    assert {"mlflow-admin-password", "prefect-auth-string", "users/alice", "users/bob", "users/medflow-worker"} <= set(
        secrets
    )
    for private in [*(stack.root / ".team" / "secrets").rglob("*"), stack.root / ".team" / "basic_auth.ini"]:
        assert private.stat().st_mode & 0o077 == 0, f"{private} is readable by others"

    # medflow itself, as the worker: runs, artifacts, the first version and its champion, the flow on Prefect.
    started = time.monotonic()
    project = scratch_clone(tmp_path / "medflow")
    (project / "data").mkdir(exist_ok=True)
    visits(200, seed=1, first_id=100000).to_csv(project / "data" / "visits.csv", index=False)
    cohort = COHORT.replace("register.model_name=monitored", f"register.model_name={MODEL}")
    client = stack.client("medflow-worker").replace(".team/", f"{stack.root}/.team/")
    ran = sh(f"{client}\n.venv/bin/medflow run {cohort} {TINY}", project, timeout=600, OMP_NUM_THREADS="1", **SALT)
    assert f"registered {MODEL} v1 (champion" in ran.stdout, ran.stdout[-2000:]
    assert not (project / "mlruns" / "mlflow.db").exists()  # all of it on the servers
    medflow_seconds = time.monotonic() - started
    # Its audit trail, on the server: intact, every record by the user the server authenticated.
    verified = sh(f"{client}\n.venv/bin/medflow audit verify {MODEL}", project)
    assert verified.stdout.strip().endswith("audit records, chain intact"), verified.stdout
    sh(f"{client}\n.venv/bin/medflow audit export --to audit.jsonl", project)
    trail = [json.loads(line) for line in (project / "audit.jsonl").read_text().splitlines()]
    assert {r["who"] for r in trail} == {"medflow-worker"}
    assert {"data.read", "version.create", "gate.verdict", "alias.set", "version.state"} <= {r["action"] for r in trail}
    team = {"Authorization": "Basic " + base64.b64encode(secrets["prefect-auth-string"].encode()).decode()}
    # Task runs reach Prefect only as events, over the events websocket: counted, they show its auth worked too.
    tasks = httpx.post(f"{stack.prefect}/api/task_runs/filter", json={}, headers=team, verify=stack.ca, timeout=60)
    assert {"validate", "train", "register"} <= {t["name"].rsplit("-", 1)[0] for t in tasks.json()}, tasks.text[:500]

    # A Prefect worker with the worker's environment: it must reach the pool and heartbeat through Caddy.
    worker_log = tmp_path / "prefect-worker.log"
    worker = Background(f"{client}\n.venv/bin/prefect worker start --pool team-check --type process &", project,
                        worker_log)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            polled = httpx.post(f"{stack.prefect}/api/work_pools/team-check/workers/filter", json={}, headers=team,
                                verify=stack.ca, timeout=60)  # fmt: skip
            if polled.status_code == 200 and [w for w in polled.json() if w["status"] == "ONLINE"]:
                break
            assert worker.proc.poll() is None and time.monotonic() < deadline, worker_log.read_text()[-3000:]
            time.sleep(1)
    finally:
        worker.stop()

    # The worker and a maintainer, through the clients' environment alone (https, the test's CA).
    made = json.loads(as_client(stack, "medflow-worker", WORKER_REGISTERS))
    assert made["versions"] == ["2", "3"]
    assert made["outside_source"] == "INVALID_PARAMETER_VALUE"  # a version may point only at the server's artifacts
    promoted, deployment, _ = as_client(stack, "alice", MAINTAINER).split()
    assert promoted == "3"

    fill = {"{model}": MODEL, "{exp}": made["exp"], "{run}": made["run"], "{dep}": deployment}

    def filled(value):
        text = json.dumps(value)
        for key, real in fill.items():
            text = text.replace(key, real)
        return json.loads(text)

    bob = ("bob", secrets["users/bob"])
    wrong_string = base64.b64encode(b"medflow:" + b"w" * 32).decode()
    answers = []
    with httpx.Client(verify=stack.ca, timeout=60) as http:
        for server, method, path, body, *expected in ENDPOINTS:
            base = stack.mlflow if server == "mlflow" else stack.prefect
            for who, want in zip(("anon", "wrong"), expected, strict=True):
                kwargs = {"json": filled(body)} if body is not None else {"content": b"payload"}
                if who == "wrong":
                    kwargs |= (
                        {"auth": bob} if server == "mlflow" else {"headers": {"Authorization": f"Basic {wrong_string}"}}
                    )  # noqa: E501
                headers = kwargs.setdefault("headers", {})
                headers["X-Mlflow-Experiment-Id"] = made["exp"]  # /v1/traces asks for it before anything else
                # httpx would normalise `..` away; an attacker's client sends it as written.
                url = (
                    httpx.URL(base + filled(path))
                    if ".." not in path
                    else httpx.URL(base).copy_with(raw_path=filled(path).encode())
                )  # noqa: E501
                code = http.request(method, url, **kwargs).status_code
                answers.append((server, method, path, who, code, want))
        for server, path in READS:
            code = http.get((stack.mlflow if server == "mlflow" else stack.prefect) + filled(path)).status_code
            answers.append((server, "GET", path, "anon", code, 401))
        champion = http.get(
            f"{stack.mlflow}/api/2.0/mlflow/registered-models/alias",
            params={"name": MODEL, "alias": "champion"},
            auth=bob,
        ).json()["model_version"]["version"]
        health = [http.get(f"{stack.prefect}/api/{p}").status_code for p in ("health", "ready")]
        # bob may append to the audit trail (predict records its batches) but not delete it.
        trail_id = http.get(
            f"{stack.mlflow}/api/2.0/mlflow/experiments/get-by-name",
            auth=bob,
            params={"experiment_name": f"medflow-audit/{MODEL}"},
        ).json()["experiment"]["experiment_id"]
        for who in (None, bob):
            code = http.post(f"{stack.mlflow}/api/2.0/mlflow/experiments/delete", json={"experiment_id": trail_id},
                             auth=who).status_code  # fmt: skip
            answers.append(("mlflow", "POST", "/api/2.0/mlflow/experiments/delete (audit trail)", who and "bob",
                            code, 403 if who else 401))  # fmt: skip
    wrong = [a for a in answers if a[4] != a[5] or a[4] not in (401, 403)]
    assert not wrong, "\n".join(f"{s} {m} {p} as {who}: {code}, expected {want}" for s, m, p, who, code, want in wrong)
    assert champion == "3", "bob, who may only read the model, moved its champion"
    assert health == [200, 200]

    ws = stack.prefect.replace("https://", "wss://")
    auth_string = secrets["prefect-auth-string"]
    for path, bare, bad_token in WEBSOCKETS:
        url = ws + path
        assert asyncio.run(websocket_answer(url, stack.ca, None, subprotocol=False)) == bare
        assert asyncio.run(websocket_answer(url, stack.ca, None, subprotocol=True)) == bad_token
        assert asyncio.run(websocket_answer(url, stack.ca, "medflow:" + "w" * 32, subprotocol=True)) == bad_token
        assert asyncio.run(websocket_answer(url, stack.ca, auth_string, subprotocol=True)) == "auth_success"

    # The seeded secrets: never in a command line, a log, MLflow's records or Prefect's database.
    seen = {"ps -ef": subprocess.run(["ps", "-ef"], capture_output=True, text=True, check=True).stdout}
    for log in [stack.log, *(stack.root / ".team" / "logs").glob("*.log")]:
        seen[log.name] = log.read_text(errors="replace")
    for name, db in stack.dbs.items():
        dump = sh(f"pg_dump -h 127.0.0.1 -U postgres --data-only {db}", stack.root).stdout
        assert MODEL in dump or name != "medflow"  # the dump holds the registry (a grep of nothing cannot fail)
        seen[f"database {name}"] = dump
    for log in (project / "artifacts" / "logs").glob("*"):
        seen[f"medflow log {log.name}"] = log.read_text(errors="replace")
    seen["medflow run output"] = ran.stdout + ran.stderr
    seen["prefect worker log"] = worker_log.read_text(errors="replace")
    leaks = [
        f"{name} in {where}"
        for name, value in secrets.items()
        for where, text in seen.items()
        if any(part in text for part in {value, value.rpartition(":")[2]})
    ]
    assert not leaks, leaks
    print(f"stack up in {stack.up_seconds:.0f} s, medflow run {medflow_seconds:.0f} s; {len(answers)} requests refused")
