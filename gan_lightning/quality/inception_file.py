"""The InceptionV3 weights file is checked here before torch-fidelity sees it.

torch-fidelity reads a weights file given by path, and torch's hub reads its cached download,
with ``torch.load(weights_only=False)``: a pickle in that file would run its code. The official
file is a plain state dict of tensors, so it reads back under ``weights_only=True``; a file
that does not, or that holds anything but named tensors, is refused before the library opens it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

from gan_lightning.errors import ConfigError


def verify_inception_weights(path: str | Path, source: str) -> None:
    """Refuse in one sentence naming ``source`` (the flag or file that gave ``path``) unless
    ``path`` is a state dict of tensors that torch reads without running pickled code.

    Read on every use rather than remembered, so a file replaced since the last check is
    checked again (the official file reads back in well under a second)."""
    hint = f"pass the official InceptionV3 FID weights ({URL_INCEPTION_V3.rsplit('/', 1)[-1]}), or use --metrics.features domain"
    if not Path(path).is_file():
        raise ConfigError(f"{source} {path} does not exist; pass the InceptionV3 FID weights file")
    try:
        with warnings.catch_warnings():  # torch warns about a pickle's protocol before refusing it: noise next to the sentence
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a pickle of code, a truncated or foreign file: whatever the safe loader raises
        raise ConfigError(
            f"{source} {path} is not a plain weights file ({type(exc).__name__} under torch.load(weights_only=True)), and"
            f" torch-fidelity would run any code a pickle in it holds, so it was not read: {hint}"
        ) from None
    if not (isinstance(state, dict) and state and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())):
        raise ConfigError(f"{source} {path} is not a state dict of named tensors, as the InceptionV3 weights are: {hint}")
