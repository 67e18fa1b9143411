"""Test environment: offline W&B, two threads, quiet warnings."""

import os
import tempfile
import warnings

import pytest
import pytorch_lightning as pl
import torch

# Never let a test reach W&B servers or ask for a key.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# Domain classifiers are cached per test session, not in the user's ~/.cache.
os.environ["GAN_LIGHTNING_CACHE"] = tempfile.mkdtemp(prefix="gan-lightning-test-cache-")
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
# One thread: the networks are tiny, and two OpenMP threads fighting another process for
# two cores slow a fit down tenfold.
torch.set_num_threads(1)


@pytest.fixture
def seeded():
    pl.seed_everything(0, verbose=False)


@pytest.fixture(autouse=True)
def _no_class_allowed_by_an_earlier_test():
    """--allow_class lasts for the process; in-process command tests must not inherit it."""
    from gan_lightning import class_paths

    yield
    class_paths._allowed_by_code.clear()
