// Python bindings of the masks kernels (masks.cpp): argument checks, numpy buffers, GIL release.
// Registered as the family "masks" (registry.h).
#include "masks.h"

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

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

py::array decode_masks_py(const FloatArray& protos, const FloatArray& coeffs, const FloatArray& boxes, int64_t out_h,
                          int64_t out_w, int64_t f, int64_t top, int64_t left, int64_t content_h,
                          int64_t content_w, int nthreads) {
  if (protos.ndim() != 3) throw std::invalid_argument("decode_masks: protos must have shape (nm, h, w)");
  const int64_t nm = protos.shape(0), mh = protos.shape(1), mw = protos.shape(2);
  if (coeffs.ndim() != 2 || coeffs.shape(1) != nm)
    throw std::invalid_argument("decode_masks: coeffs must have shape (n, nm)");
  const int64_t n = coeffs.shape(0);
  if (boxes.ndim() != 2 || boxes.shape(0) != n || boxes.shape(1) != 4)
    throw std::invalid_argument("decode_masks: boxes must have shape (n, 4)");
  if (out_h <= 0 || out_w <= 0) throw std::invalid_argument("decode_masks: output size must be positive");
  const AxisTaps yt = resample_taps(out_h, mh, f, top, content_h);
  const AxisTaps xt = resample_taps(out_w, mw, f, left, content_w);
  // numpy.zeros maps fresh zero pages lazily: untouched (outside-box) pixels cost nothing.
  py::array out = py::module_::import("numpy").attr("zeros")(py::make_tuple(n, out_h, out_w), "uint8");
  auto* dst = static_cast<uint8_t*>(out.mutable_data());
  {
    py::gil_scoped_release release;
    decode_masks_kernel(protos.data(), nm, mh, mw, coeffs.data(), boxes.data(), n, yt, xt, out_h, out_w, dst,
                        nthreads);
  }
  return out;
}

py::tuple decode_mask_crops_py(const FloatArray& protos, const FloatArray& coeffs, const FloatArray& boxes,
                               int64_t out_h, int64_t out_w, int64_t f, int64_t top, int64_t left, int64_t content_h,
                               int64_t content_w, int nthreads) {
  if (protos.ndim() != 3) throw std::invalid_argument("decode_mask_crops: protos must have shape (nm, h, w)");
  const int64_t nm = protos.shape(0), mh = protos.shape(1), mw = protos.shape(2);
  if (coeffs.ndim() != 2 || coeffs.shape(1) != nm)
    throw std::invalid_argument("decode_mask_crops: coeffs must have shape (n, nm)");
  const int64_t n = coeffs.shape(0);
  if (boxes.ndim() != 2 || boxes.shape(0) != n || boxes.shape(1) != 4)
    throw std::invalid_argument("decode_mask_crops: boxes must have shape (n, 4)");
  if (out_h <= 0 || out_w <= 0) throw std::invalid_argument("decode_mask_crops: output size must be positive");
  const AxisTaps yt = resample_taps(out_h, mh, f, top, content_h);
  const AxisTaps xt = resample_taps(out_w, mw, f, left, content_w);
  const auto nn = static_cast<py::ssize_t>(n);
  py::array_t<int64_t> regions({nn, py::ssize_t{4}}), offsets(nn), windows({nn, py::ssize_t{4}});
  int64_t* reg = regions.mutable_data();
  int64_t* off = offsets.mutable_data();
  int64_t total = 0;
  for (int64_t i = 0; i < n; ++i) {
    const Region r = box_region(boxes.data() + 4 * i, out_h, out_w);
    reg[4 * i] = r.x0;
    reg[4 * i + 1] = r.y0;
    reg[4 * i + 2] = r.x1;
    reg[4 * i + 3] = r.y1;
    off[i] = total;
    total = check::add(total, (r.x1 - r.x0) * (r.y1 - r.y0), "decode_mask_crops", "total crop size");
  }
  py::array_t<uint8_t> crops(static_cast<py::ssize_t>(total));  // every byte is written
  uint8_t* dst = crops.mutable_data();
  int64_t* win = windows.mutable_data();
  {
    py::gil_scoped_release release;
    decode_crops_kernel(protos.data(), nm, mh, mw, coeffs.data(), boxes.data(), n, yt, xt, out_h, out_w, reg, off,
                        dst, win, nthreads);
  }
  return py::make_tuple(crops, regions, offsets, windows);
}

py::tuple resample_taps_py(int64_t out, int64_t proto, int64_t f, int64_t offset, int64_t content) {
  const AxisTaps t = resample_taps(out, proto, f, offset, content);
  py::array_t<int32_t> start(static_cast<py::ssize_t>(out));
  py::array_t<float> weight({static_cast<py::ssize_t>(out), static_cast<py::ssize_t>(t.taps)});
  std::memcpy(start.mutable_data(), t.start.data(), t.start.size() * sizeof(int32_t));
  std::memcpy(weight.mutable_data(), t.weight.data(), t.weight.size() * sizeof(float));
  return py::make_tuple(start, weight);
}

void init_masks(py::module_& m) {
  m.def("decode_masks", &decode_masks_py, py::arg("protos"), py::arg("coeffs"), py::arg("boxes"), py::arg("out_h"),
        py::arg("out_w"), py::arg("f"), py::arg("top"), py::arg("left"), py::arg("content_h"),
        py::arg("content_w"), py::arg("nthreads") = 1,
        "Binary masks (n, out_h, out_w) uint8 from protos (nm,h,w) float32, coeffs (n,nm), boxes (n,4) xyxy in "
        "output pixels. Resampling: upsample by f, cut [top:top+content_h, left:left+content_w], resize to "
        "the output; only pixels inside each box are computed.");
  m.def("decode_mask_crops", &decode_mask_crops_py, py::arg("protos"), py::arg("coeffs"), py::arg("boxes"),
        py::arg("out_h"), py::arg("out_w"), py::arg("f"), py::arg("top"), py::arg("left"), py::arg("content_h"),
        py::arg("content_w"), py::arg("nthreads") = 1,
        "decode_masks without the (n, out_h, out_w) output: returns (crops uint8 (total,), regions int64 (n, 4) "
        "[x0, y0, x1, y1) of the pixels each box keeps, offsets int64 (n,) of each region's row-major block in "
        "crops, windows int64 (n, 4) [x0, y0, x1, y1) of the set pixels, zeros when none).");
  m.def("resample_taps", &resample_taps_py, py::arg("out"), py::arg("proto"), py::arg("f"), py::arg("offset"),
        py::arg("content"), "Per-axis resampling taps (start int32 (out,), weight float32 (out, K)).");
}

static Registrar reg("masks", init_masks);

}  // namespace
}  // namespace yoloseg
