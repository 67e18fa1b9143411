"""Stopping cleanly: the checkpoint written when training stops on a signal or an error."""

from __future__ import annotations

import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Optional

from pytorch_lightning import Callback
from pytorch_lightning.utilities.exceptions import SIGTERMException
from typing_extensions import override

from callbacks.stop_deadline import StopDeadline, StopTimedOut, stop_timeout
from gan_lightning.core.lightning_private import hand_back_signal_handler, handler_calls
from gan_lightning.errors import RunStopped, TrainingInterrupted
from gan_lightning.logs import get_logger

log = get_logger(__name__)


def resume_command(argv: list[str], ckpt_path: Path) -> str:
    """``python train.py ARGS --ckpt_path CKPT``: the run's own flags, any earlier --ckpt_path replaced."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--ckpt_path":
            skip = True
        elif not arg.startswith("--ckpt_path="):
            kept.append(arg)
    kept = kept[1:] if kept[:1] == ["fit"] else kept
    return shlex.join(["python", "train.py", *kept, "--ckpt_path", str(ckpt_path)])


class InterruptCheckpoint(Callback):
    """Writes ``on_exception.ckpt`` next to the run's other checkpoints when training stops
    early, and says where it is and how to resume.

    - SIGINT (Ctrl-C) and SIGTERM (a scheduler's preemption) stop training at the next batch
      boundary, never between the D and the G step, so the resumed run continues exactly
      where this one stopped; the process exits with 128 + the signal number, as schedulers
      expect of a job that did not finish. A second Ctrl-C stops at once. When no batch
      boundary comes within ``GAN_LIGHTNING_STOP_TIMEOUT`` seconds (callbacks.stop_deadline),
      the run stops anyway, naming the newest checkpoint it already has.
    - On a divergence, callbacks that keep the last finite state (callbacks.divergence) put
      it back first, so the file holds weights that can be resumed.

    Not Lightning's OnExceptionCheckpoint: its presence makes every ``fit()`` without a
    ``ckpt_path`` silently resume from the newest checkpoint it can find.
    """

    def __init__(self, filename: str = "on_exception.ckpt") -> None:
        self.filename = filename
        self.ckpt_path: Optional[Path] = None
        self.argv: Optional[list[str]] = None  # set by train.py, for the resume command
        self._signal: Optional[int] = None
        self._previous_sigint = self._previous_sigterm = None
        self._deadline: Optional[StopDeadline] = None
        self._folder: Optional[Path] = None

    @override
    def setup(self, trainer, pl_module, stage: str) -> None:
        # Each fit its own deadline: one cancelled by an earlier fit's error (Lightning calls no
        # teardown hook then) must not leave this one unbounded.
        self._deadline = StopDeadline(self._timed_out, stop_timeout())

    def _bound_sigterm(self, trainer) -> None:
        """From the start of fitting on, a SIGTERM that finds no batch boundary in time stops anyway."""
        folder = trainer.checkpoint_callback.dirpath if trainer.checkpoint_callback is not None else None
        self._folder = Path(folder or trainer.default_root_dir)
        on_main = threading.current_thread() is threading.main_thread()
        if on_main and not handler_calls(signal.getsignal(signal.SIGTERM), self._on_sigterm):
            # Lightning's own handler only notes SIGTERM for the next boundary.
            self._previous_sigterm = signal.signal(signal.SIGTERM, self._on_sigterm)

    @override
    def on_fit_start(self, trainer, pl_module) -> None:
        self._bound_sigterm(trainer)

    @override
    def on_sanity_check_start(self, trainer, pl_module) -> None:
        self._bound_sigterm(trainer)

    @override
    def on_train_start(self, trainer, pl_module) -> None:
        self._bound_sigterm(trainer)
        self.ckpt_path = self._folder / self.filename
        self._signal = None
        if threading.current_thread() is threading.main_thread():
            self._previous_sigint = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum, frame) -> None:
        self._deadline.check()
        if self._signal is not None:
            raise KeyboardInterrupt
        self._signal = signal.SIGINT
        print("\nCtrl-C: stopping after this batch with a checkpoint (press Ctrl-C again to stop at once)", file=sys.stderr, flush=True)
        self._deadline.start(signum)

    def _on_sigterm(self, signum, frame) -> None:
        self._deadline.check()
        if callable(self._previous_sigterm):
            self._previous_sigterm(signum, frame)
        self._deadline.start(signum)

    def _timed_out(self, signum: int) -> StopTimedOut:
        """The sentence of a stop that found no batch boundary in time, naming the newest checkpoint."""
        error = StopTimedOut(
            f"training stopped by {signal.Signals(signum).name} without a new checkpoint, because no batch boundary came within "
            f"{self._deadline.seconds:g} s of the signal (a batch is blocked, e.g. reading a file; GAN_LIGHTNING_STOP_TIMEOUT sets the wait)",
            signum,
        )
        folder = self._folder
        found = [p for p in folder.glob("*.ckpt") if p.is_file()] if folder is not None and folder.is_dir() else []
        if found:
            newest = max(found, key=lambda p: p.stat().st_mtime)
            error.rescue = f"the newest checkpoint is {newest}"
            error.resume = resume_command(self.argv, newest) if self.argv is not None else f"--ckpt_path {newest}"
        else:
            error.rescue = "no checkpoint had been written yet"
        return error

    @override
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # Lightning notes SIGTERM (received_sigterm) and would stop after this hook with an
        # exception that exits 0; stopping here turns it into TrainingInterrupted instead.
        signum = self._signal or (signal.SIGTERM if trainer.received_sigterm else None)
        if trainer.world_size > 1:  # every rank stops at the same batch, or the others hang
            stop = trainer.strategy.reduce_boolean_decision(signum is not None, all=False)
            signum = signum or (signal.SIGTERM if stop else None)
        if signum is not None:
            self._deadline.cancel()  # the stop landed in time
            raise TrainingInterrupted(
                f"training stopped by {signal.Signals(signum).name} after epoch {trainer.current_epoch}, batch {batch_idx}"
                f" (step {trainer.global_step})", signum
            )

    @override
    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        if self._previous_sigint is not None:
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None
        self._restore_sigterm(trainer)

    def _restore_sigterm(self, trainer) -> None:
        """Leave SIGTERM as the fit found it. On success Lightning has already put ours back and
        this replaces it; after an exception Lightning's teardown comes after this hook, so its
        record is told to put back the one we replaced."""
        if self._previous_sigterm is None:
            return
        hand_back_signal_handler(trainer, signal.SIGTERM, self._on_sigterm, self._previous_sigterm)
        if signal.getsignal(signal.SIGTERM) == self._on_sigterm:  # before Lightning registered, or after its teardown
            signal.signal(signal.SIGTERM, self._previous_sigterm)
        self._previous_sigterm = None

    @override
    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._restore_sigterm(trainer)
        if self.ckpt_path is None or isinstance(exception, StopTimedOut):
            return
        restored = None
        for cb in trainer.callbacks:  # e.g. callbacks.divergence: the last finite state
            if callable(restore := getattr(cb, "restore_last_finite", None)):
                try:
                    restored = restore(trainer, pl_module, exception) or restored
                except Exception as exc:  # the original error matters more; save the run as it is
                    log.warning(f"could not restore the last finite state: {exc}")
        try:
            trainer.save_checkpoint(self.ckpt_path)
        except Exception as exc:  # the original error matters more than this one
            log.warning(f"could not write the rescue checkpoint {self.ckpt_path}: {str(exc).splitlines()[0][:200]}")
            return
        rescue = f"{restored or 'the run as it stopped'} is saved to {self.ckpt_path}"
        resume = resume_command(self.argv, self.ckpt_path) if self.argv is not None else f"--ckpt_path {self.ckpt_path}"
        if isinstance(exception, RunStopped):
            exception.rescue, exception.resume = rescue, resume
        elif trainer.is_global_zero and isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            print(f"{rescue}; resume with: {resume}", file=sys.stderr, flush=True)
