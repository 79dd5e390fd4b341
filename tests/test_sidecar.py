"""The sidecar process that draws the run's figures and writes its DVC records beside it."""

import os
import pickle
import subprocess
import sys
import time
from pathlib import Path
from subprocess import PIPE

import pytest

from medflow.sidecar import Sidecar


def write(path: Path, text: str) -> None:
    time.sleep(0.2)  # slower than the next call's handing over: the order is the process's, not luck's
    path.write_text(text)


def fail(message: str) -> None:
    raise KeyError(message)


class Unpicklable(Exception):
    def __init__(self, a, b):
        super().__init__(f"{a} and {b}")


def fail_unpicklably() -> None:
    raise Unpicklable("lock", "key")


def test_work_is_done_in_the_order_it_is_handed_over_and_drawn_waits_for_it(tmp_path):
    sidecar = Sidecar()
    with sidecar.started():
        process = sidecar._channel.process
        assert os.getpriority(os.PRIO_PROCESS, process.pid) >= 10  # works in the run's spare time, not in its place
        sidecar.draw("first", write, tmp_path / "a", "1")
        sidecar.draw("second", write, tmp_path / "a", "2")
        sidecar.drawn()
        assert (tmp_path / "a").read_text() == "2"
    # Closed, it ends on its own once its work is done: no process outlives the run.
    deadline = time.monotonic() + 10
    while process.poll() is None:
        assert time.monotonic() < deadline, "the sidecar did not end"
        time.sleep(0.05)


def test_a_failure_comes_back_with_its_type_or_its_name_and_the_sidecars_traceback(tmp_path):
    sidecar = Sidecar()
    with sidecar.started():
        sidecar.draw("the ROC curve", fail, "no positives")
        with pytest.raises(RuntimeError, match=r"drawing the ROC curve: KeyError: 'no positives'") as caught:
            sidecar.drawn()
        assert isinstance(caught.value.__cause__, KeyError)
        assert "in medflow's sidecar process" in "".join(caught.value.__cause__.__notes__)
        sidecar.draw("a record", fail_unpicklably)
        with pytest.raises(RuntimeError, match=r"drawing a record: RuntimeError: Unpicklable: lock and key"):
            sidecar.drawn()
        sidecar.draw("after the failures", write, tmp_path / "b", "still working")
        sidecar.drawn()
    assert (tmp_path / "b").read_text() == "still working"


def die() -> None:
    os._exit(3)


def test_a_sidecar_that_dies_fails_what_it_had_in_hand_instead_of_hanging(tmp_path):
    sidecar = Sidecar()
    with sidecar.started():
        sidecar.draw("a crash", die)
        sidecar.draw("what came after", write, tmp_path / "d", "never")
        with pytest.raises(RuntimeError, match=r"drawing a crash: RuntimeError: .*exited with code 3"):
            sidecar.drawn()
        with pytest.raises(RuntimeError, match="drawing what came after"):
            sidecar.drawn()
    assert not (tmp_path / "d").exists()


def test_a_run_that_has_ended_gets_no_traceback_from_its_sidecar_and_its_work_is_still_done(tmp_path):
    """A failed step ends the run while the sidecar still works: its answers then have nowhere to go."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    process = subprocess.Popen([sys.executable, "-m", "medflow.sidecar"], stdin=PIPE, stdout=PIPE, stderr=PIPE, env=env)
    process.stdout.close()  # the run is gone before the first answer
    for name in ("a", "b"):
        pickle.dump((write, (tmp_path / name, name)), process.stdin)
    process.stdin.close()
    assert process.wait(timeout=60) == 0
    assert "Traceback" not in process.stderr.read().decode()
    assert [(tmp_path / n).read_text() for n in ("a", "b")] == ["a", "b"]


def test_outside_a_run_figures_are_drawn_in_the_calling_process(tmp_path):
    Sidecar().draw("inline", write, tmp_path / "c", "here")
    assert (tmp_path / "c").read_text() == "here"


def test_a_flow_pickled_with_its_globals_takes_the_sidecar_by_name():
    # `medflow serve` hands each flow run to a process of its own, with the flow cloudpickled by value.
    import cloudpickle

    from medflow.sidecar import sidecar

    assert cloudpickle.loads(cloudpickle.dumps(sidecar)) is sidecar


def test_work_after_drawing_waits_for_the_figures_not_the_caller_and_its_failure_is_its_steps(tmp_path):
    from medflow.pipeline import StepFailed

    sidecar = Sidecar()
    with sidecar.started():
        sidecar.draw("a slow figure", write, tmp_path / "fig", "drawn")
        sidecar.after_drawing("evaluate", lambda: (tmp_path / "logged").write_text((tmp_path / "fig").read_text()))
        assert not (tmp_path / "logged").exists()  # the caller went on while the figure was drawn
        sidecar.finished("evaluate")
        assert (tmp_path / "logged").read_text() == "drawn"

        sidecar.draw("a broken figure", fail, "no positives")
        sidecar.after_drawing("register", write, tmp_path / "never", "x")
        sidecar.finished("evaluate")  # another step's work is not waited for, nor its failure raised
        for _ in range(2):  # as often as it is asked: a retried record meets the same failure
            with pytest.raises(StepFailed, match=r"register: RuntimeError: drawing a broken figure: KeyError"):
                sidecar.finished()
    assert not (tmp_path / "never").exists()


def test_outside_a_run_work_after_drawing_is_done_at_once(tmp_path):
    Sidecar().after_drawing("evaluate", write, tmp_path / "now", "done")
    assert (tmp_path / "now").read_text() == "done"
