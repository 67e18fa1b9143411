"""Write N samples of a trained generator as PNG files or one grid, from a checkpoint or an export.

    python -m gan_lightning.commands.generate --source runs/.../checkpoints/last.ckpt --num_samples 1000 --out samples/
    python -m gan_lightning.commands.generate --source g.onnx --num_samples 64 --grid --out grid.png

The latents come from one seeded draw on the CPU, so the same seed
gives the same images whatever the batch size or device, and the same images from a checkpoint
as from its exports (compact, TorchScript or ONNX; ONNX Runtime's float reordering may move a
pixel by one of 255 levels).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Optional, Sequence

import torch
from PIL import Image
from torchvision.utils import make_grid
from tqdm import tqdm

from gan_lightning.class_paths import add_allow_class_flag, allow_classes
from gan_lightning.commands.console import CommandParser, run
from gan_lightning.core.checkpoint import read_checkpoint
from gan_lightning.core.module import GANModule
from gan_lightning.deploy.runtimes import load_runtime
from gan_lightning.deploy.torchscript_trust import add_trust_torchscript_flag
from gan_lightning.errors import ConfigError, WriteError
from gan_lightning.files import advice, refused_writes, write_atomically, write_failure


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is visible to torch here; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be cpu, cuda or auto, got {name!r}")
    return torch.device(name)


def load_generator(source: str | Path, device: torch.device, trust_torchscript: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """The sampling generator of a train.py checkpoint (``.ckpt``) or of an exported file, on
    ``device``, in eval mode, with a ``z_dim`` attribute (``trust_torchscript``: see load_runtime)."""
    source = Path(source)
    if source.suffix == ".ckpt":
        read_checkpoint(source, flag="--source")  # one sentence for a missing, foreign or broken file
        module = GANModule.load_from_checkpoint(source, map_location="cpu")
        generator = module.sampling_generator.eval().to(device)
        generator.z_dim = module.z_dim  # a latent cut makes it smaller than the configured one
        return generator
    if source.is_dir():
        raise ConfigError(f"--source {source} is a folder; give a train.py checkpoint (.ckpt) or a file written by the export command")
    if not source.is_file():
        raise ConfigError(f"--source {source} does not exist; give a train.py checkpoint (.ckpt) or a file written by the export command")
    return load_runtime(source, device=device, trust_torchscript=trust_torchscript)


def latent_batches(num_samples: int, z_dim: int, seed: int, batch_size: int) -> Iterator[torch.Tensor]:
    """``num_samples`` latents of one seeded CPU draw, in batches. They are drawn at once
    (4 bytes per value) because torch.randn's values depend on the size of the tensor it
    fills: drawing batch by batch would make the images depend on the batch size."""
    yield from torch.randn(num_samples, z_dim, generator=torch.Generator().manual_seed(seed)).split(batch_size)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats (tanh outputs) to 0..255, channels last."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()


def save_png(pixels: torch.Tensor, path: Path | BinaryIO) -> None:
    array = pixels.numpy()
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path, format="PNG")


def write_images(pixels: torch.Tensor, out: Path, targets: Optional[torch.Tensor] = None, names: Sequence[str] = ()) -> list[Path]:
    """One PNG per sample (``out/000000.png``, ...), in its class's folder ``names[target]``
    when there are labels; returns the files. A full or read-only disk stops it with one
    sentence, and the images this call created are removed again: half a set would fill the disk
    and look like a whole one to whoever reads the folder."""
    created: list[Path] = []
    written: list[Path] = []
    index = 0
    try:
        for name in names:  # every class gets its folder, so the loader's label order is the classifier's
            (out / name).mkdir(parents=True, exist_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        for index, pixel in enumerate(pixels):
            path = (out / names[int(targets[index])] if targets is not None else out) / f"{index:06d}.png"
            if not path.exists():
                created.append(path)
            save_png(pixel, path)
            written.append(path)
    except Exception as exc:
        why = write_failure(exc, out)
        if why is None:
            raise
        for path in created:
            path.unlink(missing_ok=True)
        raise WriteError(
            f"could not write image {index + 1} of {len(pixels)} into --out {out} ({why}); the images written before it were"
            f" removed again: {advice(why, '--out')}"
        ) from exc
    return written


def generate(source: str | Path, out: str | Path, num_samples: int = 64, seed: int = 0, batch_size: int = 64,
             device: str = "auto", grid: bool = False, overwrite: bool = False, progress: bool = True,
             trust_torchscript: bool = False) -> list[Path]:
    """Write the samples; returns the files written."""
    if num_samples < 1 or batch_size < 1:
        raise ConfigError(f"--num_samples and --batch_size must be >= 1, got {num_samples} and {batch_size}")
    out = Path(out)
    if grid:
        if out.suffix.lower() != ".png":
            raise ConfigError(f"--out {out}: with --grid, give a .png file name")
        targets = [out]
    else:
        if out.is_file():
            raise ConfigError(f"--out {out} is a file; give a folder for the PNG files (or pass --grid for one image)")
        targets = [out / f"{i:06d}.png" for i in range(num_samples)]
    clash = next((t for t in targets if t.exists()), None)
    if clash is not None and not overwrite:
        raise ConfigError(f"--out would replace the existing file {clash}; choose another --out or pass --overwrite")
    target_device = resolve_device(device)
    generator = load_generator(source, target_device, trust_torchscript)
    pixels = []
    with torch.no_grad(), tqdm(total=num_samples, desc="generate", unit="img", disable=not progress) as bar:
        for z in latent_batches(num_samples, generator.z_dim, seed, batch_size):
            images = generator(z.to(target_device))
            pixels.append(to_uint8(images))
            bar.update(len(z))
    pixels = torch.cat(pixels)
    if not grid:
        return write_images(pixels, out)
    nrow = max(1, round(num_samples**0.5))
    sheet = make_grid(pixels.permute(0, 3, 1, 2), nrow=nrow, padding=2, pad_value=255).permute(1, 2, 0)
    with refused_writes(out.parent, "the folder of --out"):
        out.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(out, lambda f: save_png(sheet, f), fsync=False)
    return targets


def main(argv: Optional[list[str]] = None) -> int:
    parser = CommandParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, required=True, help="a train.py checkpoint (.ckpt) or a file written by the export command")
    parser.add_argument("--out", type=Path, required=True, help="a folder for one PNG per sample, or a .png file with --grid")
    parser.add_argument("--num_samples", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0, help="seed of the latents: the same seed gives the same images")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when a GPU is visible)")
    parser.add_argument("--grid", action="store_true", help="write one grid image instead of one file per sample")
    parser.add_argument("--overwrite", action="store_true", help="replace files of an earlier run")
    add_trust_torchscript_flag(parser)
    add_allow_class_flag(parser)
    args = parser.parse_args(argv)
    allow_classes(args.allow_class)

    def command() -> None:
        written = generate(args.source, args.out, args.num_samples, args.seed, args.batch_size, args.device, args.grid, args.overwrite,
                           trust_torchscript=args.trust_torchscript)
        print(f"wrote {args.out}" if args.grid else f"wrote {len(written)} PNG files to {args.out}")

    return run(command)


if __name__ == "__main__":
    sys.exit(main())
