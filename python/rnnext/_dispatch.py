"""Chooses the engine extension once, at import: the best instruction-set path that the build compiled and the
processor runs, or the one that the environment variable RNNEXT_ISA names (docs/conventions.md, "Instruction-set
paths"). rnnext._core re-exports the chosen extension, rnnext/_core_<path>.
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Mapping, Optional, Sequence

ENV = "RNNEXT_ISA"
# Values of RNNEXT_ISA that mean "no preference".
AUTO = ("", "auto")

_AVX2 = ("avx", "avx2", "bmi", "bmi2", "f16c", "fma", "lzcnt", "movbe")
# The processor features each path's compiler flags allow the code to use (CMakeLists.txt): avx2 is x86-64-v3,
# avx512 is x86-64-v4. The other paths run on every processor of their architecture; a native build (RNNEXT_ARCH)
# runs where it was built.
REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "sse2": (),
    "avx2": _AVX2,
    "avx512": _AVX2 + ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"),
    "neon": (),
    "baseline": (),
    "native": (),
}


def missing_features(path: str, features: Mapping[str, bool]) -> list[str]:
    """The features that `path` needs and the processor lacks (features: {name: bool}, as _cpu.features())."""
    return [name for name in REQUIREMENTS[path] if not features.get(name, False)]


def runnable(compiled: Sequence[str], features: Mapping[str, bool]) -> list[str]:
    """The compiled paths that the processor runs, in the build's order (most portable first)."""
    return [path for path in compiled if not missing_features(path, features)]


def choose(compiled: Sequence[str], features: Mapping[str, bool], requested: Optional[str] = None) -> str:
    """The path to load: `requested` (RNNEXT_ISA's value) when the build has it and the processor runs it, the best
    runnable one when it is None, empty or 'auto'. Raises ImportError saying what was asked and what is possible."""
    can_run = runnable(compiled, features)
    if requested is None or requested.strip().lower() in AUTO:
        if not can_run:  # only a build without its baseline path; CMakeLists.txt always compiles it
            raise ImportError(f"rnnext: this processor runs none of the compiled paths ({', '.join(compiled)})")
        return can_run[-1]
    path = requested.strip().lower()
    if path not in compiled:
        raise ImportError(f"rnnext: {ENV}={requested!r} is not a path of this build: expected one of "
                          f"{', '.join(compiled)}, or 'auto' (or unset) for the best one this processor runs")
    lacking = missing_features(path, features)
    if lacking:
        raise ImportError(f"rnnext: {ENV}={requested!r} needs processor features that this one lacks: "
                          f"{', '.join(lacking)} (paths it runs: {', '.join(can_run)})")
    return path


def load_engine() -> ModuleType:
    """The engine extension for the path that choose() picks from RNNEXT_ISA and the processor."""
    return load_path(os.environ.get(ENV))


def load_path(requested: Optional[str]) -> ModuleType:
    """The engine extension of one path, checked by choose() (tests load several to compare them)."""
    from . import _cpu

    return importlib.import_module(f"{__package__}._core_{choose(_cpu.compiled, _cpu.features(), requested)}")
