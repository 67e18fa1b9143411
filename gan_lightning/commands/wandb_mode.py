"""Whether a run's W&B logger can log online, decided by the train command before it starts.

wandb itself would ask for an API key on a terminal that is not there, or wait 90 s for a
server that does not answer, and then raise. Here: no credentials, no answer from the server
within a few seconds, or a server that refuses the run all mean the run logs offline with one
line that says why (``wandb sync`` uploads it later). Only an unknown WANDB_MODE stops a run.
"""

from __future__ import annotations

import configparser
import netrc
import os
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit

from jsonargparse import Namespace
from pytorch_lightning import Trainer
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from gan_lightning.errors import ConfigError

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


def logger_configs(cfg: Namespace) -> list[Optional[Namespace]]:
    """The config of each logger, in the Trainer's order (None for a logger given otherwise)."""
    logger_cfg = cfg.trainer.get("logger")
    configs = logger_cfg if isinstance(logger_cfg, list) else [logger_cfg]
    return [lc if isinstance(lc, Namespace) else None for lc in configs]


def configure_wandb(cfg: Namespace, run: dict[str, Any]) -> None:
    """Fill each W&B logger's unset arguments from ``run`` (name, group, tags, ...) and switch it
    offline, with one printed line, when it cannot log online."""
    for lc in logger_configs(cfg):
        if lc is None or not str(lc.get("class_path", "")).endswith("WandbLogger"):
            continue
        args = lc.init_args
        for key, value in run.items():
            if args.get(key) is None:
                args[key] = value
        warning = settle_wandb_mode(os.environ, bool(args.get("offline")), args.get("save_dir"))
        if warning:
            args["offline"] = True
            if rank_zero_only.rank == 0:  # printed, not logged: seen even with Lightning's logging silenced
                print(warning, file=sys.stderr)


def start_wandb_or_go_offline(trainer: Trainer, cfg: Namespace) -> None:
    """Start online W&B loggers just before fit() would: a server that answered the probe of
    :func:`settle_wandb_mode` may still refuse the run (a wrong key, a server error), and then
    the run logs offline with one warning line instead of stopping with a traceback."""
    loggers = list(trainer.loggers)
    for i, (logger, lc) in enumerate(zip(loggers, logger_configs(cfg))):
        if not isinstance(logger, WandbLogger) or lc is None or lc.init_args.get("offline"):
            continue
        try:
            _ = logger.experiment  # wandb.init on rank 0; a stand-in elsewhere
        except Exception as exc:  # wandb raises CommError, UsageError, AuthenticationError, ...
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else "no message"
            reason = f"the W&B server refused the run ({type(exc).__name__}: {first_line})"
            if rank_zero_only.rank == 0:
                print(wandb_offline_warning(reason, lc.init_args.get("save_dir")), file=sys.stderr)
            import wandb

            wandb.teardown()  # wandb keeps the settings of its first init (online) for the process otherwise
            loggers[i] = WandbLogger(**{**vars(lc.init_args), "offline": True}, **(lc.get("dict_kwargs") or {}))
    trainer.loggers = loggers
