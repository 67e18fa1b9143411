"""One writer per checkpoint folder: a second run is refused in one sentence naming the first, a
dead run's lock is taken over, and only the rank that writes checkpoints takes it."""

from __future__ import annotations

import errno
import logging
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pytorch_lightning import Callback

from callbacks import folder_lock
from callbacks.folder_lock import HOLDER_NAME, TOKEN_ENV, CheckpointFolderLock, FolderLock
from gan_lightning.commands.train import GANLightningCLI
from gan_lightning.errors import ConfigError
from tests.helpers import REPO, tiny_run_args

HOLD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {repo!r})
    from callbacks.folder_lock import FolderLock
    lock = FolderLock({folder!r})  # kept: a lock that is garbage collected is released
    lock.acquire()
    print("locked", flush=True)
    time.sleep(600)
    """
)


@pytest.fixture
def other_process(tmp_path):
    """A process that holds the lock of ``tmp_path / 'ckpts'`` until it is killed."""
    folder = tmp_path / "ckpts"
    proc = subprocess.Popen([sys.executable, "-c", HOLD.format(repo=str(REPO), folder=str(folder))], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    yield folder, proc
    proc.kill()
    proc.wait()


@pytest.mark.slow  # a second process holds the lock
def test_a_second_writer_is_refused_naming_the_process_that_holds_the_folder(other_process):
    folder, proc = other_process
    with pytest.raises(ConfigError, match=rf"^the checkpoint folder {folder} is being written by another run \(pid {proc.pid} on \S+, started .* UTC: .*python -c\);"
                       r" wait for it to end or stop it, or write this run into a new folder with --checkpoint\.dirpath NEW_FOLDER$"):
        FolderLock(folder).acquire()


@pytest.mark.slow  # a second process holds the lock
def test_the_lock_of_a_killed_run_is_taken_over(other_process, caplog):
    folder, proc = other_process
    proc.send_signal(signal.SIGKILL)  # no Python cleanup: the kernel alone releases the lock
    proc.wait()
    lock = FolderLock(folder)
    with caplog.at_level(logging.INFO, logger="callbacks.folder_lock"):
        lock.acquire()
    assert f"its holder, pid {proc.pid}" in caplog.text and "has ended" in caplog.text
    assert lock.holder()["pid"] == os.getpid()
    lock.release()
    assert not (folder / HOLDER_NAME).exists()


def test_after_release_the_folder_can_be_locked_again(tmp_path):
    first = FolderLock(tmp_path)
    first.acquire()
    with pytest.raises(ConfigError, match="is being written by another run"):
        FolderLock(tmp_path).acquire()
    first.release()
    again = FolderLock(tmp_path)
    again.acquire()
    again.release()


@pytest.mark.filterwarnings("ignore:flock not supported")
def test_a_file_system_without_os_locks_still_has_one_writer(tmp_path, monkeypatch):
    """NFS without lockd, some FUSE mounts: flock fails with ENOSYS and filelock falls back to a
    marker file (its pid and host), which refuses a second writer as the OS lock does."""
    import fcntl

    def no_flock(fd, operation):
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

    monkeypatch.setattr(fcntl, "flock", no_flock)
    first = FolderLock(tmp_path)
    first.acquire()
    with pytest.raises(ConfigError, match=rf"is being written by another run \(pid {os.getpid()} on "):
        FolderLock(tmp_path).acquire()
    first.release()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # the marker goes with the lock: nothing stale is left
    again = FolderLock(tmp_path)
    again.acquire()
    assert again.holder()["token"] == again.token
    again.release()


def test_a_process_the_holding_run_started_shares_its_lock(tmp_path, monkeypatch):
    # ddp_spawn: the main process locks, then starts rank 0, which inherits the run's token
    launcher = FolderLock(tmp_path, token="run-1")
    launcher.acquire()
    monkeypatch.setenv(TOKEN_ENV, "run-1")
    FolderLock(tmp_path).acquire()
    monkeypatch.setenv(TOKEN_ENV, "another-run")
    with pytest.raises(ConfigError):
        FolderLock(tmp_path).acquire()
    launcher.release()


@pytest.mark.parametrize("variable", ["LOCAL_RANK", "RANK", "NODE_RANK", "SLURM_PROCID"])
def test_only_rank_zero_locks(tmp_path, monkeypatch, variable):
    monkeypatch.setenv(variable, "1")
    callback = CheckpointFolderLock()
    trainer = type("T", (), {"callbacks": [type("MC", (folder_lock.ModelCheckpoint,), {})(dirpath=str(tmp_path))]})()
    callback.lock_configured(trainer)
    assert callback.locks == {}
    monkeypatch.setenv(variable, "0")
    callback.lock_configured(trainer)
    assert list(callback.locks) == [tmp_path.resolve()]
    callback.release()
    assert TOKEN_ENV not in os.environ


def test_the_callback_pickles_without_its_os_locks(tmp_path):
    callback = CheckpointFolderLock()
    callback.lock(str(tmp_path))
    copy = pickle.loads(pickle.dumps(callback))
    assert copy.locks == {} and copy.token == callback.token
    callback.release()


class Probe(Callback):
    """Tries to lock the run's checkpoint folder while the run trains, as another process would
    (without the run's token, which processes the run starts inherit)."""

    def on_train_epoch_end(self, trainer, pl_module):
        token = os.environ.pop(TOKEN_ENV)
        try:
            FolderLock(trainer.checkpoint_callback.dirpath).acquire()
            self.refusal = None
        except ConfigError as exc:
            self.refusal = str(exc)
        finally:
            os.environ[TOKEN_ENV] = token


def test_a_run_holds_the_lock_of_the_folder_lightning_names_while_it_trains(tmp_path):
    cli = GANLightningCLI(args=tiny_run_args(tmp_path, "--checkpoint.monitor", "null", "--metrics.every_n_epochs", "0"), run=False)
    probe = Probe()
    cli.trainer.callbacks.append(probe)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    folder = cli.trainer.checkpoint_callback.dirpath
    assert probe.refusal and f"pid {os.getpid()}" in probe.refusal
    assert folder.startswith(str(tmp_path)) and (Path(folder) / "last.ckpt").is_file()
    lock = FolderLock(folder)  # released when the run ended
    lock.acquire()
    lock.release()


@pytest.mark.slow
def test_a_ddp_run_takes_one_lock_and_is_refused_whole_while_another_run_writes(tmp_path, other_process):
    folder, proc = other_process
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("MASTER_PORT", None)

    def ddp(dirpath):
        cmd = [sys.executable, str(REPO / "train.py"), *tiny_run_args(tmp_path / "runs", "--checkpoint.monitor", "null", "--metrics.every_n_epochs", "0"),
               "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp", "--checkpoint.dirpath", str(dirpath)]
        return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    refused = ddp(folder)
    assert refused.returncode == 2 and f"is being written by another run (pid {proc.pid}" in refused.stderr, refused.stderr[-2000:]
    assert "Traceback" not in refused.stderr and not list(folder.glob("*.ckpt"))
    done = ddp(tmp_path / "free")  # rank 0 locks, rank 1 (LOCAL_RANK=1) does not refuse its own run
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "free" / "last.ckpt").is_file() and not (tmp_path / "free" / HOLDER_NAME).exists()
