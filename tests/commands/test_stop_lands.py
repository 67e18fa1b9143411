"""SIGTERM sent from outside (as `timeout`, SLURM and Kubernetes send it) to a real train.py whose
batch is blocked: the stop lands within the bound, exit 143, one sentence naming the newest
checkpoint and the command that resumes from it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import REPO, TINY

pytestmark = pytest.mark.slow  # a real train.py process, signalled


def test_sigterm_from_outside_lands_while_a_batch_is_blocked(tmp_path):
    mark = tmp_path / "blocked"
    argv = ["--config", TINY, "--trainer.default_root_dir", str(tmp_path / "runs"), "--trainer.logger", "CSVLogger",
            "--trainer.logger.save_dir", str(tmp_path / "runs"), "--checkpoint.monitor", "null", "--metrics.every_n_epochs", "0",
            "--trainer.max_epochs", "2", "--data", "tests.reliability.stalled_data.StalledDigits", "--data.image_size", "8",
            "--data.batch_size", "16", "--data.mark", str(mark), "--data.signum", "0", "--data.stall_seconds", "120"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "GAN_LIGHTNING_STOP_TIMEOUT": "3", "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "train.py", *argv], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not mark.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert mark.exists(), "the run never reached the blocked batch"
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    finally:
        process.kill()
    took = time.monotonic() - sent
    assert 3 <= took < 15, f"the stop took {took:.1f} s"
    assert process.returncode == 128 + signal.SIGTERM, output[-2000:]
    last = tmp_path / "runs" / "version_0" / "checkpoints" / "last.ckpt"
    error = [line for line in output.splitlines() if line.startswith("error: ")]
    assert error == [
        f"error: training stopped by SIGTERM without a new checkpoint, because no batch boundary came within 3 s of the signal"
        f" (a batch is blocked, e.g. reading a file; GAN_LIGHTNING_STOP_TIMEOUT sets the wait); the newest checkpoint is {last};"
        f" resume with: python train.py {' '.join(argv)} --ckpt_path {last}"
    ], output[-2000:]
    assert last.is_file() and "Traceback" not in output
