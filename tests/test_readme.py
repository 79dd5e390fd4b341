"""README.md and docs/ as a newcomer follows them: every command block run as printed, in one scratch clone.

A `make run` costs a minute, so the module shares one trained clone and its tests run in file order, each taking
the project as the previous commands left it. A command of README.md, docs/*.md or bench/README.md that no test
runs (here, or verbatim in another test module, as the Prefect ones in test_prefect.py) fails
test_every_documented_command_is_run; one that cannot run in CI says "not run by CI: why" in its own comment. None
is marked slow: CI runs every printed command once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from usercmd import REPO, free_port, sh, stop, user_documents, user_env, wait_http

pytestmark = pytest.mark.e2e  # the real executable on a scratch clone: `make test`, not `make test-fast`

EXEMPT_MARK = "not run by CI"

# What the tests below run, exactly as README.md and docs/ print it (trailing comments aside).
MAKE_RUN = "make run"
MAKE_TEST = "make test"
MAKE_UI = "make ui"
OVERRIDE_RUN = ".venv/bin/medflow run -P train.lr=3e-4 -P 'train.hidden=[128, 64]'"
DVC_REPRO = ".venv/bin/dvc repro"
DVC_STATUS = ".venv/bin/dvc status"
DVC_CHECKOUT = ".venv/bin/dvc checkout data.dvc"
DVC_EXP_RUN = ".venv/bin/dvc exp run -S train.lr=0.003"
DVC_EXP_SHOW = ".venv/bin/dvc exp show --drop '.*' --keep 'Experiment|train.lr|test_roc_auc$|test_accuracy$'"
DVC_METRICS_DIFF = ".venv/bin/dvc metrics diff"
DVC_PARAMS_DIFF = ".venv/bin/dvc params diff"
DVC_PLOTS_SHOW = ".venv/bin/dvc plots show"
DVC_REMOTE_ADD = ".venv/bin/dvc remote add -d storage ../medflow-dvc-remote"
DVC_PUSH = ".venv/bin/dvc push"
SALT = "export MEDFLOW_SALT=$(openssl rand -hex 32)"
OWN_TABLE = (
    ".venv/bin/medflow run -P data.source=data/visits.csv -P data.target=outcome -P data.patient_id=mrn \\\n"
    "    -P 'data.identifiers=[name, dob, phone]' -P data.positive_class=disease \\\n"
    "    -P register.model_name=visits-outcome"
)
DIGITS_RUN = ".venv/bin/medflow run --params examples/digits.yaml"
DIGITS_DVC = "cp examples/digits.yaml params.yaml && .venv/bin/dvc repro"
SERVE = (
    "PATH=$PWD/.venv/bin:$PATH MLFLOW_DISABLE_TELEMETRY=true MLFLOW_TRACKING_URI=sqlite:///mlruns/mlflow.db \\\n"
    "    mlflow models serve -m models:/medflow-breast-cancer@champion --env-manager local --port 5001 &"
)
SCORE = (
    "head -4 data/breast_cancer.csv | curl -s http://127.0.0.1:5001/invocations -H 'Content-Type: text/csv' "
    "--data-binary @-"
)
CREATEDB = "createdb -h 127.0.0.1 -U postgres medflow"
TRACKING_SERVER = (
    "MLFLOW_DISABLE_TELEMETRY=true MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \\\n"
    "    .venv/bin/mlflow server --workers 1 --host 127.0.0.1 --port 5000 \\\n"
    "    --backend-store-uri postgresql+psycopg2://postgres@127.0.0.1:5432/medflow \\\n"
    '    --artifacts-destination "$PWD/mlruns/server-artifacts" &'
)
TO_SERVER = "export MLFLOW_TRACKING_URI=http://127.0.0.1:5000"
RUN_ON_SERVER = ".venv/bin/medflow run --force"  # docs/troubleshooting.md prints it too

RUN = {
    MAKE_RUN, MAKE_TEST, MAKE_UI, OVERRIDE_RUN, DVC_REPRO, DVC_EXP_RUN, DVC_EXP_SHOW, DVC_METRICS_DIFF,
    DVC_PARAMS_DIFF, DVC_PLOTS_SHOW, DVC_REMOTE_ADD, DVC_PUSH, SALT, OWN_TABLE, DIGITS_RUN, DIGITS_DVC, SERVE,
    SCORE, CREATEDB, TRACKING_SERVER, TO_SERVER, RUN_ON_SERVER, DVC_STATUS, DVC_CHECKOUT,
}  # fmt: skip


def strip_comment(line: str) -> str:
    """The command without its trailing `# ...` (a # after whitespace, outside quotes), as bash reads it."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def fenced_blocks(doc: Path) -> list[tuple[str, str]]:
    """(language, text) of each fenced block, indented ones (in a list item) dedented as Markdown reads them."""
    out, lang, indent, lines = [], None, "", []
    for line in doc.read_text().splitlines():
        fence = re.match(r"( *)```([\w-]*)\s*$", line)
        if lang is None and fence:
            indent, lang, lines = fence[1], fence[2], []
        elif lang is not None and line.strip() == "```" and line.startswith(indent):
            out.append((lang, "".join(f"{text.removeprefix(indent)}\n" for text in lines)))
            lang = None
        elif lang is not None:
            lines.append(line)
    return out


def printed_commands() -> list[tuple[str, str, str]]:
    """(document, command, its comment) for each logical line of the user documents' shell blocks, continuation
    lines kept. A bare fence counts too: only a language (`text`, `yaml`) says a block holds no command."""
    out = []
    for doc in user_documents():
        for lang, block in fenced_blocks(doc):
            if lang not in ("", "bash", "sh", "shell", "console"):
                continue
            for text in re.split(r"(?<!\\)\n", block.rstrip("\n")):
                lines = text.split("\n")
                command = "\n".join([*lines[:-1], strip_comment(lines[-1])])
                out.append((doc.relative_to(REPO).as_posix(), command, lines[-1][len(strip_comment(lines[-1])) :]))
    return out


def documented_python() -> list[str]:
    return [block for doc in user_documents() for lang, block in fenced_blocks(doc) if lang == "python"]


class Background:
    """A printed line ending in `&`: started in its own process group, stopped with everything it started."""

    def __init__(self, command: str, root: Path, log: Path, **env: str) -> None:
        assert command.endswith("&")
        self.log = log.open("w")
        self.proc = subprocess.Popen(
            ["bash", "-c", command.removesuffix("&").strip()],
            cwd=root,
            env=user_env(root, **env),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def stop(self) -> None:
        stop(self.proc, timeout=20)
        self.log.close()


def tree_digest(folder: Path, skip: set[str]) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.relative_to(folder).parts[0] not in skip
    }


def champion(root: Path, name: str) -> str:
    from mlflow import MlflowClient

    store = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    return MlflowClient(tracking_uri=store, registry_uri=store).get_model_version_by_alias(name, "champion").version


@pytest.fixture(scope="module")
def clone(tmp_path_factory, migrated_mlflow_db) -> Path:
    from usercmd import scratch_clone

    return scratch_clone(tmp_path_factory.mktemp("readme") / "medflow", migrated_mlflow_db)


@pytest.fixture(scope="module")
def prefect(prefect_server) -> dict[str, str]:
    """The session's Prefect server for the commands after `make run`: `make run` meets Prefect's temporary server as
    a new user does; each later run would start its own (~10 CPU-s measured on a busy box) for nothing checked here."""
    return {"PREFECT_API_URL": prefect_server}


@pytest.fixture(scope="module")
def made(clone) -> Path:
    """The project after the README's first command."""
    done = sh(MAKE_RUN, clone, timeout=600)
    assert "registered medflow-breast-cancer v" in done.stdout, done.stdout[-2000:]
    return clone


def run_elsewhere(command: str) -> bool:
    """Printed verbatim (each line of a continued command) in another test module, which runs it as typed."""
    lines = [line.strip().rstrip("\\").strip() for line in command.splitlines()]
    return any(
        all(line in f.read_text() for line in lines)
        for f in sorted(REPO.glob("tests/test_*.py"))
        if f.name != Path(__file__).name
    )


def test_every_documented_command_is_run():
    commands = printed_commands()
    assert {doc for doc, _, _ in commands} >= {
        "README.md",
        "docs/getting-started.md",
        "docs/predict.md",
        "bench/README.md",
    }
    exempt = {c for _, c, comment in commands if EXEMPT_MARK in comment}
    printed = {c for _, c, _ in commands} - exempt
    missing = sorted((doc, c) for doc, c, _ in commands if c in printed - RUN and not run_elsewhere(c))
    assert missing == [], "printed commands no test runs (run them in a test, or mark them 'not run by CI: why')"
    assert RUN - printed == set(), "commands this module runs that no document prints any longer"
    assert len(documented_python()) == 1, "each python block of the documents needs a test that runs it"
    unexplained = [
        (doc, c) for doc, c, comment in commands if c in exempt and not re.search(rf"{EXEMPT_MARK}: \w", comment)
    ]
    assert unexplained == [], "a command not run by CI says why in its comment"


def test_make_run_leaves_dvc_status_clean(made):
    assert "up to date" in sh(DVC_STATUS, made).stdout
    sh(DVC_CHECKOUT, made)  # data/ already holds the version data.dvc records: nothing to change
    assert "up to date" in sh(DVC_STATUS, made).stdout
    metrics = json.loads((made / "artifacts/evaluate/metrics.json").read_text())
    assert metrics["test_roc_auc"] >= 0.95


def chrome():
    """Headless Debian Chromium through its chromedriver; `make test` installs both where missing."""
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        if os.environ.get("CI"):
            pytest.fail("chromium/chromedriver missing: `make test` installs them (Debian chromium, chromium-driver)")
        pytest.skip("chromium/chromedriver not installed (make test installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1100",
    ):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)


