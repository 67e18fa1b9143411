"""Compression math in pure torch: importance scores, selection, channel surgery, low-rank
factorization, clipping, MAC/latency profiling, the compact storage format, and the replay of
a network's recorded structural edits.

May import: torch and the leaves (gan_lightning.errors); never Lightning, metrics, data,
callbacks or the core, so that it can be used and tested without a Trainer, and an exported
generator loads without Lightning. Functions that take a ``module`` use only its
``generator``, ``discriminator``, ``generator_ema``, ``z_dim``, ``device`` and ``edits`` (the
record of structural edits) attributes (a GANModule has them); for a network of any other
module, only that network attribute and ``example_input_array``. Functions that edit a network's
structure return the edit (:mod:`gan_lightning.compress.edits`); recording it is the caller's."""
