// yoloseg._C: the compiled kernels' Python module. The kernels (csrc/<family>.cpp, library
// yoloseg_kernels) know nothing of Python; each family's bindings (csrc/python/<family>.cpp) register an
// init function through yoloseg::Registrar (registry.h), and this module calls them all.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <string>
#include <vector>

#include "registry.h"

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "yoloseg compiled kernels (raw buffers in, raw buffers out; no libtorch)";
  auto families = yoloseg::registered_families();
  std::sort(families.begin(), families.end(),
            [](const auto& a, const auto& b) { return std::string(a.first) < b.first; });
  std::vector<std::string> names;
  for (const auto& [name, fn] : families) {
    fn(m);
    names.emplace_back(name);
  }
  m.attr("families") = names;
}
