"""Test-wide settings: the tests folder is importable (shared fixtures for child processes)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
