"""Export the generator of a checkpoint in compact form and print dense vs exported file size.

    python -m gan_lightning.commands.export --ckpt_path runs/gan-lightning/<run>/checkpoints/last.ckpt --out g.pt [--dense]

The file holds the sampling generator (the EMA copy when the run keeps one) with every tensor
in its smallest encoding (dense, or sparse when unstructured pruning zeroed enough of it),
plus the class path, init args, pruning record and low-rank ranks that rebuild it:
``gan_lightning.load_exported("g.pt")`` returns the generator, ready to sample.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from gan_lightning.commands.console import run
from gan_lightning.compress.storage import ExportReport, export_generator, spec_from_hparams
from gan_lightning.core.checkpoint import read_checkpoint
from gan_lightning.core.module import GANModule
from gan_lightning.errors import CheckpointError


def export_checkpoint(ckpt_path: str | Path, out: str | Path, sparse: bool = True) -> ExportReport:
    """Export the sampling generator of a train.py checkpoint (see :func:`export_generator`)."""
    checkpoint = read_checkpoint(ckpt_path)  # one clear sentence for a missing or broken file
    if spec_from_hparams(checkpoint.get("hyper_parameters")) is None:
        raise CheckpointError(f"--ckpt_path {ckpt_path} holds no generator class path in its hyper-parameters; export checkpoints written by train.py")
    module = GANModule.load_from_checkpoint(ckpt_path, map_location="cpu")  # keeps the class paths in hparams
    return export_generator(module, out, sparse=sparse, checkpoint_path=ckpt_path)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", type=Path, required=True, help="a checkpoint written by train.py")
    parser.add_argument("--out", type=Path, required=True, help="the export file to write, e.g. g.pt")
    parser.add_argument("--dense", action="store_true", help="store every tensor dense (for comparison)")
    args = parser.parse_args(argv)

    def export() -> None:
        report = export_checkpoint(args.ckpt_path, args.out, sparse=not args.dense)
        print(report.table())
        print(f"wrote {report.path}")

    return run(export)


if __name__ == "__main__":
    sys.exit(main())
