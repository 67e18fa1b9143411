"""Export the generator of a checkpoint in compact form and print dense vs exported file size.

    python -m gan_lightning.export --ckpt_path runs/gan-lightning/<run>/checkpoints/last.ckpt --out g.pt [--dense]

The file holds the sampling generator (the EMA copy when the run keeps one) with every tensor
in its smallest encoding (dense, or sparse when unstructured pruning zeroed enough of it),
plus the class path, init args, pruning record and low-rank ranks that rebuild it:
``gan_lightning.sparse_export.load_exported("g.pt")`` returns the generator, ready to sample.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from gan_lightning.errors import GANLightningError
from gan_lightning.sparse_export import export_checkpoint


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", type=Path, required=True, help="a checkpoint written by train.py")
    parser.add_argument("--out", type=Path, required=True, help="the export file to write, e.g. g.pt")
    parser.add_argument("--dense", action="store_true", help="store every tensor dense (for comparison)")
    args = parser.parse_args(argv)
    try:
        report = export_checkpoint(args.ckpt_path, args.out, sparse=not args.dense)
    except GANLightningError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.table())
    print(f"wrote {report.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
