// Reporting the buffer pool's NumPy arrays to tracemalloc, as NumPy reports its own (checks.h, new_array).
// Python 3.11's tracemalloc.h declares these functions without C linkage, so a C++ unit that includes Python.h
// would look for C++ symbols; this unit declares them itself and includes no Python header.
#include <cstddef>
#include <cstdint>

extern "C" int PyTraceMalloc_Track(unsigned int domain, uintptr_t ptr, size_t size);
extern "C" int PyTraceMalloc_Untrack(unsigned int domain, uintptr_t ptr);

namespace rnnext::bindings {

namespace {
constexpr unsigned kNumpyTraceDomain = 389047;  // NumPy's domain (NPY_TRACE_DOMAIN)
}

void trace_numpy_buffer(void* data, size_t bytes) {
  PyTraceMalloc_Track(kNumpyTraceDomain, reinterpret_cast<uintptr_t>(data), bytes);
}

void untrace_numpy_buffer(void* data) { PyTraceMalloc_Untrack(kNumpyTraceDomain, reinterpret_cast<uintptr_t>(data)); }

}  // namespace rnnext::bindings
