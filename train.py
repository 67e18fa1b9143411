"""Train a GAN; ``python train.py --help`` lists every option and the plug-in callbacks."""

import sys

from gan_lightning.cli import GANLightningCLI, with_default_subcommand
from gan_lightning.errors import GANLightningError


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        # Rewritten in place rather than passed as args: DDP re-launches this script with sys.argv.
        sys.argv[1:] = with_default_subcommand(sys.argv[1:])
    try:
        GANLightningCLI(args=None if argv is None else with_default_subcommand(argv))
    except GANLightningError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
