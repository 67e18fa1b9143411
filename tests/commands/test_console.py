from __future__ import annotations

from importlib import import_module

import pytest

from gan_lightning.commands.console import run
from gan_lightning.errors import ConfigError
from tests.helpers import REPO

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11


def test_a_project_error_anywhere_in_the_cause_chain_is_one_line_and_exit_2(capsys):
    def wrapped():
        try:
            raise ConfigError("--x must be 1")
        except ConfigError as exc:
            raise ValueError("jsonargparse: problem instantiating") from exc

    assert run(wrapped) == 2
    assert capsys.readouterr().err == "error: --x must be 1\n"


def test_other_errors_keep_their_traceback_unless_named(capsys):
    def bug():
        raise KeyError("oops")

    with pytest.raises(KeyError):
        run(bug)
    assert run(bug, also=(KeyError,)) == 2 and capsys.readouterr().err == "error: 'oops'\n"
    assert run(lambda: None) == 0


def test_every_console_script_names_a_command_main():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {"gan-lightning-train", "gan-lightning-evaluate", "gan-lightning-export", "gan-lightning-generate", "gan-lightning-synthesize"}
    for target in scripts.values():
        module, _, func = target.partition(":")
        assert module.startswith("gan_lightning.commands.") and callable(getattr(import_module(module), func))


@pytest.mark.parametrize("command", ["evaluate", "export", "generate", "synthesize"])
def test_a_wrong_flag_of_a_command_is_one_line_without_the_usage_block(command, capsys):
    import importlib

    module = importlib.import_module(f"gan_lightning.commands.{command}")
    with pytest.raises(SystemExit) as exit_:
        module.main([])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and "usage:" not in err and len(err.splitlines()) == 1
    assert err.startswith("error: the following arguments are required: --") and err.endswith("(see --help)")
