// The predict path around the network: letterbox in, detections out. See pipeline.h for the contracts.
//
// Letterbox resize: OpenCV's INTER_LINEAR for 8-bit images, reproduced in integer arithmetic so the
// pixels equal cv2.resize's (the Python predictor's preprocessing):
//   * source position of output x: fx = float((x + 0.5) * scale - 0.5), scale = 1 / (dst / src) in double;
//     sx = floor(fx), weights round((1 - f) * 2048) and round(f * 2048) (11-bit fixed point);
//     columns left of the image take the first pixel, those at or past the last pixel take the last one;
//     rows are clamped to the image, the row weights are not;
//   * horizontal pass: int sums S = a0 * p[sx] + a1 * p[sx + 1];
//   * vertical pass: ((S0 >> 4) * b0 >> 16) + ((S1 >> 4) * b1 >> 16), then (v + 2) >> 2 (OpenCV's SIMD
//     rule, which OpenCV 5 applies to every element of a row; tests/test_cpp_pipeline.py checks the
//     installed cv2 against it on many sizes);
//   * an exact 2x downscale is a 2x2 box average (a + b + c + d + 2) >> 2, as OpenCV switches to it.
#include "pipeline.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>

#include "masks.h"
#include "nms.h"
#include "polygons.h"

namespace yoloseg {
namespace {

[[noreturn]] void fail(const std::string& msg) { throw std::invalid_argument(msg); }

// Python's round() for the values met here: half to even.
inline int64_t py_round(double v) { return static_cast<int64_t>(std::nearbyint(v)); }

// Python's a % b for b > 0.
inline int64_t py_mod(int64_t a, int64_t b) { return ((a % b) + b) % b; }

constexpr int kCoefBits = 11;
constexpr int kCoefScale = 1 << kCoefBits;
constexpr int64_t kMaxSide = int64_t{1} << 20;

inline int16_t coef(float v) { return static_cast<int16_t>(std::lrint(v * static_cast<float>(kCoefScale))); }

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define YOLOSEG_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define YOLOSEG_CLONES
#endif

struct ResizePlan {
  int64_t src_h = 0, src_w = 0, dst_h = 0, dst_w = 0;
  bool identity = false;
  bool area2 = false;              // exact 2x downscale
  std::vector<int32_t> x0, x1;     // source byte offsets of the two columns of each output column
  std::vector<int32_t> a0, a1;     // their weights
  std::vector<int32_t> yofs;       // first source row per output row (unclamped)
  std::vector<int16_t> beta;       // 2 per output row
};

ResizePlan make_plan(int64_t src_h, int64_t src_w, int64_t dst_h, int64_t dst_w) {
  ResizePlan p;
  p.src_h = src_h, p.src_w = src_w, p.dst_h = dst_h, p.dst_w = dst_w;
  if (src_h == dst_h && src_w == dst_w) {
    p.identity = true;
    return p;
  }
  const double scale_x = 1.0 / (static_cast<double>(dst_w) / static_cast<double>(src_w));
  const double scale_y = 1.0 / (static_cast<double>(dst_h) / static_cast<double>(src_h));
  const double isx = std::nearbyint(scale_x), isy = std::nearbyint(scale_y);
  const double eps = std::numeric_limits<double>::epsilon();
  if (std::abs(scale_x - isx) < eps && std::abs(scale_y - isy) < eps && isx == 2 && isy == 2) {
    p.area2 = true;
    return p;
  }
  p.x0.resize(static_cast<size_t>(dst_w));
  p.x1.resize(static_cast<size_t>(dst_w));
  p.a0.resize(static_cast<size_t>(dst_w));
  p.a1.resize(static_cast<size_t>(dst_w));
  for (int64_t dx = 0; dx < dst_w; ++dx) {
    float fx = static_cast<float>((static_cast<double>(dx) + 0.5) * scale_x - 0.5);
    int64_t sx = static_cast<int64_t>(std::floor(fx));
    fx -= static_cast<float>(sx);
    if (sx < 0) fx = 0.f, sx = 0;
    if (sx >= src_w - 1) fx = 0.f, sx = src_w - 1;
    p.a0[dx] = coef(1.f - fx);
    p.a1[dx] = coef(fx);
    p.x0[dx] = static_cast<int32_t>(sx * 3);
    p.x1[dx] = static_cast<int32_t>(std::min(sx + 1, src_w - 1) * 3);  // weight 0 at the last column
  }
  p.yofs.resize(static_cast<size_t>(dst_h));
  p.beta.resize(static_cast<size_t>(dst_h * 2));
  for (int64_t dy = 0; dy < dst_h; ++dy) {
    float fy = static_cast<float>((static_cast<double>(dy) + 0.5) * scale_y - 0.5);
    const int64_t sy = static_cast<int64_t>(std::floor(fy));
    fy -= static_cast<float>(sy);
    p.yofs[dy] = static_cast<int32_t>(sy);
    p.beta[dy * 2] = coef(1.f - fy);
    p.beta[dy * 2 + 1] = coef(fy);
  }
  return p;
}

// Horizontal pass of one BGR source row into three planes of n ints (B, G, R).
YOLOSEG_CLONES void hpass(const uint8_t* __restrict row, const int32_t* __restrict x0, const int32_t* __restrict x1,
                          const int32_t* __restrict a0, const int32_t* __restrict a1, int64_t n,
                          int32_t* __restrict out) {
  int32_t* __restrict b = out;
  int32_t* __restrict g = out + n;
  int32_t* __restrict r = out + 2 * n;
  for (int64_t x = 0; x < n; ++x) {
    const uint8_t* p = row + x0[x];
    const uint8_t* q = row + x1[x];
    b[x] = p[0] * a0[x] + q[0] * a1[x];
    g[x] = p[1] * a0[x] + q[1] * a1[x];
    r[x] = p[2] * a0[x] + q[2] * a1[x];
  }
}

// Vertical pass of n elements (OpenCV's 8-bit rule) into bytes `step` apart, or into floats v / 255.
YOLOSEG_CLONES void vpass_u8(const int32_t* __restrict s0, const int32_t* __restrict s1, int32_t b0, int32_t b1,
                             int64_t n, uint8_t* __restrict d, int64_t step) {
  for (int64_t x = 0; x < n; ++x) {
    int32_t q = (((((s0[x] >> 4) * b0) >> 16) + (((s1[x] >> 4) * b1) >> 16)) + 2) >> 2;
    q = q < 0 ? 0 : (q > 255 ? 255 : q);
    d[x * step] = static_cast<uint8_t>(q);
  }
}

YOLOSEG_CLONES void vpass_f32(const int32_t* __restrict s0, const int32_t* __restrict s1, int32_t b0, int32_t b1,
                              int64_t n, float* __restrict d) {
  for (int64_t x = 0; x < n; ++x) {
    int32_t q = (((((s0[x] >> 4) * b0) >> 16) + (((s1[x] >> 4) * b1) >> 16)) + 2) >> 2;
    q = q < 0 ? 0 : (q > 255 ? 255 : q);
    d[x] = static_cast<float>(q) / 255.0f;
  }
}

// Output rows of the resize, one at a time, with the horizontal passes of the last two source rows kept.
class RowResizer {
 public:
  RowResizer(const ResizePlan& p, const uint8_t* src, int64_t src_stride)
      : p_(p), src_(src), stride_(src_stride), n_(p.dst_w) {
    if (p.identity || p.area2) tmp_.resize(static_cast<size_t>(3 * n_));
    else buf_.resize(static_cast<size_t>(6 * n_));
  }