@pytest.mark.full  # a browser
def test_make_ui_shows_the_champion_and_its_model_card(made):
    """The card as a reviewer meets it in the registry: the declared intended use and the TRIPOD+AI coverage."""
    import yaml
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    summary = json.loads((made / "artifacts/register/summary.json").read_text())
    name, version = summary["model_name"], summary["champion_version"]
    declared = yaml.safe_load((made / "params.yaml").read_text())["register"]["card"]["intended_use"]
    coverage = "Reporting: TRIPOD+AI (BMJ 2024;385:e078378), "
    port = free_port()
    shots = made / "artifacts/ui"
    shots.mkdir(parents=True, exist_ok=True)
    ui = Background(f"{MAKE_UI} &", made, shots / "make-ui.log", UI_PORT=str(port))
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/health", ui.proc)
        browser = chrome()
        try:
            pages = {
                "model": (f"{base}/#/models/{name}", [name, "champion"]),
                "champion-version": (
                    f"{base}/#/models/{name}/versions/{version}",
                    [
                        name,
                        "champion",
                        f"Model card: {name} v{version}",
                        "Intended use",
                        declared[:60],
                        coverage,
                        "applicable items reported or declared",
                        "Test metrics",
                    ],  # fmt: skip
                ),
            }
            for page, (url, expected) in pages.items():
                browser.get(url)
                body = browser.find_element(By.TAG_NAME, "body")
                WebDriverWait(browser, 60).until(lambda _, e=expected, b=body: all(t in b.text for t in e))
                # MLflow's assistant side panel covers a third of the page in a screenshot.
                for button in browser.find_elements(By.CSS_SELECTOR, "button[aria-label='Close']"):
                    button.click()
                time.sleep(1)  # the last panels settle after their data arrives
                browser.save_screenshot(str(shots / f"{page}.png"))
        finally:
            browser.quit()
    finally:
        ui.stop()
    # For a person to look at: the repo's artifacts/ui/ (gitignored).
    (REPO / "artifacts/ui").mkdir(parents=True, exist_ok=True)
    for png in shots.glob("*.png"):
        assert png.stat().st_size > 10_000, png
        shutil.copy(png, REPO / "artifacts/ui" / png.name)
        print(f"screenshot: {REPO / 'artifacts/ui' / png.name}")


