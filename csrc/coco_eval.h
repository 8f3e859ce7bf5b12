// COCO detection / instance-segmentation evaluation with pycocotools' exact semantics.
//
// Inputs are the raw JSON texts of a COCO instances file and a COCO results list; the evaluation runs
// without Python objects (and without the GIL) and fills the arrays COCOeval.accumulate produces:
// precision [T,R,K,A,M], recall [T,K,A,M], scores [T,R,K,A,M] (C order, -1 where undefined).
// Masks are kept as run-length counts throughout. The Python face is yoloseg/metrics/coco.py.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace yoloseg {
namespace coco {

struct Params {
  bool segm = false;                 // iouType "segm" (else "bbox")
  std::vector<double> iou_thrs;      // T
  std::vector<double> rec_thrs;      // R
  std::vector<int64_t> max_dets;     // M, ascending
  std::vector<double> area_lo, area_hi;  // A, inclusive ranges
  int num_threads = 0;               // 0: OpenMP default
};

struct Result {
  std::vector<int64_t> img_ids, cat_ids;  // sorted, as COCOeval.params
  std::vector<double> precision, recall, scores;
  size_t num_gt = 0, num_dt = 0;          // annotations / detections taken into the evaluation
};

// Bad input (malformed JSON, missing fields, NaN scores, unknown image ids, RLE counts that do not fit
// their size, image sizes above the RLE limits of rle.h) throws std::invalid_argument (or its
// subclass yoloseg::Error) with a message naming the file ("gt" / "dt") or the kernel and the
// problem; so do parameters out of range (thresholds outside [0, 1], NaN area ranges, negative
// max_dets). No exception leaves the parallel region: the first one is rethrown after it.
Result evaluate(const char* gt_json, size_t gt_len, const char* dt_json, size_t dt_len,
                const Params& params);

}  // namespace coco
}  // namespace yoloseg
