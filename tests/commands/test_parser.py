"""train.py's parser keeps the type the user wrote for Lightning's count-or-fraction options."""

from __future__ import annotations

import pytest

from gan_lightning.commands.parser import COUNT_OR_FRACTION, non_finite, parser_sentence
from gan_lightning.commands.train import GANLightningCLI
from tests.helpers import tiny_run_args
from train import main

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


@pytest.mark.parametrize(
    "message,sentence",
    [
        ('Parser key "model.lr_g":\n  Expected a <class \'float\'>. Got value: nan', "--model.lr_g nan is not allowed: expected a finite number"),
        (
            'Parser key "data":\n  Does not validate against any of the Union subtypes\n  Subtypes: [<class \'datamodules.base.GANDataModule\'>, <class \'NoneType\'>]\n'
            "  Errors:\n    - Problem with given class_path 'datamodules.DigitsDataModule':\n        Parser key \"batch_size\":\n"
            "          Expected a <class 'int'>. Got value: 1.5\n    - Expected a <class 'NoneType'>\n"
            "  Given value type: <class 'jsonargparse._util.NestedArg'>\n  Given value: NestedArg(key='batch_size', val='1.5')",
            "--data.batch_size 1.5 is not allowed: expected an integer",
        ),
        (
            'Parser key "trainer.max_epochs":\n  Does not validate against any of the Union subtypes\n  Subtypes: [<class \'int\'>, <class \'NoneType\'>]\n'
            "  Errors:\n    - Expected a <class 'int'>\n    - Expected a <class 'NoneType'>\n  Given value type: <class 'str'>\n  Given value: 2.5",
            "--trainer.max_epochs 2.5 is not allowed: expected an integer or null",
        ),
        ("Parser key \"model.loss\":\n  Expected a typing.Literal['bce', 'hinge']. Got value: nope", "--model.loss nope is not allowed: expected one of 'bce', 'hinge'"),
        ("unrecognized arguments: --foo 1", "unrecognized arguments: --foo 1"),
        ("argument --model.lr_g: expected one argument", "--model.lr_g needs a value; write a negative number as --model.lr_g=-1e-3"),
    ],
)
def test_parser_errors_become_one_sentence(message, sentence):
    assert parser_sentence(message) == sentence


@pytest.mark.parametrize(
    "extra,sentence",
    [
        (["--data.batch_size", "x"], "error: --data.batch_size x is not allowed: expected an integer\n"),
        (["--callbacks", "distill", "--distill.student", "foo"], "error: --distill.student foo is not allowed: expected a mapping such as {class_path"),
        (["--model.lr_d", "1e400"], "error: --model.lr_d inf is not allowed: expected a finite number\n"),
        (["--callbacks", "clip", "--clip.clip_value", "nan"], "error: --clip.clip_value nan is not allowed: expected a finite number\n"),
    ],
)
def test_a_wrong_value_is_one_line_without_the_usage_page(tmp_path, capsys, extra, sentence):
    with pytest.raises(SystemExit) as exit_info:
        main(tiny_run_args(tmp_path / "run", *extra))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(sentence) and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


def test_non_finite_values_in_yaml_lists_and_mappings_are_found():
    from jsonargparse import Namespace

    assert non_finite(Namespace(fit=Namespace(model=Namespace(lr_g=1e-4, betas=[0.5, float("inf")])))) == ("model.betas.1", float("inf"))
    assert non_finite(Namespace(data=Namespace(init_args=Namespace(train_fraction=float("nan")))))[0] == "data.train_fraction"
    callbacks = [Namespace(class_path="EarlyStopping", init_args=Namespace(min_delta=float("-inf")))]
    assert non_finite(Namespace(trainer=Namespace(callbacks=callbacks))) == ("trainer.callbacks.0.min_delta", float("-inf"))
    assert non_finite(Namespace(model=Namespace(lr_g=1e-4))) is None


@pytest.mark.parametrize(
    "extra,sentence",
    [
        (["--data.num_workers=-1"], "error: --data.num_workers must be an integer >= 0 (0 loads in the main process), got -1\n"),
        (["--samples.extent=0"], "error: --samples.extent must be a number > 0 (the half-width drawn for 2-D data), got 0.0\n"),
        (["--metrics.domain_epochs", "0"], "error: --metrics.domain_epochs must be an integer >= 1, got 0\n"),
        (["--callbacks", "prune", "--prune.start_epoch=-1"], "error: --prune.start_epoch must be an epoch >= 0, got -1\n"),
    ],
)
def test_counts_and_sizes_out_of_range_are_refused_before_a_run_folder(tmp_path, capsys, extra, sentence):
    assert main(tiny_run_args(tmp_path / "run", *extra)) == 2
    assert capsys.readouterr().err.endswith(sentence)
    assert not (tmp_path / "run").exists()
