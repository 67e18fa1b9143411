"""Train a GAN; ``python train.py --help`` lists every option and the plug-in callbacks."""

import sys

from gan_lightning.commands.train import main

if __name__ == "__main__":
    sys.exit(main())
