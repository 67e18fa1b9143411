import pytest

from tests.helpers import tiny_run_args


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """``last.ckpt`` of a one-epoch tiny run, metrics off; cases copy it, never touch it."""
    from train import main

    run = tmp_path_factory.mktemp("battery-run")
    assert main(tiny_run_args(run, "--checkpoint.monitor", "null", "--metrics.every_n_epochs", "0")) == 0
    return run / "version_0" / "checkpoints" / "last.ckpt"
