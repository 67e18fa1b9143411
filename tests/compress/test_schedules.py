from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest

from gan_lightning.compress import schedules
from gan_lightning.compress.schedules import SCHEDULES, Dynamic, Gradual, Iterative, OneShot, iterative_fraction, make_schedule, polynomial_sparsity
from gan_lightning.errors import ConfigError

OPTIONS = dict(start_epoch=2, every_n_epochs=3, rounds=4, start_step=5, end_step=25, frequency=10)


def test_each_name_is_chosen_once_and_takes_only_its_own_options():
    built = {name: make_schedule(name, **OPTIONS) for name in ("oneshot", "iterative", "gradual", "dynamic")}
    assert [type(s) for s in built.values()] == [OneShot, Iterative, Gradual, Dynamic]
    assert built["oneshot"] == OneShot(start_epoch=2)
    assert built["gradual"] == Gradual(start_step=5, end_step=25, frequency=10)
    assert built["oneshot"].events(10) == [2]
    assert built["iterative"].events(10) == built["dynamic"].events(10) == [2, 5, 8, 11]
    assert built["gradual"].events() == [15, 25]  # every 10 batches after 5, and end_step itself
    assert [s.unit for s in built.values()] == ["epoch", "epoch", "batch", "epoch"]
    assert [s.verified for s in built.values()] == [False, False, False, True]


def test_targets_are_cumulative_and_end_at_the_final_amount():
    final = 0.6
    assert OneShot().target(0, final) == final
    iterative = Iterative(rounds=3)
    assert [iterative.target(e, final) for e in range(3)] == [iterative_fraction(k, 3, final) for k in (1, 2, 3)]
    assert [Dynamic(rounds=3).target(e, final) for e in range(3)] == pytest.approx([0.2, 0.4, 0.6])
    gradual = Gradual(start_step=0, end_step=30, frequency=10)
    assert [gradual.target(e, final) for e in range(3)] == [polynomial_sparsity(s, 0, 30, final) for s in (10, 20, 30)]
    assert gradual.target(2, final) == final


def test_the_default_start_is_half_of_max_epochs_and_needs_max_epochs():
    assert OneShot().events(10) == [5]
    with pytest.raises(ConfigError, match="--prune.start_epoch has no default"):
        OneShot().events(None)


def test_bad_names_and_ramps_are_refused_in_one_sentence():
    with pytest.raises(ConfigError, match="--prune.schedule must be one of oneshot, iterative, gradual, dynamic, got 'cosine'"):
        make_schedule("cosine")
    with pytest.raises(ConfigError, match="0 <= --prune.start_step < --prune.end_step, got 5 and 5"):
        make_schedule("gradual", start_step=5, end_step=5)


def test_a_new_schedule_is_a_new_class(monkeypatch):
    @dataclass(frozen=True)
    class EveryEpoch(schedules.Schedule):
        name: ClassVar[str] = "every_epoch"
        rounds: int = 2

        def events(self, max_epochs):
            return list(range(self.rounds))

        def target(self, event, final):
            return final

    monkeypatch.setitem(SCHEDULES, "every_epoch", EveryEpoch)
    assert make_schedule("every_epoch", **OPTIONS).events(None) == [0, 1, 2, 3]
