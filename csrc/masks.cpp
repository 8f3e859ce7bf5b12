// Mask decoding: only the pixels inside each box are computed. Per mask:
//   1. the output rows/columns inside the box -> the prototype window their taps touch,
//   2. low-resolution logits coeffs . protos on that window only,
//   3. horizontal resampling of the window rows to the box columns,
//   4. vertical resampling per box row, threshold > 0, uint8 written straight into the output.
// Scratch is per thread and bounded by the prototype window, never by N*H*W.
#include "masks.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "errors.h"
#include "polygons.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define YOLOSEG_CLONES __attribute__((target_clones("avx2", "default")))
#define YOLOSEG_INLINE inline __attribute__((always_inline))
#else
#define YOLOSEG_CLONES
#define YOLOSEG_INLINE inline
#endif

namespace yoloseg {
namespace {

// One bilinear step (align_corners=False) as computed by torch's CPU kernels in float32:
// source = scale * (dst + 0.5) - 0.5 clamped at 0, neighbours i0 and i0 + 1 (clamped to the edge).
struct LinearStep {
  int64_t i0, i1;
  float w0, w1;
};

inline LinearStep linear_step(float scale, int64_t dst, int64_t in_size) {
  float src = scale * (static_cast<float>(dst) + 0.5f) - 0.5f;
  if (src < 0.0f) src = 0.0f;
  int64_t i0 = std::min(static_cast<int64_t>(src), in_size - 1);
  float l1 = std::min(std::max(src - static_cast<float>(i0), 0.0f), 1.0f);
  const int64_t i1 = i0 + (i0 < in_size - 1 ? 1 : 0);
  return {i0, i1, 1.0f - l1, l1};
}

constexpr int64_t kParallelMinPixels = 1 << 16;

// Output pixels kept by the crop: x1 <= x < x2, i.e. x in [ceil(x1), ceil(x2)), clipped to the grid.
inline int64_t first_at_or_above(float v, int64_t size) {
  const double c = std::ceil(static_cast<double>(v));
  return static_cast<int64_t>(std::min(std::max(c, 0.0), static_cast<double>(size)));
}

}  // namespace

Region box_region(const float* box, int64_t out_h, int64_t out_w) {
  check::side(out_h, "box_region", "out_h");
  check::side(out_w, "box_region", "out_w");
  if (std::isnan(box[0]) || std::isnan(box[1]) || std::isnan(box[2]) || std::isnan(box[3])) return Region{0, 0, 0, 0};
  Region r{first_at_or_above(box[0], out_w), first_at_or_above(box[1], out_h), first_at_or_above(box[2], out_w),
           first_at_or_above(box[3], out_h)};
  if (r.x1 <= r.x0 || r.y1 <= r.y0) r = Region{0, 0, 0, 0};
  return r;
}

namespace {

template <int K>
YOLOSEG_INLINE void decode_one(const float* protos, int64_t nm, int64_t mh, int64_t mw, const float* coef,
                               const Region& reg, const AxisTaps& yt, const AxisTaps& xt, uint8_t* out,
                               int64_t out_stride, std::vector<float>& logits, std::vector<float>& rows) {
  // out points at pixel (reg.x0, reg.y0); rows of the region are out_stride bytes apart.
  const int64_t cx0 = reg.x0, cx1 = reg.x1, ry0 = reg.y0, ry1 = reg.y1;
  if (cx1 <= cx0 || ry1 <= ry0) return;
  const int64_t bw = cx1 - cx0;

  // Prototype window touched by the taps of those rows and columns.
  const int64_t pc0 = xt.start[cx0], pc1 = std::min<int64_t>(mw - 1, xt.start[cx1 - 1] + K - 1);
  const int64_t pr0 = yt.start[ry0], pr1 = std::min<int64_t>(mh - 1, yt.start[ry1 - 1] + K - 1);
  const int64_t ncol = pc1 - pc0 + 1, nrow = pr1 - pr0 + 1;
  const int64_t ld = ncol + K - 1;  // zero columns past the window absorb taps with zero weight

  // 2. logits on the window, rows padded with K - 1 zero rows/columns.
  logits.assign(static_cast<size_t>((nrow + K - 1) * ld), 0.0f);
  const int64_t plane = mh * mw;
  for (int64_t r = 0; r < nrow; ++r) {
    float* __restrict dst = logits.data() + r * ld;
    const float* src = protos + (pr0 + r) * mw + pc0;
    for (int64_t k = 0; k < nm; ++k) {
      const float c = coef[k];
      const float* __restrict p = src + k * plane;
      for (int64_t j = 0; j < ncol; ++j) dst[j] += c * p[j];
    }
  }

  // 3. horizontal resampling of every window row to the box columns.
  rows.assign(static_cast<size_t>((nrow + K - 1) * bw), 0.0f);
  const int32_t* xs = xt.start.data() + cx0;
  const float* xw = xt.weight.data() + cx0 * K;
  for (int64_t r = 0; r < nrow; ++r) {
    const float* src = logits.data() + r * ld - pc0;
    float* __restrict dst = rows.data() + r * bw;
    for (int64_t x = 0; x < bw; ++x) {
      const float* s = src + xs[x];
      const float* w = xw + x * K;
      float v = w[0] * s[0];
      for (int b = 1; b < K; ++b) v += w[b] * s[b];
      dst[x] = v;
    }
  }

  // 4. vertical resampling, threshold, store.
  for (int64_t y = ry0; y < ry1; ++y) {
    const float* w = yt.weight.data() + y * K;
    const float* base = rows.data() + (yt.start[y] - pr0) * bw;
    uint8_t* __restrict dst = out + (y - ry0) * out_stride;
    float w_[K];
    for (int a = 0; a < K; ++a) w_[a] = w[a];
    for (int64_t x = 0; x < bw; ++x) {
      float v = w_[0] * base[x];
      for (int a = 1; a < K; ++a) v += w_[a] * base[a * bw + x];
      dst[x] = static_cast<uint8_t>(v > 0.0f);
    }
  }
}

// One mask; compiled for AVX2 as well as the baseline ISA where the compiler can dispatch at load time
// (no FMA: the arithmetic, and so every mask bit, stays the same as on the baseline path).
YOLOSEG_CLONES void decode_dispatch(int taps, const float* protos, int64_t nm, int64_t mh, int64_t mw,
                                    const float* coef, const Region& reg, const AxisTaps& yt, const AxisTaps& xt,
                                    uint8_t* out, int64_t out_stride, std::vector<float>& logits,
                                    std::vector<float>& rows) {
  if (taps == 2)
    decode_one<2>(protos, nm, mh, mw, coef, reg, yt, xt, out, out_stride, logits, rows);
  else
    decode_one<4>(protos, nm, mh, mw, coef, reg, yt, xt, out, out_stride, logits, rows);
}

}  // namespace

AxisTaps resample_taps(int64_t out, int64_t proto, int64_t f, int64_t offset, int64_t content) {
  const char* fn = "resample_taps";
  check::side(out, fn, "out");
  check::side(proto, fn, "proto");
  check::side(f, fn, "f");
  check::side(content, fn, "content");
  check::count(offset, fn, "offset");
  if (check::add(offset, content, fn, "offset + content") > check::mul(f, proto, fn, "f * proto"))
    check::fail(fn, "offset + content", "exceeds the upsampled prototype length f * proto (inconsistent resampling plan)");
  AxisTaps t;
  t.taps = f == 1 ? 2 : 4;
  const int K = t.taps;
  t.start.resize(out);
  t.weight.assign(static_cast<size_t>(out * K), 0.0f);
  const float scale = static_cast<float>(content) / static_cast<float>(out);
  const float up_scale = 1.0f / static_cast<float>(f);
  for (int64_t d = 0; d < out; ++d) {
    const LinearStep b = linear_step(scale, d, content);
    int64_t idx[4];
    float wt[4];
    int cnt = 0;
    for (int s = 0; s < 2; ++s) {
      const int64_t u = (s == 0 ? b.i0 : b.i1) + offset;
      const float wb = s == 0 ? b.w0 : b.w1;
      if (f == 1) {
        idx[cnt] = u;
        wt[cnt++] = wb;
      } else {
        const LinearStep a = linear_step(up_scale, u, proto);
        idx[cnt] = a.i0;
        wt[cnt++] = wb * a.w0;
        idx[cnt] = a.i1;
        wt[cnt++] = wb * a.w1;
      }
    }
    const int64_t lo = *std::min_element(idx, idx + cnt);
    t.start[d] = static_cast<int32_t>(lo);
    for (int c = 0; c < cnt; ++c) {
      if (idx[c] - lo >= K) throw std::logic_error("decode_masks: tap span exceeds kernel width");
      t.weight[d * K + (idx[c] - lo)] += wt[c];
    }
  }
  return t;
}

// Runs decode(i, logits, rows) for every mask, on several threads when there is enough work. An
// exception of any mask is rethrown after the parallel region.
template <typename Fn>
void for_each_mask(const float* boxes, int64_t n, int64_t out_h, int64_t out_w, int nthreads, Fn decode) {
  nthreads = clamp_threads(nthreads);
  int64_t work = 0;
  for (int64_t i = 0; i < n && work < kParallelMinPixels; ++i) {
    const Region r = box_region(boxes + 4 * i, out_h, out_w);
    work += (r.x1 - r.x0) * (r.y1 - r.y0);  // each term <= kMaxSide^2: no overflow before the bound
  }
  const bool parallel = nthreads > 1 && n > 1 && work >= kParallelMinPixels;
  ParallelErrors errors;
#ifdef _OPENMP
#pragma omp parallel num_threads(parallel ? nthreads : 1) if (parallel)
#endif
  {
    std::vector<float> logits, rows;
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
    for (int64_t i = 0; i < n; ++i) errors.run([&] { decode(i, logits, rows); });
  }
  errors.rethrow();
  (void)parallel;
}

namespace {

// Checks shared by decode_masks_kernel and decode_crops_kernel.
void check_decode(const char* fn, const float* protos, int64_t nm, int64_t mh, int64_t mw, const float* coeffs,
                  const float* boxes, int64_t n, const AxisTaps& ytaps, const AxisTaps& xtaps, int64_t out_h,
                  int64_t out_w) {
  check::count(nm, fn, "nm");
  check::side(mh, fn, "mh");
  check::side(mw, fn, "mw");
  check::count(n, fn, "n");
  check::side(out_h, fn, "out_h");
  check::side(out_w, fn, "out_w");
  check::not_null(protos, check::mul(nm, mh * mw, fn, "nm * mh * mw"), fn, "protos");
  check::not_null(coeffs, check::mul(n, nm, fn, "n * nm"), fn, "coeffs");
  check::not_null(boxes, check::mul(n, 4, fn, "n * 4"), fn, "boxes");
  check::finite(boxes, 4 * n, fn, "boxes");
  check::finite(coeffs, n * nm, fn, "coeffs");
  if (ytaps.taps != xtaps.taps || (ytaps.taps != 2 && ytaps.taps != 4))
    check::fail(fn, "ytaps/xtaps", "must have one tap width, 2 or 4");
  auto taps_ok = [&](const AxisTaps& t, int64_t out, int64_t proto, const char* arg) {
    if (static_cast<int64_t>(t.start.size()) != out || static_cast<int64_t>(t.weight.size()) != out * t.taps)
      check::fail(fn, arg, "must come from resample_taps for this output size (" + std::to_string(out) + ")");
    for (int32_t st : t.start)
      if (st < 0 || st >= proto) check::fail(fn, arg, "start lies outside the prototype grid");
  };
  taps_ok(ytaps, out_h, mh, "ytaps");
  taps_ok(xtaps, out_w, mw, "xtaps");
}

}  // namespace

void decode_masks_kernel(const float* protos, int64_t nm, int64_t mh, int64_t mw, const float* coeffs,
                         const float* boxes, int64_t n, const AxisTaps& ytaps, const AxisTaps& xtaps,
                         int64_t out_h, int64_t out_w, uint8_t* out, int nthreads) {
  check_decode("decode_masks", protos, nm, mh, mw, coeffs, boxes, n, ytaps, xtaps, out_h, out_w);
  const int64_t plane = out_h * out_w;
  check::not_null(out, check::mul(n, plane, "decode_masks", "n * out_h * out_w"), "decode_masks", "out");
  for_each_mask(boxes, n, out_h, out_w, nthreads, [&](int64_t i, std::vector<float>& logits, std::vector<float>& rows) {
    const Region r = box_region(boxes + 4 * i, out_h, out_w);
    decode_dispatch(ytaps.taps, protos, nm, mh, mw, coeffs + i * nm, r, ytaps, xtaps,
                    out + i * plane + r.y0 * out_w + r.x0, out_w, logits, rows);
  });
}

void decode_crops_kernel(const float* protos, int64_t nm, int64_t mh, int64_t mw, const float* coeffs,
                         const float* boxes, int64_t n, const AxisTaps& ytaps, const AxisTaps& xtaps,
                         int64_t out_h, int64_t out_w, const int64_t* regions, const int64_t* offsets,
                         uint8_t* crops, int64_t* windows, int nthreads) {
  const char* fn = "decode_mask_crops";
  check_decode(fn, protos, nm, mh, mw, coeffs, boxes, n, ytaps, xtaps, out_h, out_w);
  check::not_null(regions, 4 * n, fn, "regions");
  check::not_null(offsets, n, fn, "offsets");
  check::not_null(windows, 4 * n, fn, "windows");
  bool any = false;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t* g = regions + 4 * i;
    if (g[2] <= g[0] || g[3] <= g[1]) continue;  // empty: nothing is read or written
    if (g[0] < 0 || g[1] < 0 || g[2] > out_w || g[3] > out_h)
      check::fail(fn, "regions", "row " + std::to_string(i) + " lies outside the " + std::to_string(out_h) + "x" +
                                     std::to_string(out_w) + " output");
    if (offsets[i] < 0) check::fail(fn, "offsets", "row " + std::to_string(i) + " is negative");
    any = true;
  }
  check::not_null(crops, any ? 1 : 0, fn, "crops");
  for_each_mask(boxes, n, out_h, out_w, nthreads, [&](int64_t i, std::vector<float>& logits, std::vector<float>& rows) {
    const int64_t* g = regions + 4 * i;
    const Region r{g[0], g[1], g[2], g[3]};
    int64_t* win = windows + 4 * i;
    win[0] = win[1] = win[2] = win[3] = 0;
    if (r.x1 <= r.x0 || r.y1 <= r.y0) return;
    const int64_t bw = r.x1 - r.x0, bh = r.y1 - r.y0;
    uint8_t* dst = crops + offsets[i];
    decode_dispatch(ytaps.taps, protos, nm, mh, mw, coeffs + i * nm, r, ytaps, xtaps, dst, bw, logits, rows);
    nonzero_window(dst, bw, bw, bh, win);  // crop-relative, shifted to mask pixels below
    if (win[2] > win[0]) {
      win[0] += r.x0;
      win[2] += r.x0;
      win[1] += r.y0;
      win[3] += r.y0;
    }
  });
}

}  // namespace yoloseg
