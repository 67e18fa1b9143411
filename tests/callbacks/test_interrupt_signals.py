"""InterruptCheckpoint bounds SIGTERM from the start of fitting (so a stop requested while the
dataloaders are made or the ranks wait for each other lands too) and leaves SIGTERM's handler
as the fit found it, however the fit ends: a handler that outlived its fit would catch the next
fit's signals with a finished run's deadline. The train.py path is the battery's
stop-sigterm-while-the-dataloader-is-made case (tests/reliability/cases_folders.py)."""

from __future__ import annotations

import signal

import pytest
from pytorch_lightning import Callback, Trainer
from pytorch_lightning.demos.boring_classes import BoringModel

from callbacks.interrupt import InterruptCheckpoint


class Boom(RuntimeError):
    pass


class FailsAt(Callback):
    """Raises in one hook, to end a fit at a chosen point."""

    def __init__(self, hook: str) -> None:
        setattr(self, hook, self._fail)

    def _fail(self, *args, **kwargs) -> None:
        raise Boom


class WhileLoadersAreMade(BoringModel):
    """Records SIGTERM's handler when Lightning asks for the training data: after it registered
    its own handler and before any of its loops' hooks."""

    seen = None

    def train_dataloader(self):
        type(self).seen = signal.getsignal(signal.SIGTERM)
        return super().train_dataloader()


def the_users_handler(signum, frame) -> None:  # stands for whatever the process had installed
    pass


@pytest.fixture
def users_handler():
    previous = signal.signal(signal.SIGTERM, the_users_handler)
    yield
    signal.signal(signal.SIGTERM, previous)


def fit(tmp_path, *callbacks: Callback) -> InterruptCheckpoint:
    interrupt = InterruptCheckpoint()
    trainer = Trainer(default_root_dir=tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1, logger=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=[interrupt, *callbacks])
    trainer.fit(WhileLoadersAreMade())
    return interrupt


def test_the_bound_covers_the_making_of_the_dataloaders(tmp_path, users_handler):
    interrupt = fit(tmp_path)
    handlers = getattr(WhileLoadersAreMade.seen, "signal_handlers", ())
    assert any(h == interrupt._on_sigterm for h in handlers)  # inside the handler Lightning registered
    assert signal.getsignal(signal.SIGTERM) is the_users_handler


@pytest.mark.parametrize("hook", [
    "on_fit_start",  # after the bound was installed, before Lightning registers its handler
    "on_train_epoch_start",  # after Lightning registered it: its teardown runs after every callback hook
    "on_train_batch_end",
])
def test_a_fit_that_fails_leaves_the_handler_it_found(tmp_path, users_handler, hook):
    with pytest.raises(Boom):
        fit(tmp_path, FailsAt(hook))
    assert signal.getsignal(signal.SIGTERM) is the_users_handler
