"""Synthetic and augmented data for GAN training with little data: a VAE (model, fit, sample,
on-disk cache) and DiffAugment. Pure torch; the ``vae`` and ``diffaug`` callbacks decide when
they are used."""
