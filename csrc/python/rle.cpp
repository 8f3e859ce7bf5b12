// Python bindings of the rle kernels (rle.cpp): argument checks, numpy buffers, GIL release.
// Registered as the family "rle" (registry.h).
#include "rle.h"

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

// Bindings. RLEs cross the boundary as {"size": [h, w], "counts": str | bytes | list[int]}.
namespace R = yoloseg::rle;

namespace {

struct OwnedRle {
  uint64_t h = 0, w = 0;
  R::Counts cnts;
  R::View view() const { return R::View{h, w, cnts.data(), cnts.size()}; }
};

OwnedRle rle_from_py_unchecked(py::handle obj) {
  if (!py::isinstance<py::dict>(obj))
    throw py::value_error("an RLE must be a dict with 'size' and 'counts'");
  py::dict d = py::reinterpret_borrow<py::dict>(obj);
  if (!d.contains("size") || !d.contains("counts"))
    throw py::value_error("an RLE must be a dict with 'size' and 'counts'");
  OwnedRle r;
  py::object size_obj = d["size"];
  if (!py::isinstance<py::sequence>(size_obj) || py::isinstance<py::str>(size_obj) || py::len(size_obj) != 2)
    throw py::value_error("RLE 'size' must be [h, w]");
  py::sequence size = py::reinterpret_borrow<py::sequence>(size_obj);
  const int64_t h = size[0].cast<int64_t>(), w = size[1].cast<int64_t>();
  if (h < 0 || w < 0) throw py::value_error("RLE 'size' must be non-negative");
  r.h = static_cast<uint64_t>(h);
  r.w = static_cast<uint64_t>(w);
  py::object counts = d["counts"];
  if (py::isinstance<py::str>(counts)) {
    std::string s = counts.cast<std::string>();
    R::from_string(s.data(), s.size(), r.cnts);
  } else if (py::isinstance<py::bytes>(counts)) {
    std::string s = counts.cast<std::string>();
    R::from_string(s.data(), s.size(), r.cnts);
  } else {
    if (!py::isinstance<py::iterable>(counts))
      throw py::value_error("RLE 'counts' must be a string, bytes or a list of ints");
    for (auto c : counts) {
      const int64_t v = c.cast<int64_t>();
      if (v < 0 || v > UINT32_MAX) throw py::value_error("RLE counts must be in [0, 2**32)");
      r.cnts.push_back(static_cast<uint32_t>(v));
    }
  }
  R::validate(r.view(), "RLE");
  return r;
}

// One RLE dict, checked: wrong types and values become ValueError (never a cast error), sizes and
// counts are checked by the library (rle::validate).
OwnedRle rle_from_py(py::handle obj) {
  try {
    return rle_from_py_unchecked(obj);
  } catch (const py::cast_error&) {
    throw py::value_error("RLE 'size' must hold two ints and 'counts' a string, bytes or a list of ints");
  }
}

std::vector<OwnedRle> rles_from_py(py::handle objs) {
  std::vector<OwnedRle> out;
  for (auto o : objs) out.push_back(rle_from_py(o));
  return out;
}

py::dict rle_to_py(uint64_t h, uint64_t w, const R::Counts& cnts) {
  py::dict d;
  py::list size;
  size.append(h);
  size.append(w);
  d["size"] = size;
  d["counts"] = py::str(R::to_string(cnts.data(), cnts.size()));
  return d;
}

// [{"size": [h, w], "counts": s} for s in strs]
py::list rle_dicts(uint64_t h, uint64_t w, const std::vector<std::string>& strs) {
  py::list out;
  for (const auto& s : strs) {
    py::dict d;
    py::list size;
    size.append(h);
    size.append(w);
    d["size"] = size;
    d["counts"] = py::str(s);
    out.append(d);
  }
  return out;
}

py::list encode_masks(py::array_t<uint8_t> masks) {
  if (masks.ndim() != 3) throw py::value_error("masks must have shape (N, H, W)");
  const auto n = masks.shape(0), h = masks.shape(1), w = masks.shape(2);
  R::check_size(static_cast<uint64_t>(h), static_cast<uint64_t>(w), "rle_encode");
  const auto sn = masks.strides(0), sy = masks.strides(1), sx = masks.strides(2);
  const uint8_t* base = masks.data();
  std::vector<std::string> strs(static_cast<size_t>(n));
  {
    py::gil_scoped_release nogil;
    R::Counts cnts;
    for (py::ssize_t i = 0; i < n; ++i) {
      R::encode_strided(base + i * sn, h, w, sy, sx, cnts);
      R::to_string(cnts.data(), cnts.size(), strs[i]);
    }
  }
  return rle_dicts(h, w, strs);
}

py::array_t<uint8_t> decode_masks(py::handle objs) {
  auto rles = rles_from_py(objs);
  uint64_t h = rles.empty() ? 0 : rles[0].h, w = rles.empty() ? 0 : rles[0].w;
  for (auto& r : rles)
    if (r.h != h || r.w != w) throw py::value_error("RLEs to decode together must share one size");
  py::array_t<uint8_t> out({static_cast<py::ssize_t>(rles.size()), static_cast<py::ssize_t>(h),
                            static_cast<py::ssize_t>(w)});
  uint8_t* dst = out.mutable_data();
  std::vector<uint8_t> col(h * w);
  for (size_t i = 0; i < rles.size(); ++i) {
    if (!R::decode_colmajor(rles[i].view(), col.data()))
      throw py::value_error("RLE counts add up to more than h*w");
    uint8_t* m = dst + i * h * w;
    for (uint64_t x = 0; x < w; ++x)
      for (uint64_t y = 0; y < h; ++y) m[y * w + x] = col[x * h + y];
  }
  return out;
}

py::array_t<int64_t> area_of(py::handle objs) {
  auto rles = rles_from_py(objs);
  py::array_t<int64_t> out(static_cast<py::ssize_t>(rles.size()));
  for (size_t i = 0; i < rles.size(); ++i)
    out.mutable_data()[i] = static_cast<int64_t>(R::area(rles[i].view()));
  return out;
}

py::array_t<double> bbox_of(py::handle objs) {
  auto rles = rles_from_py(objs);
  py::array_t<double> out({static_cast<py::ssize_t>(rles.size()), py::ssize_t{4}});
  for (size_t i = 0; i < rles.size(); ++i) R::to_bbox(rles[i].view(), out.mutable_data() + 4 * i);
  return out;
}

py::dict merge_rles(py::handle objs, bool intersect) {
  auto rles = rles_from_py(objs);
  std::vector<R::View> views;
  for (auto& r : rles) views.push_back(r.view());
  uint64_t h, w;
  R::Counts cnts;
  R::merge(views, intersect, h, w, cnts);
  return rle_to_py(h, w, cnts);
}

// Each polygon is a flat float64 array [x0, y0, x1, y1, ...]; returns one RLE per polygon.
py::list polygons_to_rles(py::list polys, uint64_t h, uint64_t w) {
  py::list out;
  R::Counts cnts;
  for (auto p : polys) {
    auto arr = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(p);
    if (!arr) throw py::value_error("a polygon must be a flat sequence of numbers");
    const size_t k = static_cast<size_t>(arr.size()) / 2;
    for (py::ssize_t i = 0; i < static_cast<py::ssize_t>(2 * k); ++i) {
      const double v = arr.data()[i];
      if (!std::isfinite(v) || std::fabs(v) > 1e8)
        throw py::value_error("polygon coordinates must be finite numbers below 1e8 in magnitude");
    }
    R::from_polygon(arr.data(), k, h, w, cnts);
    out.append(rle_to_py(h, w, cnts));
  }
  return out;
}

py::list boxes_to_rles(py::array_t<double, py::array::c_style | py::array::forcecast> boxes,
                       uint64_t h, uint64_t w) {
  if (boxes.ndim() != 2 || boxes.shape(1) != 4) throw py::value_error("boxes must be (N, 4)");
  py::list out;
  R::Counts cnts;
  for (py::ssize_t i = 0; i < boxes.shape(0); ++i) {
    R::from_bbox(boxes.data() + 4 * i, h, w, cnts);
    out.append(rle_to_py(h, w, cnts));
  }
  return out;
}

using CrowdArray = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;

py::array_t<double> iou_rles(py::handle dt, py::handle gt, const CrowdArray& crowd) {
  auto d = rles_from_py(dt), g = rles_from_py(gt);
  if (static_cast<size_t>(crowd.size()) != g.size())
    throw py::value_error("iscrowd must have one entry per ground-truth mask");
  py::array_t<double> out({static_cast<py::ssize_t>(d.size()), static_cast<py::ssize_t>(g.size())});
  std::vector<double> db(4 * d.size()), gb(4 * g.size());
  for (size_t i = 0; i < d.size(); ++i) R::to_bbox(d[i].view(), &db[4 * i]);
  for (size_t j = 0; j < g.size(); ++j) R::to_bbox(g[j].view(), &gb[4 * j]);
  double* o = out.mutable_data();
  for (size_t i = 0; i < d.size(); ++i)
    for (size_t j = 0; j < g.size(); ++j)
      o[i * g.size() + j] =
          R::mask_iou(d[i].view(), g[j].view(), &db[4 * i], &gb[4 * j], crowd.data()[j] != 0);
  return out;
}

py::array_t<double> iou_boxes(py::array_t<double, py::array::c_style | py::array::forcecast> dt,
                              py::array_t<double, py::array::c_style | py::array::forcecast> gt,
                              const CrowdArray& crowd) {
  if (dt.ndim() != 2 || dt.shape(1) != 4 || gt.ndim() != 2 || gt.shape(1) != 4)
    throw py::value_error("boxes must be (N, 4)");
  const size_t nd = dt.shape(0), ng = gt.shape(0);
  if (static_cast<size_t>(crowd.size()) != ng)
    throw py::value_error("iscrowd must have one entry per ground-truth box");
  py::array_t<double> out({static_cast<py::ssize_t>(nd), static_cast<py::ssize_t>(ng)});
  double* o = out.mutable_data();
  for (size_t i = 0; i < nd; ++i)
    for (size_t j = 0; j < ng; ++j)
      o[i * ng + j] = R::box_iou(dt.data() + 4 * i, gt.data() + 4 * j, crowd.data()[j] != 0);
  return out;
}

py::list encode_windows(py::array_t<uint8_t, py::array::c_style | py::array::forcecast> crops,
                        py::array_t<int64_t, py::array::c_style | py::array::forcecast> regions,
                        py::array_t<int64_t, py::array::c_style | py::array::forcecast> offsets, uint64_t h,
                        uint64_t w, int nthreads) {
  if (crops.ndim() != 1) throw py::value_error("crops must be one-dimensional (packed row-major blocks)");
  if (regions.ndim() != 2 || regions.shape(1) != 4) throw py::value_error("regions must have shape (N, 4)");
  const auto n = regions.shape(0);
  if (offsets.ndim() != 1 || offsets.shape(0) != n) throw py::value_error("offsets must have shape (N,) to match regions");
  R::check_size(h, w, "rle_encode_windows");
  const int64_t* r = regions.data();
  const int64_t* o = offsets.data();
  const auto size = static_cast<int64_t>(crops.shape(0));
  for (py::ssize_t i = 0; i < n; ++i) {
    const int64_t* g = r + 4 * i;
    const bool empty = g[2] <= g[0] || g[3] <= g[1];
    // Bounds first (h, w <= 2^24), so the area below cannot overflow.
    if (!empty && (g[0] < 0 || g[1] < 0 || g[2] > static_cast<int64_t>(w) || g[3] > static_cast<int64_t>(h) ||
                   o[i] < 0 || o[i] > size - (g[2] - g[0]) * (g[3] - g[1])))
      throw py::value_error("region " + std::to_string(i) + " lies outside the mask or the crops buffer");
  }
  nthreads = yoloseg::clamp_threads(nthreads);
  std::vector<std::string> strs(static_cast<size_t>(n));
  {
    py::gil_scoped_release nogil;
    const uint8_t* base = crops.data();
    const bool parallel = nthreads > 1 && n > 1 && size >= (int64_t{1} << 16);
    (void)parallel;
    yoloseg::ParallelErrors errors;
#ifdef _OPENMP
#pragma omp parallel for num_threads(parallel ? nthreads : 1) schedule(dynamic, 4) if (parallel)
#endif
    for (py::ssize_t i = 0; i < n; ++i) errors.run([&] {
      R::Counts cnts;
      const int64_t* g = r + 4 * i;
      if (g[2] <= g[0] || g[3] <= g[1]) {
        R::encode_window(base, 0, 0, 1, 0, 0, h, w, cnts);
      } else {
        const auto ww = static_cast<uint64_t>(g[2] - g[0]), wh = static_cast<uint64_t>(g[3] - g[1]);
        R::encode_window(base + o[i], wh, ww, static_cast<int64_t>(ww), static_cast<uint64_t>(g[1]),
                         static_cast<uint64_t>(g[0]), h, w, cnts);
      }
      R::to_string(cnts.data(), cnts.size(), strs[i]);
    });
    errors.rethrow();
  }
  return rle_dicts(h, w, strs);
}

py::list counts_of(py::handle objs) {
  py::list out;
  for (auto& r : rles_from_py(objs)) {
    py::list c;
    for (auto v : r.cnts) c.append(v);
    out.append(c);
  }
  return out;
}

void init_rle(py::module_& m) {
  m.def("rle_encode", &encode_masks, "(N,H,W) uint8 masks -> list of compressed RLE dicts");
  m.def("rle_encode_windows", &encode_windows, py::arg("crops"), py::arg("regions"), py::arg("offsets"), py::arg("h"),
        py::arg("w"), py::arg("nthreads") = 1,
        "masks zero outside their regions (N,4) [x0,y0,x1,y1), region i stored row-major at crops[offsets[i]:] "
        "-> list of compressed RLE dicts of size (h, w); reads only the regions");
  m.def("rle_decode", &decode_masks, "list of RLE dicts (one size) -> (N,H,W) uint8");
  m.def("rle_area", &area_of, "list of RLE dicts -> int64 pixel counts");
  m.def("rle_to_bbox", &bbox_of, "list of RLE dicts -> (N,4) float64 [x,y,w,h]");
  m.def("rle_merge", &merge_rles, py::arg("rles"), py::arg("intersect") = false);
  m.def("rle_from_polygons", &polygons_to_rles, "polygons -> one RLE dict per polygon");
  m.def("rle_from_boxes", &boxes_to_rles, "(N,4) boxes -> RLE dicts");
  m.def("rle_iou", &iou_rles, "RLE IoU (D,G) with the crowd rule");
  m.def("box_iou_xywh", &iou_boxes, "box IoU (D,G) of [x,y,w,h] boxes with the crowd rule");
  m.def("rle_counts", &counts_of, "RLE dicts -> uncompressed counts lists");
}

static yoloseg::Registrar reg("rle", init_rle);

}  // namespace
