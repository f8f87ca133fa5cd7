"""The `rnnext` command line (also `python -m rnnext`): train the reference experiments, generate text from a
char-lm checkpoint, export a checkpoint to ONNX, print build information, run the cell benchmark.

    rnnext train echo|char-lm|word-lm|sentiment|vanishing|numpy-rnn [options]
    rnnext generate CHECKPOINT --prime "..." --temperature 0.8 --length 500
    rnnext export CHECKPOINT model.onnx [--lengths] [--states] [--check]
    rnnext info
    rnnext bench [options]

User errors (a missing file, a bad value) end with a one-line message and exit status 1, bad options with
argparse's message and status 2, Ctrl-C with status 130; `--traceback` shows the full traceback instead.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import subprocess
import sys
from pathlib import Path

from . import distributed, experiments
from .experiments import EXPERIMENTS

PROG = "rnnext"
BENCH_SCRIPT = Path("bench") / "bench_cells.py"
EXPORT_CHECK_TOLERANCE = 1e-4  # float32 graphs agree to ~1e-7; a wrong gate block is off by ~1e-1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="rnnext: small, fast recurrent networks (RNN, LSTM, GRU). Run "
        "'rnnext COMMAND --help' for each command's options.")
    parser.add_argument("--traceback", action="store_true",
                        help="show the full Python traceback on errors (for bug reports)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train = commands.add_parser(
        "train", help="run a reference experiment", description="Run a reference experiment. Options after "
        "the experiment's name go to the experiment: 'rnnext train echo --help' lists them.")
    train.add_argument("experiment", choices=list(EXPERIMENTS), metavar="EXPERIMENT",
                       help=f"one of: {', '.join(EXPERIMENTS)}")
    train.add_argument("options", nargs=argparse.REMAINDER, help="the experiment's own options")

    # generate and bench hand all their arguments, --help included, to the code they run (see main)
    commands.add_parser("generate", add_help=False, help="generate text from a char-lm checkpoint: "
                        "CHECKPOINT [--prime TEXT] [--temperature T] [--length N]; see 'rnnext generate --help'")

    export = commands.add_parser(
        "export", help="write a checkpoint's model as an ONNX file", description="Write the model of an rnnext "
        "checkpoint as an ONNX file (rnnext.onnx.export; needs the onnx package: pip install rnnext[onnx]).")
    export.add_argument("checkpoint", metavar="CHECKPOINT", help="an .npz written by Sequential.save or fit")
    export.add_argument("output", metavar="OUTPUT", help="the .onnx file to write")
    export.add_argument("--lengths", action="store_true", help="give the graph a 'lengths' input [N]")
    export.add_argument("--states", action="store_true", help="add each recurrent layer's final states as outputs")
    export.add_argument("--check", action="store_true", help="run the written file in onnxruntime on a random "
                        f"batch next to rnnext and print the max difference (fails above {EXPORT_CHECK_TOLERANCE:g})")

    commands.add_parser("info", help="print the version, build information and thread count",
                        description="Print rnnext's version, how its engine was built, the thread count and "
                        "which optional packages are installed.")

    commands.add_parser("bench", add_help=False, help="run the cell benchmark, bench/bench_cells.py of a source "
                        "checkout, with its own options; see 'rnnext bench --help'")
    return parser


def main(argv=None) -> int:
    """Entry point of the `rnnext` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, passed_on = parser.parse_known_args(argv)
    if passed_on and args.command not in ("generate", "bench"):
        parser.error(f"unrecognized arguments: {' '.join(passed_on)}")
    try:
        if args.command == "train":
            return _train(args.experiment, args.options)
        if args.command == "generate":
            return _generate(passed_on)
        if args.command == "export":
            return _export(args)
        if args.command == "info":
            return _info()
        return _bench(passed_on)
    except BrokenPipeError:  # `rnnext info | head`: the reader left; not an error worth a message
        sys.stdout = open(os.devnull, "w")
        return 141
    except KeyboardInterrupt as interrupt:
        if args.traceback:
            raise
        message = str(interrupt)
        print(f"{PROG}: interrupted" + (f": {message}" if message else ""), file=sys.stderr)
        return 130
    except (OSError, ValueError, ImportError, distributed.RankError) as error:
        # Missing or unreadable files, values the library rejects, missing optional packages: user errors,
        # whose messages name the problem. Anything else is a bug and keeps its traceback. Under mpirun
        # every rank raises, and rank 0 alone reports (a RankError names the rank that failed).
        if args.traceback:
            raise
        if distributed.launched_rank() == 0:
            print(f"{PROG}: error: {_describe(error)}", file=sys.stderr)
        return 1


