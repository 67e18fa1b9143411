"""Battery: W&B never blocks a run. Without a usable server or key, training runs and logs
offline with one ``W&B:`` line saying why and where; a mistyped WANDB_MODE is refused first.

"No network" is a key with WANDB_BASE_URL at 192.0.2.1 (TEST-NET-1, never routed), so these
cases behave the same on a machine that has the internet. ``HOME: "."`` and a relative NETRC
(the commands run in the workspace) hide the user's own ``wandb login``.
"""

from __future__ import annotations

import http.server
import socket
import threading

from tests.helpers import tiny_run_args
from tests.reliability.battery import Case, Workspace

CATEGORY = "W&B"
KEY = "0123456789abcdef0123456789abcdef01234567"  # 40 hex characters, like a real key
UNROUTED = "https://192.0.2.1"
NO_LOGIN = {"HOME": ".", "NETRC": "no-netrc", "WANDB_CONFIG_DIR": "wandb-config", "WANDB_API_KEY": ""}
# exactly one W&B: line, and it says where the offline run is and how to upload it
ONE_LINE = r"\A(?!.*W&B: .*W&B: ).*W&B: {reason}; logging offline to \S*wb-runs/wandb/offline-run-\* \(upload it later with `wandb sync`\)"


def train_with_wandb(ws: Workspace) -> list[str]:
    import wandb

    wandb.finish()  # in-process, wandb keeps one run per process: never continue an earlier case's
    return tiny_run_args(ws.path("wb-runs"), "--checkpoint.monitor", "null", "--metrics.every_n_epochs", "0", logger="WandbLogger")


def trained_offline(ws: Workspace) -> None:
    import wandb

    wandb.finish()
    assert list(ws.path("wb-runs").glob("gan-lightning/*/checkpoints/last.ckpt")), "no last.ckpt was written"
    assert list(ws.path("wb-runs").glob("gan-lightning/*/config.yaml")), "no config.yaml was written"
    assert list(ws.path("wb-runs").glob("wandb/offline-run-*/run-*.wandb")), "no offline W&B run was written"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


REFUSING_PORT = _free_port()


class _Refusing(http.server.BaseHTTPRequestHandler):
    """A W&B server that answers every request with 401: the probe succeeds, wandb.init fails."""

    def _refuse(self) -> None:
        self.send_response(401)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    do_GET = do_POST = _refuse

    def log_message(self, *args) -> None:
        pass


def train_against_a_refusing_server(ws: Workspace) -> list[str]:
    if not getattr(_Refusing, "started", False):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", REFUSING_PORT), _Refusing)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        _Refusing.started = True
    import wandb

    wandb.teardown()  # in-process, wandb would keep an earlier case's (offline) settings and never ask the server
    return train_with_wandb(ws)


def nothing_started(ws: Workspace) -> None:
    assert not ws.path("wb-runs").exists(), "the refused run left a run folder"


CASES = [
    Case("wandb-online-key-no-network", CATEGORY, "train", train_with_wandb,
         ONE_LINE.format(reason=r"https://192\.0\.2\.1 did not answer within 3 s"), rc=0,
         env={"WANDB_MODE": "online", "WANDB_API_KEY": KEY, "WANDB_BASE_URL": UNROUTED}, check=trained_offline, slow=True),
    Case("wandb-mode-empty", CATEGORY, "train", train_with_wandb,
         ONE_LINE.format(reason=r"no API key or `wandb login` was found"), rc=0,
         env={**NO_LOGIN, "WANDB_MODE": ""}, check=trained_offline),
    Case("wandb-mode-empty-key-no-network", CATEGORY, "train", train_with_wandb,
         ONE_LINE.format(reason=r"https://192\.0\.2\.1 did not answer within 3 s"), rc=0,
         env={"WANDB_MODE": "", "WANDB_API_KEY": KEY, "WANDB_BASE_URL": UNROUTED}, check=trained_offline, slow=True),
    Case("wandb-online-no-key", CATEGORY, "train", train_with_wandb,
         ONE_LINE.format(reason=r"WANDB_MODE=online but no API key or `wandb login` was found"), rc=0,
         env={**NO_LOGIN, "WANDB_MODE": "online"}, check=trained_offline, slow=True),
    Case("wandb-server-refuses-the-run", CATEGORY, "train", train_against_a_refusing_server,
         ONE_LINE.format(reason=r"the W&B server refused the run \(\w+: .*\)"), rc=0,
         env={"WANDB_MODE": "online", "WANDB_API_KEY": KEY, "WANDB_BASE_URL": f"http://127.0.0.1:{REFUSING_PORT}"}, check=trained_offline, slow=True),
    Case("wandb-mode-typo", CATEGORY, "train", train_with_wandb,
         r"error: WANDB_MODE='onlin' is not a W&B mode; set it to online, offline or disabled, or unset it", rc=2,
         env={"WANDB_MODE": "onlin"}, check=nothing_started),
]
