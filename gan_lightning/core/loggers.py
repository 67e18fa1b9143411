"""Logger plumbing: where a run's files go, W&B defaults and mode, and images to any logger."""

from __future__ import annotations

import configparser
import csv
import netrc
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from pytorch_lightning import Trainer
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

from gan_lightning.core.lightning_private import logging_step
from gan_lightning.errors import ConfigError


def run_dir(trainer: Trainer) -> Path:
    """The folder of this run, the parent of its ``checkpoints/`` folder for every logger.

    Mirrors how ModelCheckpoint places its default ``dirpath`` (save_dir/name/version), so
    samples, the saved config and checkpoints of one run sit together.
    """
    if not trainer.loggers:
        return Path(trainer.default_root_dir)
    logger = trainer.loggers[0]
    save_dir = logger.save_dir or trainer.default_root_dir
    version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
    return Path(save_dir) / str(logger.name) / version


# wandb's accepted WANDB_MODE values and what each means for us ("shared" and "run" log online).
WANDB_MODES = {"online": "online", "shared": "online", "run": "online", "offline": "offline", "dryrun": "offline", "disabled": "disabled"}
# An online run first waits this long for the server to answer at all; a laptop without
# network would otherwise wait for wandb's init timeout (90 s) and then raise.
WANDB_PROBE_SECONDS = 3.0
# wandb.init's own limit once the server answered (wandb's default is 90 s); WANDB_INIT_TIMEOUT wins.
WANDB_INIT_SECONDS = 30


def wandb_mode(env: Mapping[str, str], offline: bool, credentials: bool) -> tuple[str, str | None]:
    """How W&B should log: ``("online" | "offline" | "disabled", why offline was forced or None)``.

    ``offline`` is the logger's own flag, ``credentials`` whether a key or login was found. An
    empty WANDB_MODE counts as unset (wandb itself rejects it). Online without credentials is
    turned offline, since wandb would otherwise ask for a key, with no terminal to answer it.
    """
    value = env.get("WANDB_MODE", "")
    if value and value not in WANDB_MODES:
        raise ConfigError(f"WANDB_MODE={value!r} is not a W&B mode; set it to online, offline or disabled, or unset it")
    if offline:
        return "offline", None
    mode = WANDB_MODES.get(value)
    if mode in ("offline", "disabled"):
        return mode, None
    if not credentials:
        return "offline", ("WANDB_MODE=online but " if mode else "") + "no API key or `wandb login` was found"
    return "online", None


def wandb_offline_warning(reason: str, save_dir: str | None) -> str:
    """The one line a user reads when W&B logs offline instead of online."""
    folder = Path(save_dir or os.environ.get("WANDB_DIR") or ".") / "wandb"
    return f"W&B: {reason}; logging offline to {folder}/offline-run-* (upload it later with `wandb sync`)"


def wandb_base_url(env: Mapping[str, str]) -> str:
    """The W&B server a run would talk to: WANDB_BASE_URL, a ``wandb login --host`` setting,
    or the installed wandb's default."""
    if env.get("WANDB_BASE_URL"):
        return env["WANDB_BASE_URL"]
    settings = configparser.ConfigParser()
    settings.read(Path(env.get("WANDB_CONFIG_DIR") or Path.home() / ".config" / "wandb") / "settings")
    if settings.get("default", "base_url", fallback=None):
        return settings.get("default", "base_url")
    import wandb

    return wandb.Settings().base_url


def wandb_credentials_available(env: Mapping[str, str] = os.environ) -> bool:
    """True when W&B could log online without asking for a key (which would hang without a terminal)."""
    if env.get("WANDB_API_KEY") or env.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    # `wandb login` writes the key for its server's host; older releases used api.wandb.ai.
    hosts = {urlsplit(wandb_base_url(env)).hostname, "api.wandb.ai"}
    try:
        logins = netrc.netrc(env.get("NETRC") or None)
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return any(logins.authenticators(host) is not None for host in hosts if host)


