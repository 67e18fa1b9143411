"""A generator in compact form: sparse tensors stored sparse, plus what rebuilds the network.

Structured pruning and low-rank factorization already make the generator's tensors smaller;
unstructured pruning only zeroes weights, which a dense file stores all the same. The export
encodes every tensor in the smallest of

- ``dense``: the raw values;
- ``coo``: the flat positions of the non-zeros (int16 when the tensor has at most 32768
  elements, else int32/int64) and their values;
- ``bitmask``: one bit per element saying non-zero, and the non-zero values;

chosen per tensor, so a tensor is stored sparse only when that is smaller. (A bitmask costs
1/8 byte per element: it wins from a few percent of zeros up; positions win only above
~94% sparsity in int16, ~97% in int32.) All encoded bytes go into one ``uint8`` blob, because
``torch.save`` spends a zip record of a few hundred bytes on every tensor it stores.

To rebuild the network the file also holds the generator's class path and init args (what
LightningCLI stores in a checkpoint's hyper-parameters), the latent size it is built with,
and the generator's record of structural edits (:mod:`gan_lightning.compress.edits`, the part of
``GANModule.edits`` about the generator). :func:`load_exported` rebuilds it from these alone;
files of version 1 hold the records written before that one (``structure``, ``lowrank``). Files are read
with ``torch.load(weights_only=True)``: no pickled code runs, and the only class imported is
the generator class the file names, and only when it is on the allow-list of
:mod:`gan_lightning.class_paths`.
"""

from __future__ import annotations

import io
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from gan_lightning.compress.edits import EditRecord, old_edits
from gan_lightning.errors import CheckpointError, ConfigError
from gan_lightning.files import write_atomically
from gan_lightning.specs import build_generator, spec_from_hparams

FORMAT = "gan-lightning/generator-export"
VERSION = 2  # 2: the record of edits (1: the structure and lowrank records, still read)
DTYPES = {str(d).removeprefix("torch."): d for d in (torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool)}
_BITS = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)


def _bytes(t: torch.Tensor) -> torch.Tensor:
    """The raw bytes of a tensor, as a flat uint8 tensor."""
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


def _index_dtype(numel: int) -> torch.dtype:
    return torch.int16 if numel <= 2**15 else torch.int32 if numel <= 2**31 else torch.int64


def encoded_sizes(t: torch.Tensor) -> dict[str, int]:
    """Bytes each encoding of ``t`` would take (sparse ones only for floating-point tensors)."""
    numel, item = t.numel(), t.element_size()
    sizes = {"dense": numel * item}
    if t.is_floating_point() and numel > 0:
        nnz = int(t.count_nonzero())
        sizes["coo"] = nnz * (_index_dtype(numel).itemsize + item)
        sizes["bitmask"] = math.ceil(numel / 8) + nnz * item
    return sizes


def encode(t: torch.Tensor) -> tuple[str, list[torch.Tensor]]:
    """The smallest encoding of ``t`` (ties go to dense) and the tensors it consists of.
    Zeros of either sign are stored as +0 by the sparse encodings."""
    t = t.detach().cpu()
    sizes = encoded_sizes(t)
    encoding = min(sizes, key=lambda k: (sizes[k], k != "dense"))
    flat = t.reshape(-1)
    if encoding == "dense":
        return encoding, [flat]
    mask = flat != 0
    if encoding == "coo":
        return encoding, [mask.nonzero().view(-1).to(_index_dtype(flat.numel())), flat[mask]]
    padded = torch.cat([mask, mask.new_zeros(-len(mask) % 8)]).view(-1, 8).to(torch.uint8)
    return encoding, [(padded * _BITS).sum(1, dtype=torch.uint8), flat[mask]]


def decode(encoding: str, parts: list[torch.Tensor], shape: list[int], dtype: torch.dtype) -> torch.Tensor:
    numel = math.prod(shape)
    if encoding == "dense":
        return parts[0].reshape(shape)
    out = torch.zeros(numel, dtype=dtype)
    if encoding == "coo":
        out[parts[0].long()] = parts[1]
    elif encoding == "bitmask":
        mask = ((parts[0][:, None] & _BITS) != 0).reshape(-1)[:numel]
        out[mask] = parts[1]
    else:
        raise ValueError(encoding)
    return out.reshape(shape)