def test_scoring_with_pyfunc_as_printed(made):
    (made / "score.py").write_text(documented_python()[0])
    out = sh(".venv/bin/python score.py", made).stdout
    assert "prediction" in out and len(out.strip().splitlines()) >= 6, out


def test_mlflow_models_serve_as_printed(made):
    port = str(free_port())
    server = Background(SERVE.replace("5001", port), made, made / "serve.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", server.proc, timeout=180)
        out = sh(SCORE.replace("5001", port), made).stdout
    finally:
        server.stop()
    predictions = json.loads(out)["predictions"]
    assert len(predictions) == 3 and {"prediction"} <= set(predictions[0]), out


def test_dvc_repro_after_make_run_has_nothing_to_do(made):
    out = sh(DVC_REPRO, made).stdout
    assert "Running stage" not in out, out


def test_dvc_experiment_is_listed_with_its_metrics_and_leaves_the_champion(made):
    before = champion(made, "medflow-breast-cancer")
    sh(DVC_EXP_RUN, made, timeout=600)
    shown = sh(DVC_EXP_SHOW, made).stdout
    assert "test_roc_auc" in shown and "train.lr" in shown and "0.003" in shown, shown
    workspace, head = json.loads(sh(".venv/bin/dvc exp show --json", made).stdout)[:2]
    experiments = [rev for e in head.get("experiments") or [] for rev in e["revs"]]
    assert workspace["rev"] == "workspace" and experiments, (workspace, head)
    # Not the commit's own row: its outputs are in this clone's cache only when make run reproduced them bit for bit
    # (a fresh clone's are not, until `dvc pull`), else DVC shows "No storage files available" in their place.
    for rev in [workspace, *experiments]:
        assert rev.get("data"), (rev["rev"], rev.get("error"))  # DVC could not read this revision: say why
        metrics = rev["data"]["metrics"]["artifacts/evaluate/metrics.json"]["data"]
        assert metrics["test_roc_auc"] > 0.9, (rev["rev"], rev["data"]["metrics"])
    assert "train.lr" in sh(DVC_PARAMS_DIFF, made).stdout
    sh(DVC_METRICS_DIFF, made)
    sh(DVC_PLOTS_SHOW, made)
    assert "roc" in (made / "dvc_plots/index.html").read_text()
    assert champion(made, "medflow-breast-cancer") == before, "an experiment moved the champion"


