"""The mode-collapse warning after a compression event (callbacks/mode_watch.py)."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest

from callbacks.fidelity import FidelityEvaluation
from callbacks.mode_watch import ModeCollapseWatch
from tests.helpers import tiny_module


class Run:
    """A trainer stand-in whose fidelity callback measured ``val/modes`` after each epoch."""

    def __init__(self, watch: ModeCollapseWatch) -> None:
        self.fidelity = FidelityEvaluation()
        self.watch = watch
        self.trainer = SimpleNamespace(callbacks=[self.fidelity, watch], current_epoch=0)
        self.logged: list[float] = []
        self.module = SimpleNamespace(log=lambda name, value: self.logged.append(value))

    def epochs(self, *modes: float) -> None:
        for m in modes:
            self.fidelity.last = {"epoch": self.trainer.current_epoch, "metrics": {"val/modes": m}}
            self.watch.on_train_epoch_end(self.trainer, self.module)
            self.trainer.current_epoch += 1

    def event(self) -> None:
        self.watch.on_architecture_changed(self.trainer, tiny_module(), "generator", None)

    def end(self) -> None:
        self.watch.on_fit_end(self.trainer, self.module)


def collapse_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if "mode collapse" in str(w.message)]


def test_a_collapse_that_does_not_recover_is_reported_once_with_its_numbers():
    run = Run(ModeCollapseWatch(patience=2))
    run.epochs(9, 10, 10)
    run.event()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run.epochs(3, 2, 1, 1)
        run.end()
    messages = collapse_warnings(caught)
    assert len(messages) == 1
    assert "covered 10 modes" in messages[0] and "epoch 3" in messages[0] and "3, 2" in messages[0] and "--balance" in messages[0]
    assert run.logged == [7, 8, 9, 9]  # compress/modes_lost at every measurement after the event


def test_a_healthy_event_and_a_dip_that_recovers_stay_silent():
    run = Run(ModeCollapseWatch(patience=2))
    run.epochs(10, 10)
    run.event()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run.epochs(8, 10, 9, 10, 10)  # never two low measurements in a row, and all back at the end
        run.end()
    assert collapse_warnings(caught) == []


def test_ending_below_the_reference_is_reported_even_within_patience():
    run = Run(ModeCollapseWatch(patience=3))
    run.epochs(10)
    run.event()
    run.epochs(10, 4)
    with pytest.warns(UserWarning, match="mode collapse.*when training ended"):
        run.end()


def test_no_event_means_no_warning_whatever_the_modes_do():
    run = Run(ModeCollapseWatch())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run.epochs(10, 2, 1, 1)
        run.end()
    assert collapse_warnings(caught) == [] and run.logged == []


def test_the_reference_and_history_survive_resume():
    run = Run(ModeCollapseWatch(patience=2))
    run.epochs(10)
    run.event()
    run.epochs(4)
    resumed = Run(ModeCollapseWatch(patience=2))
    resumed.watch.load_state_dict(run.watch.state_dict())
    resumed.trainer.current_epoch = run.trainer.current_epoch
    with pytest.warns(UserWarning, match="covered 10 modes.*4, 3"):
        resumed.epochs(3)  # the second low measurement in a row, across the resume
