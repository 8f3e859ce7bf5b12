// Python bindings of the polygons kernels (polygons.cpp): argument checks, numpy buffers, GIL release.
// Registered as the family "polygons" (registry.h).
#include "polygons.h"

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "registry.h"

namespace py = pybind11;

namespace yoloseg {

namespace {

using PointArray = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;

py::tuple closest_vertices_py(const PointArray& a, const PointArray& b) {
  if (a.ndim() != 2 || a.shape(1) != 2 || b.ndim() != 2 || b.shape(1) != 2 || a.shape(0) == 0 || b.shape(0) == 0)
    throw std::invalid_argument("closest_vertices: a and b must be non-empty (n, 2) point arrays");
  int64_t i = 0, j = 0;
  closest_vertices_kernel(a.data(), a.shape(0), b.data(), b.shape(0), &i, &j);
  return py::make_tuple(i, j);
}

py::array_t<int64_t> mask_windows_py(const py::array_t<uint8_t, py::array::c_style | py::array::forcecast>& masks,
                                     int nthreads) {
  if (masks.ndim() != 3) throw std::invalid_argument("mask_windows: masks must have shape (n, h, w)");
  const int64_t n = masks.shape(0), h = masks.shape(1), w = masks.shape(2);
  py::array_t<int64_t> out({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(4)});
  int64_t* dst = out.mutable_data();
  const uint8_t* src = masks.data();
  {
    py::gil_scoped_release release;
    mask_windows_kernel(src, n, h, w, dst, nthreads);
  }
  return out;
}

py::array_t<int64_t> mask_windows_within_py(
    const py::array_t<uint8_t, py::array::c_style | py::array::forcecast>& masks,
    const py::array_t<int64_t, py::array::c_style | py::array::forcecast>& bounds, int nthreads) {
  if (masks.ndim() != 3) throw std::invalid_argument("mask_windows_within: masks must have shape (n, h, w)");
  const int64_t n = masks.shape(0), h = masks.shape(1), w = masks.shape(2);
  if (bounds.ndim() != 2 || bounds.shape(0) != n || bounds.shape(1) != 4)
    throw std::invalid_argument("mask_windows_within: bounds must have shape (n, 4) to match masks");
  py::array_t<int64_t> out({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(4)});
  int64_t* dst = out.mutable_data();
  const uint8_t* src = masks.data();
  const int64_t* bnd = bounds.data();
  {
    py::gil_scoped_release release;
    mask_windows_within_kernel(src, n, h, w, bnd, dst, nthreads);
  }
  return out;
}

void init_polygons(py::module_& m) {
  m.def("mask_windows", &mask_windows_py, py::arg("masks"), py::arg("nthreads") = 1,
        "(n, 4) int64 [x0, y0, x1, y1) window of the nonzero pixels of each uint8 mask (zeros when empty).");
  m.def("mask_windows_within", &mask_windows_within_py, py::arg("masks"), py::arg("bounds"), py::arg("nthreads") = 1,
        "(n, 4) int64 [x0, y0, x1, y1) window of the nonzero pixels of each uint8 mask inside its int64 bounds "
        "[x0, y0, x1, y1) (clipped to the mask); only those pixels are read; zeros when none is set.");
  m.def("closest_vertices", &closest_vertices_py, py::arg("a"), py::arg("b"),
        "(i, j) of the closest pair a[i], b[j] of two int32 (n,2) point arrays; first in row-major order on ties.");
}

static Registrar reg("polygons", init_polygons);

}  // namespace
}  // namespace yoloseg