  // Output row y as interleaved BGR bytes (dst_w * 3) into d.
  void row(int64_t y, uint8_t* __restrict d) {
    if (p_.identity || p_.area2) return simple_row(y, d);
    int32_t b0, b1;
    const int32_t *s0, *s1;
    sources(y, s0, s1, b0, b1);
    for (int c = 0; c < 3; ++c) vpass_u8(s0 + c * n_, s1 + c * n_, b0, b1, n_, d + c, 3);
  }

  // Output row y as floats v / 255 into the R, G, B planes.
  void row(int64_t y, float* r, float* g, float* b) {
    if (p_.identity || p_.area2) {
      simple_row(y, tmp_.data());
      const uint8_t* s = tmp_.data();
      for (int64_t x = 0; x < n_; ++x) {
        b[x] = static_cast<float>(s[3 * x]) / 255.0f;
        g[x] = static_cast<float>(s[3 * x + 1]) / 255.0f;
        r[x] = static_cast<float>(s[3 * x + 2]) / 255.0f;
      }
      return;
    }
    int32_t b0, b1;
    const int32_t *s0, *s1;
    sources(y, s0, s1, b0, b1);
    float* planes[3] = {b, g, r};
    for (int c = 0; c < 3; ++c) vpass_f32(s0 + c * n_, s1 + c * n_, b0, b1, n_, planes[c]);
  }

