#!/usr/bin/env bash
# The GPU check of the CUDA engine (docs/cuda.md), prepared to run on a GPU machine in one call: build rnnext with
# RNNEXT_CUDA=ON for the GPU found (sm_90 on an H100/H200), run tests/test_cuda.py (the GPU tests: engine against
# the CPU engine for every cell and option, the layers, the char-LM run) and bench/bench_cuda.py. Logs and the
# benchmark's JSON go to $OUT (or build/cuda-device/).
#
#   bash bench/cuda_device_check.sh --prepare    # here, with network: fetch the wheel the GPU machine lacks
#   bash bench/cuda_device_check.sh              # there; carry build/device-wheels
#
# The GPU machine has python3 with torch, numpy, pytest, hypothesis, pybind11, scikit-build-core, cmake, ninja,
# nvcc and the nvidia-cublas wheel, but no network and no Eigen: cmeel-eigen travels as a wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
wheels=build/device-wheels

if [[ ${1:-} == --prepare ]]; then
  mkdir -p "$wheels"
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$wheels" "cmeel-eigen==3.4.1"
  ls -l "$wheels"
  exit 0
fi

out=${OUT:-build/cuda-device}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi -L || true
arch=$(python3 -c "import torch; major, minor = torch.cuda.get_device_capability(0); print(f'{major}{minor}')")
cublas_root=$(python3 -c "import nvidia, os; p = list(nvidia.__path__)[0]; print(next(os.path.join(p, s) for s in ('cu13', 'cublas') if os.path.isdir(os.path.join(p, s))))")
echo "GPU sm_$arch, cuBLAS from $cublas_root"

site=/tmp/rnnext-site
python3 -m pip install --quiet --no-index --no-deps --no-compile --target "$site" "$wheels"/cmeel_eigen-*.whl
export PYTHONPATH=$site  # where CMakeLists.txt finds cmeel.prefix (Eigen), and where rnnext is installed below
{ time python3 -m pip install --quiet --no-build-isolation --no-deps --target "$site" . -C build-dir=/tmp/rnnext-build \
    -C cmake.define.RNNEXT_CUDA=ON -C "cmake.define.CMAKE_CUDA_ARCHITECTURES=$arch" \
    -C "cmake.define.RNNEXT_CUBLAS_ROOT=$cublas_root" -C cmake.define.RNNEXT_ARCH=native; } 2>&1 | tee "$out/build.log"
python3 -c "import rnnext, rnnext.cuda as c; print(c.cuda_info()); print(rnnext.build_info())" | tee "$out/info.txt"

status=0
python3 -m pytest tests/test_cuda.py -q -rs -p no:cacheprovider 2>&1 | tee "$out/test_cuda.log" || status=1
python3 bench/bench_cuda.py --json "$out/bench_cuda.json" 2>&1 | tee "$out/bench_cuda.md" || status=1
exit $status
