"""`medflow run` as users meet it on a bad day: runs started together, SIGTERM, a kill mid-pipeline, a broken
store. Each through the real executable in one scratch clone; the tests run in file order on the project state
the previous one left (validate, clean and split run once, later runs start at train or after)."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from usercmd import scratch_clone, sh, user_env

from medflow.tracking.audit import PREFIX as AUDIT

pytestmark = pytest.mark.e2e  # the real executable on a scratch clone: `make test`, not `make test-fast`

RUN_TINY = ".venv/bin/medflow run --force -P train.max_epochs=3 -P train.lr=3e-4 -P validate.data_docs=false"


def start(command: str, root, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        ["bash", "-c", f"exec {command}"], cwd=root, env=user_env(root, OMP_NUM_THREADS="1", **env), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


def wait_for(ready, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"exited {proc.returncode} before it was time:\n{proc.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, f"not ready in {timeout} s"
        time.sleep(0.05)


def one_error_line(stderr: str) -> str:
    """stderr's last line, checked to be medflow's one word on the failure: no traceback on the terminal."""
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = stderr.splitlines()
    assert lines[-1].startswith("medflow run: error: ") and sum(line.startswith("medflow") for line in lines) == 1
    return lines[-1]


def mlflow_runs(root) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlruns/mlflow.db'}")
    # The audit trail's records are runs too, in experiments of their own.
    ids = [e.experiment_id for e in client.search_experiments() if not e.name.startswith(AUDIT)]
    return client.search_runs(ids, order_by=["attributes.start_time DESC"])


@pytest.fixture(scope="module")
def clone(tmp_path_factory, migrated_mlflow_db):
    return scratch_clone(tmp_path_factory.mktemp("faults") / "medflow", migrated_mlflow_db)


@pytest.fixture(scope="module")
def server(prefect_server):
    """The session's Prefect server, for the runs whose fault is not Prefect's: a temporary server started per run
    costs seconds each. Signals and the temporary server's own start keep Prefect's default, as users meet it."""
    return {"PREFECT_API_URL": prefect_server}


def test_four_runs_at_once_one_runs_the_others_say_busy_and_the_project_stays_consistent(clone, server):
    procs = [start(RUN_TINY, clone, **server) for _ in range(4)]
    outputs = [p.communicate(timeout=900) for p in procs]
    done = [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs, strict=True)]
    ran = [(out, err) for rc, out, err in done if rc == 0]
    busy = [err for rc, _, err in done if rc != 0]
    assert ran and len(ran) + len(busy) == 4, [(rc, err[-500:]) for rc, _, err in done]
    for err in busy:
        line = one_error_line(err)
        assert re.search(r"busy: another medflow run \(PID \d+\)", line), line
    out, err = ran[0]
    assert "registered medflow-breast-cancer" in out
    # Progress on a pipe: epoch n/N with elapsed, ETA and throughput, the best epoch marked.
    progress = [line for line in (out + err).splitlines() if re.search(r"epoch \d+/3 ", line)]
    assert progress and "epoch 3/3" in progress[-1] and "eta" in progress[0] and "rows/s" in progress[0]
    # -P is YAML 1.2, as `dvc exp run -S` writes it: 3e-4 is a number, not the string '3e-4'.
    assert re.search(r"^  lr: 3e-4 ", (clone / "params.yaml").read_text(), flags=re.M)  # as typed
    assert "up to date" in sh(".venv/bin/dvc status", clone).stdout


def test_sigterm_stops_training_within_seconds_marks_the_mlflow_run_killed_and_stops_prefects_server(clone):
    proc = start(".venv/bin/medflow run -P train.max_epochs=100000 -P train.patience=100000", clone)
    wait_for((clone / "artifacts/.checkpoints/train.pt").exists, proc)  # written each epoch: training is under way
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert time.monotonic() - t0 < 20
    assert proc.returncode == 130
    line = one_error_line(err)
    assert line.startswith("medflow run: error: train interrupted (SIGTERM)") and "log: " in line
    assert "Interrupted: SIGTERM" in Path(line.rsplit("log: ", 1)[1].rstrip(")")).read_text()
    assert mlflow_runs(clone)[0].info.status == "KILLED"
    port = int(re.search(r"temporary server on http://127\.0\.0\.1:(\d+)", err).group(1))
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def test_ctrl_c_in_a_terminal_stops_the_run_and_its_temporary_server_within_seconds(clone):
    checkpoint = clone / "artifacts/.checkpoints/train.pt"
    checkpoint.unlink(missing_ok=True)  # the last test's: this run's own one says training is under way
    proc = start(".venv/bin/medflow run -P train.max_epochs=100000 -P train.patience=100000", clone)
    wait_for(checkpoint.exists, proc)
    t0 = time.monotonic()
    # Ctrl-C (and `timeout`) signal the terminal's whole foreground process group, not one process.
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert time.monotonic() - t0 < 20, err[-3000:]
    assert proc.returncode == 130
    assert one_error_line(err).startswith("medflow run: error: train interrupted")
    port = int(re.search(r"temporary server on http://127\.0\.0\.1:(\d+)", err).group(1))
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def test_a_run_killed_during_evaluate_resumes_at_evaluate_without_retraining(clone, server):
    evaluate = clone / "artifacts/evaluate"
    marker = evaluate / "left-by-the-last-run"
    evaluate.mkdir(parents=True, exist_ok=True)
    marker.touch()
    proc = start(".venv/bin/medflow run -P train.max_epochs=4 -P train.patience=20", clone)
    # A step starts from an empty folder: the marker is gone once evaluate has begun.
    wait_for(lambda: evaluate.is_dir() and not marker.exists(), proc)
    os.killpg(proc.pid, signal.SIGKILL)  # the run and its temporary Prefect server, as a crash would
    killed = proc.communicate(timeout=60)[1]
    trained = (clone / "artifacts/train/run.json").read_text()

    again = sh(".venv/bin/medflow run", clone, **server)
    output = again.stdout + again.stderr
    assert "steps to run: evaluate, register" in output, killed[-3000:] + output[-3000:]
    assert not re.search(r"epoch \d+/", output)
    assert (clone / "artifacts/train/run.json").read_text() == trained
    assert "registered medflow-breast-cancer" in again.stdout
    assert "up to date" in sh(".venv/bin/dvc status", clone).stdout


def test_a_step_that_fails_mid_run_leaves_its_one_line_last_with_nothing_after_it(clone, server):
    """A failed step ends the run: its one-line error is the last thing printed, with no traceback after it."""
    params = (clone / "params.yaml").read_text()
    (clone / "convnet.yaml").write_text(params.replace("model: tabular_mlp", "model: cifar_convnet"))
    bad = sh(".venv/bin/medflow run --params convnet.yaml", clone, check=False, **server)
    assert bad.returncode == 2
    assert "train: train.model='cifar_convnet' is for images" in one_error_line(bad.stderr)


def test_a_params_file_that_cannot_be_read_twice_is_refused_before_anything_runs(clone):
    bad = sh(".venv/bin/medflow run --params <(cat params.yaml)", clone, check=False)
    assert bad.returncode == 2
    assert "is not a regular file" in one_error_line(bad.stderr)
    assert "steps to run" not in bad.stdout


def test_a_failure_is_one_line_naming_step_cause_and_remedy_with_the_traceback_in_a_log(clone, server):
    bad = sh(".venv/bin/medflow run -P train.lr=fast", clone, check=False)
    assert bad.returncode == 2
    assert "train.lr" in one_error_line(bad.stderr)

    db = clone / "mlruns/mlflow.db"
    shutil.copy(db, db.with_suffix(".bak"))
    db.write_bytes(b"this is not an SQLite database" * 100)
    try:
        broken = sh(
            ".venv/bin/medflow run -P train.max_epochs=2 -P flow.retry_delay_s=0.1", clone, check=False, **server
        )
    finally:
        shutil.move(db.with_suffix(".bak"), db)
    assert broken.returncode == 1
    line = one_error_line(broken.stderr)
    assert line.startswith("medflow run: error: train: MLflow store error:"), line
    assert "MLFLOW_TRACKING_URI" in line
    # A store error may be passing (`database is locked`): train is retried as many times as params say.
    assert "Retry 2/2 will start 0.2 second(s) from now" in broken.stderr
    assert "Traceback" in Path(line.rsplit("log: ", 1)[1].rstrip(")")).read_text()

    endless = "-P train.max_epochs=100000 -P train.patience=100000 -P flow.train_timeout_s=3"
    late = sh(f".venv/bin/medflow run {endless}", clone, check=False, timeout=300, **server)
    assert late.returncode == 1
    assert "train timed out" in one_error_line(late.stderr) and "flow.train_timeout_s" in late.stderr

    slow = sh("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=1 .venv/bin/medflow run", clone, check=False)
    assert slow.returncode == 1
    line = one_error_line(slow.stderr)
    assert "Prefect's temporary server did not start in time" in line and "PREFECT_API_URL" in line


HOLD_THE_LOCK = """
import sys, time
from pathlib import Path
from medflow.paths import Paths
from medflow.runlock import run_lock
with run_lock(Paths(root=Path(sys.argv[1]))):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_the_run_lock_names_its_holder_or_waits_for_it(tmp_path):
    from medflow.paths import Paths
    from medflow.runlock import Busy, run_lock

    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_LOCK, str(tmp_path), "3"], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline() == "held\n"
    with pytest.raises(Busy, match=rf"another medflow run \(PID {holder.pid}\) holds"), run_lock(Paths(tmp_path)):
        pass
    t0 = time.monotonic()
    with run_lock(Paths(tmp_path), wait_s=120):
        assert time.monotonic() - t0 > 1  # it had to wait for the holder's 3 s
    assert holder.wait(timeout=30) == 0
    with run_lock(Paths(tmp_path)):  # released: a killed holder's lock goes with it, as does a finished one's
        pass


def test_a_run_started_from_another_folder_with_root_records_every_step(clone, tmp_path, server):
    # DVC's commit resolves stages against the working directory: from elsewhere its records used to fail (and
    # were retried for 15 s) with "file path ... is outside of DVC repo".
    # The tests before this one left a 3-s training timeout in params.yaml.
    tiny = "-P train.max_epochs=2 -P flow.train_timeout_s=3600"
    done = sh(f"{clone}/.venv/bin/medflow --root {clone} run --force {tiny}", tmp_path, **server)
    assert "registered medflow-breast-cancer" in done.stdout, done.stderr[-3000:]
    assert "up to date" in sh(".venv/bin/dvc status", clone).stdout