 private:
  void simple_row(int64_t y, uint8_t* __restrict d) const {
    if (p_.identity) {
      std::memcpy(d, src_ + y * stride_, static_cast<size_t>(3 * n_));
      return;
    }
    const uint8_t* a = src_ + 2 * y * stride_;
    const uint8_t* b = a + stride_;
    for (int64_t x = 0; x < n_; ++x)
      for (int64_t c = 0; c < 3; ++c) {
        const int64_t i = 6 * x + c;
        d[3 * x + c] = static_cast<uint8_t>((a[i] + a[i + 3] + b[i] + b[i + 3] + 2) >> 2);
      }
  }

  // The horizontal passes of the two source rows of output row y (rows clamped to the image) and its weights.
  void sources(int64_t y, const int32_t*& s0, const int32_t*& s1, int32_t& b0, int32_t& b1) {
    const int64_t last = p_.src_h - 1;
    const int64_t sy0 = std::min(std::max<int64_t>(p_.yofs[y], 0), last);
    const int64_t sy1 = std::min(std::max<int64_t>(p_.yofs[y] + 1, 0), last);
    const int k0 = fetch(sy0, -1, sy1);
    const int k1 = fetch(sy1, k0, -1);
    s0 = slot(k0), s1 = slot(k1);
    b0 = p_.beta[2 * y], b1 = p_.beta[2 * y + 1];
  }

  int32_t* slot(int k) { return buf_.data() + k * 3 * n_; }

  // The slot holding source row `want` (computed into a slot other than `keep`, and preferably not the
  // one holding `next`, when missing).
  int fetch(int64_t want, int keep, int64_t next) {
    for (int k = 0; k < 2; ++k)
      if (have_[k] == want) return k;
    const int k = keep >= 0 ? 1 - keep : (have_[0] == next ? 1 : 0);
    hpass(src_ + want * stride_, p_.x0.data(), p_.x1.data(), p_.a0.data(), p_.a1.data(), n_, slot(k));
    have_[k] = want;
    return k;
  }

