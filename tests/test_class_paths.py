"""Class paths read from files are imported only from the allow-list: the project's networks,
plus --allow_class, GAN_LIGHTNING_ALLOW_CLASSES or allow_classes()."""

from __future__ import annotations

import pytest
import torch

from gan_lightning import class_paths
from gan_lightning.commands import generate as generate_command
from gan_lightning.deploy.export_file import export_generator, load_exported
from gan_lightning.specs import build_generator
from gan_lightning.errors import CheckpointError
from tests.helpers import tiny_module

USER = "tests.helpers.UserGenerator"
SPEC = {"class_path": USER, "init_args": {"z_dim": 8, "image_size": 8, "channels": 1, "width": 4}}


@pytest.fixture
def user_export(tmp_path):
    """A compact export whose record names the user's own generator class."""
    module = tiny_module()
    path = tmp_path / "g.pt"
    export_generator(module, path, spec={"class_path": "gan_lightning.networks.DCGANGenerator", "init_args": SPEC["init_args"]})
    record = torch.load(path, weights_only=True)
    record["generator"] = SPEC
    torch.save(record, path)
    return path, module


def test_the_projects_networks_load_and_other_classes_are_refused_without_being_imported(monkeypatch):
    assert type(build_generator({"class_path": "gan_lightning.networks.DCGANGenerator", "init_args": SPEC["init_args"]})).__name__ == "DCGANGenerator"
    imported = []
    monkeypatch.setattr(class_paths.importlib, "import_module", lambda name: imported.append(name))
    with pytest.raises(CheckpointError, match=r"g\.pt names the class 'subprocess\.run', which is not on the allow-list"):
        build_generator({"class_path": "subprocess.run", "init_args": {"args": ["true"]}}, source="g.pt")
    assert imported == []


@pytest.mark.parametrize("how", ["env", "code"])
def test_a_class_the_user_allows_loads_from_a_file(user_export, monkeypatch, how):
    path, module = user_export
    with pytest.raises(CheckpointError, match=rf"{path} names the class '{USER}'.*--allow_class {USER}"):
        load_exported(path)
    if how == "env":
        monkeypatch.setenv(class_paths.ENV, f"some.Other, {USER}")
    else:
        class_paths.allow_classes([USER])
    generator = load_exported(path)
    assert type(generator).__name__ == "UserGenerator"
    z = torch.randn(3, 8)
    with torch.no_grad():
        assert torch.equal(generator(z), module.sampling_generator.eval()(z))


def test_an_allowed_name_that_is_not_a_network_is_still_refused():
    class_paths.allow_classes(["collections.OrderedDict", "os.getcwd"])
    with pytest.raises(CheckpointError, match="not a torch.nn.Module"):
        build_generator({"class_path": "collections.OrderedDict", "init_args": {}}, source="f")
    with pytest.raises(CheckpointError, match="'os.getcwd', which is not a class"):
        build_generator({"class_path": "os.getcwd", "init_args": {}}, source="f")


def test_generate_takes_allow_class_from_the_command_line(user_export, tmp_path, capsys):
    path, _ = user_export
    assert generate_command.main(["--source", str(path), "--out", str(tmp_path / "a"), "--num_samples", "2"]) == 2
    assert f"--allow_class {USER}" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    assert generate_command.main(["--source", str(path), "--out", str(tmp_path / "b"), "--num_samples", "2", "--allow_class", USER]) == 0
    assert len(list((tmp_path / "b").glob("*.png"))) == 2


def test_every_network_of_the_project_is_on_the_allow_list():
    import inspect

    from torch import nn

    from gan_lightning import networks

    public = {
        f"gan_lightning.networks.{name}" for name, cls in inspect.getmembers(networks, inspect.isclass)
        if issubclass(cls, nn.Module) and cls.__module__ == networks.__name__ and not name.startswith("_")
    }
    assert public and public <= class_paths.PROJECT_NETWORKS  # a checkpoint of any of them loads without --allow_class
