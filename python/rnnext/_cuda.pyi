# Type stub for rnnext._cuda, the optional CUDA engine (cpp/cuda, docs/cuda.md; built with RNNEXT_CUDA=ON). The
# forward passes take the arguments of rnnext._core's and return a DeviceCache in place of the cache dict; the
# backward passes take only the upstream gradients and that cache, which holds everything else on the device.
from typing import Literal, Optional, TypedDict

import numpy as np
from numpy.typing import ArrayLike, NDArray

Float = NDArray[np.floating]

class CudaBuildInfo(TypedDict):
    compiled: bool
    cuda_runtime: str               # the CUDA runtime version built with, "13.0"
    cublas: str                     # the cuBLAS headers' version, "13.10.0"
    architectures: str              # compiled sm versions, "75,80,86,89,90" ("host emulation" in the test build)
    driver: Optional[str]           # None without a driver
    devices: list[str]              # the GPUs found now, "NVIDIA H200 (sm_90)"
    device_error: Optional[str]     # why none was found, else None

def build_info() -> CudaBuildInfo: ...
def device_count() -> int: ...

class DeviceCache:
    """What a forward pass keeps on the device for its backward pass; freed with the object."""
    @property
    def cell(self) -> Literal["rnn", "lstm", "gru"]: ...
    @property
    def dtype(self) -> Literal["float32", "float64"]: ...
    @property
    def dims(self) -> tuple[int, int, int, int]: ...  # (T, N, I, H)

def rnn_forward(
    x: Float, h0: Float, kernel: Float, recurrent_kernel: Float, bias: Float,
    lengths: Optional[ArrayLike] = None, activation: Literal["tanh", "relu", "sigmoid"] = "tanh",
    keep_cache: bool = True,
) -> tuple[Float, Float, Optional[DeviceCache]]: ...
def lstm_forward(
    x: Float, h0: Float, c0: Float, kernel: Float, recurrent_kernel: Float, bias: Float,
    peephole: Optional[Float] = None, lengths: Optional[ArrayLike] = None, coupled: bool = False,
    keep_cache: bool = True,
) -> tuple[Float, Float, Float, Optional[DeviceCache]]: ...
def gru_forward(
    x: Float, h0: Float, kernel: Float, recurrent_kernel: Float, bias: Float,
    lengths: Optional[ArrayLike] = None, reset_after: bool = True, keep_cache: bool = True,
) -> tuple[Float, Float, Optional[DeviceCache]]: ...
def rnn_backward(dy: Optional[Float], dh_n: Optional[Float], cache: DeviceCache) -> dict[str, Float]: ...
def lstm_backward(dy: Optional[Float], dh_n: Optional[Float], dc_n: Optional[Float],
                  cache: DeviceCache) -> dict[str, Optional[Float]]: ...
def gru_backward(dy: Optional[Float], dh_n: Optional[Float], cache: DeviceCache) -> dict[str, Float]: ...
