"""The checkpoint written when training stops on an exception."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from pytorch_lightning import Callback


class InterruptCheckpoint(Callback):
    """Writes ``on_exception.ckpt`` next to the run's other checkpoints when training stops on
    an exception: Ctrl-C, SIGTERM (Lightning turns it into an exception) or a NaN loss.

    Not Lightning's OnExceptionCheckpoint: its presence makes every ``fit()`` without a
    ``ckpt_path`` silently resume from the newest checkpoint it can find, and it needs its
    folder before the run's checkpoint folder is known. Not ModelCheckpoint's
    ``save_on_exception`` either: that names the file like a best checkpoint.
    """

    def __init__(self, filename: str = "on_exception.ckpt") -> None:
        self.filename = filename
        self.ckpt_path: Optional[Path] = None

    @property
    def rescue_checkpoint_path(self) -> Optional[Path]:
        """Where the checkpoint goes; GANModule names it when it stops on a NaN loss."""
        return self.ckpt_path

    def on_train_start(self, trainer, pl_module) -> None:
        folder = trainer.checkpoint_callback.dirpath if trainer.checkpoint_callback is not None else None
        self.ckpt_path = Path(folder or trainer.default_root_dir) / self.filename

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if self.ckpt_path is not None:
            trainer.save_checkpoint(self.ckpt_path)
