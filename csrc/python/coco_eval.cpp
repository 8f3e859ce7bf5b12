// Python bindings of the coco_eval kernels (coco_eval.cpp): argument checks, numpy buffers, GIL release.
// Registered as the family "coco_eval" (registry.h).
#include "coco_eval.h"

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

// ---------------------------------------------------------------------------------------------
// Bindings.

namespace {

py::dict evaluate_json(py::bytes gt, py::bytes dt, const std::string& iou_type,
                       py::array_t<double, py::array::c_style | py::array::forcecast> iou_thrs,
                       py::array_t<double, py::array::c_style | py::array::forcecast> rec_thrs,
                       std::vector<int64_t> max_dets,
                       py::array_t<double, py::array::c_style | py::array::forcecast> area_rng,
                       int num_threads) {
  namespace C = yoloseg::coco;
  C::Params p;
  if (iou_type == "segm")
    p.segm = true;
  else if (iou_type != "bbox")
    throw py::value_error("iou_type must be 'bbox' or 'segm', got '" + iou_type + "'");
  p.iou_thrs.assign(iou_thrs.data(), iou_thrs.data() + iou_thrs.size());
  p.rec_thrs.assign(rec_thrs.data(), rec_thrs.data() + rec_thrs.size());
  p.max_dets = std::move(max_dets);
  if (area_rng.ndim() != 2 || area_rng.shape(1) != 2)
    throw py::value_error("area_rng must be (A, 2)");
  for (py::ssize_t a = 0; a < area_rng.shape(0); ++a) {
    p.area_lo.push_back(area_rng.data()[2 * a]);
    p.area_hi.push_back(area_rng.data()[2 * a + 1]);
  }
  p.num_threads = num_threads;
  char *gs = nullptr, *ds = nullptr;
  py::ssize_t gl = 0, dl = 0;
  PyBytes_AsStringAndSize(gt.ptr(), &gs, &gl);
  PyBytes_AsStringAndSize(dt.ptr(), &ds, &dl);
  C::Result r;
  {
    py::gil_scoped_release nogil;
    try {
      r = C::evaluate(gs, static_cast<size_t>(gl), ds, static_cast<size_t>(dl), p);
    } catch (const std::invalid_argument& e) {
      py::gil_scoped_acquire gil;
      throw py::value_error(e.what());
    }
  }
  const py::ssize_t T = p.iou_thrs.size(), R = p.rec_thrs.size(),
                    K = r.cat_ids.size(), A = p.area_lo.size(), M = p.max_dets.size();
  py::array_t<double> prec({T, R, K, A, M}), rec({T, K, A, M}), sc({T, R, K, A, M});
  std::copy(r.precision.begin(), r.precision.end(), prec.mutable_data());
  std::copy(r.recall.begin(), r.recall.end(), rec.mutable_data());
  std::copy(r.scores.begin(), r.scores.end(), sc.mutable_data());
  py::dict out;
  out["precision"] = prec;
  out["recall"] = rec;
  out["scores"] = sc;
  out["img_ids"] = r.img_ids;
  out["cat_ids"] = r.cat_ids;
  out["num_gt"] = r.num_gt;
  out["num_dt"] = r.num_dt;
  return out;
}

void init_coco_eval(py::module_& m) {
  m.def("coco_evaluate_json", &evaluate_json, py::arg("gt"), py::arg("dt"), py::arg("iou_type"),
        py::arg("iou_thrs"), py::arg("rec_thrs"), py::arg("max_dets"), py::arg("area_rng"),
        py::arg("num_threads") = 0,
        "COCOeval evaluate+accumulate on COCO JSON texts; returns precision/recall/scores arrays");
}

static yoloseg::Registrar reg("coco_eval", init_coco_eval);

}  // namespace
