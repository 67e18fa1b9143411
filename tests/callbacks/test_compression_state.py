"""The compression callbacks' state is an explicit contract: named keys, defaults for keys an
older checkpoint lacks, and a refusal of keys this version does not know."""

from __future__ import annotations

from dataclasses import fields

import pytest
import torch

from callbacks.compression import EVENT_COLUMNS, EventRow
from callbacks.lowrank import LowRankFactorization
from callbacks.prune import Prune
from gan_lightning.errors import CheckpointError


@pytest.mark.parametrize("cls", [Prune, LowRankFactorization])
def test_state_round_trips_through_its_named_keys(cls):
    cb = cls()
    assert set(cb.state_dict()) == set(cls.STATE)
    cb.history.append(EventRow("x-1", 1, 2, g_sparsity=0.5).as_row())
    cb.dense["generator.stem.0.weight"] = 10
    other = cls()
    other.load_state_dict(cb.state_dict())
    assert other.state_dict() == cb.state_dict()
    other.history[0][0] = "changed"  # a deep copy: the checkpoint's objects are not shared
    assert cb.history[0][0] == "x-1"


def test_keys_an_older_checkpoint_lacks_take_their_fresh_run_values():
    cb = Prune()
    cb.load_state_dict({"next_event": 2, "masks": {"generator.stem.0.weight": torch.ones(2, dtype=torch.bool)}})
    assert cb.next_event == 2 and list(cb.masks) == ["generator.stem.0.weight"]
    assert cb.batches_seen == 0 and cb.history == [] and cb.trial is None and cb.stopped is False and cb.original_z is None


def test_unknown_keys_are_refused_instead_of_set_as_attributes():
    cb = LowRankFactorization()
    with pytest.raises(CheckpointError, match="lowrank callback state has key\\(s\\) amount, schedule that this version does not know"):
        cb.load_state_dict({"done": True, "schedule": "x", "amount": 1})
    assert not hasattr(cb, "schedule") and cb.done is False


def test_an_events_row_is_built_by_name_in_the_table_s_column_order():
    assert EVENT_COLUMNS == [f.name for f in fields(EventRow)]
    row = EventRow("dynamic-2-rolled-back", epoch=3, step=40, metric="fid", metric_after=51.5).as_row()
    assert row[:3] == ["dynamic-2-rolled-back", 3, 40]
    assert row[EVENT_COLUMNS.index("metric")] == "fid" and row[EVENT_COLUMNS.index("metric_after")] == 51.5
    assert row[EVENT_COLUMNS.index("speedup")] is None
