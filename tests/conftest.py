"""Test environment: offline W&B, two threads, quiet warnings."""

import os
import warnings

import pytest
import pytorch_lightning as pl
import torch

# Never let a test reach W&B servers or ask for a key.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
torch.set_num_threads(2)


@pytest.fixture
def seeded():
    pl.seed_everything(0, verbose=False)
