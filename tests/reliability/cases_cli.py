"""Battery: the command line and config files."""

from tests.helpers import TINY
from tests.reliability.battery import Case

CATEGORY = "command line"


def tiny(ws, *extra):
    return ["--config", TINY, "--trainer.default_root_dir", str(ws.dir / "runs"), "--trainer.logger", "CSVLogger",
            "--trainer.logger.save_dir", str(ws.dir / "runs"), *extra]


CASES = [
    Case("unknown-callback", CATEGORY, "train", lambda ws: tiny(ws, "--callbacks", "prun"), r"error: .*prun.*(prune|available)"),
    Case("amount-above-one", CATEGORY, "train", lambda ws: tiny(ws, "--callbacks", "prune", "--prune.generator_amount", "1.5"), r"error: .*--prune.generator_amount.*1\.5"),
]
