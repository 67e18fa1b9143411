"""gan-lightning: train GANs with PyTorch Lightning and compress them with plug-in callbacks."""

from gan_lightning.hooks import GANCallback
from gan_lightning.module import GANModule
from gan_lightning.networks import DCGANDiscriminator, DCGANGenerator, MLPDiscriminator, MLPGenerator

__all__ = ["GANCallback", "GANModule", "DCGANDiscriminator", "DCGANGenerator", "MLPDiscriminator", "MLPGenerator"]
