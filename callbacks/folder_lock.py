"""One writer per checkpoint folder: a run holds a lock on its checkpoint folder while it lives.

Without it, a resume started while the run it resumes is still training writes into the same
folder, both exit 0, and the last one to finish silently replaces the other's ``last.ckpt``.
The lock is an OS lock (the ``filelock`` library: ``flock`` on Unix), so the kernel releases it
when its process ends, a crash and a SIGKILL included; a lock file left behind by a dead run is
simply taken over. Beside it a small JSON file says who holds it (pid, host, command, start),
so the run that is refused can name the other one.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Optional

from filelock import FileLock, Timeout
from pytorch_lightning import Callback
from pytorch_lightning.callbacks import ModelCheckpoint
from typing_extensions import override

from gan_lightning.errors import ConfigError
from gan_lightning.files import refused_writes, write_atomically
from gan_lightning.logs import get_logger

log = get_logger(__name__)

LOCK_NAME = ".gan-lightning.lock"
HOLDER_NAME = ".gan-lightning.lock.json"
# the token of the run holding a lock, inherited by the processes it starts (ddp_spawn's rank 0
# must not refuse the lock its own launcher took)
TOKEN_ENV = "GAN_LIGHTNING_LOCK_TOKEN"
# the environment variables through which launchers (Lightning's own, torchrun, SLURM) give a
# process its rank: one that names a rank other than 0 is not the process that writes checkpoints
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")


def launched_as_rank_zero() -> bool:
    """Whether no launcher says this process is another rank than 0 (before the Trainer knows)."""
    return all(os.environ.get(name, "0") == "0" for name in RANK_VARIABLES)


class FolderLock:
    """The lock on one folder, with the record of who holds it."""

    def __init__(self, folder: str | Path, token: Optional[str] = None) -> None:
        self.folder = Path(folder)
        self.token = token or uuid.uuid4().hex
        self.lock = FileLock(str(self.folder / LOCK_NAME))
        self.holder_file = self.folder / HOLDER_NAME
        self.held = False

    def holder(self) -> Optional[dict[str, Any]]:
        """Who holds (or last held) the lock, as its holder recorded it; None when unknown."""
        try:
            record = json.loads(self.holder_file.read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def _ours(self, record: Optional[dict[str, Any]]) -> bool:
        """Held by this lock, or by the run that started this process (ddp_spawn's main process)."""
        return bool(record) and record.get("token") in (self.token, os.environ.get(TOKEN_ENV))

    def acquire(self) -> None:
        """Take the lock now or refuse in one sentence naming the run that holds it."""
        earlier = self.holder()
        try:
            with refused_writes(self.folder / LOCK_NAME, "the lock file", "--checkpoint.dirpath"):
                self.folder.mkdir(parents=True, exist_ok=True)
                self.lock.acquire(timeout=0)
        except Timeout:
            holder = self.holder()
            if self._ours(holder):
                return
            who = (
                f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}: {str(holder.get('command', ''))[:200]}"
                if holder else "its details are not recorded yet"
            )
            raise ConfigError(
                f"the checkpoint folder {self.folder} is being written by another run ({who}); wait for it to end or stop it,"
                " or write this run into a new folder with --checkpoint.dirpath NEW_FOLDER"
            ) from None
        self.held = True
        if earlier and not self._ours(earlier):
            log.info(f"taking over the lock of {self.folder}: its holder, pid {earlier.get('pid')} on {earlier.get('host')}, has ended")
        record = {
            "pid": os.getpid(), "host": socket.gethostname(), "command": shlex.join([sys.executable, *sys.argv]),
            "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "token": self.token,
        }
        text = json.dumps(record, indent=1)
        try:
            write_atomically(self.holder_file, lambda f: f.write(text.encode()), what="the lock record", flag="--checkpoint.dirpath", fsync=False)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        if not self.held:
            return
        record = self.holder()
        if record and record.get("token") == self.token:  # removed while still locked: never another run's record
            self.holder_file.unlink(missing_ok=True)
        self.lock.release()
        self.held = False


class CheckpointFolderLock(Callback):
    """Holds the lock of every checkpoint folder of a fitting run, on global rank 0 only (the
    only rank that writes checkpoints). train.py takes the lock of a folder it knows before the
    run starts (:meth:`lock_configured`, before W&B resumes the run and before the run's config
    is saved); a folder Lightning names itself (``<run>/checkpoints``) is locked once it is known."""

    def __init__(self) -> None:
        self.locks: dict[Path, FolderLock] = {}
        self.token = uuid.uuid4().hex

    def lock(self, folder: Optional[str]) -> None:
        if not folder or "://" in str(folder):  # remote storage has no OS lock to take
            return
        key = Path(os.path.realpath(folder))
        if key not in self.locks:
            lock = FolderLock(key, self.token)
            lock.acquire()
            self.locks[key] = lock
            os.environ[TOKEN_ENV] = self.token

    def _checkpoint_folders(self, trainer) -> list[Optional[str]]:
        return [cb.dirpath for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint)]

    def lock_configured(self, trainer) -> None:
        """Lock the folders the configuration names, while no launcher has started other ranks."""
        if launched_as_rank_zero():
            for folder in self._checkpoint_folders(trainer):
                self.lock(folder)

    @override
    def on_fit_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:  # ModelCheckpoint has resolved its default folder in its setup
            for folder in self._checkpoint_folders(trainer):
                self.lock(folder)

    def release(self) -> None:
        for lock in self.locks.values():
            lock.release()
        self.locks.clear()
        if os.environ.get(TOKEN_ENV) == self.token:
            del os.environ[TOKEN_ENV]

    @override
    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.release()

    @override
    def teardown(self, trainer, pl_module, stage: str) -> None:
        self.release()

    def __getstate__(self) -> dict[str, Any]:
        # ddp_spawn pickles the callbacks for its processes; an OS lock does not travel
        return {**self.__dict__, "locks": {}}
