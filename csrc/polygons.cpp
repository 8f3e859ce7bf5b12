// Bounding windows of the nonzero pixels of binary masks (one pass, word-at-a-time row tests).
#include "polygons.h"

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>

#include "registry.h"

namespace py = pybind11;

namespace yoloseg {
namespace {

inline bool row_any(const uint8_t* row, int64_t w) {
  int64_t x = 0;
  uint64_t acc = 0;
  for (; x + 8 <= w; x += 8) {
    uint64_t v;
    std::memcpy(&v, row + x, 8);
    acc |= v;
  }
  for (; x < w; ++x) acc |= row[x];
  return acc != 0;
}

// Window of the nonzero pixels inside [x0, x1) x [y0, y1) of a mask with rows of w bytes.
void window_in(const uint8_t* m, int64_t w, int64_t wx0, int64_t wy0, int64_t wx1, int64_t wy1, int64_t* win) {
  const int64_t ww = wx1 - wx0;
  int64_t y0 = -1, y1 = -1, x0 = ww, x1 = 0;
  for (int64_t y = wy0; y < wy1 && ww > 0; ++y) {
    const uint8_t* row = m + y * w + wx0;
    if (!row_any(row, ww)) continue;
    if (y0 < 0) y0 = y;
    y1 = y + 1;
    // Only the part of the row outside the current [x0, x1) can widen the window.
    for (int64_t x = 0; x < x0; ++x)
      if (row[x]) {
        x0 = x;
        break;
      }
    for (int64_t x = ww - 1; x >= x1; --x)
      if (row[x]) {
        x1 = x + 1;
        break;
      }
  }
  if (y0 < 0) {
    win[0] = win[1] = win[2] = win[3] = 0;
  } else {
    win[0] = wx0 + x0;
    win[1] = y0;
    win[2] = wx0 + x1;
    win[3] = y1;
  }
}

void window_one(const uint8_t* m, int64_t h, int64_t w, int64_t* win) { window_in(m, w, 0, 0, w, h, win); }

}  // namespace

void nonzero_window(const uint8_t* block, int64_t stride, int64_t w, int64_t h, int64_t* win) {
  window_in(block, stride, 0, 0, w, h, win);
}

void mask_windows_kernel(const uint8_t* masks, int64_t n, int64_t h, int64_t w, int64_t* windows, int nthreads) {
  const bool parallel = nthreads > 1 && n > 1 && n * h * w >= (int64_t{1} << 20);
#ifdef _OPENMP
#pragma omp parallel for num_threads(nthreads) schedule(dynamic, 4) if (parallel)
#endif
  for (int64_t i = 0; i < n; ++i) window_one(masks + i * h * w, h, w, windows + 4 * i);
  (void)parallel;
}

void mask_windows_within_kernel(const uint8_t* masks, int64_t n, int64_t h, int64_t w, const int64_t* bounds,
                                int64_t* windows, int nthreads) {
  int64_t work = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t* b = bounds + 4 * i;
    if (b[2] > b[0] && b[3] > b[1]) work += (b[2] - b[0]) * (b[3] - b[1]);
  }
  const bool parallel = nthreads > 1 && n > 1 && work >= (int64_t{1} << 20);
#ifdef _OPENMP
#pragma omp parallel for num_threads(nthreads) schedule(dynamic, 4) if (parallel)
#endif
  for (int64_t i = 0; i < n; ++i) {
    const int64_t* b = bounds + 4 * i;
    const int64_t x0 = std::max<int64_t>(b[0], 0), y0 = std::max<int64_t>(b[1], 0);
    const int64_t x1 = std::min<int64_t>(b[2], w), y1 = std::min<int64_t>(b[3], h);
    if (x1 <= x0 || y1 <= y0) {
      windows[4 * i] = windows[4 * i + 1] = windows[4 * i + 2] = windows[4 * i + 3] = 0;
      continue;
    }
    window_in(masks + i * h * w, w, x0, y0, x1, y1, windows + 4 * i);
  }
  (void)parallel;
}

void closest_vertices_kernel(const int32_t* a, int64_t n, const int32_t* b, int64_t m, int64_t* i_out,
                             int64_t* j_out) {
  int64_t best = INT64_MAX, bi = 0, bj = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t ax = a[2 * i], ay = a[2 * i + 1];
    for (int64_t j = 0; j < m; ++j) {
      const int64_t dx = ax - b[2 * j], dy = ay - b[2 * j + 1];
      const int64_t d = dx * dx + dy * dy;
      if (d < best) {
        best = d;
        bi = i;
        bj = j;
      }
    }
  }
  *i_out = bi;
  *j_out = bj;
}

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