def _describe(error: BaseException) -> str:
    if isinstance(error, FileNotFoundError) and error.filename:
        return f"no such file: {error.filename}"
    if isinstance(error, OSError) and error.filename and error.strerror:
        return f"{error.filename}: {error.strerror}"
    return str(error) or type(error).__name__


def _train(name: str, options: list) -> int:
    return _status(experiments.load(name).main(options))


def _generate(options: list) -> int:
    return _status(experiments.load("char-lm").generate_main(options))


def _export(args) -> int:
    import rnnext
    import rnnext.onnx

    model = rnnext.load(args.checkpoint)
    proto = rnnext.onnx.export(model, args.output, lengths=args.lengths, states=args.states)
    inputs = ", ".join(i.name for i in proto.graph.input)
    outputs = ", ".join(o.name for o in proto.graph.output)
    print(f"wrote {args.output}: {len(proto.graph.node)} nodes, inputs {inputs}, outputs {outputs}")
    if not args.check:
        return 0
    if importlib.util.find_spec("onnxruntime") is None:
        print("not checked: onnxruntime is not installed (pip install onnxruntime)")
        return 0
    differences = rnnext.onnx.check(model, args.output)
    largest = max(differences.values())
    details = ", ".join(f"{name} {value:.3g}" for name, value in differences.items())
    verdict = "ok" if largest <= EXPORT_CHECK_TOLERANCE else f"MISMATCH (above {EXPORT_CHECK_TOLERANCE:g})"
    print(f"onnxruntime vs rnnext on a random batch: max |difference| / max(1, max |rnnext|) {largest:.3g} "
          f"({details}): {verdict}")
    return 0 if largest <= EXPORT_CHECK_TOLERANCE else 1


def _status(result) -> int:
    return 0 if result is None else int(result)


def _info() -> int:
    import numpy

    import rnnext

    build = rnnext.build_info()
    print(f"rnnext {rnnext.__version__}")
    print(f"  python {platform.python_version()} ({sys.executable}), numpy {numpy.__version__}")
    print(f"  engine threads: {rnnext.get_num_threads()}")
    for key, value in build.items():
        print(f"  {key}: {value}")
    optional = [f"{name} {'yes' if importlib.util.find_spec(name) else 'no'}"
                for name in ("tqdm", "matplotlib", "torch", "onnx", "onnxruntime", "keras", "mpi4py")]
    print(f"  optional packages: {', '.join(optional)}")
    print(f"  experiments: {', '.join(EXPERIMENTS)}")
    script = _find_bench_script()
    print(f"  benchmark: {script if script else 'not available (needs a source checkout)'}")
    return 0


def _find_bench_script():
    """bench/bench_cells.py of the source checkout this package runs from (editable installs), or of the
    current directory; None when neither has one (a wheel install ships no benchmark)."""
    package_root = Path(__file__).resolve().parents[2]  # <checkout>/python/rnnext/cli.py -> <checkout>
    for root in (package_root, Path.cwd()):
        candidate = root / BENCH_SCRIPT
        if candidate.is_file():
            return candidate
    return None


def _bench(options: list) -> int:
    script = _find_bench_script()
    if script is None:
        raise ValueError(f"the benchmark ({BENCH_SCRIPT}) is not installed with the package; run 'rnnext bench' "
                         f"inside an rnnext source checkout, or 'python {BENCH_SCRIPT}' there (see bench/README.md)")
    # A separate interpreter: the script sets up the environment (BLAS, threads) before importing NumPy.
    completed = subprocess.run([sys.executable, str(script), *options], env=dict(os.environ))
    return completed.returncode


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
