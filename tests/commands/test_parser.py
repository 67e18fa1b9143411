"""train.py's parser keeps the type the user wrote for Lightning's count-or-fraction options."""

from __future__ import annotations

import pytest

from gan_lightning.commands.parser import COUNT_OR_FRACTION
from gan_lightning.commands.train import GANLightningCLI
from tests.helpers import tiny_run_args

QUICK = ("--checkpoint.monitor", "null", "--metrics.every_n_epochs", "0", "--trainer.limit_val_batches", "0", "--data.init_args.batch_size", "256")


def _parsed_trainer(tmp_path, *extra: str):
    cli = GANLightningCLI(args=tiny_run_args(tmp_path / "run", *extra), run=False)
    return cli.config.trainer


@pytest.mark.parametrize("name", COUNT_OR_FRACTION)
def test_an_integer_on_the_command_line_stays_an_integer(tmp_path, name):
    trainer = _parsed_trainer(tmp_path, f"--trainer.{name}", "1")
    assert type(trainer[name]) is int and trainer[name] == 1
    trainer = _parsed_trainer(tmp_path, f"--trainer.{name}", "1.0")
    assert type(trainer[name]) is float and trainer[name] == 1.0


def test_an_integer_in_yaml_stays_an_integer(tmp_path):
    config = tmp_path / "limits.yaml"
    config.write_text("trainer:\n  limit_train_batches: 1\n  limit_val_batches: 1.0\n  val_check_interval: 1\n")
    trainer = _parsed_trainer(tmp_path, "--config", str(config))
    assert type(trainer.limit_train_batches) is int and type(trainer.limit_val_batches) is float
    assert type(trainer.val_check_interval) is int


@pytest.mark.parametrize("value,batches", [("1", 1), ("1.0", 6), ("0.5", 3)])
def test_limit_train_batches_one_trains_one_batch_and_one_point_zero_all(tmp_path, value, batches):
    # the training digits in full batches of 256 make 6 batches an epoch; manual optimization counts two steps per batch
    cli = GANLightningCLI(args=["fit", *tiny_run_args(tmp_path / "run", *QUICK, "--trainer.limit_train_batches", value)])
    assert cli.trainer.num_training_batches == batches
    assert cli.trainer.global_step == 2 * batches
