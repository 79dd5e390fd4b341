"""Checkpoint/resume: a run killed mid-training and restarted ends exactly where an uninterrupted one does."""

import os
import signal
import subprocess
import sys

import pytest
import torch
from test_training import image_cfg, step_params, strip, toy, toy_images, write_upstream

from medflow.models.tabular import build
from medflow.training.loop import FitConfig, fit, seed_everything


class Killed(RuntimeError):
    pass


def die_at(epoch: int):
    def on_epoch(e, row):
        if e == epoch:
            raise Killed(f"killed after epoch {e}")

    return on_epoch


def problem(kind: str):
    """(build, tensors, config): a table with dropout + AdamW + class weights; images with BN, SGD and augmentation."""
    if kind == "table":
        x, y = toy(300)
        cfg = FitConfig(
            lr=1e-2, weight_decay=1e-4, batch_size=32, max_epochs=7, patience=7, seed=0, class_weights=[1.0, 1.5]
        )
        return (
            (lambda: build("tabular_mlp", n_in=5, n_classes=2, hidden=[16], dropout=0.3)),
            (x[:200], y[:200], x[200:], y[200:]),
            cfg,
        )
    x, y = toy_images(160)
    cfg = image_cfg(x[:120], optimizer="sgd", lr=0.05, max_epochs=7, patience=7, augment_flip=True, augment_translate=1)
    t = (x[:120], y[:120], x[120:], y[120:])
    return (lambda: build("resnet_small", in_shape=[1, 8, 8], n_classes=3)), tuple(map(torch.from_numpy, t)), cfg


def train(make, data, cfg, on_epoch=None):
    seed_everything(0, True)
    model = make()
    return model, fit(model, *data, cfg, on_epoch)


