"""A datamodule for the battery whose training batch never comes: what a read from a hung network
disk (or a named pipe) does to a run that a scheduler then stops."""

from __future__ import annotations

import os
import time
from pathlib import Path

from torch.utils.data import Dataset
from typing_extensions import override

from datamodules.digits import DigitsDataModule


def _signal_and_hang(mark: str, pid: int, signum: int, seconds: float) -> None:
    # The scheduler's SIGTERM arrives while this read hangs; the mark says when, so a check can
    # measure how long the stop took to land.
    Path(mark).write_text(str(time.time()))
    if signum:
        os.kill(pid, signum)
    time.sleep(seconds)


class _Stalling(Dataset):
    def __init__(self, data: Dataset, stall_at_sample: int, seconds: float, mark: str, signum: int) -> None:
        self.data, self.stall_at_sample, self.seconds, self.mark, self.signum = data, stall_at_sample, seconds, mark, signum
        self.reads = 0
        self.pid = os.getpid()  # the training process, also when a DataLoader worker reads

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        self.reads += 1
        if self.reads == self.stall_at_sample:
            _signal_and_hang(self.mark, self.pid, self.signum, self.seconds)
        return self.data[index]


class StalledDigits(DigitsDataModule):
    """The digits, but reading training batch ``stall_batch`` (counted from 0 over all epochs)
    sends the training process ``signum`` (SIGTERM) and then hangs for ``stall_seconds``;
    ``mark`` receives the time of the signal (``signum`` 0 sends none: a test sends it from
    outside). ``stall_split="val"``: a validation batch instead (batch 0 is then read by the
    sanity check before training); ``"loader"``: making the training DataLoader, which
    Lightning asks for after it installs its SIGTERM handler and before any of its loops'
    hooks (a stall there is the wait between the signal handlers and the first hook)."""

    def __init__(self, stall_batch: int = 4, stall_seconds: float = 45.0, mark: str = "sigterm_sent", signum: int = 15,
                 stall_split: str = "train", **kwargs) -> None:
        super().__init__(**kwargs)
        self.stall_split = stall_split
        self.stall_batch, self.stall_seconds, self.mark, self.signum = stall_batch, stall_seconds, mark, int(signum)

    @override
    def train_dataloader(self):
        if self.stall_split == "loader":
            _signal_and_hang(self.mark, os.getpid(), self.signum, self.stall_seconds)
        return super().train_dataloader()

    @override
    def load_splits(self) -> tuple[Dataset, Dataset]:
        if self.stall_split == "loader":
            return super().load_splits()
        splits = dict(zip(("train", "val"), super().load_splits()))
        splits[self.stall_split] = _Stalling(splits[self.stall_split], self.stall_batch * self.batch_size + 1, self.stall_seconds,
                                             self.mark, self.signum)
        return splits["train"], splits["val"]