@dataclass
class ExportReport:
    """What an export wrote, in bytes: the file, and the same generator saved densely."""

    path: str
    exported_bytes: int
    dense_bytes: int  # torch.save of the sampling generator's state_dict, as it is
    configured_bytes: Optional[int]  # the same for the generator as configured (before any compression)
    checkpoint_bytes: Optional[int]  # the checkpoint the generator came from, if any
    params: int
    nonzero: int
    encodings: dict[str, int] = field(default_factory=dict)  # encoding -> number of tensors

    def table(self) -> str:
        rows = [("generator as configured, dense", self.configured_bytes), ("generator as trained, dense", self.dense_bytes), ("exported (sparse where smaller)", self.exported_bytes)]
        if self.checkpoint_bytes is not None:
            rows.insert(0, ("checkpoint (all training state)", self.checkpoint_bytes))
        base = self.configured_bytes or self.dense_bytes  # the generator before any compression
        lines = [f"{'file':<34}{'bytes':>12}{'x configured' if self.configured_bytes else 'x dense':>14}"]
        for name, size in rows:
            if size is not None:
                lines.append(f"{name:<34}{size:>12,}{size / base:>14.3f}")
        tensors = ", ".join(f"{n} {e}" for e, n in sorted(self.encodings.items()))
        lines.append(f"{self.nonzero:,} of {self.params:,} generator values non-zero ({1 - self.nonzero / max(self.params, 1):.1%} zeros); tensors: {tensors}")
        return "\n".join(lines)


def generator_spec(module) -> dict[str, Any]:
    """:func:`spec_from_hparams` of a GANModule, or a sentence saying how to supply the spec."""
    spec = spec_from_hparams(module.hparams)
    if spec is not None:
        return spec
    raise ConfigError(
        "the module's hyper-parameters hold no generator class path (it was built in Python, not by train.py):"
        ' pass export_generator(..., spec=...), a generator_spec {"class_path": ..., "init_args": {...}}'
    )


def configured_generator(module, spec: dict[str, Any]) -> tuple[nn.Module, int]:
    """The generator as configured (before any compression), freshly built, and the latent
    size it was built with. For a generator that replaced the configured one (a distillation
    student, see ``module.edits``), the one it replaced: what its costs are compared with."""
    replacement = module.edits.replacement("generator")
    configured = build_generator((replacement.replaces if replacement is not None else None) or spec)
    build_z = module.hparams.get("z_dim") or getattr(configured, "z_dim", None)
    if not isinstance(build_z, int):
        raise ConfigError("the generator has no integer z_dim attribute and the module no z_dim hyper-parameter")
    return configured, build_z


def _saved_size(obj: Any) -> int:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getbuffer().nbytes


