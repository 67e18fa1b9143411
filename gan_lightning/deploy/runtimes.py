"""Write the sampling generator as TorchScript or ONNX, check the file against the PyTorch
model, and run any exported file the same way.

Both exporters trace the generator on a batch of 2 and are verified on a batch of 5 (fixed
latents, fp32, CPU), so a batch size baked into the graph fails the check instead of failing
later in deployment. The file is written under a temporary name and renamed into place only
once it passes: a failed export leaves no file behind and replaces none.
"""

from __future__ import annotations

import copy
import io
import json
import os
import tempfile
import warnings
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import torch
from torch import nn

from gan_lightning.deploy.torchscript_trust import DIGEST_KEY, contents_digest, trusted_metadata
from gan_lightning.errors import ConfigError, ExportError
from gan_lightning.files import refused_writes

Runtime = Literal["torchscript", "onnx"]
RUNTIMES: tuple[str, ...] = ("torchscript", "onnx")
METADATA_KEY = "gan_lightning"  # TorchScript extra file / ONNX metadata entry holding the card
ONNX_OPSET = 17  # supported by every onnxruntime of the last three years
TRACE_BATCH, VERIFY_BATCH = 2, 5
TOLERANCE = 1e-4  # max |difference| of tanh outputs in [-1, 1]; float reordering gives ~1e-6
EXTRA_HINT = "install the export extra: pip install -e \".[export]\""


def onnx_modules():
    """(onnx, onnxruntime), or one sentence saying how to install them."""
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise ConfigError(f"ONNX export and inference need onnx and onnxruntime ({exc}); {EXTRA_HINT}") from exc
    return onnx, onnxruntime


@contextmanager
def _quiet_exporters() -> Iterator[None]:
    # torch.jit and the TorchScript-based ONNX exporter warn that they are deprecated; they are
    # chosen on purpose (see docs/deploy.md), and the warnings would bury the export's own report.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


def latents(n: int, z_dim: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed))


def _write_torchscript(generator: nn.Module, z: torch.Tensor, path: Path, metadata: dict[str, Any]) -> None:
    with _quiet_exporters():
        traced = torch.jit.trace(generator, z, check_trace=False)
        # saved twice: the metadata records the hash of the rest, which loading checks (torchscript_trust)
        first = io.BytesIO()
        torch.jit.save(traced, first, _extra_files={METADATA_KEY: json.dumps(metadata)})
        first.seek(0)
        digest = contents_digest(first, METADATA_KEY)
        torch.jit.save(traced, str(path), _extra_files={METADATA_KEY: json.dumps({**metadata, DIGEST_KEY: digest})})


def _write_onnx(generator: nn.Module, z: torch.Tensor, path: Path, metadata: dict[str, Any]) -> None:
    onnx, _ = onnx_modules()
    with _quiet_exporters():
        # dynamo=False: torch >= 2.9 defaults to the dynamo exporter, which needs onnxscript and
        # exports a different (less fused) graph; the TorchScript-based exporter is what
        # onnxruntime's fusions are written against.
        torch.onnx.export(
            generator, (z,), str(path), dynamo=False, opset_version=ONNX_OPSET,
            input_names=["z"], output_names=["images"], dynamic_axes={"z": {0: "batch"}, "images": {0: "batch"}},
        )
    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    onnx.save(model, str(path))


WRITERS: dict[str, Callable[[nn.Module, torch.Tensor, Path, dict], None]] = {"torchscript": _write_torchscript, "onnx": _write_onnx}


@dataclass
class Verification:
    batch: int
    max_abs_diff: float
    tolerance: float


