"""A process beside the run's own, for the work its next steps need not wait for: DVC's records and the figures.

In the run's process, DVC's hashing and YAML held the interpreter lock for ~0.6 s of a 9 s run, and matplotlib
(~0.5 s to import, ~60 ms a figure) took ~1 s more; here they take the machine's other core. Work is done in the
order it is handed over, so a step's figures are on disk before its record is written. Outside `started()` (a step
that `dvc repro` runs), figures are drawn in the calling process.

The process is `python -m medflow.sidecar`, fed pickled calls on its stdin, not a multiprocessing pool: a pool's
process imports the parent's main module, and a user's script that starts the flow without a `__main__` guard
would start it again.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from subprocess import PIPE

from medflow import imports
from medflow.paths import Paths


class _Channel:
    """One sidecar process and the calls it has yet to answer, in the order they were made."""

    def __init__(self) -> None:
        # The run's import path, as multiprocessing gives its processes: a call names its function by module.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self.process = subprocess.Popen([sys.executable, "-m", "medflow.sidecar"], stdin=PIPE, stdout=PIPE, env=env)
        # Niced: it works while the run's process waits or the machine has a core to spare, not in their place.
        # Started beside a temporary Prefect server's start, un-niced it cost the run ~0.5 s more than it saved.
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, self.process.pid, 10)
        self.waiting: list[Future] = []
        self.lock = threading.Lock()  # the flow's threads hand work over too
        threading.Thread(target=self._answers, name="medflow-sidecar", daemon=True).start()

    def submit(self, fn: Callable, *args) -> Future:
        future: Future = Future()
        with self.lock:
            self.waiting.append(future)
            try:
                pickle.dump((fn, args), self.process.stdin)
                self.process.stdin.flush()
            except OSError as exc:
                self.waiting.remove(future)
                raise RuntimeError(f"medflow's sidecar process is gone: {exc}") from exc
        return future

    def close(self) -> None:
        with self.lock, contextlib.suppress(OSError):
            self.process.stdin.close()

    def _answers(self) -> None:
        while True:
            try:
                ok, value = pickle.load(self.process.stdout)
            except (EOFError, OSError):
                break
            except Exception:
                # An answer this process cannot read: the ones after it would be matched to the wrong calls.
                self.process.kill()
                break
            with self.lock:
                future = self.waiting.pop(0)
            future.set_result(value) if ok else future.set_exception(value)
        code = self.process.wait()
        with self.lock:
            lost, self.waiting = self.waiting, []
        for future in lost:
            future.set_exception(RuntimeError(f"medflow's sidecar process exited with code {code}"))


def _drawing_result(what: str, future: Future) -> None:
    try:
        future.result()
    except Exception as exc:
        raise RuntimeError(f"drawing {what}: {type(exc).__name__}: {exc}") from exc


class Sidecar:
    def __init__(self) -> None:
        self._channel: _Channel | None = None
        self._drawing: list[tuple[str, Future]] = []
        self._after: list[tuple[str, Future]] = []  # (step, its work once its figures are drawn)
        self._lock = threading.Lock()

    def __reduce__(self):
        # Prefect pickles a served flow with its globals: the process's one sidecar travels as a name.
        return (_the_sidecar, ())

    @contextlib.contextmanager
    def started(self) -> Iterator[None]:
        """The process, for the duration of the block; a block inside another uses the outer one's."""
        if self._channel is not None:
            yield
            return
        self._channel = _Channel()
        try:
            yield
        finally:
            # Work already handed over is still done, after a failed step too: a rerun resumes after the steps
            # that finished. The process ends on its own once it is.
            channel, self._channel = self._channel, None
            channel.close()
            self._after = []

    def record(self, paths: Paths, steps: list[str]) -> None:
        """Writes the steps' records into dvc.lock (medflow.pipeline.record_in_dvc) and returns once they are."""
        from medflow.pipeline import record_elsewhere

        with self.started():
            self._channel.submit(record_elsewhere, str(paths.root), steps).result()

    def draw(self, what: str, fn: Callable[..., None], *args) -> None:
        """Calls fn(*args), a module-level function that writes figures, in the sidecar; `drawn()` waits for them."""
        channel = self._channel
        if channel is None:
            fn(*args)
            return
        future = channel.submit(fn, *args)
        with self._lock:
            self._drawing.append((what, future))

    def drawn(self) -> None:
        """Returns once every figure handed over is written; a failure is raised here, naming what was drawn."""
        while True:
            with self._lock:
                if not self._drawing:
                    return
                what, future = self._drawing.pop(0)
            _drawing_result(what, future)

    def after_drawing(self, step: str, fn: Callable[..., None], *args) -> None:
        """Calls fn(*args) once every figure handed over so far is drawn, in a thread of this process, so that the
        run goes on meanwhile; `finished(step)` waits for it. Outside `started()`, at once."""
        if self._channel is None:
            self.drawn()
            fn(*args)
            return
        with self._lock:
            drawing, self._drawing = self._drawing, []
        done: Future = Future()

        def work() -> None:
            try:
                for what, future in drawing:
                    _drawing_result(what, future)
                done.set_result(fn(*args))
            except Exception as exc:
                done.set_exception(exc)

        threading.Thread(target=work, name=f"medflow-{step}-after-drawing", daemon=True).start()
        with self._lock:
            self._after.append((step, done))

    def finished(self, step: str | None = None) -> None:
        """Returns once the work that `step` (None: every step) handed to `after_drawing` is done; a failure is
        raised as that step's, as often as this is asked."""
        from medflow.pipeline import StepFailed

        with self._lock:
            work = [(s, future) for s, future in self._after if step in (None, s)]
        for s, future in work:
            try:
                future.result()
            except Exception as exc:
                raise StepFailed(s, exc) from exc


sidecar = Sidecar()


def _the_sidecar() -> Sidecar:
    return sidecar


def _answerable(exc: Exception) -> Exception:
    """The exception as the run's process can receive it, with this process's traceback for its log file."""
    where = "".join(traceback.format_exception(exc))
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        # Not every library's exception survives the way back: its name and message do.
        exc = RuntimeError(f"{type(exc).__name__}: {exc}")
    exc.add_note(f"in medflow's sidecar process:\n{where}")
    return exc


def main() -> None:
    # A Ctrl-C reaches the whole process group: the work in hand is finished, and the process ends once the run
    # that started it closes its end of the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    calls, answers = sys.stdin.buffer, os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # what the work prints goes to the terminal, not the pipe
    # What the calls need (matplotlib, pandas, DVC: ~1.5 s), imported before the first one comes;
    # an import that fails here fails again in the call that needs it, and is answered there.
    with contextlib.suppress(Exception), imports.heavy():
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot  # noqa: F401
        from dvc.repo import Repo  # noqa: F401

        import medflow.data.profile  # noqa: F401
        import medflow.evaluation.plots  # noqa: F401
        import medflow.pipeline  # noqa: F401

    while True:
        try:
            fn, args = pickle.load(calls)
        except EOFError:
            # The run has everything it asked for. Freeing DVC's, matplotlib's and pandas' module state at teardown
            # takes ~0.3 s that a caller reading the run's output (this process shares it) would wait for.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        try:
            answer = (True, fn(*args))
        except Exception as exc:
            answer = (False, _answerable(exc))
        if answers is None:
            continue
        try:
            pickle.dump(answer, answers)
            answers.flush()
        except OSError:
            # The run has ended (a failed step ends it at once) and reads no more answers; what it handed over is
            # still done, and the one-line error it printed stays the last thing on its terminal.
            answers = None


if __name__ == "__main__":
    main()
