"""What the library says goes through named loggers: filterable, rank 0 only, printed by the commands."""

from __future__ import annotations

import logging

from lightning_fabric.utilities.rank_zero import rank_zero_only

from gan_lightning.commands.console import print_library_messages
from gan_lightning.logs import get_logger


def test_only_rank_zero_speaks(caplog, monkeypatch):
    log = get_logger("callbacks.prune")
    monkeypatch.setattr(rank_zero_only, "rank", 1, raising=False)
    log.warning("from rank 1")
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    log.warning("from rank 0")
    assert [(r.name, r.getMessage()) for r in caplog.records] == [("callbacks.prune", "from rank 0")]


def test_a_user_filters_one_plug_in_by_its_module_name(caplog):
    caplog.set_level(logging.INFO)
    logging.getLogger("callbacks.prune").setLevel(logging.WARNING)
    try:
        get_logger("callbacks.prune").info("event")
        get_logger("callbacks.lowrank").info("event")
    finally:
        logging.getLogger("callbacks.prune").setLevel(logging.NOTSET)
    assert [r.name for r in caplog.records] == ["callbacks.lowrank"]


def test_commands_print_the_library_messages_once(capsys):
    print_library_messages()
    print_library_messages()  # a second command in the same process adds no second handler
    get_logger("datamodules.digits").info("hello from the library")
    assert capsys.readouterr().err.count("hello from the library") == 1
