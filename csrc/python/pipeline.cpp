// Python bindings of the predict pipeline (pipeline.cpp): argument checks, numpy buffers, GIL release.
// Registered as the family "pipeline" (registry.h).
#include "pipeline.h"

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "registry.h"

namespace py = pybind11;

namespace yoloseg {

namespace {

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;
using ByteArray = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;

template <typename T>
py::array_t<T> to_array(const std::vector<T>& v, std::vector<py::ssize_t> shape) {
  py::array_t<T> a(shape);
  if (!v.empty()) std::memcpy(a.mutable_data(), v.data(), v.size() * sizeof(T));
  return a;
}

py::tuple geometry(const Letterbox& lb) {
  return py::make_tuple(lb.dst_h, lb.dst_w, lb.new_h, lb.new_w, lb.top, lb.left, lb.ratio);
}

void check_image(const ByteArray& img) {
  if (img.ndim() != 3 || img.shape(2) != 3) throw std::invalid_argument("letterbox: image must have shape (h, w, 3)");
}

LetterboxOptions options(int64_t height, int64_t width, bool auto_pad, int64_t stride, bool scaleup, int pad_value) {
  if (pad_value < 0 || pad_value > 255) throw std::invalid_argument("letterbox: pad_value must be in 0..255");
  LetterboxOptions o;
  o.height = height, o.width = width, o.auto_pad = auto_pad, o.stride = stride, o.scaleup = scaleup;
  o.pad_value = static_cast<uint8_t>(pad_value);
  return o;
}

py::tuple letterbox_py(const ByteArray& img, int64_t height, int64_t width, bool auto_pad, int64_t stride,
                       bool scaleup, int pad_value, int nthreads) {
  check_image(img);
  const LetterboxOptions o = options(height, width, auto_pad, stride, scaleup, pad_value);
  const int64_t h = img.shape(0), w = img.shape(1);
  const Letterbox g = letterbox_geometry(h, w, o);
  py::array_t<float> out({py::ssize_t{3}, static_cast<py::ssize_t>(g.dst_h), static_cast<py::ssize_t>(g.dst_w)});
  float* dst = out.mutable_data();
  Letterbox lb;
  {
    py::gil_scoped_release release;
    lb = letterbox(img.data(), h, w, 3 * w, o, dst, nthreads);
  }
  return py::make_tuple(out, geometry(lb));
}

py::tuple letterbox_u8_py(const ByteArray& img, int64_t height, int64_t width, bool auto_pad, int64_t stride,
                          bool scaleup, int pad_value, int nthreads) {
  check_image(img);
  const LetterboxOptions o = options(height, width, auto_pad, stride, scaleup, pad_value);
  const int64_t h = img.shape(0), w = img.shape(1);
  const Letterbox g = letterbox_geometry(h, w, o);
  py::array_t<uint8_t> out({static_cast<py::ssize_t>(g.dst_h), static_cast<py::ssize_t>(g.dst_w), py::ssize_t{3}});
  uint8_t* dst = out.mutable_data();
  {
    py::gil_scoped_release release;
    letterbox_u8(img.data(), h, w, 3 * w, g, o.pad_value, dst, nthreads);
  }
  return py::make_tuple(out, geometry(g));
}

py::tuple segment_postprocess_py(const FloatArray& pred, const FloatArray& protos, int64_t input_h, int64_t input_w,
                                 int64_t orig_h, int64_t orig_w, double conf, double iou,
                                 const std::optional<std::vector<int64_t>>& classes, bool agnostic, int64_t max_det,
                                 bool retina_masks, int nthreads) {
  if (pred.ndim() != 2) throw std::invalid_argument("segment_postprocess: pred must have shape (4 + nc + nm, anchors)");
  if (protos.ndim() != 3) throw std::invalid_argument("segment_postprocess: protos must have shape (nm, h, w)");
  const int64_t nm = protos.shape(0), mh = protos.shape(1), mw = protos.shape(2);
  const int64_t channels = pred.shape(0), anchors = pred.shape(1);
  if (channels < 5 + nm)
    throw std::invalid_argument("segment_postprocess: pred has " + std::to_string(channels) +
                                " channels, fewer than 4 + 1 class + " + std::to_string(nm) + " coefficients");
  PostprocessOptions opt;
  opt.conf = static_cast<float>(conf);
  opt.iou = static_cast<float>(iou);
  opt.max_det = max_det;
  opt.agnostic = agnostic;
  if (classes) opt.classes = *classes;
  opt.retina_masks = retina_masks;
  opt.nthreads = nthreads;
  const Letterbox lb = letterbox_from_shapes(orig_h, orig_w, input_h, input_w);
  Detections det;
  {
    py::gil_scoped_release release;
    det = postprocess(pred.data(), channels - 4 - nm, nm, anchors, protos.data(), mh, mw, lb, opt);
  }
  const auto n = static_cast<py::ssize_t>(det.size());
  py::array_t<float> boxes({n, py::ssize_t{6}});
  float* b = boxes.mutable_data();
  for (py::ssize_t i = 0; i < n; ++i) {
    std::memcpy(b + 6 * i, det.boxes.data() + 4 * i, 4 * sizeof(float));
    b[6 * i + 4] = det.scores[i];
    b[6 * i + 5] = static_cast<float>(det.classes[i]);
  }
  return py::make_tuple(boxes, to_array(det.crops, {static_cast<py::ssize_t>(det.crops.size())}),
                        to_array(det.regions, {n, py::ssize_t{4}}), to_array(det.offsets, {n}),
                        to_array(det.windows, {n, py::ssize_t{4}}), py::make_tuple(det.mask_h, det.mask_w));
}

void init_pipeline(py::module_& m) {
  m.def("letterbox", &letterbox_py, py::arg("image"), py::arg("height"), py::arg("width"), py::arg("auto") = true,
        py::arg("stride") = 32, py::arg("scaleup") = true, py::arg("pad_value") = 114, py::arg("nthreads") = 1,
        "Letterbox a BGR uint8 image (h, w, 3) into the model input: float32 (3, H, W) RGB in [0, 1]. Returns "
        "(input, (dst_h, dst_w, new_h, new_w, top, left, ratio)).");
  m.def("letterbox_u8", &letterbox_u8_py, py::arg("image"), py::arg("height"), py::arg("width"),
        py::arg("auto") = true, py::arg("stride") = 32, py::arg("scaleup") = true, py::arg("pad_value") = 114,
        py::arg("nthreads") = 1,
        "The same resize and padding as uint8 BGR (H, W, 3) (what yoloseg.data.LetterBox returns). Returns "
        "(image, geometry).");
  m.def("segment_postprocess", &segment_postprocess_py, py::arg("pred"), py::arg("protos"), py::arg("input_h"),
        py::arg("input_w"), py::arg("orig_h"), py::arg("orig_w"), py::arg("conf"), py::arg("iou"),
        py::arg("classes") = py::none(), py::arg("agnostic") = false, py::arg("max_det") = 300,
        py::arg("retina_masks") = false, py::arg("nthreads") = 1,
        "One image's segment-model output -> detections: pred float32 (4 + nc + nm, A), protos (nm, h, w). "
        "Returns (boxes float32 (n, 6) x1, y1, x2, y2, conf, cls in original pixels; crops uint8; regions int64 "
        "(n, 4); offsets int64 (n,); windows int64 (n, 4); (mask_h, mask_w)): masks as decode_mask_crops "
        "gives them, empty ones dropped.");
}

static Registrar reg("pipeline", init_pipeline);

}  // namespace
}  // namespace yoloseg
