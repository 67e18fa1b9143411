"""W&B never blocks a run: the mode decision, the credential check and the bounded server probe."""

from __future__ import annotations

import http.server
import socket
import threading
import time

import pytest

from gan_lightning.commands.wandb_mode import (
    WANDB_INIT_SECONDS,
    server_answers,
    settle_wandb_mode,
    wandb_credentials_available,
    wandb_mode,
    wandb_offline_warning,
)
from gan_lightning.errors import ConfigError


@pytest.mark.parametrize("value", ["online", "shared", "run"])
def test_online_modes_with_credentials_stay_online(value):
    assert wandb_mode({"WANDB_MODE": value}, offline=False, credentials=True) == ("online", None)


def test_unset_mode_with_credentials_is_online():
    assert wandb_mode({}, offline=False, credentials=True) == ("online", None)


@pytest.mark.parametrize("value, mode", [("offline", "offline"), ("dryrun", "offline"), ("disabled", "disabled")])
def test_offline_and_disabled_modes_are_kept_without_a_warning(value, mode):
    for credentials in (True, False):
        assert wandb_mode({"WANDB_MODE": value}, offline=False, credentials=credentials) == (mode, None)


def test_the_loggers_offline_flag_wins_over_an_online_mode():
    assert wandb_mode({"WANDB_MODE": "online"}, offline=True, credentials=True) == ("offline", None)
    assert wandb_mode({"WANDB_MODE": "disabled"}, offline=True, credentials=False) == ("offline", None)


def test_online_without_credentials_falls_back_offline_and_says_why():
    mode, reason = wandb_mode({"WANDB_MODE": "online"}, offline=False, credentials=False)
    assert mode == "offline"
    assert reason.startswith("WANDB_MODE=online but no API key")


def test_no_mode_and_no_credentials_is_offline_without_blaming_wandb_mode():
    mode, reason = wandb_mode({}, offline=False, credentials=False)
    assert mode == "offline"
    assert reason.startswith("no API key") and "WANDB_MODE" not in reason


def test_an_empty_mode_counts_as_unset():
    assert wandb_mode({"WANDB_MODE": ""}, offline=False, credentials=True) == ("online", None)
    assert wandb_mode({"WANDB_MODE": ""}, offline=False, credentials=False)[0] == "offline"


@pytest.mark.parametrize("value", ["onlin", "Online", " online", "true"])
def test_an_unknown_mode_is_refused_in_one_sentence_naming_the_variable_and_the_values(value):
    with pytest.raises(ConfigError) as info:
        wandb_mode({"WANDB_MODE": value}, offline=False, credentials=True)
    message = str(info.value)
    assert message.startswith(f"WANDB_MODE={value!r}")
    assert all(word in message for word in ("online", "offline", "disabled"))
    assert "\n" not in message


def test_an_unknown_mode_is_refused_even_when_the_logger_is_offline():
    with pytest.raises(ConfigError):
        wandb_mode({"WANDB_MODE": "onlin"}, offline=True, credentials=False)


def test_the_warning_names_the_reason_the_folder_and_wandb_sync(tmp_path):
    line = wandb_offline_warning("the reason", str(tmp_path))
    assert line.startswith("W&B: the reason; logging offline to ")
    assert f"{tmp_path}/wandb/offline-run-*" in line and "wandb sync" in line
    assert "\n" not in line


@pytest.fixture
def no_login(tmp_path):
    """An environment with no key, no ~/.netrc and no wandb settings file."""
    return {"HOME": str(tmp_path), "NETRC": str(tmp_path / "netrc"), "WANDB_CONFIG_DIR": str(tmp_path / "cfg"),
            "WANDB_BASE_URL": "https://api.example.test"}


def test_credentials_come_from_the_key_the_token_file_or_netrc(no_login, tmp_path):
    assert not wandb_credentials_available(no_login)
    assert not wandb_credentials_available({**no_login, "WANDB_API_KEY": ""})
    assert wandb_credentials_available({**no_login, "WANDB_API_KEY": "k" * 40})
    assert wandb_credentials_available({**no_login, "WANDB_IDENTITY_TOKEN_FILE": "token.jwt"})
    (tmp_path / "netrc").write_text("machine other.host login user password secret\n")
    assert not wandb_credentials_available(no_login)
    (tmp_path / "netrc").write_text("machine api.example.test login user password secret\n")
    assert wandb_credentials_available(no_login)
    (tmp_path / "netrc").write_text("machine api.wandb.ai login user password secret\n")
    assert wandb_credentials_available(no_login)


def test_an_unreadable_netrc_means_no_credentials(no_login, tmp_path):
    (tmp_path / "netrc").write_text("machine\n")
    assert not wandb_credentials_available(no_login)


class _Answering(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(401)  # an error status is still an answer
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def answering_server():
    server = http.server.HTTPServer(("127.0.0.1", 0), _Answering)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def silent_server():
    """Accepts connections and never sends a byte: the probe must not wait on it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def closed_port_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


def test_a_server_that_answers_with_any_status_is_reachable(answering_server):
    assert server_answers(answering_server, {}, timeout=5)


def test_a_silent_server_is_given_up_on_at_the_deadline(silent_server):
    start = time.monotonic()
    assert not server_answers(silent_server, {}, timeout=0.5)
    assert time.monotonic() - start < 2


@pytest.mark.slow
def test_a_closed_port_or_a_bad_url_is_unreachable():
    assert not server_answers(closed_port_url(), {}, timeout=2)
    assert not server_answers("not a url", {}, timeout=2)


def test_settle_drops_an_empty_mode_and_warns_when_offline_is_forced(no_login, tmp_path):
    env = {**no_login, "WANDB_MODE": ""}
    line = settle_wandb_mode(env, offline=False, save_dir=str(tmp_path))
    assert "WANDB_MODE" not in env  # wandb refuses an empty mode
    assert line.startswith("W&B: no API key") and str(tmp_path / "wandb") in line


@pytest.mark.slow
def test_settle_goes_offline_when_the_server_does_not_answer(no_login, silent_server):
    env = {**no_login, "WANDB_MODE": "online", "WANDB_API_KEY": "k" * 40, "WANDB_BASE_URL": silent_server}
    line = settle_wandb_mode(env, offline=False, save_dir="runs")
    assert line.startswith(f"W&B: {silent_server} did not answer within 3 s; logging offline to runs/wandb")
    assert "WANDB_INIT_TIMEOUT" not in env


def test_settle_stays_online_and_bounds_the_init_wait_when_the_server_answers(no_login, answering_server):
    env = {**no_login, "WANDB_MODE": "online", "WANDB_API_KEY": "k" * 40, "WANDB_BASE_URL": answering_server}
    assert settle_wandb_mode(env, offline=False, save_dir="runs") is None
    assert env["WANDB_INIT_TIMEOUT"] == str(WANDB_INIT_SECONDS)
    env["WANDB_INIT_TIMEOUT"] = "120"  # the user's own limit wins
    assert settle_wandb_mode(env, offline=False, save_dir="runs") is None
    assert env["WANDB_INIT_TIMEOUT"] == "120"


def test_settle_is_silent_for_an_offline_or_disabled_run(no_login):
    assert settle_wandb_mode({**no_login, "WANDB_MODE": "offline"}, offline=False, save_dir="runs") is None
    assert settle_wandb_mode({**no_login, "WANDB_MODE": "disabled"}, offline=False, save_dir="runs") is None
    assert settle_wandb_mode(dict(no_login), offline=True, save_dir="runs") is None