  const ResizePlan& p_;
  const uint8_t* src_;
  int64_t stride_, n_;
  std::vector<int32_t> buf_;
  std::vector<uint8_t> tmp_;
  int64_t have_[2] = {-1, -1};
};

void check_image(const uint8_t* bgr, int64_t h, int64_t w, int64_t row_stride, const char* fn) {
  if (bgr == nullptr) fail(std::string(fn) + ": image is null");
  if (h <= 0 || w <= 0 || h > kMaxSide || w > kMaxSide)
    fail(std::string(fn) + ": image size " + std::to_string(h) + "x" + std::to_string(w) + " is not in 1.." +
         std::to_string(kMaxSide));
  if (row_stride < 3 * w) fail(std::string(fn) + ": row_stride " + std::to_string(row_stride) + " < 3 * width");
}

void check_geometry(const Letterbox& lb, const char* fn) {
  const bool ok = lb.src_h > 0 && lb.src_w > 0 && lb.dst_h > 0 && lb.dst_w > 0 && lb.new_h > 0 && lb.new_w > 0 &&
                  lb.top >= 0 && lb.left >= 0 && lb.top + lb.new_h <= lb.dst_h && lb.left + lb.new_w <= lb.dst_w &&
                  lb.dst_h <= kMaxSide && lb.dst_w <= kMaxSide && lb.src_h <= kMaxSide && lb.src_w <= kMaxSide;
  if (!ok) fail(std::string(fn) + ": inconsistent letterbox geometry");
}

// Rows [0, n) split into contiguous chunks, one per thread.
template <typename Fn>
void parallel_rows(int64_t n, int nthreads, int64_t work, Fn fn) {
  const int t = (nthreads > 1 && work >= (int64_t{1} << 17)) ? static_cast<int>(std::min<int64_t>(nthreads, n)) : 1;
#ifdef _OPENMP
#pragma omp parallel for num_threads(t) schedule(static) if (t > 1)
#endif
  for (int k = 0; k < t; ++k) fn(n * k / t, n * (k + 1) / t);
}

}  // namespace

Letterbox letterbox_geometry(int64_t src_h, int64_t src_w, const LetterboxOptions& opt) {
  if (src_h <= 0 || src_w <= 0 || src_h > kMaxSide || src_w > kMaxSide)
    fail("letterbox: image size " + std::to_string(src_h) + "x" + std::to_string(src_w) + " is not in 1.." +
         std::to_string(kMaxSide));
  if (opt.height <= 0 || opt.width <= 0 || opt.height > kMaxSide || opt.width > kMaxSide)
    fail("letterbox: target size " + std::to_string(opt.height) + "x" + std::to_string(opt.width) +
         " is not in 1.." + std::to_string(kMaxSide));
  if (opt.auto_pad && opt.stride <= 0) fail("letterbox: stride must be positive, got " + std::to_string(opt.stride));
  double r = std::min(static_cast<double>(opt.height) / static_cast<double>(src_h),
                      static_cast<double>(opt.width) / static_cast<double>(src_w));
  if (!opt.scaleup) r = std::min(r, 1.0);
  Letterbox lb;
  lb.src_h = src_h, lb.src_w = src_w, lb.ratio = r;
  lb.new_w = std::max<int64_t>(py_round(static_cast<double>(src_w) * r), 1);
  lb.new_h = std::max<int64_t>(py_round(static_cast<double>(src_h) * r), 1);
  int64_t dw = opt.width - lb.new_w, dh = opt.height - lb.new_h;
  if (opt.auto_pad) dw = py_mod(dw, opt.stride), dh = py_mod(dh, opt.stride);
  const double hw = static_cast<double>(dw) / 2, hh = static_cast<double>(dh) / 2;
  lb.left = py_round(hw - 0.1), lb.top = py_round(hh - 0.1);
  lb.dst_w = lb.new_w + lb.left + py_round(hw + 0.1);
  lb.dst_h = lb.new_h + lb.top + py_round(hh + 0.1);
  return lb;
}

Letterbox letterbox_from_shapes(int64_t src_h, int64_t src_w, int64_t dst_h, int64_t dst_w) {
  if (src_h <= 0 || src_w <= 0 || dst_h <= 0 || dst_w <= 0) fail("letterbox_from_shapes: sizes must be positive");
  Letterbox lb;
  lb.src_h = src_h, lb.src_w = src_w, lb.dst_h = dst_h, lb.dst_w = dst_w;
  lb.ratio = std::min(static_cast<double>(dst_h) / static_cast<double>(src_h),
                      static_cast<double>(dst_w) / static_cast<double>(src_w));
  lb.new_h = std::max<int64_t>(py_round(static_cast<double>(src_h) * lb.ratio), 1);
  lb.new_w = std::max<int64_t>(py_round(static_cast<double>(src_w) * lb.ratio), 1);
  lb.top = py_round(static_cast<double>(dst_h - lb.new_h) / 2 - 0.1);
  lb.left = py_round(static_cast<double>(dst_w - lb.new_w) / 2 - 0.1);
  return lb;
}

void letterbox_u8(const uint8_t* bgr, int64_t src_h, int64_t src_w, int64_t row_stride, const Letterbox& lb,
                  uint8_t pad_value, uint8_t* out, int nthreads) {
  check_image(bgr, src_h, src_w, row_stride, "letterbox");
  check_geometry(lb, "letterbox");
  if (lb.src_h != src_h || lb.src_w != src_w) fail("letterbox: the geometry is for another image size");
  const ResizePlan plan = make_plan(src_h, src_w, lb.new_h, lb.new_w);
  const int64_t stride = lb.dst_w * 3;
  parallel_rows(lb.dst_h, nthreads, lb.dst_h * stride, [&](int64_t y0, int64_t y1) {
    for (int64_t y = y0; y < y1; ++y) {
      uint8_t* row = out + y * stride;
      if (y < lb.top || y >= lb.top + lb.new_h) {
        std::memset(row, pad_value, stride);
        continue;
      }
      std::memset(row, pad_value, lb.left * 3);
      std::memset(row + (lb.left + lb.new_w) * 3, pad_value, (lb.dst_w - lb.left - lb.new_w) * 3);
    }
    RowResizer rs(plan, bgr, row_stride);
    const int64_t r0 = std::max(y0, lb.top) - lb.top, r1 = std::min(y1, lb.top + lb.new_h) - lb.top;
    for (int64_t r = r0; r < r1; ++r) rs.row(r, out + (lb.top + r) * stride + lb.left * 3);
  });
}

Letterbox letterbox(const uint8_t* bgr, int64_t src_h, int64_t src_w, int64_t row_stride,
                    const LetterboxOptions& opt, float* out, int nthreads) {
  check_image(bgr, src_h, src_w, row_stride, "letterbox");
  if (out == nullptr) fail("letterbox: output buffer is null");
  const Letterbox lb = letterbox_geometry(src_h, src_w, opt);
  const ResizePlan plan = make_plan(src_h, src_w, lb.new_h, lb.new_w);
  const float pad = static_cast<float>(opt.pad_value) / 255.0f;
  const int64_t plane = lb.dst_h * lb.dst_w;
  parallel_rows(lb.dst_h, nthreads, plane * 3, [&](int64_t y0, int64_t y1) {
    RowResizer rs(plan, bgr, row_stride);
    for (int64_t y = y0; y < y1; ++y) {
      float* rp = out + y * lb.dst_w;
      float* gp = rp + plane;
      float* bp = gp + plane;
      const int64_t r = y - lb.top;
      if (r < 0 || r >= lb.new_h) {
        std::fill(rp, rp + lb.dst_w, pad);
        std::fill(gp, gp + lb.dst_w, pad);
        std::fill(bp, bp + lb.dst_w, pad);
        continue;
      }
      const int64_t l = lb.left, e = lb.left + lb.new_w;
      std::fill(rp, rp + l, pad), std::fill(gp, gp + l, pad), std::fill(bp, bp + l, pad);
      std::fill(rp + e, rp + lb.dst_w, pad), std::fill(gp + e, gp + lb.dst_w, pad);
      std::fill(bp + e, bp + lb.dst_w, pad);
      rs.row(r, rp + l, gp + l, bp + l);
    }
  });
  return lb;
}


// ---------------------------------------------------------------------------------------------------------
// Postprocess

namespace {

constexpr int64_t kMaxCandidates = 30000;  // NMS input cap (by score), as yoloseg.ops.non_max_suppression

// How protos (1/4 of an input letterboxed from h x w) are brought back to h x w: upsample by f, cut
// [top, top + ch) x [left, left + cw), resize. yoloseg.ops.reference.native_plan.
struct NativePlan {
  int64_t f, top, left, ch, cw;
};

int64_t gcd(int64_t a, int64_t b) { return b == 0 ? a : gcd(b, a % b); }

// Python's floor division by 2 and | on ints (the values may be negative).
inline int64_t py_floordiv2(int64_t v) { return v >= 0 ? v / 2 : -((-v + 1) / 2); }

NativePlan native_plan(int64_t mh, int64_t mw, int64_t h, int64_t w) {
  const double gain = std::min(4.0 * static_cast<double>(mh) / static_cast<double>(h),
                               4.0 * static_cast<double>(mw) / static_cast<double>(w));
  const int64_t pad = (4 * mh - std::max<int64_t>(py_round(static_cast<double>(h) * gain), 1)) |
                      (4 * mw - std::max<int64_t>(py_round(static_cast<double>(w) * gain), 1));
  const int64_t f = 4 / gcd(4, std::abs(pad | py_floordiv2(pad)));
  const int64_t uh = f * mh, uw = f * mw;
  if (uh == h && uw == w) return {f, 0, 0, uh, uw};
  const double g = std::min(static_cast<double>(uh) / static_cast<double>(h),
                            static_cast<double>(uw) / static_cast<double>(w));
  const int64_t ch = std::max<int64_t>(py_round(static_cast<double>(h) * g), 1);
  const int64_t cw = std::max<int64_t>(py_round(static_cast<double>(w) * g), 1);
  return {f, py_round(static_cast<double>(uh - ch) / 2 - 0.1), py_round(static_cast<double>(uw - cw) / 2 - 0.1), ch,
          cw};
}

}  // namespace

int64_t Detections::mask_area(int64_t i) const {
  if (i < 0 || i >= size()) fail("mask_area: index " + std::to_string(i) + " out of range");
  const int64_t* r = regions.data() + 4 * i;
  const int64_t n = (r[2] - r[0]) * (r[3] - r[1]);
  const uint8_t* p = crops.data() + offsets[i];
  int64_t area = 0;
  for (int64_t k = 0; k < n; ++k) area += p[k];
  return area;
}

void Detections::mask_dense(int64_t i, uint8_t* out, int64_t stride) const {
  if (i < 0 || i >= size()) fail("mask_dense: index " + std::to_string(i) + " out of range");
  if (stride < mask_w) fail("mask_dense: stride < mask width");
  for (int64_t y = 0; y < mask_h; ++y) std::memset(out + y * stride, 0, static_cast<size_t>(mask_w));
  const int64_t* r = regions.data() + 4 * i;
  const int64_t bw = r[2] - r[0];
  for (int64_t y = r[1]; y < r[3]; ++y)
    std::memcpy(out + y * stride + r[0], crops.data() + offsets[i] + (y - r[1]) * bw, static_cast<size_t>(bw));
}

Detections postprocess(const float* pred, int64_t nc, int64_t nm, int64_t anchors, const float* protos,
                       int64_t mh, int64_t mw, const Letterbox& lb, const PostprocessOptions& opt) {
  if (nc < 1) fail("postprocess: nc must be >= 1, got " + std::to_string(nc));
  if (nm < 0) fail("postprocess: nm must be >= 0, got " + std::to_string(nm));
  if (anchors < 0) fail("postprocess: anchors must be >= 0, got " + std::to_string(anchors));
  if (pred == nullptr && anchors > 0) fail("postprocess: pred is null");
  if (nm > 0 && (protos == nullptr || mh <= 0 || mw <= 0))
    fail("postprocess: protos must be a non-empty (nm, mh, mw) buffer");
  check_geometry(lb, "postprocess");
  if (!(opt.conf >= 0.f && opt.conf <= 1.f)) fail("postprocess: conf must be in [0, 1]");
  if (!(opt.iou >= 0.f && opt.iou <= 1.f)) fail("postprocess: iou must be in [0, 1]");
  if (opt.max_det < 0) fail("postprocess: max_det must be >= 0, got " + std::to_string(opt.max_det));
  const int nthreads = std::max(1, opt.nthreads);

  // 1. best class per anchor (first on ties; an anchor with a NaN score has a NaN best score), filter.
  std::vector<float> best(pred + 4 * anchors, pred + 5 * anchors);
  std::vector<int32_t> cls(static_cast<size_t>(anchors), 0);
  std::vector<uint8_t> nan(static_cast<size_t>(anchors), 0);
  for (int64_t a = 0; a < anchors; ++a) nan[a] = std::isnan(best[a]);
  for (int64_t c = 1; c < nc; ++c) {
    const float* row = pred + (4 + c) * anchors;
    float* __restrict b = best.data();
    int32_t* __restrict k = cls.data();
    uint8_t* __restrict bad = nan.data();
    for (int64_t a = 0; a < anchors; ++a) {
      const float v = row[a];
      bad[a] |= static_cast<uint8_t>(v != v);
      const bool up = v > b[a];
      b[a] = up ? v : b[a];
      k[a] = up ? static_cast<int32_t>(c) : k[a];
    }
  }
  std::vector<uint8_t> wanted;
  if (!opt.classes.empty()) {
    wanted.assign(static_cast<size_t>(nc), 0);
    for (int64_t c : opt.classes)
      if (c >= 0 && c < nc) wanted[c] = 1;
  }
  std::vector<int64_t> cand;
  for (int64_t a = 0; a < anchors; ++a)
    if (!nan[a] && best[a] > opt.conf && (wanted.empty() || wanted[cls[a]])) cand.push_back(a);
  if (static_cast<int64_t>(cand.size()) > kMaxCandidates) {
    std::stable_sort(cand.begin(), cand.end(), [&](int64_t i, int64_t j) { return best[i] > best[j]; });
    cand.resize(kMaxCandidates);
  }

  // 2. xywh -> xyxy, NMS.
  const int64_t n = static_cast<int64_t>(cand.size());
  std::vector<float> xyxy(static_cast<size_t>(4 * n)), score(static_cast<size_t>(n));
  std::vector<int64_t> label(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t a = cand[i];
    const float cx = pred[a], cy = pred[anchors + a], w = pred[2 * anchors + a], h = pred[3 * anchors + a];
    const float hw = w / 2, hh = h / 2;
    float* b = xyxy.data() + 4 * i;
    b[0] = cx - hw, b[1] = cy - hh, b[2] = cx + hw, b[3] = cy + hh;
    if (!(std::isfinite(b[0]) && std::isfinite(b[1]) && std::isfinite(b[2]) && std::isfinite(b[3])))
      fail("postprocess: pred holds a NaN or infinite box at anchor " + std::to_string(a));
    score[i] = best[a];
    label[i] = cls[a];
  }
  std::vector<int64_t> keep = batched_nms_kernel(xyxy.data(), score.data(), opt.agnostic ? nullptr : label.data(), n,
                                                 opt.iou, NmsMethod::kAuto, nthreads);
  if (static_cast<int64_t>(keep.size()) > opt.max_det) keep.resize(static_cast<size_t>(opt.max_det));
  const int64_t k = static_cast<int64_t>(keep.size());

  // 3. boxes to the original image: minus the padding, over the per-axis gains, clipped.
  const float gx = static_cast<float>(static_cast<double>(lb.new_w) / static_cast<double>(lb.src_w));
  const float gy = static_cast<float>(static_cast<double>(lb.new_h) / static_cast<double>(lb.src_h));
  const float px = static_cast<float>(lb.left), py = static_cast<float>(lb.top);
  const float W = static_cast<float>(lb.src_w), H = static_cast<float>(lb.src_h);
  std::vector<float> in_boxes(static_cast<size_t>(4 * k)), boxes(static_cast<size_t>(4 * k));
  std::vector<float> coeffs(static_cast<size_t>(k * nm));
  for (int64_t j = 0; j < k; ++j) {
    const int64_t i = keep[j];
    const float* b = xyxy.data() + 4 * i;
    std::copy(b, b + 4, in_boxes.data() + 4 * j);
    float* o = boxes.data() + 4 * j;
    o[0] = std::min(std::max((b[0] - px) / gx, 0.f), W);
    o[1] = std::min(std::max((b[1] - py) / gy, 0.f), H);
    o[2] = std::min(std::max((b[2] - px) / gx, 0.f), W);
    o[3] = std::min(std::max((b[3] - py) / gy, 0.f), H);
    for (int64_t m = 0; m < nm; ++m) coeffs[j * nm + m] = pred[(4 + nc + m) * anchors + cand[i]];
  }

  Detections det;
  det.mask_h = opt.retina_masks ? lb.src_h : lb.dst_h;
  det.mask_w = opt.retina_masks ? lb.src_w : lb.dst_w;
  if (k == 0) return det;
  if (nm == 0) fail("postprocess: detections need mask coefficients (nm >= 1)");

  // 4. masks, as packed box crops, on the original image (retina) or the input grid.
  NativePlan plan{1, 0, 0, mh, mw};
  if (opt.retina_masks) plan = native_plan(mh, mw, lb.src_h, lb.src_w);
  const float* mask_boxes = opt.retina_masks ? boxes.data() : in_boxes.data();
  const AxisTaps yt = resample_taps(det.mask_h, mh, plan.f, plan.top, plan.ch);
  const AxisTaps xt = resample_taps(det.mask_w, mw, plan.f, plan.left, plan.cw);
  std::vector<int64_t> regions(static_cast<size_t>(4 * k)), offsets(static_cast<size_t>(k));
  std::vector<int64_t> windows(static_cast<size_t>(4 * k));
  int64_t total = 0;
  for (int64_t j = 0; j < k; ++j) {
    const Region r = box_region(mask_boxes + 4 * j, det.mask_h, det.mask_w);
    int64_t* g = regions.data() + 4 * j;
    g[0] = r.x0, g[1] = r.y0, g[2] = r.x1, g[3] = r.y1;
    offsets[j] = total;
    total += (r.x1 - r.x0) * (r.y1 - r.y0);
  }
  det.crops.resize(static_cast<size_t>(total));
  decode_crops_kernel(protos, nm, mh, mw, coeffs.data(), mask_boxes, k, yt, xt, det.mask_h, det.mask_w,
                      regions.data(), offsets.data(), det.crops.data(), windows.data(), nthreads);

  // 5. drop detections whose mask is empty; compact the crops.
  int64_t write = 0;
  for (int64_t j = 0; j < k; ++j) {
    const int64_t* win = windows.data() + 4 * j;
    if (win[2] <= win[0]) continue;
    const int64_t* g = regions.data() + 4 * j;
    const int64_t size = (g[2] - g[0]) * (g[3] - g[1]);
    if (write != offsets[j]) std::memmove(det.crops.data() + write, det.crops.data() + offsets[j], size);
    det.offsets.push_back(write);
    write += size;
    det.regions.insert(det.regions.end(), g, g + 4);
    det.windows.insert(det.windows.end(), win, win + 4);
    det.boxes.insert(det.boxes.end(), boxes.data() + 4 * j, boxes.data() + 4 * j + 4);
    det.scores.push_back(score[keep[j]]);
    det.classes.push_back(label[keep[j]]);
  }
  det.crops.resize(static_cast<size_t>(write));

  // 6. polygons, mapped from the mask grid to the original image (yoloseg.engine.results.points_to_image).
  if (opt.polygons != Polygons::kNone && det.size() > 0) {
    std::vector<std::vector<int32_t>> polys;
    crop_polygons_kernel(det.crops.data(), det.size(), det.regions.data(), det.offsets.data(), det.windows.data(),
                         opt.polygons == Polygons::kAll, polys, nthreads);
    const Letterbox m = letterbox_from_shapes(lb.src_h, lb.src_w, det.mask_h, det.mask_w);
    const float mgx = static_cast<float>(static_cast<double>(m.new_w) / static_cast<double>(lb.src_w));
    const float mgy = static_cast<float>(static_cast<double>(m.new_h) / static_cast<double>(lb.src_h));
    const float ml = static_cast<float>(m.left), mt = static_cast<float>(m.top);
    det.polygons.resize(polys.size());
    for (size_t i = 0; i < polys.size(); ++i) {
      const auto& p = polys[i];
      auto& q = det.polygons[i];
      q.resize(p.size());
      for (size_t t = 0; t + 1 < p.size(); t += 2) {
        q[t] = std::min(std::max((static_cast<float>(p[t]) - ml) / mgx, 0.f), W);
        q[t + 1] = std::min(std::max((static_cast<float>(p[t + 1]) - mt) / mgy, 0.f), H);
      }
    }
  }
  return det;
}

}  // namespace yoloseg
