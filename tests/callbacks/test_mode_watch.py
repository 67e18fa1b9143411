"""The mode-collapse warning after a compression event (callbacks/mode_watch.py)."""

from __future__ import annotations

import logging
import re
from types import SimpleNamespace

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


def collapse_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "mode collapse" in r.getMessage()]


def test_a_collapse_that_does_not_recover_is_reported_once_with_its_numbers(caplog):
    run = Run(ModeCollapseWatch(patience=2))
    run.epochs(9, 10, 10)
    run.event()
    with caplog.at_level(logging.WARNING):
        run.epochs(3, 2, 1, 1)
        run.end()
    messages = collapse_warnings(caplog)
    assert len(messages) == 1
    assert "covered 10 modes" in messages[0] and "epoch 3" in messages[0] and "3, 2" in messages[0] and "--balance" in messages[0]
    assert run.logged == [7, 8, 9, 9]  # compress/modes_lost at every measurement after the event


def test_a_healthy_event_and_a_dip_that_recovers_stay_silent(caplog):
    run = Run(ModeCollapseWatch(patience=2))
    run.epochs(10, 10)
    run.event()
    with caplog.at_level(logging.WARNING):
        run.epochs(8, 10, 9, 10, 10)  # never two low measurements in a row, and all back at the end
        run.end()
    assert collapse_warnings(caplog) == []


def test_ending_below_the_reference_is_reported_even_within_patience(caplog):
    run = Run(ModeCollapseWatch(patience=3))
    run.epochs(10)
    run.event()
    run.epochs(10, 4)
    run.end()
    assert len(collapse_warnings(caplog)) == 1 and "when training ended" in collapse_warnings(caplog)[0]


def test_no_event_means_no_warning_whatever_the_modes_do(caplog):
    run = Run(ModeCollapseWatch())
    with caplog.at_level(logging.WARNING):
        run.epochs(10, 2, 1, 1)
        run.end()
    assert collapse_warnings(caplog) == [] and run.logged == []


def test_the_reference_and_history_survive_resume(caplog):
    run = Run(ModeCollapseWatch(patience=2))
    run.epochs(10)
    run.event()
    run.epochs(4)
    resumed = Run(ModeCollapseWatch(patience=2))
    resumed.watch.load_state_dict(run.watch.state_dict())
    resumed.trainer.current_epoch = run.trainer.current_epoch
    resumed.epochs(3)  # the second low measurement in a row, across the resume
    assert len(collapse_warnings(caplog)) == 1 and re.search("covered 10 modes.*4, 3", collapse_warnings(caplog)[0])


def test_the_advice_suggests_distillation_only_to_a_run_without_it(caplog):
    from callbacks.distill import Distill

    for callbacks, suggested in (([], True), ([Distill()], False)):
        caplog.clear()
        run = Run(ModeCollapseWatch(patience=2))
        run.trainer.callbacks += callbacks
        run.epochs(10)
        run.event()
        run.epochs(4, 3)
        assert len(collapse_warnings(caplog)) == 1
        assert ("--callbacks distill" in collapse_warnings(caplog)[0]) is suggested


def test_the_advice_leaves_out_restarting_d_after_cuts_when_the_balance_control_already_does(caplog):
    from callbacks.balance import DiscriminatorBalance

    for balance, suggested in ((DiscriminatorBalance(judge="replaced"), True), (DiscriminatorBalance(), False)):
        caplog.clear()
        run = Run(ModeCollapseWatch(patience=1))
        run.trainer.callbacks.append(balance)
        run.epochs(10)
        run.event()
        with caplog.at_level(logging.WARNING):
            run.epochs(2)
        (message,) = collapse_warnings(caplog)
        assert ("--balance.judge any" in message) == suggested and "--prune.discriminator_amount" in message
