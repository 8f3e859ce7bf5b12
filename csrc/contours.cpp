// Outer contours of binary masks -> one polygon per mask, traced in parallel without the GIL.
//
// The tracer is Suzuki & Abe's border following (1985) restricted to outer borders, with the
// conventions of OpenCV's findContours(RETR_EXTERNAL, CHAIN_APPROX_SIMPLE), so the points, their
// order and the order of the contours are the same as what cv2 returns (tests compare them):
//   * the mask is binarised and framed by one row/column of zeros;
//   * rows are scanned top to bottom, left to right; a 0 -> 1 step starts an outer border unless the
//     last traced border pixel met on that row (left of the step) is a "left" mark, which means the
//     step lies inside a hole of a component already traced (RETR_EXTERNAL skips those);
//   * a border is followed counter-clockwise on screen (down the left side first) in the 8-neighbour
//     chain code E, NE, N, NW, W, SW, S, SE; each border pixel is marked "right" when the search
//     around it examined a background east neighbour, else "left";
//   * CHAIN_APPROX_SIMPLE keeps a pixel only where the chain direction changes;
//   * contours are listed last-found first.
// Each mask is traced inside its window of nonzero pixels only (a framed copy of that window), which
// gives the same contours as the whole image since everything outside the window is zero.
//
// Strategies per mask: "largest" keeps the contour of largest area (shoelace, as cv2.contourArea;
// ties: more points, then first listed); "all" links every contour, in list order, into one polygon
// at their closest vertices (each link walked there and back, so it adds no area).

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "errors.h"
#include "polygons.h"

namespace yoloseg {
namespace {

constexpr int8_t kLeftMark = 2;
constexpr int8_t kRightMark = -126;  // negative: a background pixel was seen east of it
constexpr int kDx[8] = {1, 1, 0, -1, -1, -1, 0, 1};
constexpr int kDy[8] = {0, -1, -1, -1, 0, 1, 1, 1};

using Contour = std::vector<int32_t>;  // x0, y0, x1, y1, ... (window-framed coordinates)

struct Framed {
  std::vector<int8_t> px;  // (wh + 2) x (ww + 2), 0 / 1 before tracing
  int64_t stride = 0;
  int64_t step[16];  // pixel offset of chain direction d (and d + 8)

  // window: ww x wh bytes at `window`, rows `src_stride` bytes apart
  void load(const uint8_t* window, int64_t src_stride, int64_t ww, int64_t wh) {
    stride = ww + 2;
    px.resize(static_cast<size_t>(stride * (wh + 2)));  // every byte is written below
    int8_t* p = px.data();
    std::memset(p, 0, static_cast<size_t>(stride));                 // top frame row
    std::memset(p + (wh + 1) * stride, 0, static_cast<size_t>(stride));  // bottom frame row
    for (int64_t y = 0; y < wh; ++y) {
      const uint8_t* src = window + y * src_stride;
      int8_t* dst = p + (y + 1) * stride;
      dst[0] = 0;
      dst[ww + 1] = 0;
      for (int64_t x = 0; x < ww; ++x) dst[x + 1] = src[x] != 0;
    }
    for (int d = 0; d < 16; ++d) step[d] = kDy[d & 7] * stride + kDx[d & 7];
  }

  // Follow the outer border that starts at pixel index `start` = (x, y); appends its points.
  void follow(int64_t start, int32_t x, int32_t y, Contour& out) {
    int8_t* p = px.data();
    // First neighbour met turning clockwise from W: the pixel the border returns from at the end.
    int dir = 4;
    int64_t last = start;
    do {
      dir = (dir + 7) & 7;
      last = start + step[dir];
    } while (p[last] == 0 && dir != 4);
    if (dir == 4) {  // isolated pixel
      p[start] = kRightMark;
      out.push_back(x);
      out.push_back(y);
      return;
    }
    int64_t cur = start;
    int written = dir ^ 4;  // direction of the last kept point; differs from any first move
    for (;;) {
      const int back = dir;
      int64_t next;
      do {  // counter-clockwise from the direction we came from; ends at `back + 8` at the latest
        ++dir;
        next = cur + step[dir];
      } while (p[next] == 0);
      dir &= 7;
      if (static_cast<unsigned>(dir - 1) < static_cast<unsigned>(back))
        p[cur] = kRightMark;  // the search passed east (direction 8) and found background there
      else if (p[cur] == 1)
        p[cur] = kLeftMark;
      if (dir != written) {
        out.push_back(x);
        out.push_back(y);
        written = dir;
      }
      x += kDx[dir];
      y += kDy[dir];
      if (next == start && cur == last) break;
      cur = next;
      dir = (dir + 4) & 7;
    }
  }

