// Greedy NMS and per-class (batched) NMS. See nms.h for the exact semantics.
//
// Work plan: one sort of all boxes by (score desc, index asc), a stable counting partition by class
// (so each class bucket stays in rank order), then greedy suppression per bucket:
// - small buckets: the classic pairwise sweep over a suppressed bitmap, with a branch-free inner
//   loop over structure-of-arrays coordinates that the compiler vectorises;
// - large buckets (and IoU thresholds >= 0.25): each candidate is checked only against the kept
//   boxes that can possibly exceed the threshold. For IoU > t the x-overlap must exceed
//   t * max(w_i, w_j), which bounds |x1_i - x1_j| < (1 - t) / t * w_j (same for y). Kept boxes sit in
//   a uniform grid keyed by their top-left corner, so a query visits a handful of cells.
// Both paths take the same decisions (same float32 IoU expression), only faster or slower.
#include "nms.h"

#include "errors.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <stdexcept>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define YOLOSEG_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define YOLOSEG_VECTOR_CLONES
#endif

namespace yoloseg {
namespace {

constexpr int64_t kGridMinBoxes = 384;    // buckets smaller than this use the pairwise sweep
constexpr float kGridMinThreshold = 0.25f;  // below this the grid window grows too wide to pay
constexpr int64_t kParallelMinBoxes = 20000;

// Monotone map float -> uint32 so that integer order equals float order (-0 folded onto +0).
inline uint32_t ordered_bits(float s) {
  if (s == 0.0f) s = 0.0f;
  uint32_t u;
  std::memcpy(&u, &s, sizeof(u));
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Boxes of one bucket in rank order, structure of arrays.
struct Bucket {
  std::vector<float> x1, y1, x2, y2, area;
  void load(const float* boxes, const int64_t* rank_to_input, const int64_t* members, int64_t m) {
    x1.resize(m);
    y1.resize(m);
    x2.resize(m);
    y2.resize(m);
    area.resize(m);
    for (int64_t k = 0; k < m; ++k) {
      const float* b = boxes + 4 * rank_to_input[members[k]];
      x1[k] = b[0];
      y1[k] = b[1];
      x2[k] = b[2];
      y2[k] = b[3];
      area[k] = (b[2] - b[0]) * (b[3] - b[1]);
    }
  }
};

inline float pair_iou(float ax1, float ay1, float ax2, float ay2, float aarea, float bx1, float by1,
                      float bx2, float by2, float barea) {
  const float w = std::max(0.0f, std::min(ax2, bx2) - std::max(ax1, bx1));
  const float h = std::max(0.0f, std::min(ay2, by2) - std::max(ay1, by1));
  const float inter = w * h;
  return inter / (aarea + barea - inter);
}

// Marks sup[j] for j in [from, to) whose IoU with box (bx1..ba) exceeds thr. Branch-free so that it
// vectorises; suppressing an already suppressed box again changes nothing.
YOLOSEG_VECTOR_CLONES
void suppress_range(const float* __restrict x1, const float* __restrict y1, const float* __restrict x2,
                    const float* __restrict y2, const float* __restrict area, uint8_t* __restrict sup,
                    int64_t from, int64_t to, float bx1, float by1, float bx2, float by2, float ba,
                    float thr) {
  for (int64_t j = from; j < to; ++j) {
    const float xx1 = bx1 < x1[j] ? x1[j] : bx1;
    const float yy1 = by1 < y1[j] ? y1[j] : by1;
    const float xx2 = bx2 < x2[j] ? bx2 : x2[j];
    const float yy2 = by2 < y2[j] ? by2 : y2[j];
    const float dw = xx2 - xx1;
    const float dh = yy2 - yy1;
    const float w = dw > 0.0f ? dw : 0.0f;
    const float h = dh > 0.0f ? dh : 0.0f;
    const float inter = w * h;
    const float iou = inter / (ba + area[j] - inter);
    sup[j] |= static_cast<uint8_t>(iou > thr);
  }
}

// Classic greedy sweep; kept[k] = 1 for kept bucket members.
void greedy_pairwise(const Bucket& b, int64_t m, float thr, uint8_t* kept, std::vector<uint8_t>& sup) {
  sup.assign(m, 0);
  for (int64_t i = 0; i < m; ++i) {
    if (sup[i]) continue;
    kept[i] = 1;
    // An empty box has zero overlap with everything, so it suppresses nothing at thresholds >= 0.
    if (thr >= 0.0f && !(b.x2[i] > b.x1[i] && b.y2[i] > b.y1[i])) continue;
    suppress_range(b.x1.data(), b.y1.data(), b.x2.data(), b.y2.data(), b.area.data(), sup.data(),
                   i + 1, m, b.x1[i], b.y1[i], b.x2[i], b.y2[i], b.area[i], thr);
  }
}

// Greedy NMS in the "is there a kept box that suppresses me" form, with kept boxes in a grid.
// Returns false without touching `kept` when `only_if_sparse` and the search windows would cover
// so much of the scene that the vectorised pairwise sweep is cheaper.
bool greedy_grid(const Bucket& b, int64_t m, float thr, uint8_t* kept, std::vector<int32_t>& head,
                 std::vector<int32_t>& next, bool only_if_sparse) {
  // Real-arithmetic window bound, widened so that float32 rounding of the IoU can never make a
  // pair outside the window pass the threshold.
  const double t = static_cast<double>(thr) * (1.0 - 1e-5);
  const double reach = (1.0 - t) / t * (1.0 + 1e-5);
  double minx = INFINITY, miny = INFINITY, maxx = -INFINITY, maxy = -INFINITY, sum_reach = 0.0;
  double sum_window = 0.0;
  int64_t live = 0;
  for (int64_t k = 0; k < m; ++k) {
    if (!(b.x2[k] > b.x1[k] && b.y2[k] > b.y1[k])) continue;
    minx = std::min(minx, static_cast<double>(b.x1[k]));
    maxx = std::max(maxx, static_cast<double>(b.x1[k]));
    miny = std::min(miny, static_cast<double>(b.y1[k]));
    maxy = std::max(maxy, static_cast<double>(b.y1[k]));
    const double w = static_cast<double>(b.x2[k]) - b.x1[k], h = static_cast<double>(b.y2[k]) - b.y1[k];
    sum_reach += (w + h) * 0.5;
    sum_window += (2.0 * reach * w + 1.0) * (2.0 * reach * h + 1.0);
    ++live;
  }
  if (live == 0) {
    std::fill(kept, kept + std::max<int64_t>(m, 0), 1);
    return true;
  }
  if (only_if_sparse) {
    // Mean search window as a fraction of the scene; each grid check costs several vector lanes of
    // the pairwise sweep, so the grid only pays when windows are small.
    const double mean_side = sum_reach / live;
    const double scene = (maxx - minx + mean_side) * (maxy - miny + mean_side);
    if (sum_window / live > 0.08 * scene) return false;
  }
  const double span = std::max(maxx - minx, maxy - miny);
  double cell = std::max(sum_reach / live * reach, span / 2048.0);
  if (!(cell > 0.0)) cell = 1.0;
  int64_t gx = static_cast<int64_t>((maxx - minx) / cell) + 1;
  int64_t gy = static_cast<int64_t>((maxy - miny) / cell) + 1;
  while (gx * gy > 4 * live + 64) {  // keep the grid no larger than a few cells per box
    cell *= 1.5;
    gx = static_cast<int64_t>((maxx - minx) / cell) + 1;
    gy = static_cast<int64_t>((maxy - miny) / cell) + 1;
  }
  head.assign(static_cast<size_t>(gx * gy), -1);
  next.resize(m);
  const double inv = 1.0 / cell;
  auto cell_of = [&](double v, double lo, int64_t g) {
    const double c = std::floor((v - lo) * inv);
    return static_cast<int64_t>(std::min(std::max(c, 0.0), static_cast<double>(g - 1)));
  };

  for (int64_t j = 0; j < m; ++j) {
    const float jx1 = b.x1[j], jy1 = b.y1[j], jx2 = b.x2[j], jy2 = b.y2[j], ja = b.area[j];
    if (!(jx2 > jx1 && jy2 > jy1)) {  // empty: never suppressed, suppresses nothing
      kept[j] = 1;
      continue;
    }
    const double rx = (static_cast<double>(jx2) - jx1) * reach;
    const double ry = (static_cast<double>(jy2) - jy1) * reach;
    const int64_t cx0 = cell_of(jx1 - rx, minx, gx), cx1 = cell_of(jx1 + rx, minx, gx);
    const int64_t cy0 = cell_of(jy1 - ry, miny, gy), cy1 = cell_of(jy1 + ry, miny, gy);
    bool suppressed = false;
    for (int64_t cy = cy0; cy <= cy1 && !suppressed; ++cy) {
      for (int64_t cx = cx0; cx <= cx1 && !suppressed; ++cx) {
        for (int32_t k = head[cy * gx + cx]; k >= 0; k = next[k]) {
          if (pair_iou(b.x1[k], b.y1[k], b.x2[k], b.y2[k], b.area[k], jx1, jy1, jx2, jy2, ja) > thr) {
            suppressed = true;
            break;
          }
        }
      }
    }
    if (suppressed) continue;
    kept[j] = 1;
    const int64_t c = cell_of(jy1, miny, gy) * gx + cell_of(jx1, minx, gx);
    next[j] = head[c];
    head[c] = static_cast<int32_t>(j);
  }
  return true;
}

}  // namespace

std::vector<int64_t> batched_nms_kernel(const float* boxes, const float* scores, const int64_t* idxs,
                                        int64_t n, float iou_threshold, NmsMethod method,
                                        int nthreads) {
  const char* fn = idxs == nullptr ? "nms" : "batched_nms";
  check::count(n, fn, "n");
  if (n >= (int64_t{1} << 31)) check::fail(fn, "n", "must be below 2^31 boxes, got " + std::to_string(n));
  check::not_null(boxes, n, fn, "boxes");
  check::not_null(scores, n, fn, "scores");
  if (!std::isfinite(iou_threshold))
    check::fail(fn, "iou_threshold", "must be a finite number, got " + std::to_string(iou_threshold));
  if (method != NmsMethod::kAuto && method != NmsMethod::kPairwise && method != NmsMethod::kGrid)
    check::fail(fn, "method", "must be 0 (auto), 1 (pairwise) or 2 (grid), got " +
                                  std::to_string(static_cast<int>(method)));
  check::finite(boxes, 4 * n, fn, "boxes");
  check::finite(scores, n, fn, "scores", /*allow_inf=*/true);
  std::vector<int64_t> out;
  if (n == 0) return out;

  // 1. rank order: one sort of (descending score, ascending index) packed into 64-bit keys.
  std::vector<uint64_t> keys(n);
  for (int64_t i = 0; i < n; ++i)
    keys[i] = (static_cast<uint64_t>(~ordered_bits(scores[i])) << 32) | static_cast<uint64_t>(i);
  std::sort(keys.begin(), keys.end());
  std::vector<int64_t> rank_to_input(n);
  for (int64_t r = 0; r < n; ++r) rank_to_input[r] = static_cast<int64_t>(keys[r] & 0xffffffffu);
  keys.clear();
  keys.shrink_to_fit();

  // 2. buckets: stable counting partition of ranks by class.
  std::vector<int64_t> members(n);
  std::vector<int64_t> starts;  // bucket b = members[starts[b] .. starts[b+1])
  if (idxs == nullptr) {
    std::iota(members.begin(), members.end(), int64_t{0});
    starts = {0, n};
  } else {
    std::vector<int64_t> slot(n);  // dense class id per input box
    const auto [lo_it, hi_it] = std::minmax_element(idxs, idxs + n);
    const int64_t lo = *lo_it, hi = *hi_it;
    int64_t nclass;
    if (static_cast<uint64_t>(hi) - static_cast<uint64_t>(lo) < static_cast<uint64_t>(4 * n + 1024)) {
      nclass = hi - lo + 1;
      for (int64_t i = 0; i < n; ++i) slot[i] = idxs[i] - lo;
    } else {
      std::vector<int64_t> uniq(idxs, idxs + n);
      std::sort(uniq.begin(), uniq.end());
      uniq.erase(std::unique(uniq.begin(), uniq.end()), uniq.end());
      nclass = static_cast<int64_t>(uniq.size());
      for (int64_t i = 0; i < n; ++i)
        slot[i] = std::lower_bound(uniq.begin(), uniq.end(), idxs[i]) - uniq.begin();
    }
    std::vector<int64_t> count(nclass + 1, 0);
    for (int64_t i = 0; i < n; ++i) ++count[slot[i] + 1];
    std::partial_sum(count.begin(), count.end(), count.begin());
    starts.reserve(nclass + 1);
    for (int64_t c = 0; c <= nclass; ++c)
      if (c == 0 || count[c] != count[c - 1]) starts.push_back(count[c]);
    std::vector<int64_t> fill(count.begin(), count.end() - 1);
    for (int64_t r = 0; r < n; ++r) members[fill[slot[rank_to_input[r]]]++] = r;
  }
  const int64_t nbuckets = static_cast<int64_t>(starts.size()) - 1;

  // 3. greedy suppression per bucket; kept flags indexed by rank.
  std::vector<uint8_t> kept_rank(n, 0);
  auto run_bucket = [&](int64_t bi, Bucket& bucket, std::vector<uint8_t>& flags,
                        std::vector<uint8_t>& sup, std::vector<int32_t>& head, std::vector<int32_t>& next) {
    const int64_t s = starts[bi], m = starts[bi + 1] - s;
    if (m == 0) return;
    bucket.load(boxes, rank_to_input.data(), members.data() + s, m);
    flags.assign(m, 0);
    bool grid = method == NmsMethod::kGrid ||
                (method == NmsMethod::kAuto && m >= kGridMinBoxes);
    grid = grid && iou_threshold >= kGridMinThreshold && iou_threshold <= 1.0f;
    if (!grid || !greedy_grid(bucket, m, iou_threshold, flags.data(), head, next, method == NmsMethod::kAuto))
      greedy_pairwise(bucket, m, iou_threshold, flags.data(), sup);
    for (int64_t k = 0; k < m; ++k)
      if (flags[k]) kept_rank[members[s + k]] = 1;
  };

  nthreads = clamp_threads(nthreads);
  const bool parallel = nthreads > 1 && nbuckets > 1 && n >= kParallelMinBoxes;
  ParallelErrors errors;
#ifdef _OPENMP
#pragma omp parallel num_threads(parallel ? nthreads : 1) if (parallel)
#endif
  {
    Bucket bucket;
    std::vector<uint8_t> flags, sup;
    std::vector<int32_t> head, next;
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
    for (int64_t bi = 0; bi < nbuckets; ++bi)
      errors.run([&] { run_bucket(bi, bucket, flags, sup, head, next); });
  }
  errors.rethrow();
  (void)parallel;

  for (int64_t r = 0; r < n; ++r)
    if (kept_rank[r]) out.push_back(rank_to_input[r]);
  return out;
}

}  // namespace yoloseg
