"""The training core: GANModule, the adversarial losses, the GAN hook protocol, checkpoint
reading, logger helpers, and (in ``lightning_private``) every use of Lightning's private API.

May import: gan_lightning.compress, gan_lightning.quality, the leaves (errors,
dataset_tensors, networks), torch and Lightning; never callbacks, datamodules or commands."""
