"""Build of gaave_fast and its compiled ops (gaave_fast._C).

The CPU kernels are always built. The CUDA kernels are built when torch is a
CUDA build and nvcc is found, or when FORCE_CUDA=1 (fails loudly if nvcc is
missing). GAAVE_FAST_NO_CUDA=1 forces a CPU-only build. TORCH_CUDA_ARCH_LIST is
respected; without it and without a visible GPU it defaults to 9.0 (Hopper).

The extension is compiled against the torch that `import torch` finds here; the
wheel then pins that torch release, because a C++ extension only loads into the
torch it was built against.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
DEFAULT_CUDA_HOME = "/usr/local/cuda"

# torch's own CUDA_HOME detection runs when cpp_extension is imported and can
# settle on a prefix (such as /usr/local) that holds an nvcc shim but no
# libraries; prefer the real toolkit when nothing says otherwise.
if (
    "CUDA_HOME" not in os.environ
    and "CUDA_PATH" not in os.environ
    and os.path.exists(os.path.join(DEFAULT_CUDA_HOME, "bin", "nvcc"))
):
    os.environ["CUDA_HOME"] = DEFAULT_CUDA_HOME

import torch  # noqa: E402
from torch.utils import cpp_extension  # noqa: E402


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").strip().lower() in ("1", "true", "yes", "on")


def _nvcc() -> str | None:
    home = cpp_extension.CUDA_HOME
    if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
        return os.path.join(home, "bin", "nvcc")
    return None


def _build_cuda() -> bool:
    if _flag("GAAVE_FAST_NO_CUDA"):
        return False
    if _flag("FORCE_CUDA"):
        if _nvcc() is None:
            sys.exit("FORCE_CUDA=1 but nvcc was not found: set CUDA_HOME to the CUDA toolkit.")
        return True
    return torch.version.cuda is not None and _nvcc() is not None


def _cuda_library_includes() -> list[str]:
    """Header folders of the CUDA libraries that torch's pip wheels ship.

    ATen's CUDA headers include cuBLAS, cuSPARSE and cuSOLVER headers, which a
    bare toolkit (nvcc only) lacks; torch's nvidia-* wheels carry them in
    site-packages/nvidia/cu13/include (CUDA 13) or nvidia/<lib>/include (CUDA 12).
    """
    libs = ("cu[0-9]*", "cublas", "cusparse", "cusolver", "cuda_runtime", "curand", "cufft")
    found: list[str] = []
    for entry in sys.path:
        for lib in libs:
            for path in sorted(glob.glob(os.path.join(entry, "nvidia", lib, "include"))):
                if os.path.isdir(path) and path not in found:
                    found.append(path)
    return found


def _shared_libstdcxx() -> list[str]:
    """Link flags that make the extension use the shared libstdc++ torch itself loads.

    A compiler whose search path finds libstdc++.a before libstdc++.so (seen on a
    GPU image whose g++ wrapper adds its own -B folders) links a private copy of
    the C++ streams into the extension. That copy's locale is never initialised,
    so the first error message that formatted a number crashed the process
    (torch 2.11) or came out cut short (torch 2.14). Naming the shared object
    before the compiler's implicit -lstdc++ leaves the archive nothing to resolve.
    """
    if not sys.platform.startswith("linux"):
        return []
    cxx = os.environ.get("CXX", "c++")
    try:
        found = subprocess.run([cxx, "-print-file-name=libstdc++.so.6"], capture_output=True, text=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return []
    return ["-l:libstdc++.so.6"] if os.path.isabs(found) and os.path.exists(found) else []


def _torch_public_version() -> str:
    return torch.__version__.split("+")[0]


def extensions() -> list:
    with_cuda = _build_cuda()
    sources = ["csrc/ops.cpp", "csrc/python_module.cpp", *sorted(glob.glob("csrc/cpu/*.cpp"))]
    cxx = ["-O3", "-fopenmp", "-fno-math-errno"]
    nvcc = ["-O3", "-lineinfo"]
    macros = [("GAAVE_FAST_TORCH_VERSION", f'"{torch.__version__}"')]
    link = ["-fopenmp", *_shared_libstdcxx()]
    if not with_cuda:
        return [
            cpp_extension.CppExtension(
                "gaave_fast._C",
                sources,
                define_macros=macros,
                extra_compile_args={"cxx": cxx},
                extra_link_args=link,
            )
        ]
    if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        os.environ["TORCH_CUDA_ARCH_LIST"] = "9.0"
    for inc in _cuda_library_includes():
        # -isystem keeps them behind the toolkit's own headers (-I).
        cxx += ["-isystem", inc]
        nvcc += ["-isystem", inc]
    macros += [("GAAVE_FAST_WITH_CUDA", None), ("GAAVE_FAST_CUDA_VERSION", f'"{torch.version.cuda}"')]
    return [
        cpp_extension.CUDAExtension(
            "gaave_fast._C",
            sources + sorted(glob.glob("csrc/cuda/*.cu")),
            define_macros=macros,
            extra_compile_args={"cxx": cxx, "nvcc": nvcc},
            extra_link_args=link,
        )
    ]


setup(
    packages=find_packages(include=["gaave_fast", "gaave_fast.*"]),
    ext_modules=extensions(),
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
    install_requires=[
        f"torch=={_torch_public_version()}",
        "matplotlib",
        "numpy",
        "pandas",
        "pillow",
        "pyarrow",
        "pyyaml",
        "torchvision",
        "tqdm",
    ],
)