  // Outer contours in the order cv2 lists them (last found first).
  void outer_contours(std::vector<Contour>& found) {
    found.clear();
    const int64_t h = static_cast<int64_t>(px.size()) / stride;
    int8_t* p = px.data();
    for (int64_t y = 1; y + 1 < h; ++y) {
      int8_t* row = p + y * stride;
      int64_t lnbd = 0;  // last traced border pixel met on this row (column 0: the zero frame)
      int8_t prev = 0;
      for (int64_t x = 1; x < stride; ++x) {
        if (row[x] == prev) {  // skip the run of `prev`, eight pixels at a time
          const uint64_t run = 0x0101010101010101ULL * static_cast<uint8_t>(prev);
          for (uint64_t word; x + 8 <= stride; x += 8) {
            std::memcpy(&word, row + x, 8);
            if (word != run) break;
          }
          while (x < stride && row[x] == prev) ++x;
          if (x >= stride) break;
        }
        const int8_t v = row[x];
        if (prev == 0 && v == 1 && row[lnbd] <= 0) {
          found.emplace_back();
          follow(y * stride + x, static_cast<int32_t>(x), static_cast<int32_t>(y), found.back());
          lnbd = x;
          prev = row[x];
          continue;
        }
        prev = v;
        if (v != 0 && v != 1) lnbd = x;
      }
    }
    std::reverse(found.begin(), found.end());
  }
};

// Twice the shoelace area, exact: the products of two int32 coordinates and their running sum are kept
// in 128 bits (a long contour in a large window would overflow 64).
__int128 twice_area(const Contour& c) {
  const size_t n = c.size() / 2;
  __int128 acc = 0;
  for (size_t i = 0, j = n - 1; i < n; j = i++)
    acc += static_cast<__int128>(static_cast<int64_t>(c[2 * j]) * c[2 * i + 1]) -
           static_cast<__int128>(static_cast<int64_t>(c[2 * j + 1]) * c[2 * i]);
  return acc < 0 ? -acc : acc;
}

void closest_pair(const Contour& a, const Contour& b, size_t& ia, size_t& ib) {
  int64_t ia64 = 0, ib64 = 0;
  closest_vertices_kernel(a.data(), static_cast<int64_t>(a.size() / 2), b.data(),
                          static_cast<int64_t>(b.size() / 2), &ia64, &ib64);
  ia = static_cast<size_t>(ia64);
  ib = static_cast<size_t>(ib64);
}

// All contours as one polygon: each contour is spliced into the polygon after the vertex of the
// previous contour closest to it, starting at its own closest vertex, closed, and walked back.
Contour join_all(const std::vector<Contour>& parts) {
  std::vector<int32_t> poly(parts[0]);
  size_t start = 0, rot = 0;  // where the previous contour begins in poly, and its first vertex
  for (size_t k = 1; k < parts.size(); ++k) {
    const Contour& prev = parts[k - 1];
    const Contour& part = parts[k];
    size_t a = 0, b = 0;
    closest_pair(prev, part, a, b);
    const size_t np = prev.size() / 2, nq = part.size() / 2;
    const size_t pos = start + (a + np - rot % np) % np;  // position of prev[a] in poly
    std::vector<int32_t> next;
    next.reserve(poly.size() + part.size() + 4);
    next.insert(next.end(), poly.begin(), poly.begin() + 2 * (pos + 1));
    for (size_t i = 0; i <= nq; ++i) {  // part rolled to start at b, plus its first vertex again
      const size_t j = (b + i) % nq;
      next.push_back(part[2 * j]);
      next.push_back(part[2 * j + 1]);
    }
    next.insert(next.end(), poly.begin() + 2 * pos, poly.end());
    poly.swap(next);
    start = pos + 1;
    rot = b;
  }
  return poly;
}

Contour pick(std::vector<Contour>& found, bool join) {
  if (found.empty()) return {};
  if (found.size() == 1) return std::move(found[0]);
  if (join) return join_all(found);
  size_t best = 0;
  __int128 best_area = twice_area(found[0]);
  for (size_t i = 1; i < found.size(); ++i) {
    const __int128 a = twice_area(found[i]);
    if (a > best_area || (a == best_area && found[i].size() > found[best].size())) {
      best = i;
      best_area = a;
    }
  }
  return std::move(found[best]);
}

}  // namespace

namespace {

// A mask window to trace: ww x wh bytes at data, rows stride bytes apart, its top-left at (x0, y0)
// in mask pixels; ww == 0 for an empty mask.
struct View {
  const uint8_t* data;
  int64_t stride, x0, y0, ww, wh;
};

template <typename ViewOf>
void trace_views(int64_t n, bool join, std::vector<std::vector<int32_t>>& polys, int nthreads, ViewOf view_of) {
  polys.assign(static_cast<size_t>(n), {});
  nthreads = clamp_threads(nthreads);
  int64_t work = 0;
  for (int64_t i = 0; i < n && work < (int64_t{1} << 16); ++i) {
    const View v = view_of(i);
    work += v.ww * v.wh;  // <= kMaxSide^2 each: no overflow before the bound
  }
  const bool parallel = nthreads > 1 && n > 1 && work >= (int64_t{1} << 16);
  ParallelErrors errors;
#ifdef _OPENMP
#pragma omp parallel num_threads(parallel ? nthreads : 1) if (parallel)
#endif
  {
    Framed framed;
    std::vector<Contour> found;
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 2)
#endif
    for (int64_t i = 0; i < n; ++i) {
      errors.run([&] {
        const View v = view_of(i);
        if (v.ww <= 0 || v.wh <= 0) return;
        framed.load(v.data, v.stride, v.ww, v.wh);
        framed.outer_contours(found);
        Contour poly = pick(found, join);
        // framed (x, y) -> mask pixels: the frame adds one row and column before the window
        for (size_t k = 0; k < poly.size(); k += 2) {
          poly[k] += static_cast<int32_t>(v.x0 - 1);
          poly[k + 1] += static_cast<int32_t>(v.y0 - 1);
        }
        polys[static_cast<size_t>(i)] = std::move(poly);
      });
    }
  }
  errors.rethrow();
  (void)parallel;
}

}  // namespace

