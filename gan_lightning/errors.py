"""User-facing errors: each message is one sentence that names the flag or file at fault
and what is allowed. ``train.py`` prints them without a traceback."""


class GANLightningError(Exception):
    """Base class of errors caused by the user's input, not by a bug."""


class ConfigError(GANLightningError, ValueError):
    """A flag or config value is not allowed."""


class DataError(GANLightningError, FileNotFoundError):
    """A data folder or file is missing or unreadable."""


class CheckpointError(GANLightningError, RuntimeError):
    """A checkpoint is unreadable or does not fit the configured model."""


class RunStopped(GANLightningError, RuntimeError):
    """Training stopped before its end. ``rescue`` says what was saved where and ``resume`` the
    command that continues the run; the callback that writes the rescue checkpoint sets them,
    after the exception was raised."""

    exit_status = 2

    def __init__(self, reason: str, advice: str = "") -> None:
        super().__init__(reason)
        self.reason, self.advice = reason, advice
        self.rescue, self.resume = "nothing was saved", ""

    def __str__(self) -> str:
        advice = f": {self.advice}" if self.advice else ""
        resume = f"; then resume with: {self.resume}" if self.resume and self.advice else f"; resume with: {self.resume}" if self.resume else ""
        return f"{self.reason}; {self.rescue}{advice}{resume}"


class NonFiniteLossError(RunStopped, FloatingPointError):
    """A loss, a weight, a buffer or the optimizer state became NaN or infinite."""


class TrainingInterrupted(RunStopped):
    """SIGINT or SIGTERM stopped training at a batch boundary; exits 128 + the signal number,
    as schedulers expect of a job that did not finish."""

    def __init__(self, reason: str, signum: int) -> None:
        super().__init__(reason)
        self.exit_status = 128 + signum


class ExportError(GANLightningError, RuntimeError):
    """An exported model does not reproduce the PyTorch generator, or cannot be written or run."""


class WriteError(GANLightningError, RuntimeError):
    """An output file could not be written (the disk is full or read-only); the earlier file of
    that name, if any, is intact and no partial file is left."""
