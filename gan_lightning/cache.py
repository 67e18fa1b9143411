"""Where the project caches what it trains for itself (the domain classifier, the VAE): a leaf
that imports nothing of this project, so that quality and synth can both ask it."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(kind: str) -> Path:
    """``$GAN_LIGHTNING_CACHE/<kind>``, by default ``~/.cache/gan-lightning/<kind>``.

    Read at each call, not at import: a variable set after the package was imported (by a user's
    script, or a test's monkeypatch) must send the files to the new folder.
    """
    return Path(os.environ.get("GAN_LIGHTNING_CACHE") or Path.home() / ".cache" / "gan-lightning") / kind
