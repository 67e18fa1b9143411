"""A TorchScript file is a program (its ``code/`` runs when it is loaded and called), so the
commands run only TorchScript files the export command wrote and nobody changed since.

The export records in the file's gan-lightning metadata a SHA-256 of everything else in the
archive (code, weights, constants, inner pickles), and loading recomputes it from the zip before
torch sees the file. A foreign file, one exported before the hash existed, or one whose inner
pickle or code was swapped is refused in one sentence unless the user opts in
(``--trust_torchscript``). The hash proves the file is unchanged since it was exported, not
who exported it: docs/deploy.md says to share the compact export or ONNX instead.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from typing import IO, Any

from gan_lightning.errors import ExportError

DIGEST_KEY = "torchscript_sha256"
OPT_IN = "--trust_torchscript"
# torch.jit.save writes a new random id on every save; it is never run, so it is not hashed
_SERIALIZATION_ID = ".data/serialization_id"


def _relative(name: str) -> str:
    # every member sits under one folder named after the file; renaming the file renames it
    return name.split("/", 1)[-1]


def contents_digest(archive_file: str | IO[bytes], metadata_key: str) -> str:
    """SHA-256 of every member of a TorchScript archive but the metadata that holds it (and
    torch's per-save id), by name relative to the archive's folder, in name order."""
    digest = hashlib.sha256()
    with zipfile.ZipFile(archive_file) as archive:
        # every entry, duplicate names included (an export writes none, so they change the hash)
        infos = [i for i in archive.infolist() if _relative(i.filename) not in (f"extra/{metadata_key}", _SERIALIZATION_ID)]
        for name, info in sorted(((_relative(i.filename), i) for i in infos), key=lambda pair: pair[0]):
            data = archive.read(info)
            digest.update(f"{name}\0{len(data)}\0".encode())
            digest.update(data)
    return digest.hexdigest()


def _metadata(data: bytes, metadata_key: str) -> dict[str, Any]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            raw = [archive.read(n) for n in archive.namelist() if _relative(n) == f"extra/{metadata_key}"]
        metadata = json.loads(raw[0]) if len(raw) == 1 else {}
    except (zipfile.BadZipFile, ValueError, UnicodeDecodeError):
        metadata = {}
    return metadata if isinstance(metadata, dict) else {}


def trusted_metadata(path: Any, data: bytes, metadata_key: str, trust: bool) -> dict[str, Any]:
    """The gan-lightning metadata of the TorchScript file ``path`` whose bytes are ``data``, read
    from the zip without running anything; refused in one sentence unless the export command
    wrote it and its contents still match the hash it recorded (``trust``: skip the hash)."""
    metadata = _metadata(data, metadata_key)
    if "z_dim" not in metadata:  # without it the latent size is unknown: nothing to run even when trusted
        raise ExportError(f"{path} is a TorchScript file without gan-lightning metadata, so it was not run; export it with python -m gan_lightning.commands.export")
    if trust:
        return metadata
    if DIGEST_KEY not in metadata:
        raise ExportError(
            f"{path} is a TorchScript file (a program) without the hash of its contents that the export command records, so it"
            f" was not run: export it again with python -m gan_lightning.commands.export, or pass {OPT_IN} if you trust where it came from"
        )
    if metadata[DIGEST_KEY] != contents_digest(io.BytesIO(data), metadata_key):
        raise ExportError(
            f"{path} was changed after it was exported (its code or weights no longer match the hash the export recorded), and a"
            f" TorchScript file is a program, so it was not run: export it again, or pass {OPT_IN} if you trust whoever changed it"
        )
    return metadata


def add_trust_torchscript_flag(parser) -> None:
    """``--trust_torchscript`` on an argparse command that runs exported generators."""
    parser.add_argument(
        OPT_IN, action="store_true",
        help="run a TorchScript file even if the export command did not write it as it is now (it is a program: only files you trust)",
    )
