"""Broken YAML config files and refused output paths become one sentence naming the file
(and, for YAML, the line); a good config, inline YAML and every shipped preset still pass."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from gan_lightning.commands.config_files import check_config_args, config_args, read_config_file, read_yaml
from gan_lightning.commands.console import path_refusal, run
from gan_lightning.errors import ConfigError
from tests.helpers import REPO

BROKEN = {
    "flow": ("trainer:\n  max_epochs: 1\n  limit_train_batches: [3\nmodel:\n  loss: hinge\n", r"is not valid YAML: .* at line 4, column 6 \(while parsing a flow sequence that starts at line 3\)"),
    "tab": ("trainer:\n\tmax_epochs: 1\n", r"is not valid YAML: .* at line 2, column 1 .*YAML indents with spaces, not tabs"),
    "indent": ("trainer:\n  max_epochs: 1\n   limit_train_batches: 3\n", r"is not valid YAML: mapping values are not allowed here at line 3, column 23"),
    "quote": ("model:\n  loss: 'hinge\n", r"is not valid YAML: .* at line 3"),
    "twice": ("trainer:\n  max_epochs: 1\ndata:\n  batch_size: 4\ntrainer:\n  max_epochs: 2\n", r"sets 'trainer' twice in the same section \(lines 1 and 5\)"),
    "twice-nested": ("trainer:\n  max_epochs: 1\n  max_epochs: 2\n", r"sets 'max_epochs' twice in the same section \(lines 2 and 3\)"),
    "empty": ("", r"is empty; a config file holds sections"),
    "comments-only": ("# nothing yet\n", r"is empty"),
    "list": ("- trainer\n- model\n", r"holds a list, not sections"),
    "scalar": ("max_epochs\n", r"holds a str, not sections"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_broken_yaml_config_is_one_sentence_naming_the_file(tmp_path, name):
    text, pattern = BROKEN[name]
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=pattern) as refused:
        check_config_args(["fit", "--config", str(path)])
    assert str(refused.value).startswith(f"--config {path} ") and "\n" not in str(refused.value)


def test_a_config_that_is_not_a_file_is_named(tmp_path):
    (tmp_path / "presets").mkdir()
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00\x01")
    cases = {"presets": "is a folder; pass a YAML file", "missing.yaml": "does not exist", "binary.yaml": r"is not a text file \(byte 0xff at offset 0 is not UTF-8\)"}
    for name, pattern in cases.items():
        with pytest.raises(ConfigError, match=rf"^--config {tmp_path / name} {pattern}"):
            check_config_args([f"--config={tmp_path / name}"])


def test_good_configs_inline_yaml_and_every_preset_pass(tmp_path):
    presets = sorted((REPO / "configs").rglob("*.yaml")) + [REPO / "tests" / "tiny.yaml"]
    check_config_args([arg for p in presets for arg in ("-c", str(p))] + ["--config", "{trainer: {max_epochs: 1}}"])
    assert read_config_file(presets[0])
    # the same key in different sections, and anchors/merge keys, are fine
    (tmp_path / "ok.yaml").write_text("a: &base {x: 1}\nb:\n  <<: *base\n  y: 2\nc: {x: 3}\n")
    assert read_yaml(tmp_path / "ok.yaml") == {"a": {"x": 1}, "b": {"x": 1, "y": 2}, "c": {"x": 3}}


def test_config_args_finds_every_spelling():
    assert config_args(["fit", "--config", "a.yaml", "-c", "b.yaml", "--config=c.yaml", "--trainer.max_epochs", "3"]) == ["a.yaml", "b.yaml", "c.yaml"]


def test_train_names_the_yaml_line_without_a_usage_page(tmp_path, capsys):
    from train import main

    (tmp_path / "bad.yaml").write_text("trainer:\n  max_epochs: [1\n")
    assert main(["--config", str(tmp_path / "bad.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --config {tmp_path / 'bad.yaml'} is not valid YAML:") and "line 3" in err and "usage:" not in err


# --- output folders the file system refuses --------------------------------------------------


def test_an_output_path_under_a_file_is_one_sentence(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("")
    assert run(lambda: (tmp_path / "notes.txt" / "runs").mkdir(parents=True)) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'notes.txt' / 'runs'} cannot be created because {tmp_path / 'notes.txt'} is a file, not a folder; choose another path\n"
    assert run(lambda: (tmp_path / "notes.txt").mkdir(parents=True, exist_ok=True)) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'notes.txt'} is a file where a folder is needed; choose another path or move the file\n"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes through chmod 555, so a read-only folder cannot be made here")
def test_a_read_only_output_folder_is_one_sentence(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert run(lambda: (locked / "runs").mkdir()) == 2
        assert capsys.readouterr().err == f"error: {locked / 'runs'} cannot be written or read: permission denied; choose a folder you may write to\n"
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize(
    "code, says",
    [(errno.EACCES, "cannot be written or read: permission denied"), (errno.EROFS, "is on a read-only file system"), (errno.ENOSPC, "cannot be written: the disk is full")],
)
def test_refusals_that_root_cannot_provoke_here_are_sentences_too(code, says):
    # raised as the file system would, since chmod 555 does not stop root and a full disk is hard to make
    def write() -> None:
        try:
            raise OSError(code, os.strerror(code), "/data/runs/version_0")
        except OSError as exc:
            raise RuntimeError("Lightning wrapped it") from exc

    assert path_refusal(RuntimeError("x")) is None
    with pytest.raises(RuntimeError) as raised:
        write()
    assert path_refusal(raised.value).startswith(f"/data/runs/version_0 {says}")


def test_an_oserror_without_a_path_is_still_a_bug():
    assert path_refusal(OSError(5, "Input/output error")) is None
    assert path_refusal(FileNotFoundError(2, "No such file", "x")) is None  # a missing input names its own flag
    with pytest.raises(OSError):
        run(lambda: Path("/nonexistent-dir-for-test/x").read_text())
