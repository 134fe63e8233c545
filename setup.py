"""Builds alae_fast._C against the installed torch (always with --no-build-isolation).

Without CUDA in torch it is a CppExtension (C++ CPU kernels); with CUDA torch and nvcc it
is a CUDAExtension that adds csrc/cuda/*.cu. ALAE_FAST_BUILD_CUDA=0|1 forces either way;
ALAE_FAST_PTXAS_VERBOSE=1 adds -Xptxas=-v (registers, shared memory, spills per kernel).
"""

import glob
import os
import sys

from setuptools import find_packages, setup

try:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
except ImportError:
    sys.exit(
        "alae_fast: torch must be installed before building (pip install torch==2.13.0), and the build "
        "must run with --no-build-isolation so that pip never pulls another torch."
    )

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CUDA_ARCHS = "8.0;9.0"


def build_cuda() -> bool:
    forced = os.environ.get("ALAE_FAST_BUILD_CUDA")
    if forced not in (None, "", "0", "1"):
        sys.exit(f"alae_fast: ALAE_FAST_BUILD_CUDA must be 0 or 1, got {forced!r}")
    if forced == "0":
        return False
    possible = torch.version.cuda is not None and CUDA_HOME is not None
    if forced == "1" and not possible:
        sys.exit(
            "alae_fast: ALAE_FAST_BUILD_CUDA=1 but "
            + ("torch has no CUDA" if torch.version.cuda is None else "nvcc/CUDA_HOME was not found")
        )
    return possible


def extension():
    rel = lambda paths: sorted(os.path.relpath(p, ROOT) for p in paths)  # noqa: E731
    # csrc/<op>/cpu.cpp and csrc/<op>/cuda.cu hold each op's kernels; csrc/*.cpp the schemas and the module.
    sources = rel(glob.glob(os.path.join(ROOT, "csrc", "*.cpp")) + glob.glob(os.path.join(ROOT, "csrc", "*", "cpu.cpp")))
    cxx = ["-O3", "-g0", "-std=c++20"] + (["-fopenmp"] if sys.platform == "linux" else [])
    libs = ["gomp"] if sys.platform == "linux" else []
    if not build_cuda():
        return CppExtension("alae_fast._C", sources, extra_compile_args={"cxx": cxx}, libraries=libs)
    if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_CUDA_ARCHS
    nvcc = ["-O3", "-std=c++20", "--expt-relaxed-constexpr", "-lineinfo"]
    if os.environ.get("ALAE_FAST_PTXAS_VERBOSE") == "1":
        nvcc.append("-Xptxas=-v")
    return CUDAExtension(
        "alae_fast._C",
        sources + rel(glob.glob(os.path.join(ROOT, "csrc", "*", "cuda.cu"))),
        define_macros=[("ALAE_FAST_WITH_CUDA", None)],
        extra_compile_args={"cxx": cxx, "nvcc": nvcc},
        libraries=libs,
    )


setup(
    packages=find_packages(include=["alae_fast", "alae_fast.*"]),
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    include_package_data=True,
)
