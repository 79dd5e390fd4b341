"""Training progress: a live bar on a terminal; on a pipe a dozen lines for a long run, never one per epoch."""

import io
import re

from test_training import toy

from medflow.models.tabular import build
from medflow.training.loop import FitConfig, Progress, fit, seed_everything


class Clock:
    """Time moves only when an epoch ends: `step` seconds per epoch."""

    def __init__(self, step: float):
        self.t, self.step = 0.0, step

    def __call__(self) -> float:
        return self.t


def row(loss: float) -> dict[str, float]:
    return {"train_loss": loss, "val_loss": loss, "val_accuracy": 0.9, "rows_per_s": 12345.0}


def feed(progress: Progress, epochs: int, best: int) -> list[str]:
    progress.start()
    for e in range(1, epochs + 1):
        progress.clock.t += progress.clock.step
        progress.update(e, row(1 / e), min(e, best))
    progress.close(epochs, row(1 / epochs), best, stopped_early=epochs < progress.total)
    return progress.stream.getvalue().splitlines()


def test_a_pipe_gets_a_line_every_k_epochs_and_the_last_with_eta_and_the_best_marked():
    lines = feed(Progress(200, stream=io.StringIO(), clock=Clock(0.01)), 200, best=150)
    epochs = [int(re.match(r"epoch (\d+)/200 ", line).group(1)) for line in lines]
    assert epochs == [1, 20, 40, 60, 80, 100, 120, 140, 160, 180, 200]
    assert "elapsed 0:00:" in lines[1] and "eta 0:00:" in lines[1] and "12,345 rows/s" in lines[1]
    assert "*best" in lines[1] and "(best 150)" in lines[-1]


def test_a_slow_run_gets_a_line_every_ten_seconds_and_an_early_stop_says_so():
    lines = feed(Progress(1000, stream=io.StringIO(), clock=Clock(6.0)), 30, best=10)
    # 6 s an epoch: a line every second epoch (10 s after the last one), the first and the last.
    assert [int(line.split()[1].split("/")[0]) for line in lines if line.startswith("epoch ")] == [
        1,
        *range(3, 31, 2),
        30,
    ]
    assert "elapsed 0:03:00  eta 1:37:00" in lines[-2]
    assert lines[-1] == "stopped early after epoch 30: no better val_loss since epoch 10"
    quiet = feed(Progress(1000, stream=io.StringIO(), clock=Clock(0.001)), 30, best=10)
    assert [line.split()[1] for line in quiet if line.startswith("epoch ")] == ["1/1000", "30/1000"]


def test_a_terminal_gets_a_live_bar_and_a_final_line():
    stream = io.StringIO()
    lines = feed(Progress(50, stream=stream, live=True, clock=Clock(0.01)), 50, best=50)
    text = stream.getvalue()
    assert "50/50" in text and "\r" in text  # tqdm redraws its line in place
    assert lines[-1].startswith("epoch 50/50") and "*best" in lines[-1]


def test_fit_reports_through_progress_and_resumes_its_count():
    x, y = toy(200)
    cfg = FitConfig(lr=1e-2, weight_decay=0, batch_size=32, max_epochs=4, patience=4, seed=0)
    seed_everything(0, True)
    stream = io.StringIO()
    fit(build("tabular_mlp", n_in=5, n_classes=2, hidden=[8], dropout=0.0), x[:150], y[:150], x[150:], y[150:], cfg,
        progress=Progress(4, stream=stream, every_k=2))  # fmt: skip
    assert [line.split()[1] for line in stream.getvalue().splitlines()] == ["1/4", "2/4", "4/4"]