def export_generator(
    module,
    path: str | Path,
    spec: Optional[dict[str, Any]] = None,
    sparse: bool = True,
    checkpoint_path: Optional[str | Path] = None,
) -> ExportReport:
    """Write the sampling generator (the EMA copy when there is one) of a GANModule to ``path``
    in compact form and return the sizes. ``spec`` defaults to the module's hyper-parameters
    (present when the module came from train.py); ``sparse=False`` stores every tensor dense."""
    spec = spec or generator_spec(module)
    generator = module.sampling_generator
    configured, build_z = configured_generator(module, spec)
    state = {k: v.detach().cpu() for k, v in generator.state_dict().items()}
    entries, pieces, offset, counts = [], [], 0, {}
    for name, tensor in state.items():
        if sparse:
            encoding, parts = encode(tensor)
        else:
            encoding, parts = "dense", [tensor.reshape(-1)]
        counts[encoding] = counts.get(encoding, 0) + 1
        spans = []
        for part in parts:
            raw = _bytes(part)
            spans.append([offset, raw.numel(), str(part.dtype).removeprefix("torch.")])
            pieces.append(raw)
            offset += raw.numel()
        entries.append({"name": name, "dtype": str(tensor.dtype).removeprefix("torch."), "shape": list(tensor.shape), "encoding": encoding, "parts": spans})
    blob = torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.uint8)
    record = {
        "format": FORMAT,
        "version": VERSION,
        "generator": spec,
        "build_z_dim": build_z,
        "z_dim": module.z_dim,
        "edits": module.edits.only("generator").to_state(),
        "tensors": entries,
        "crc32": zlib.crc32(blob.numpy().tobytes()),
        "blob": blob,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda f: torch.save(record, f))  # a full disk keeps an earlier export of that name
    params = [t for t in state.values() if t.is_floating_point()]
    return ExportReport(
        path=str(path),
        exported_bytes=path.stat().st_size,
        dense_bytes=_saved_size(generator.state_dict()),
        configured_bytes=_saved_size(configured.state_dict()),
        checkpoint_bytes=Path(checkpoint_path).stat().st_size if checkpoint_path else None,
        params=sum(t.numel() for t in params),
        nonzero=sum(int(t.count_nonzero()) for t in params),
        encodings=counts,
    )


def _refuse(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"{path} is not a gan-lightning generator export ({why}); write one with python -m gan_lightning.commands.export")


def read_export(path: str | Path) -> dict[str, torch.Tensor | Any]:
    """The checked contents of an export file: its record and the decoded state_dict."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; write a generator export with python -m gan_lightning.commands.export")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise _refuse(path, f"unreadable: {type(exc).__name__}, it may be corrupted or truncated") from exc
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise _refuse(path, f"no {FORMAT!r} format marker")
    if record.get("version") not in (1, VERSION):
        raise _refuse(path, f"format version {record.get('version')!r}, this code reads versions 1 to {VERSION}")
    edits = ("edits",) if record["version"] == VERSION else ("structure", "lowrank")
    missing = [k for k in ("generator", "build_z_dim", "z_dim", *edits, "tensors", "crc32", "blob") if k not in record]
    if missing:
        raise _refuse(path, f"it lacks {', '.join(missing)}")
    blob = record.get("blob")
    if not isinstance(blob, torch.Tensor) or blob.dtype != torch.uint8 or zlib.crc32(blob.numpy().tobytes()) != record.get("crc32"):
        raise _refuse(path, "its data fails the checksum, so it is corrupted")
    state = {}
    try:
        for entry in record["tensors"]:
            parts = [blob[start : start + length].clone().view(DTYPES[dtype]) for start, length, dtype in entry["parts"]]
            state[entry["name"]] = decode(entry["encoding"], parts, entry["shape"], DTYPES[entry["dtype"]])
    except (KeyError, IndexError, ValueError, RuntimeError, TypeError) as exc:
        raise _refuse(path, f"malformed tensor table: {type(exc).__name__} {exc}") from exc
    if record["version"] == 1:
        edits = EditRecord({"generator": old_edits(record["structure"], record["lowrank"])})
    else:
        edits = EditRecord.from_state(record["edits"], str(path))
    return {**record, "edits": edits, "state_dict": state}


def load_exported(path: str | Path) -> nn.Module:
    """The generator of an export file, rebuilt and loaded, in eval mode, with ``z_dim`` set to
    the latent size it takes (its recorded edits replayed, see :mod:`gan_lightning.compress.edits`)."""
    record = read_export(path)
    built = build_generator(record["generator"], source=str(path))
    generator = record["edits"].replay("generator", built, torch.zeros(2, record["build_z_dim"])).eval()
    try:
        generator.load_state_dict(record["state_dict"])
    except RuntimeError as exc:
        raise _refuse(Path(path), f"its tensors do not fit the network it records: {str(exc).splitlines()[0]}") from exc
    generator.z_dim = record["edits"].latent_size("generator", record["build_z_dim"])
    return generator.requires_grad_(False)
