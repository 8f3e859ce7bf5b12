// Python bindings of the contours kernels (contours.cpp): argument checks, numpy buffers, GIL release.
// Registered as the family "contours" (registry.h).
#include "polygons.h"

#include "errors.h"

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

py::tuple pack(const std::vector<std::vector<int32_t>>& polys);

py::tuple mask_polygons_py(const py::array_t<uint8_t, py::array::c_style | py::array::forcecast>& masks,
                           const py::array_t<int64_t, py::array::c_style | py::array::forcecast>& windows,
                           const std::string& strategy, int nthreads) {
  if (masks.ndim() != 3) throw std::invalid_argument("mask_polygons: masks must have shape (n, h, w)");
  const int64_t n = masks.shape(0), h = masks.shape(1), w = masks.shape(2);
  if (windows.ndim() != 2 || windows.shape(0) != n || windows.shape(1) != 4)
    throw std::invalid_argument("mask_polygons: windows must have shape (n, 4) to match masks");
  if (strategy != "largest" && strategy != "all")
    throw std::invalid_argument("mask_polygons: strategy must be 'largest' or 'all', got '" + strategy + "'");
  if (h > INT32_MAX - 2 || w > INT32_MAX - 2) throw std::invalid_argument("mask_polygons: masks too large");
  std::vector<std::vector<int32_t>> polys;
  {
    py::gil_scoped_release release;
    mask_polygons_kernel(masks.data(), n, h, w, windows.data(), strategy == "all", polys, nthreads);
  }
  return pack(polys);
}

using I64Array = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

py::tuple crop_polygons_py(const py::array_t<uint8_t, py::array::c_style | py::array::forcecast>& crops,
                           const I64Array& regions, const I64Array& offsets, const I64Array& windows,
                           const std::string& strategy, int nthreads) {
  if (regions.ndim() != 2 || regions.shape(1) != 4)
    throw std::invalid_argument("crop_polygons: regions must have shape (n, 4)");
  const int64_t n = regions.shape(0);
  if (offsets.ndim() != 1 || offsets.shape(0) != n)
    throw std::invalid_argument("crop_polygons: offsets must have shape (n,) to match regions");
  if (windows.ndim() != 2 || windows.shape(0) != n || windows.shape(1) != 4)
    throw std::invalid_argument("crop_polygons: windows must have shape (n, 4) to match regions");
  if (strategy != "largest" && strategy != "all")
    throw std::invalid_argument("crop_polygons: strategy must be 'largest' or 'all', got '" + strategy + "'");
  const int64_t size = crops.ndim() == 1 ? crops.shape(0) : -1;
  if (size < 0) throw std::invalid_argument("crop_polygons: crops must be one-dimensional");
  const int64_t* r = regions.data();
  const int64_t* o = offsets.data();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t* g = r + 4 * i;
    if (g[2] <= g[0] || g[3] <= g[1]) continue;  // empty region: nothing is read
    // Bounds first, so that the area cannot overflow.
    if (g[0] < 0 || g[1] < 0 || g[2] > kMaxSide || g[3] > kMaxSide || o[i] < 0 ||
        o[i] > size - (g[2] - g[0]) * (g[3] - g[1]))
      throw std::invalid_argument("crop_polygons: regions row " + std::to_string(i) + " lies outside crops");
  }
  std::vector<std::vector<int32_t>> polys;
  {
    py::gil_scoped_release release;
    crop_polygons_kernel(crops.data(), n, r, o, windows.data(), strategy == "all", polys, nthreads);
  }
  return pack(polys);
}

py::tuple pack(const std::vector<std::vector<int32_t>>& polys) {
  const auto n = static_cast<int64_t>(polys.size());
  py::array_t<int64_t> ends(static_cast<py::ssize_t>(n));
  int64_t* e = ends.mutable_data();
  int64_t total = 0;
  for (int64_t i = 0; i < n; ++i) e[i] = (total += static_cast<int64_t>(polys[i].size() / 2));
  py::array_t<int32_t> points({static_cast<py::ssize_t>(total), static_cast<py::ssize_t>(2)});
  int32_t* dst = points.mutable_data();
  for (const auto& p : polys) {
    if (!p.empty()) std::memcpy(dst, p.data(), p.size() * sizeof(int32_t));
    dst += p.size();
  }
  return py::make_tuple(points, ends);
}

void init_contours(py::module_& m) {
  m.def("mask_polygons", &mask_polygons_py, py::arg("masks"), py::arg("windows"), py::arg("strategy") = "largest",
        py::arg("nthreads") = 1,
        "Outer-contour polygon of each uint8 mask (n, h, w), traced inside its int64 window (n, 4) [x0, y0, x1, y1) "
        "(which must hold every nonzero pixel) as cv2.findContours(RETR_EXTERNAL, CHAIN_APPROX_SIMPLE) would; "
        "strategy 'largest' or 'all'. Returns (points int32 (K, 2) x, y; ends int64 (n,) cumulative point counts).");
  m.def("crop_polygons", &crop_polygons_py, py::arg("crops"), py::arg("regions"), py::arg("offsets"),
        py::arg("windows"), py::arg("strategy") = "largest", py::arg("nthreads") = 1,
        "mask_polygons for packed crops (decode_mask_crops' crops, regions, offsets): mask i is zero outside its "
        "region; windows (n, 4) limit the tracing (clipped to the region). Same return value.");
}

static Registrar reg("contours", init_contours);

}  // namespace
}  // namespace yoloseg
