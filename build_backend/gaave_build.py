"""PEP 517 backend: setuptools, compiled against the target environment's torch.

pip builds in an isolated environment. Asking it for "torch" there would build
the extension against whatever torch pip picks (often another release than the
one installed), and a C++ extension only loads into the torch it was built
against. So: when the environment pip installs into already holds torch, that
torch's site-packages folder is appended to sys.path here and nothing is asked
for; otherwise torch is requested for the build, and setup.py pins the wheel to
that same release. `pip install --no-build-isolation .` skips all of this.
"""

from __future__ import annotations

import os
import subprocess
import sys

from setuptools import build_meta as _setuptools


def _target_torch_dir() -> str | None:
    """site-packages folder holding the target environment's torch, or None.

    pip runs this backend with the target environment's interpreter but hides
    its site-packages through PYTHONPATH; `-I` ignores that and sees them.
    """
    try:
        import torch  # noqa: F401  (already visible: no isolation)

        return None
    except ImportError:
        pass
    code = "import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))"
    try:
        out = subprocess.run(
            [sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=300
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    path = out.stdout.strip().splitlines()[-1] if out.returncode == 0 and out.stdout.strip() else ""
    return path if os.path.isdir(path) else None


_TORCH_DIR = _target_torch_dir()
if _TORCH_DIR is not None and _TORCH_DIR not in sys.path:
    # Appended, not prepended: the build's own setuptools and wheel stay first.
    sys.path.append(_TORCH_DIR)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (os.environ.get("PYTHONPATH", ""), _TORCH_DIR) if p
    )


def _needs_torch() -> list[str]:
    try:
        import torch  # noqa: F401

        return []
    except ImportError:
        return ["torch"]


def get_requires_for_build_wheel(config_settings=None):
    return _setuptools.get_requires_for_build_wheel(config_settings) + _needs_torch()


def get_requires_for_build_editable(config_settings=None):
    return _setuptools.get_requires_for_build_editable(config_settings) + _needs_torch()


def get_requires_for_build_sdist(config_settings=None):
    return _setuptools.get_requires_for_build_sdist(config_settings) + _needs_torch()


prepare_metadata_for_build_wheel = _setuptools.prepare_metadata_for_build_wheel
prepare_metadata_for_build_editable = _setuptools.prepare_metadata_for_build_editable
build_wheel = _setuptools.build_wheel
build_editable = _setuptools.build_editable
build_sdist = _setuptools.build_sdist
