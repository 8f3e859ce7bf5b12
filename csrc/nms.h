// Greedy non-maximum suppression on raw float buffers (no torch, no Python).
//
// Semantics shared with yoloseg.ops.reference:
// - boxes are xyxy float32, IoU = inter / (area_i + area_j - inter) in float32, with
//   area = (x2 - x1) * (y2 - y1) and inter clamped at 0 per axis; box j is suppressed by a kept,
//   higher-ranked box i when IoU > (float)iou_threshold (a 0/0 IoU, two empty boxes, never suppresses).
// - rank order: descending score, ties broken by lower input index first (a stable sort).
// - the kept indices are returned in rank order.
// - batched: boxes only suppress boxes with the same idx (class); no coordinate offsets are used,
//   so every IoU is computed on the original coordinates.
#pragma once
#include <cstdint>
#include <vector>

namespace yoloseg {

enum class NmsMethod : int { kAuto = 0, kPairwise = 1, kGrid = 2 };

// Returns kept input indices in rank order. idxs may be null (one class). nthreads <= 1 runs
// serially; classes are spread over threads otherwise.
// Throws yoloseg::Error (errors.h) when n < 0 or n >= 2^31, a buffer is null while n > 0, a box
// coordinate is NaN or infinite, a score is NaN (-inf and +inf scores rank last and first),
// iou_threshold is not finite, or method is not one of NmsMethod.
std::vector<int64_t> batched_nms_kernel(const float* boxes, const float* scores, const int64_t* idxs,
                                        int64_t n, float iou_threshold, NmsMethod method,
                                        int nthreads);

}  // namespace yoloseg
