"""A stop that always lands: the bound on how long a requested stop may wait for a batch boundary.

SIGTERM and a first Ctrl-C only set a flag that the next batch boundary reads. A batch that never
ends (a read from a hung network disk or a named pipe, a peer that vanished) would leave the
signal printed and ignored until the scheduler's SIGKILL, with no word on what was saved.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
from typing import Callable, Optional

from gan_lightning.errors import ConfigError, TrainingInterrupted

ENV = "GAN_LIGHTNING_STOP_TIMEOUT"
# SLURM (KillWait) and Kubernetes (terminationGracePeriodSeconds) send SIGKILL 30 s after
# SIGTERM by default: the bound and the grace below end the process, saying where its
# checkpoint is, before that.
DEFAULT_SECONDS = 20.0
GRACE_SECONDS = 5.0


class StopTimedOut(TrainingInterrupted):
    """A requested stop found no batch boundary in time; no new checkpoint was written, because
    the state may lie between the D and the G step. ``rescue`` names the newest one there is."""


def stop_timeout() -> float:
    """Seconds a requested stop waits for the next batch boundary (``GAN_LIGHTNING_STOP_TIMEOUT``)."""
    value = os.environ.get(ENV, "")
    if not value:
        return DEFAULT_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"{ENV} must be a number of seconds above 0 (default {DEFAULT_SECONDS:g}), got {value!r}")
    return seconds


class StopDeadline:
    """Started when a stop is requested, cancelled when the stop lands at a batch boundary.

    When ``seconds`` pass first, the signal is sent again to the main thread, whose handler
    calls :meth:`check` and so raises ``describe(signum)`` there (Python interrupts a blocked
    ``open()`` or ``sleep`` for it), and the command ends through its usual error path. Code that
    never returns to Python would ignore that too: after ``grace`` more seconds the sentence is
    printed and the process ends with ``exit`` (``os._exit``: no thread may keep it alive).
    """

    def __init__(self, describe: Callable[[int], StopTimedOut], seconds: float, grace: float = GRACE_SECONDS,
                 exit: Callable[[int], None] = os._exit) -> None:
        self.describe, self.seconds, self.grace, self.exit = describe, seconds, grace, exit
        self.error: Optional[StopTimedOut] = None
        self._timers: list[threading.Timer] = []

    def start(self, signum: int) -> None:
        if not self._timers:
            self._after(self.seconds, self._expire, signum)

    def check(self) -> None:
        """Called first by the signal handlers: raises once the deadline has passed."""
        if self.error is not None:
            raise self.error

    def cancel(self) -> None:
        for timer in self._timers:
            timer.cancel()

    def _after(self, seconds: float, action: Callable, *args) -> None:
        timer = threading.Timer(seconds, action, args)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _expire(self, signum: int) -> None:
        self.error = self.describe(signum)
        self._after(self.grace, self._last_resort)
        signal.pthread_kill(threading.main_thread().ident, signum)

    def _last_resort(self) -> None:
        print(f"error: {self.error}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        self.exit(self.error.exit_status)
