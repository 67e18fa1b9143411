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


class NonFiniteLossError(GANLightningError, FloatingPointError):
    """A loss became NaN or infinite; the weights from before that step are kept."""


class ExportError(GANLightningError, RuntimeError):
    """An exported model does not reproduce the PyTorch generator, or cannot be written or run."""
