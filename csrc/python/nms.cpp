// Python bindings of the nms kernels (nms.cpp): argument checks, numpy buffers, GIL release.
// Registered as the family "nms" (registry.h).
#include "nms.h"

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

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;
using LongArray = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

py::array_t<int64_t> to_array(const std::vector<int64_t>& v) {
  py::array_t<int64_t> a(static_cast<py::ssize_t>(v.size()));
  if (!v.empty()) std::memcpy(a.mutable_data(), v.data(), v.size() * sizeof(int64_t));
  return a;
}

int64_t check_boxes_scores(const FloatArray& boxes, const FloatArray& scores) {
  if (boxes.ndim() != 2 || boxes.shape(1) != 4)
    throw std::invalid_argument("nms: boxes must have shape (N, 4)");
  if (scores.ndim() != 1 || scores.shape(0) != boxes.shape(0))
    throw std::invalid_argument("nms: scores must have shape (N,) matching boxes");
  return boxes.shape(0);
}

py::array_t<int64_t> nms_py(const FloatArray& boxes, const FloatArray& scores, double iou_threshold,
                            int method, int nthreads) {
  const int64_t n = check_boxes_scores(boxes, scores);
  std::vector<int64_t> keep;
  {
    py::gil_scoped_release release;
    keep = batched_nms_kernel(boxes.data(), scores.data(), nullptr, n, static_cast<float>(iou_threshold),
                              static_cast<NmsMethod>(method), nthreads);
  }
  return to_array(keep);
}

py::array_t<int64_t> batched_nms_py(const FloatArray& boxes, const FloatArray& scores, const LongArray& idxs,
                                    double iou_threshold, int method, int nthreads) {
  const int64_t n = check_boxes_scores(boxes, scores);
  if (idxs.ndim() != 1 || idxs.shape(0) != n)
    throw std::invalid_argument("batched_nms: idxs must have shape (N,) matching boxes");
  std::vector<int64_t> keep;
  {
    py::gil_scoped_release release;
    keep = batched_nms_kernel(boxes.data(), scores.data(), idxs.data(), n, static_cast<float>(iou_threshold),
                              static_cast<NmsMethod>(method), nthreads);
  }
  return to_array(keep);
}

void init_nms(py::module_& m) {
  m.def("nms", &nms_py, py::arg("boxes"), py::arg("scores"), py::arg("iou_threshold"), py::arg("method") = 0,
        py::arg("nthreads") = 1,
        "Greedy NMS. boxes float32 (N,4) xyxy, scores float32 (N,). Returns int64 kept indices ordered by "
        "descending score (ties: lower index first). method: 0 auto, 1 pairwise sweep, 2 grid.");
  m.def("batched_nms", &batched_nms_py, py::arg("boxes"), py::arg("scores"), py::arg("idxs"),
        py::arg("iou_threshold"), py::arg("method") = 0, py::arg("nthreads") = 1,
        "Per-class greedy NMS (boxes only suppress boxes with the same idxs value); same order as nms.");
}

static Registrar reg("nms", init_nms);

}  // namespace
}  // namespace yoloseg