def server_answers(url: str, env: Mapping[str, str] = os.environ, timeout: float = WANDB_PROBE_SECONDS) -> bool:
    """Whether the server at ``url`` sends any HTTP response (an error status counts) within
    ``timeout`` seconds, through WANDB_HTTPS_PROXY or the usual proxy variables.

    A response, not just an open port: a server or proxy that accepts and then stays silent
    would hold wandb.init for its whole timeout. Name lookup can hang far longer than any
    socket timeout, so the request runs in a thread that is abandoned at the deadline.
    """
    proxies = urllib.request.getproxies()
    if env.get("WANDB_HTTPS_PROXY"):
        proxies["https"] = env["WANDB_HTTPS_PROXY"]
    opener = urllib.request.build_opener(urllib.request.ProxyHandler(proxies))
    answered = threading.Event()

    def ask() -> None:
        try:
            opener.open(url, timeout=timeout).close()
        except urllib.error.HTTPError:
            pass  # a status code is an answer
        except (OSError, ValueError):  # URLError, timeouts, refused; ValueError: not a URL
            return
        answered.set()

    threading.Thread(target=ask, daemon=True, name="wandb-probe").start()
    return answered.wait(timeout)


def settle_wandb_mode(env: MutableMapping[str, str], offline: bool, save_dir: str | None) -> str | None:
    """Decide before the logger starts whether W&B can log online; returns the one warning line
    when the run must log offline instead (the caller sets the logger's ``offline``), else None.

    Also tidies ``env`` (os.environ) for wandb: an empty WANDB_MODE is dropped, and an online
    run gets WANDB_INIT_TIMEOUT unless the user set one. Apart from refusing an unknown
    WANDB_MODE, nothing here stops a run: the worst outcome is an offline run, which
    ``wandb sync`` uploads later.
    """
    if env.get("WANDB_MODE") == "":
        del env["WANDB_MODE"]
    mode, reason = wandb_mode(env, offline, wandb_credentials_available(env))
    if mode == "online":
        url = wandb_base_url(env)
        if server_answers(url, env):
            env.setdefault("WANDB_INIT_TIMEOUT", str(WANDB_INIT_SECONDS))
        else:
            reason = f"{url} did not answer within {WANDB_PROBE_SECONDS:.0f} s"
    return wandb_offline_warning(reason, save_dir) if reason else None


def log_image(trainer: Trainer, key: str, image: np.ndarray) -> None:
    """Send a uint8 ``(H, W, 3)`` image to every logger that takes images.

    W&B is given uint8 because it maps float arrays as if they were in [0, 255] (a [0, 1]
    grid comes out black); CSV has no image support and relies on the PNG written beside it.
    """
    assert image.dtype == np.uint8 and image.ndim == 3, "log_image expects a uint8 HxWx3 array"
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[image], step=logging_step(trainer))
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, image, logging_step(trainer), dataformats="HWC")


def log_table(trainer: Trainer, key: str, columns: list[str], rows: list[list[Any]]) -> Path:
    """Send a table to every logger that takes tables (a W&B table, TensorBoard markdown
    text) and always write it as ``<run>/tables/<key>.csv``, the CSV logger's only record."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_table(key=key, columns=columns, data=rows, step=logging_step(trainer))
        elif isinstance(logger, TensorBoardLogger):
            lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
            logger.experiment.add_text(key, "\n".join(lines), logging_step(trainer))
    path = run_dir(trainer) / "tables" / (key.replace("/", "_") + ".csv")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(rows)
    return path


def describe_run(generator: str, data: str, loss: str, callbacks: list[str]) -> dict[str, Any]:
    """W&B name, group and tags: dense runs and their compressed variants share a group."""
    group = f"{generator}-{data}"
    name = group + "".join(f"+{c}" for c in callbacks)
    return {"name": name, "group": group, "tags": [generator, data, loss, *callbacks]}
