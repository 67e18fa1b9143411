"""Reading the user's YAML config files, or refusing one in a sentence that names the file and line.

jsonargparse reports a broken ``--config`` after a page of usage text, as YAML's own message
about ``"<unicode string>"`` (the file's name is lost), and lets a key written twice in a
mapping silently win; a file that is not UTF-8 ends in a traceback. So train.py checks the
files named by ``--config`` with :func:`check_config_args` before jsonargparse sees them, and
replaces a shipped preset's name (``configs/wgan_clip.yaml`` typed outside a checkout) by its path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from gan_lightning.class_paths import check_config_classes
from gan_lightning.commands.presets import find_preset, preset_names
from gan_lightning.errors import ConfigError


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice in one mapping (YAML keeps the last one)."""

    path = ""
    flag = "--config"

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *base" may be overridden by design
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise ConfigError(
                    f"{self.flag} {self.path} sets {key!r} twice in the same section (lines {seen[key]} and {line}); "
                    "keep one, since YAML would silently use the last"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(err: yaml.YAMLError, text: str) -> str:
    """YAML's complaint with 1-based line and column numbers, e.g. ``did not find expected ','
    at line 4, column 6 (while parsing a flow sequence that starts at line 3)``."""
    if not isinstance(err, yaml.MarkedYAMLError) or err.problem_mark is None:
        return " ".join(str(err).split())
    mark = err.problem_mark
    where = f"{err.problem} at line {mark.line + 1}, column {mark.column + 1}"
    if err.context:
        start = f" that starts at line {err.context_mark.line + 1}" if err.context_mark is not None else ""
        where += f" ({err.context}{start})"
    lines = text.splitlines()
    if mark.line < len(lines) and lines[mark.line][mark.column : mark.column + 1] == "\t":
        where += "; YAML indents with spaces, not tabs"
    return where


def read_yaml(path: str | Path, flag: str = "--config") -> Any:
    """The contents of the YAML file at ``path``, or a ConfigError naming ``flag``, the file and,
    for a syntax error, the line."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a folder; pass a YAML file such as configs/wgan_clip.yaml")
    if not path.is_file():
        raise ConfigError(f"{flag} {path} does not exist; pass a YAML file such as configs/wgan_clip.yaml")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{flag} {path} is not a text file (byte {err.object[err.start]:#04x} at offset {err.start} is not UTF-8); pass a YAML file") from err
    except OSError as err:
        raise ConfigError(f"{flag} {path} cannot be read ({err.strerror or err}); check its permissions") from err
    loader = _UniqueKeyLoader(text)
    loader.path, loader.flag = str(path), flag
    try:
        return loader.get_single_data()
    except yaml.YAMLError as err:
        raise ConfigError(f"{flag} {path} is not valid YAML: {_yaml_problem(err, text)}") from err
    finally:
        loader.dispose()


def read_config_file(path: str | Path, flag: str = "--config") -> dict:
    """A config file's top-level mapping (e.g. ``trainer: {max_epochs: 5}``), or a ConfigError."""
    config = read_yaml(path, flag)
    if config is None:
        raise ConfigError(f"{flag} {path} is empty; a config file holds sections such as 'trainer: {{max_epochs: 5}}'")
    if not isinstance(config, dict):
        raise ConfigError(
            f"{flag} {path} holds a {type(config).__name__}, not sections; a config file holds sections such as 'trainer: {{max_epochs: 5}}'"
        )
    return config


def _config_positions(argv: list[str]) -> list[tuple[int, str, str]]:
    """(index in argv, text before the value, value) of every ``--config`` / ``-c`` value."""
    found = []
    for i, arg in enumerate(argv):
        if arg in ("--config", "-c") and i + 1 < len(argv):
            found.append((i + 1, "", argv[i + 1]))
        elif arg.startswith("--config="):
            found.append((i, "--config=", arg.split("=", 1)[1]))
    return found


def config_args(argv: list[str]) -> list[str]:
    """The values given to ``--config`` / ``-c`` in ``argv`` (as a file or, for jsonargparse, inline YAML)."""
    return [value for _, _, value in _config_positions(argv)]


def _inline_yaml(value: str) -> dict | None:
    # jsonargparse also takes the config itself as the value: --config '{trainer: {max_epochs: 1}}'
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        return None
    return parsed if isinstance(parsed, dict) else None


def check_config_args(argv: list[str]) -> list[str]:
    """``argv`` with every ``--config`` that names a shipped preset rather than an existing file
    replaced by the preset's path; refuses, with one sentence, a ``--config`` that is neither, or a
    file that is a folder, not UTF-8, not valid YAML, empty, not a mapping or with a key written twice."""
    argv = list(argv)
    for i, before, value in _config_positions(argv):
        if not Path(value).exists():
            if _inline_yaml(value) is not None:
                continue
            preset = find_preset(value)
            if preset is None:
                raise ConfigError(
                    f"--config {value} does not exist; pass a YAML file, or one of the shipped presets by name or as"
                    f" configs/NAME.yaml: {', '.join(preset_names())}"
                )
            argv[i], value = before + str(preset), str(preset)
        check_config_classes(read_config_file(value), f"--config {value}", Path(value).parent)
    return argv
