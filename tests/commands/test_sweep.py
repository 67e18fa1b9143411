"""configs/sweeps/prune_distill.yaml: every run the W&B agent would start is a valid train.py command.

The agent runs ``${env} ${interpreter} ${program} <fixed flags> ${args}`` from the repository
root, ``${args}`` being ``--<parameter>=<value>`` for each swept parameter. Each combination is
parsed through train.py's CLI and its plug-in callbacks are built from it (nothing trains), so
a misspelt parameter, an invalid value or fixed flags that contradict each other fail here.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import yaml
from pytorch_lightning.loggers import WandbLogger

from callbacks.distill import Distill
from callbacks.prune import Prune
from callbacks.registry import CALLBACKS
from gan_lightning.commands.train import FIDELITY_KEYS, GANLightningCLI, with_default_subcommand
from tests.helpers import REPO

SWEEP = REPO / "configs" / "sweeps" / "prune_distill.yaml"
PREFIX = ["${env}", "${interpreter}", "${program}"]

# where each swept option ends up in the callback train.py builds
READ_BACK = {
    "prune.generator_amount": lambda cb: cb.options.amounts["generator"],
    "prune.criterion": lambda cb: cb.options.criterion,
    "distill.output_weight": lambda cb: cb.weights["output_weight"],
    "distill.feature_weight": lambda cb: cb.weights["feature_weight"],
    "distill.gan_weight": lambda cb: cb.weights["gan_weight"],
}
CALLBACK_TYPES = {"prune": Prune, "distill": Distill}


def load_sweep() -> dict:
    return yaml.safe_load(SWEEP.read_text())


def choices(spec: dict) -> list[Any]:
    assert ("values" in spec) != ("value" in spec), f"enumerable parameters need `values` (or one `value`), got {spec}"
    return list(spec["values"]) if "values" in spec else [spec["value"]]


def combinations(sweep: dict) -> list[dict[str, Any]]:
    """Every run of the grid: the cartesian product of the parameters' values."""
    params = sweep["parameters"]
    return [dict(zip(params, combo)) for combo in itertools.product(*(choices(spec) for spec in params.values()))]


def covering(sweep: dict) -> list[dict[str, Any]]:
    """A few combinations in which every value of every parameter appears at least once."""
    lists = {name: choices(spec) for name, spec in sweep["parameters"].items()}
    return [{name: values[i % len(values)] for name, values in lists.items()} for i in range(max(map(len, lists.values())))]


def render_args(params: dict[str, Any]) -> list[str]:
    """``${args}`` as the W&B agent renders it: ``--name=value``, the value through str()."""
    return [f"--{name}={value}" for name, value in params.items()]


def agent_argv(sweep: dict, params: dict[str, Any]) -> list[str]:
    """train.py's argv in a run the agent starts: the command's fixed flags, then ``${args}``."""
    command = sweep["command"]
    return [*command[len(PREFIX):-1], *render_args(params)]


def fixed_flag(sweep: dict, flag: str) -> str:
    (value,) = [arg.split("=", 1)[1] for arg in sweep["command"] if arg.startswith(f"--{flag}=")]
    return value


class BuiltNotRun(GANLightningCLI):
    """train.py's CLI up to, not including, ``trainer.fit``: parsing, checks, model, data, trainer."""

    def _run_subcommand(self, subcommand: str) -> None:
        pass


@pytest.fixture(scope="module")
def sweep() -> dict:
    return load_sweep()


@pytest.fixture
def in_tmp_dir(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)  # anything a built Trainer or logger writes stays here
    return tmp_path


def test_the_sweep_is_a_grid_over_train_py(sweep):
    assert sweep["method"] == "grid"
    assert (REPO / sweep["program"]).is_file()
    command = sweep["command"]
    assert command[: len(PREFIX)] == PREFIX and command[-1] == "${args}"
    assert all(arg.startswith("--") and "=" in arg for arg in command[len(PREFIX):-1]), "fixed flags are written --name=value"
    assert set(sweep["parameters"]) == set(READ_BACK), "a new swept option needs its place in READ_BACK"
    assert len(combinations(sweep)) == 32


def test_the_optimised_metric_is_one_train_py_logs(sweep):
    assert sweep["metric"]["name"] in FIDELITY_KEYS  # val/fid, logged after every validation
    assert sweep["metric"]["goal"] == "minimize"


@pytest.mark.slow
def test_args_are_rendered_as_the_wandb_agent_does():
    utils = pytest.importorskip("wandb.sdk.launch.sweeps.utils")
    params = {"prune.generator_amount": 0.5, "prune.criterion": "taylor", "distill.gan_weight": 1.0}
    rendered = utils.create_sweep_command_args({"args": {name: {"value": value} for name, value in params.items()}})
    assert rendered["args"] == render_args(params)


@pytest.mark.slow
def test_every_combination_parses_and_builds_its_callbacks(sweep, in_tmp_dir, capsys):
    """The full grid through train.py's own parser (built once), each run's callbacks built from it."""
    parser = BuiltNotRun(args=with_default_subcommand(agent_argv(sweep, covering(sweep)[0]))).parser
    for params in combinations(sweep):
        argv = with_default_subcommand(agent_argv(sweep, params))
        try:
            cfg = parser.parse_args(argv).fit
        except SystemExit:
            pytest.fail(f"train.py refuses {' '.join(argv)}: {capsys.readouterr().err.strip()}")
        assert cfg.callbacks == "prune,distill"
        built = {name: CALLBACKS[name](**vars(cfg[name]).copy()) for name in ("prune", "distill")}
        for name, value in params.items():
            assert cfg[name] == value, name
            group = name.split(".", 1)[0]
            assert READ_BACK[name](built[group]) == value, name


@pytest.mark.parametrize("params", covering(load_sweep()), ids=lambda params: ",".join(map(str, params.values())))
def test_runs_are_built_as_train_py_builds_them(sweep, in_tmp_dir, params):
    """Every value of every parameter goes once through the whole CLI as `python train.py` runs it:
    the checks before and after the model, data, callbacks and logger are built (not fitted)."""
    cli = BuiltNotRun(args=with_default_subcommand(agent_argv(sweep, params)))
    callbacks = {name: next(cb for cb in cli.trainer.callbacks if isinstance(cb, cls)) for name, cls in CALLBACK_TYPES.items()}
    for name, value in params.items():
        assert READ_BACK[name](callbacks[name.split(".", 1)[0]]) == value, name
    assert cli.trainer.max_epochs == int(fixed_flag(sweep, "trainer.max_epochs"))
    # all runs land in one W&B group, and val/fid is measured in the last epoch (the run summary's value)
    (logger,) = cli.trainer.loggers
    assert isinstance(logger, WandbLogger)
    assert logger._wandb_init["group"] == fixed_flag(sweep, "trainer.logger.group")
    metrics = cli.config.fit.metrics
    assert metrics.features != "none" and cli.trainer.max_epochs % metrics.every_n_epochs == 0