def test_dvc_push_to_a_local_remote(made):
    sh(DVC_REMOTE_ADD, made)
    sh(DVC_PUSH, made)
    stored = [p for p in (made.parent / "medflow-dvc-remote").rglob("*") if p.is_file()]
    assert len(stored) >= 5, stored


def test_override_run_writes_yaml_values_into_params(made, prefect):
    from ruamel.yaml import YAML

    sh(OVERRIDE_RUN, made, timeout=600, **prefect)
    train = YAML(typ="safe").load((made / "params.yaml").read_text())["train"]
    assert train["hidden"] == [128, 64] and train["lr"] == 3e-4  # a number, as `dvc exp run -S` writes it
    assert "up to date" in sh(".venv/bin/dvc status", made).stdout


def test_digits_pipeline_keeps_its_own_outputs_and_scores_arrays_and_files(made, prefect, tmp_path):
    import mlflow
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    from medflow import tracking
    from medflow.paths import Paths

    skip = {"digits", "logs", "ui", ".run.lock"}
    before = tree_digest(made / "artifacts", skip), sh(".venv/bin/dvc status", made).stdout
    sh(DIGITS_RUN, made, timeout=600, **prefect)
    after = tree_digest(made / "artifacts", skip), sh(".venv/bin/dvc status", made).stdout
    assert after == before, "the digits pipeline changed the default one's outputs or its dvc status"
    assert sh("git status --porcelain expectations", made).stdout == ""

    paths = Paths.for_params(made, made / "examples/digits.yaml")
    metrics = json.loads(paths.metrics.read_text())
    assert metrics["n_test"] == 270 and metrics["test_accuracy"] >= 0.98, metrics
    assert json.loads(paths.summary("register").read_text())["promoted"]

    tracking.configure(paths)
    model = mlflow.pyfunc.load_model("models:/medflow-digits@champion")
    ds = load_digits()
    pixels = np.round(ds.images[:40] * 255 / 16).astype(np.uint8)
    from_arrays = model.predict(pixels)
    assert (from_arrays["prediction"].astype(int).to_numpy() == ds.target[:40]).mean() >= 0.9
    files = []
    for i, img in enumerate(pixels[:5]):
        files.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(img).save(files[-1])
    assert model.predict(files)["prediction"].tolist() == from_arrays["prediction"][:5].tolist()
    with pytest.raises(ValueError, match="this model takes"):
        model.predict(np.zeros((2, 28, 28), dtype=np.uint8))


