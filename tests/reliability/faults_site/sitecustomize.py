"""Loaded by Python at start-up when a battery case puts this folder on PYTHONPATH: installs the
disk faults of ``tests/reliability/faults.py`` in the command's own process."""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("_battery_faults", Path(__file__).resolve().parent.parent / "faults.py")
_faults = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_faults)
_faults.install()