def write_verified(
    generator: nn.Module, z_dim: int, path: str | Path, runtime: Runtime, metadata: dict[str, Any],
    tolerance: float = TOLERANCE, reference: nn.Module | None = None,
) -> Verification:
    """Write ``generator`` (eval mode, CPU, fp32) to ``path`` in ``runtime``'s format with
    ``metadata`` embedded, check that the file's outputs match those of ``reference`` (default:
    the generator itself; the original when ``generator`` is a rewrite of it), and only then move
    it into place. Raises :class:`ExportError` naming the largest difference."""
    if runtime not in WRITERS:
        raise ConfigError(f"--format must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    path = Path(path)
    generator = copy.deepcopy(generator).eval().float().cpu().requires_grad_(False)  # the caller's model keeps its mode
    reference = generator if reference is None else copy.deepcopy(reference).eval().float().cpu()
    with torch.no_grad():
        expected = reference(latents(VERIFY_BATCH, z_dim, seed=1))
    tmp = None
    try:
        # the temporary file is removed only after a refused write was told apart (a full disk is full until then)
        with refused_writes(path):
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            os.close(fd)
            WRITERS[runtime](generator, latents(TRACE_BATCH, z_dim), Path(tmp), metadata)
            with torch.no_grad():
                got = load_runtime(tmp, runtime)(latents(VERIFY_BATCH, z_dim, seed=1))
            if got.shape != expected.shape:
                raise ExportError(f"the {runtime} export of {path} gives shape {tuple(got.shape)} for a batch of {VERIFY_BATCH}, the generator {tuple(expected.shape)}; nothing was written")
            diff = float((got - expected).abs().max())
            if not diff <= tolerance:  # also catches NaN
                raise ExportError(f"the {runtime} export of {path} differs from the PyTorch generator by up to {diff:.3g} (tolerance {tolerance:g}) on fixed latents; nothing was written")
            os.replace(tmp, path)
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return Verification(VERIFY_BATCH, diff, tolerance)


class OnnxGenerator:
    """An ONNX generator in onnxruntime, called like the PyTorch one: latents in, images out.
    ``z_dim`` comes from the graph's input; a latent of another shape is refused in one sentence
    (onnxruntime's own message names neither the input nor the expected size)."""

    def __init__(self, path: str | Path, threads: int = 0, providers: tuple[str, ...] = ("CPUExecutionProvider",)) -> None:
        _, ort = onnx_modules()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        try:
            self.session = ort.InferenceSession(str(path), options, providers=list(providers))
        except Exception as exc:  # onnxruntime raises its own exception types for foreign files
            raise ExportError(f"{path} is not an ONNX model onnxruntime can load ({type(exc).__name__}: {str(exc).splitlines()[0]})") from exc
        (self.input,) = self.session.get_inputs()
        self.z_dim = self.input.shape[1]
        self.path = path
        self.metadata = json.loads(self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY, "{}"))

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ConfigError(f"the ONNX generator {self.path} takes latents of shape (batch, {self.z_dim}), got {tuple(z.shape)}")
        (out,) = self.session.run(None, {self.input.name: z.detach().float().cpu().numpy()})
        return torch.from_numpy(out)


def _is_torchscript(path: Path) -> bool:
    # torch.jit.save writes a zip with the model's Python code under <archive>/code/; torch.save does not
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name for name in archive.namelist())
    except zipfile.BadZipFile:
        return False


def runtime_of(path: str | Path) -> str:
    """``onnx``, ``torchscript`` or ``compact`` (a gan-lightning export), by the file's content."""
    path = Path(path)
    if path.suffix == ".onnx":
        return "onnx"
    return "torchscript" if _is_torchscript(path) else "compact"


def load_runtime(
    path: str | Path, runtime: str | None = None, device: torch.device | str = "cpu", trust_torchscript: bool = False,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A callable generator for any exported file, on ``device`` (ONNX: the CUDA execution
    provider for a CUDA device; it takes latents anywhere and returns images on the CPU), with a
    ``z_dim`` attribute. A TorchScript file runs only if the export command wrote it and it is
    unchanged since (``trust_torchscript``: also one changed or exported before the hash existed)."""
    path, device = Path(path), torch.device(device)
    if not path.is_file():
        raise ConfigError(f"{path} does not exist; write one with python -m gan_lightning.commands.export")
    runtime = runtime or runtime_of(path)
    if runtime == "onnx":
        providers = ("CUDAExecutionProvider", "CPUExecutionProvider") if device.type == "cuda" else ("CPUExecutionProvider",)
        return OnnxGenerator(path, providers=providers)
    if runtime == "torchscript":
        data = path.read_bytes()  # checked and loaded from the same bytes: a file replaced in between is not run
        metadata = trusted_metadata(path, data, METADATA_KEY, trust_torchscript)
        try:
            with _quiet_exporters():
                module = torch.jit.load(io.BytesIO(data), map_location=device)
        except Exception as exc:  # a swapped inner pickle or code: torch's own RuntimeError, many lines long
            first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            raise ExportError(f"{path} is not a TorchScript file torch can load ({first.strip()}); export it again with python -m gan_lightning.commands.export") from None
        module.z_dim, module.metadata = metadata["z_dim"], metadata
        return module
    from gan_lightning.deploy.export_file import load_exported

    return load_exported(path).to(device)
