// yoloseg._C: the compiled kernels. Each kernel family (csrc/<family>.cpp) defines an
// init_<family>(module) function that registers its functions; declare and call it here.
#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace yoloseg {
// void init_<family>(py::module_& m);   -- one line per kernel family
}  // namespace yoloseg

PYBIND11_MODULE(_C, m) {
  m.doc() = "yoloseg compiled kernels (raw buffers in, raw buffers out; no libtorch)";
}
