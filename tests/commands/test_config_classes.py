"""Class paths in a config file that evaluate and synthesize read are checked before
jsonargparse imports them."""

from __future__ import annotations

import sys

import pytest
import yaml

from gan_lightning.class_paths import allow_classes
from gan_lightning.commands import config_classes
from gan_lightning.commands.evaluate import datamodule_from_config, run_config
from gan_lightning.errors import CheckpointError


@pytest.mark.parametrize("data", [
    {"class_path": "datamodules.DigitsDataModule", "init_args": {"image_size": 8}},
    {"class_path": "DigitsDataModule"},
    {"class_path": "datamodules.digits.DigitsDataModule"},
    "datamodules.GaussianMixtureDataModule",
])
def test_the_project_datamodules_pass_in_every_spelling(data):
    config_classes.check_data_section(data, "c.yaml")


@pytest.mark.parametrize("data", [
    {"class_path": "this.Foo"},
    "this.Foo",
    {"class_path": "datamodules.DigitsDataModule", "init_args": {"x": {"class_path": "this.Foo"}}},
    "other.yaml",  # jsonargparse would read it as a config file
])
def test_anything_else_is_refused_before_it_is_imported(tmp_path, data):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"data": data}))
    sys.modules.pop("this", None)
    with pytest.raises(CheckpointError, match=r"^the data section of .*config\.yaml names the class '(this\.Foo|other\.yaml)', which is not on the allow-list"):
        run_config(config)
    assert "this" not in sys.modules


def test_a_user_datamodule_needs_allow_class(tmp_path, monkeypatch):
    monkeypatch.setattr("gan_lightning.class_paths._allowed_by_code", set())
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"data": {"class_path": "tests.helpers_datamodule.Mine"}}))
    with pytest.raises(CheckpointError, match="--allow_class tests.helpers_datamodule.Mine"):
        run_config(config)
    allow_classes(["tests.helpers_datamodule.Mine"])
    assert run_config(config)["data"]["class_path"] == "tests.helpers_datamodule.Mine"


def test_an_allowed_config_still_builds_its_datamodule(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"data": {"class_path": "datamodules.DigitsDataModule", "init_args": {"image_size": 8}}}))
    assert type(datamodule_from_config(run_config(config))).__name__ == "DigitsDataModule"
