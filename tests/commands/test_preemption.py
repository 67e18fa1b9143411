"""A real train.py process, pruned, stopped by SIGTERM or Ctrl-C mid-epoch: it writes a
checkpoint at a batch boundary, prints the command that resumes it, exits 128 + the signal,
and the resumed run ends where the uninterrupted run ends, with the same masks."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys

import pytest
import torch

from tests.helpers import REPO, tiny_run_args

pytestmark = pytest.mark.slow  # real train.py processes, signalled

EPOCHS, BATCHES = 3, 30
FLAGS = ("--metrics.every_n_epochs", "0", "--checkpoint.monitor", "null", "--trainer.max_epochs", str(EPOCHS),
         "--trainer.limit_train_batches", str(BATCHES), "--callbacks", "prune", "--prune.start_epoch", "1", "--prune.metric", "none",
         "--prune.granularity", "unstructured")
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}


def train(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "train.py", *argv], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)


def masks(path):
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    return checkpoint["global_step"], checkpoint["callbacks"]["Prune"]["masks"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run = tmp_path_factory.mktemp("uninterrupted")
    done = train(tiny_run_args(run, *FLAGS))
    assert done.returncode == 0, done.stderr[-2000:]
    return masks(run / "version_0" / "checkpoints" / "last.ckpt")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_run_stopped_mid_epoch_resumes_to_the_same_end(tmp_path, uninterrupted, signum):
    run = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "train.py", *tiny_run_args(run, *FLAGS)], cwd=REPO, env=ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = []
    for line in process.stdout:  # stop it just after the pruning event, early in epoch 1
        output.append(line)
        if "prune: event 1" in line:
            process.send_signal(signum)
            break
    output.append(process.stdout.read())
    rc = process.wait(timeout=300)
    text = "".join(output)
    assert rc == 128 + signum, text[-2000:]
    error = next(line for line in text.splitlines() if line.startswith("error: "))
    name = signal.Signals(signum).name
    assert error.startswith(f"error: training stopped by {name} after epoch 1, batch "), error
    rescue = run / "version_0" / "checkpoints" / "on_exception.ckpt"
    assert f"is saved to {rescue}; resume with: python train.py " in error
    step, _ = masks(rescue)
    assert BATCHES * 2 < step < BATCHES * 2 * 2 and step % 2 == 0, f"step {step} is not a batch boundary inside epoch 1"

    command = shlex.split(error.split("resume with: ", 1)[1])
    resumed = train(command[2:])  # the printed command, run as printed (minus 'python train.py')
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    final_step, final_masks = masks(run / "version_0" / "checkpoints" / "last.ckpt")
    expected_step, expected_masks = uninterrupted
    assert final_step == expected_step == EPOCHS * BATCHES * 2
    assert final_masks.keys() == expected_masks.keys() and final_masks
    for key in expected_masks:
        assert torch.equal(final_masks[key], expected_masks[key]), key
