"""A requested stop always lands: when no batch boundary comes within the bound, the blocked main
thread is interrupted (or, if it never returns to Python, the process ends), with one sentence
naming the newest checkpoint there is. The whole train.py path is the battery's
stop-sigterm-during-blocked-batch case (tests/reliability/cases_folders.py)."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from callbacks.interrupt import InterruptCheckpoint
from callbacks.stop_deadline import DEFAULT_SECONDS, ENV, StopDeadline, StopTimedOut, stop_timeout
from gan_lightning.errors import ConfigError


def timed_out(signum: int) -> StopTimedOut:
    return StopTimedOut("stopped late", signum)


@pytest.fixture
def sigterm_checks():
    """Installs a SIGTERM handler that only asks the deadline, as InterruptCheckpoint's does."""
    deadlines = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: [d.check() for d in deadlines])
    yield deadlines
    for deadline in deadlines:
        deadline.cancel()
    signal.signal(signal.SIGTERM, previous)


def test_a_blocked_main_thread_is_interrupted_after_the_bound(sigterm_checks):
    exits = []
    deadline = StopDeadline(timed_out, seconds=0.3, grace=5, exit=exits.append)
    sigterm_checks.append(deadline)
    began = time.monotonic()
    deadline.start(signal.SIGTERM)
    with pytest.raises(StopTimedOut, match="stopped late") as error:
        time.sleep(10)  # a read that never returns
    assert 0.3 <= time.monotonic() - began < 3
    assert error.value.exit_status == 128 + signal.SIGTERM
    deadline.cancel()
    time.sleep(0.2)
    assert not exits  # interrupted in time: the last resort was not needed


def test_code_that_never_returns_to_python_is_ended_with_the_sentence(capfd):
    ended = threading.Event()
    statuses = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)  # a handler that cannot stop it
    try:
        deadline = StopDeadline(timed_out, seconds=0.1, grace=0.1, exit=lambda status: (statuses.append(status), ended.set()))
        deadline.start(signal.SIGTERM)
        assert ended.wait(5)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert statuses == [128 + signal.SIGTERM]
    assert "error: stopped late; nothing was saved" in capfd.readouterr().err


def test_a_stop_that_lands_in_time_sends_nothing(sigterm_checks):
    deadline = StopDeadline(timed_out, seconds=0.2, grace=0.1, exit=pytest.fail)
    sigterm_checks.append(deadline)
    deadline.start(signal.SIGTERM)
    deadline.start(signal.SIGTERM)  # a second signal does not move the deadline
    deadline.cancel()
    time.sleep(0.5)
    assert deadline.error is None


def test_the_sentence_names_the_newest_checkpoint_and_how_to_resume(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    callback = InterruptCheckpoint()
    callback._folder, callback.argv = folder, ["fit", "--trainer.max_epochs", "3"]
    callback._deadline = StopDeadline(callback._timed_out, seconds=7)
    assert str(callback._timed_out(signal.SIGTERM)).endswith("no checkpoint had been written yet")
    for age, name in ((100, "epoch=0.ckpt"), (0, "last.ckpt")):
        (folder / name).write_bytes(b"x")
        os.utime(folder / name, (time.time() - age, time.time() - age))
    text = str(callback._timed_out(signal.SIGTERM))
    assert text.startswith("training stopped by SIGTERM without a new checkpoint, because no batch boundary came within 7 s")
    last = folder / "last.ckpt"
    assert f"the newest checkpoint is {last}; resume with: python train.py --trainer.max_epochs 3 --ckpt_path {last}" in text


@pytest.mark.parametrize("value, seconds", [("", DEFAULT_SECONDS), ("2.5", 2.5)])
def test_the_bound_comes_from_the_environment(monkeypatch, value, seconds):
    monkeypatch.setenv(ENV, value)
    assert stop_timeout() == seconds


@pytest.mark.parametrize("value", ["soon", "0", "-1", "nan", "inf"])
def test_a_bound_that_is_not_a_positive_number_is_one_sentence(monkeypatch, value):
    monkeypatch.setenv(ENV, value)
    with pytest.raises(ConfigError, match=rf"^{ENV} must be a number of seconds above 0 \(default 20\), got '{value}'$"):
        stop_timeout()