def test_bring_your_own_table(made, prefect):
    from medflow.data.synthetic import synthetic_cohort

    synthetic_cohort(n_patients=150, seed=3).to_csv(made / "data/visits.csv", index=False)
    out = sh(f"{SALT}\n{OWN_TABLE}", made, timeout=600, **prefect).stdout
    assert "registered visits-outcome v" in out, out[-2000:]
    assert (made / "expectations/visits.json").exists()


def test_digits_as_the_dvc_pipeline(made):
    # As printed, on fewer epochs: the full example ran above.
    example = made / "examples/digits.yaml"
    example.write_text(re.sub(r"max_epochs: \d+", "max_epochs: 2", example.read_text()))
    sh(DIGITS_DVC, made, timeout=600)
    assert "up to date" in sh(".venv/bin/dvc status", made).stdout
    assert json.loads((made / "artifacts/evaluate/metrics.json").read_text())["n_test"] == 270


def test_make_test_runs_ruff_and_pytest_in_a_clone(clone):
    # The whole suite inside the suite would recurse: the clone's `make test` runs one test of one module, without
    # workers (each would import every test module's libraries again to collect).
    addopts = "-n 0 -k every_documented_command tests/test_readme.py"
    done = sh(MAKE_TEST, clone, timeout=600, PYTEST_ADDOPTS=addopts)
    assert "ruff check ." in done.stdout and re.search(r"\b1 passed\b", done.stdout), done.stdout[-2000:]


def postgres_up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=2).close()
        return True
    except OSError:
        return False


def test_scale_out_on_a_postgres_backed_tracking_server(made, prefect):
    if not postgres_up():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not listening on 127.0.0.1:5432")
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    db, port = f"medflow_readme_{os.getpid()}", str(free_port())

    def mine(command: str) -> str:
        return command.replace("/medflow", f"/{db}").replace(" medflow", f" {db}").replace("5000", port)

    sh(mine(CREATEDB), made)
    server = Background(mine(TRACKING_SERVER), made, made / "tracking-server.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/health", server.proc, timeout=180)
        sh(f"{mine(TO_SERVER)}\n{RUN_ON_SERVER}", made, timeout=600, **prefect)
        query = urllib.parse.urlencode({"filter": f"name='{params_model(made)}'"})
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/2.0/mlflow/model-versions/search?{query}") as answer:
            assert json.load(answer)["model_versions"], "nothing registered on the server"
        assert list((made / "mlruns/server-artifacts").rglob("MLmodel"))
    finally:
        server.stop()
        sh(f"dropdb -h 127.0.0.1 -U postgres --if-exists {db}", made, check=False)


def params_model(root: Path) -> str:
    import yaml

    return yaml.safe_load((root / "params.yaml").read_text())["register"]["model_name"]