void mask_polygons_kernel(const uint8_t* masks, int64_t n, int64_t h, int64_t w, const int64_t* windows, bool join,
                          std::vector<std::vector<int32_t>>& polys, int nthreads) {
  const char* fn = "mask_polygons";
  check::count(n, fn, "n");
  check::side(h, fn, "h", true);
  check::side(w, fn, "w", true);
  check::not_null(masks, check::mul(n, h * w, fn, "n * h * w"), fn, "masks");
  check::not_null(windows, check::mul(n, 4, fn, "n * 4"), fn, "windows");
  trace_views(n, join, polys, nthreads, [&](int64_t i) {
    const int64_t* b = windows + 4 * i;
    const int64_t x0 = std::max<int64_t>(b[0], 0), y0 = std::max<int64_t>(b[1], 0);
    const int64_t x1 = std::min<int64_t>(b[2], w), y1 = std::min<int64_t>(b[3], h);
    if (x1 <= x0 || y1 <= y0) return View{nullptr, 0, 0, 0, 0, 0};
    return View{masks + i * h * w + y0 * w + x0, w, x0, y0, x1 - x0, y1 - y0};
  });
}

void crop_polygons_kernel(const uint8_t* crops, int64_t n, const int64_t* regions, const int64_t* offsets,
                          const int64_t* windows, bool join, std::vector<std::vector<int32_t>>& polys, int nthreads) {
  const char* fn = "crop_polygons";
  check::count(n, fn, "n");
  check::not_null(regions, check::mul(n, 4, fn, "n * 4"), fn, "regions");
  check::not_null(offsets, n, fn, "offsets");
  check::not_null(windows, 4 * n, fn, "windows");
  bool any = false;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t* r = regions + 4 * i;
    if (r[2] <= r[0] || r[3] <= r[1]) continue;  // empty region: an empty mask
    if (r[0] < 0 || r[1] < 0 || r[2] > kMaxSide || r[3] > kMaxSide)
      check::fail(fn, "regions", "row " + std::to_string(i) + " must lie in [0, " + std::to_string(kMaxSide) + "]");
    if (offsets[i] < 0) check::fail(fn, "offsets", "row " + std::to_string(i) + " is negative");
    any = true;
  }
  check::not_null(crops, any ? 1 : 0, fn, "crops");
  trace_views(n, join, polys, nthreads, [&](int64_t i) {
    const int64_t* r = regions + 4 * i;
    const int64_t* b = windows + 4 * i;
    // the window, clipped to the region: pixels outside a region are zero by definition
    const int64_t x0 = std::max(b[0], r[0]), y0 = std::max(b[1], r[1]);
    const int64_t x1 = std::min(b[2], r[2]), y1 = std::min(b[3], r[3]);
    if (x1 <= x0 || y1 <= y0) return View{nullptr, 0, 0, 0, 0, 0};
    const int64_t bw = r[2] - r[0];
    return View{crops + offsets[i] + (y0 - r[1]) * bw + (x0 - r[0]), bw, x0, y0, x1 - x0, y1 - y0};
  });
}

}  // namespace yoloseg