@pytest.mark.parametrize("kind", ["table", "image"])
def test_a_killed_run_resumes_to_exactly_the_uninterrupted_result(tmp_path, kind):
    make, data, cfg = problem(kind)
    ref_model, ref = train(make, data, FitConfig(**{**cfg.__dict__, "checkpoint": tmp_path / "ref.pt"}))

    cfg = FitConfig(**{**cfg.__dict__, "checkpoint": tmp_path / "ckpt.pt", "checkpoint_every": 2})
    with pytest.raises(Killed):
        train(make, data, cfg, die_at(5))  # the last checkpoint is epoch 4's: epoch 5 is redone
    torch.manual_seed(1234)  # the restarted process's RNG is elsewhere: the checkpoint must carry it
    model = make()
    seen = []
    res = fit(model, *data, cfg, on_epoch=lambda e, r: seen.append(e))
    assert res.resumed_from == 4 and seen == [5, 6, 7]
    assert strip(res.history) == strip(ref.history)
    assert (res.best_epoch, res.best_val_loss, res.epochs_run) == (ref.best_epoch, ref.best_val_loss, ref.epochs_run)
    for (name, a), b in zip(ref_model.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_checkpoints_on_an_interval_are_the_first_and_the_last_epoch_and_resume_from_the_first(tmp_path, monkeypatch):
    """An interval longer than the run: one save after the first epoch (training is under way) and one after the
    last; a kill in between redoes every epoch after the first, and still ends with the uninterrupted weights."""
    from medflow.training import checkpoint

    make, data, cfg = problem("table")
    ref_model, ref = train(make, data, cfg)
    saved = []
    save = checkpoint.save
    monkeypatch.setattr(checkpoint, "save", lambda path, state: (saved.append(state["epoch"]), save(path, state)))
    cfg = FitConfig(**{**cfg.__dict__, "checkpoint": tmp_path / "ckpt.pt", "checkpoint_interval_s": 3600})
    with pytest.raises(Killed):
        train(make, data, cfg, die_at(5))
    assert saved == [1]
    model, res = train(make, data, cfg)
    assert res.resumed_from == 1 and saved == [1, 7]
    assert strip(res.history) == strip(ref.history)
    for (name, a), b in zip(ref_model.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_a_checkpoint_of_another_configuration_or_data_is_not_resumed(tmp_path, capsys):
    make, data, cfg = problem("table")
    cfg = FitConfig(**{**cfg.__dict__, "checkpoint": tmp_path / "ckpt.pt"})
    with pytest.raises(Killed):
        train(make, data, cfg, die_at(3))
    assert train(make, data, FitConfig(**{**cfg.__dict__, "lr": 2e-2}))[1].resumed_from == 0
    assert "another configuration or data" in capsys.readouterr().out
    with pytest.raises(Killed):
        train(make, data, cfg, die_at(3))
    other = (data[0] + 0.01, *data[1:])
    assert train(make, other, cfg)[1].resumed_from == 0
    with pytest.raises(Killed):
        train(make, data, cfg, die_at(3))
    assert train(make, data, FitConfig(**{**cfg.__dict__, "resume": False}))[1].resumed_from == 0
    assert train(make, data, cfg)[1].resumed_from == 7  # the last run's final checkpoint: nothing left to do


def test_the_train_step_resumes_after_a_crash_and_clears_its_checkpoint(tmp_path, project, monkeypatch):
    from mlflow import MlflowClient

    from medflow import tracking
    from medflow.paths import Paths
    from medflow.pipeline import run_step
    from medflow.steps import train as step

    params = step_params(max_epochs=6, patience=6, hidden=[8], dropout=0.2, checkpoint_interval_s=0)
    write_upstream(project)
    reference = Paths(root=tmp_path / "reference")
    reference.mlruns.mkdir(parents=True)
    (reference.mlruns / "mlflow.db").write_bytes(project.mlflow_db.read_bytes())
    write_upstream(reference)
    step.run(params, reference)

    log_epoch = tracking.log_epoch

    def crash_at_epoch_4(run_id, row, step):
        if step == 4:
            raise Killed("node lost")
        log_epoch(run_id, row, step)

    monkeypatch.setattr(tracking, "log_epoch", crash_at_epoch_4)
    # Through run_step, as the flow and `medflow step` (dvc repro) run it: it empties artifacts/train first.
    with pytest.raises(Killed):
        run_step("train", params, project)
    monkeypatch.setattr(tracking, "log_epoch", log_epoch)
    assert project.checkpoint.exists()
    summary = run_step("train", params, project)
    assert summary["resumed_from"] == 4 and summary["epochs_run"] == 6
    assert not project.checkpoint.exists()
    expected = torch.load(reference.model_bundle / "weights.pt", weights_only=True)
    got = torch.load(project.model_bundle / "weights.pt", weights_only=True)
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    client = MlflowClient(f"sqlite:///{project.mlflow_db}")
    history = client.get_metric_history(summary["run_id"], "val_loss")
    assert sorted(m.step for m in history) == [1, 2, 3, 4, 5, 6]  # the restored epochs are logged too
    failed = [
        r
        for r in client.search_runs([client.get_run(summary["run_id"]).info.experiment_id])
        if r.info.status == "FAILED"
    ]
    assert len(failed) == 1


@pytest.mark.full  # two training processes, one killed: `make test`, not `make test-fast`
def test_a_process_killed_mid_epoch_resumes(tmp_path):
    """SIGKILL in the middle of epoch 4 (no handler runs, epoch 4's updates are lost), then a new process:
    it redoes epoch 4 from epoch 3's checkpoint and ends with the weights of one clean run."""
    script = tmp_path / "job.py"
    script.write_text(
        "import sys, time, torch\n"
        "from pathlib import Path\n"
        "from test_resume import problem\n"
        "from medflow.training.loop import FitConfig, fit, seed_everything\n"
        "torch.set_num_threads(1)\n"
        "make, data, cfg = problem('table')\n"
        "cfg = FitConfig(**{**cfg.__dict__, 'checkpoint': Path(sys.argv[1]), 'max_epochs': 10, 'patience': 10})\n"
        "seed_everything(0, True)\n"
        "model = make()\n"
        "steps = [0]\n"
        "def stall(module, args):  # training forward number argv[3] never returns\n"
        "    steps[0] += module.training\n"
        "    if steps[0] == int(sys.argv[3]):\n"
        "        print('stalled', flush=True)\n"
        "        time.sleep(60)\n"
        "model.register_forward_pre_hook(stall)\n"
        "fit(model, *data, cfg)\n"
        "torch.save(model.state_dict(), sys.argv[2])\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")])}

    def job(name, stall_at=0):
        args = [sys.executable, str(script), str(tmp_path / f"{name}.pt"), str(tmp_path / f"{name}_weights.pt")]
        return subprocess.Popen([*args, str(stall_at)], env=env, stdout=subprocess.PIPE, text=True)

    victim = job("a", stall_at=3 * 7 + 3)  # 200 rows / batch 32 = 7 steps an epoch: epoch 4, step 3
    assert victim.stdout.readline().strip() == "stalled"
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    resumed, clean = job("a"), job("b")
    out, _ = resumed.communicate(timeout=60)
    assert clean.wait(timeout=60) == 0 and resumed.returncode == 0
    assert "resuming after epoch 3" in out
    a, b = (torch.load(tmp_path / f"{n}_weights.pt", weights_only=True) for n in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_training_killed_without_a_word_is_marked_killed_in_mlflow_by_the_next_one(project):
    """SIGKILL runs no handler: the run it left RUNNING is closed as KILLED when the pipeline's next train starts."""
    from mlflow import MlflowClient

    from medflow import tracking
    from medflow.pipeline import run_step

    params = step_params(max_epochs=2, patience=2, hidden=[8])
    write_upstream(project)
    tracking.configure(project)
    project.checkpoint.parent.mkdir(parents=True, exist_ok=True)
    orphan = tracking.start_run(params, project)  # what a killed train leaves: a RUNNING run and its id on disk
    project.training_run.write_text(orphan)
    summary = run_step("train", params, project)
    client = MlflowClient(f"sqlite:///{project.mlflow_db}")
    assert client.get_run(orphan).info.status == "KILLED"
    assert client.get_run(summary["run_id"]).info.status == "FINISHED"
    assert not project.training_run.exists()
