"""The commands a user runs: ``train`` (the LightningCLI behind train.py), ``evaluate`` and
``export``. Each is ``python -m gan_lightning.commands.<name>`` and a console script
(pyproject.toml); :func:`gan_lightning.commands.console.run` turns a project error into
``error: <sentence>`` and exit status 2 for all of them.

May import everything; nothing imports the commands."""
