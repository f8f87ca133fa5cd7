"""rnnext._core, the C++ engine: every public name of the extension compiled for the best instruction set that this
processor runs, or for the one RNNEXT_ISA forces (rnnext/_core_<path>, chosen once by rnnext._dispatch). Typed in
_core.pyi; build_info()["isa"] names the path in use.
"""
from ._dispatch import load_engine as _load_engine

_engine = _load_engine()
globals().update({name: value for name, value in vars(_engine).items() if not name.startswith("_")})
