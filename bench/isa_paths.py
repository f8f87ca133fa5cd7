#!/usr/bin/env python
"""How far each instruction-set path that this processor runs is from the NumPy twins and from the best path: every
cell x option x dtype x lengths x shape of tests/test_engine.py, forward outputs and gradients. Prints one markdown
table (the one in docs/conventions.md, "Instruction-set paths"). Needs the test requirements (it uses
tests/conftest.py's problem builders)."""
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))

from conftest import (CASES, DTYPES, RTOL, SHAPES, as_float64, backward_kwargs, forward_kwargs,  # noqa: E402
                      make_douts, make_problem, mixed_lengths, run_backward, run_forward)

from rnnext import _cpu, _dispatch, reference  # noqa: E402


def results(module, case, params, options, lengths, douts):
    """{name: array} of one forward and backward call in `module` (an engine path or the twins)."""
    out, cache = run_forward(module, case, forward_kwargs(case, params, options, lengths))
    grads = run_backward(module, case, backward_kwargs(case, params, options, lengths, douts, cache))
    named = {**out, **{f"d{k}": v for k, v in grads.items()}}
    return {name: value for name, value in named.items() if value is not None}  # dpeephole without a peephole


def relative(actual, expected):
    """max |actual - expected| over the largest |expected| (as the tests' assert_close)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.max(np.abs(actual - expected), initial=0.0) / max(np.max(np.abs(expected), initial=0.0), 1e-300))


def main():
    paths = _dispatch.runnable(_cpu.compiled, _cpu.features())
    engines = {path: _dispatch.load_path(path) for path in paths}
    best = paths[-1]
    # per (path, dtype): worst relative difference from the twin and from the best path, outputs bitwise equal to
    # the best path's, outputs compared
    table = {(path, dtype): [0.0, 0.0, 0, 0] for path in paths for dtype in DTYPES}
    for case in CASES:
        for dtype_name, dtype in DTYPES.items():
            for shape in SHAPES:
                for lengths in (None, mixed_lengths(shape[0], shape[1])):
                    params, options = make_problem(case, shape, dtype)
                    douts = make_douts(case, shape, dtype)
                    twin = results(reference, case, as_float64(params), options, lengths, as_float64(douts))
                    by_path = {p: results(e, case, params, options, lengths, douts) for p, e in engines.items()}
                    for path, outputs in by_path.items():
                        row = table[path, dtype_name]
                        for name, value in outputs.items():
                            row[0] = max(row[0], relative(value, twin[name]))
                            row[1] = max(row[1], relative(value, by_path[best][name]))
                            row[2] += value.tobytes() == by_path[best][name].tobytes()
                            row[3] += 1
    print(f"| path | dtype | max relative difference from the twin (tolerance) | from {best} | "
          f"outputs bitwise equal to {best} |")
    print("|---|---|---|---|---|")
    for (path, dtype_name), (twin_diff, best_diff, same, count) in table.items():
        print(f"| {path} | {dtype_name} | {twin_diff:.2g} ({RTOL[DTYPES[dtype_name]]:g}) | {best_diff:.2g} | "
              f"{same} of {count} |")


if __name__ == "__main__":
    main()
