// COCO run-length mask kernels (see rle.h).
#include "rle.h"

#include "errors.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <stdexcept>

// Built with -ffp-contract=off (CMakeLists.txt): bit-exact arithmetic with the COCO tools.

namespace yoloseg {
namespace rle {

namespace {

// C's (int) conversion as x86 performs it: truncation toward zero, INT_MIN for NaN and for values
// outside the int range (the polygon code relies on this for degenerate edges).
inline int trunc_int(double v) {
  if (!(v > -2147483649.0 && v < 2147483648.0)) return INT_MIN;
  return static_cast<int>(v);
}

}  // namespace

void check_size(uint64_t h, uint64_t w, const char* fn) {
  if (h > static_cast<uint64_t>(kMaxSide) || w > static_cast<uint64_t>(kMaxSide) || h * w > kMaxPixels)
    check::fail(fn, "size", "[" + std::to_string(h) + ", " + std::to_string(w) +
                                "] is too large: h and w at most 2^24 and h * w at most 2^31 - 1");
}

void validate(const View& r, const char* fn) {
  check_size(r.h, r.w, fn);
  check::not_null(r.cnts, static_cast<int64_t>(r.m), fn, "counts");
  uint64_t total = 0;
  for (size_t j = 0; j < r.m; ++j) {
    total += r.cnts[j];
    if (total > r.h * r.w)
      check::fail(fn, "counts", "add up to more than h*w (" + std::to_string(r.h * r.w) + ")");
  }
}

void encode_strided(const uint8_t* mask, uint64_t h, uint64_t w, int64_t stride_y, int64_t stride_x,
                    Counts& out) {
  check_size(h, w, "rle_encode");
  check::not_null(mask, static_cast<int64_t>(h * w), "rle_encode", "mask");
  out.clear();
  uint8_t prev = 0;
  uint32_t run = 0;
  for (uint64_t x = 0; x < w; ++x) {
    const uint8_t* col = mask + static_cast<int64_t>(x) * stride_x;
    for (uint64_t y = 0; y < h; ++y) {
      uint8_t v = col[static_cast<int64_t>(y) * stride_y] != 0;
      if (v != prev) {
        out.push_back(run);
        run = 0;
        prev = v;
      }
      ++run;
    }
  }
  out.push_back(run);
}

void encode_window(const uint8_t* win, uint64_t wh, uint64_t ww, int64_t stride_y, uint64_t y0, uint64_t x0,
                   uint64_t h, uint64_t w, Counts& out) {
  const char* fn = "rle_encode_window";
  check_size(h, w, fn);
  if (wh > h || y0 > h - wh) check::fail(fn, "y0", "window rows [y0, y0 + wh) exceed the mask's h");
  if (ww > w || x0 > w - ww) check::fail(fn, "x0", "window columns [x0, x0 + ww) exceed the mask's w");
  if (wh > 1 && stride_y < static_cast<int64_t>(ww)) check::fail(fn, "stride_y", "must be >= the window width");
  check::not_null(win, static_cast<int64_t>(wh * ww), fn, "win");
  out.clear();
  uint8_t prev = 0;
  uint64_t run = 0;
  auto add = [&](uint8_t v, uint64_t count) {  // `count` pixels of value v
    if (count == 0) return;
    if (v != prev) {
      out.push_back(static_cast<uint32_t>(run));
      run = 0;
      prev = v;
    }
    run += count;
  };
  add(0, x0 * h);  // columns left of the window
  for (uint64_t x = 0; x < ww; ++x) {
    add(0, y0);  // rows above the window
    const uint8_t* col = win + x;
    for (uint64_t y = 0; y < wh; ++y) {
      const uint8_t v = col[static_cast<int64_t>(y) * stride_y] != 0;
      if (v != prev) {
        out.push_back(static_cast<uint32_t>(run));
        run = 0;
        prev = v;
      }
      ++run;
    }
    add(0, h - y0 - wh);  // rows below
  }
  add(0, (w - x0 - ww) * h);  // columns right of the window
  out.push_back(static_cast<uint32_t>(run));
}

void encode_colmajor(const uint8_t* mask, uint64_t h, uint64_t w, Counts& out) {
  encode_strided(mask, h, w, 1, static_cast<int64_t>(h), out);
}

bool decode_colmajor(const View& r, uint8_t* out) {
  check_size(r.h, r.w, "rle_decode");
  check::not_null(r.cnts, static_cast<int64_t>(r.m), "rle_decode", "counts");
  check::not_null(out, static_cast<int64_t>(r.h * r.w), "rle_decode", "out");
  const uint64_t n = r.h * r.w;
  uint64_t pos = 0;
  uint8_t v = 0;
  for (size_t j = 0; j < r.m; ++j) {
    uint64_t c = r.cnts[j];
    if (pos + c > n) {
      std::fill(out + pos, out + n, v);
      return false;
    }
    std::fill(out + pos, out + pos + c, v);
    pos += c;
    v = !v;
  }
  std::fill(out + pos, out + n, static_cast<uint8_t>(0));
  return true;
}

uint64_t area(const View& r) {
  uint64_t a = 0;
  for (size_t j = 1; j < r.m; j += 2) a += r.cnts[j];
  return a;
}

void merge(const std::vector<View>& rs, bool intersect, uint64_t& h, uint64_t& w, Counts& out) {
  out.clear();
  if (rs.empty()) {
    h = w = 0;
    return;
  }
  h = rs[0].h;
  w = rs[0].w;
  out.assign(rs[0].cnts, rs[0].cnts + rs[0].m);
  Counts acc;
  for (size_t i = 1; i < rs.size(); ++i) {
    const View& B = rs[i];
    if (B.h != h || B.w != w) {
      h = w = 0;
      out.clear();
      return;
    }
    acc.swap(out);
    out.clear();
    // Walk both run lists at once; emit a run whenever the combined value flips.
    const size_t am = acc.size(), bm = B.m;
    uint32_t ca = am ? acc[0] : 0, cb = bm ? B.cnts[0] : 0;
    size_t ia = 1, ib = 1;
    bool va = false, vb = false, v = false;
    uint32_t run = 0;
    bool more = true;
    while (more) {
      uint32_t c = std::min(ca, cb);
      run += c;
      ca -= c;
      if (!ca && ia < am) {
        ca = acc[ia++];
        va = !va;
      }
      cb -= c;
      if (!cb && ib < bm) {
        cb = B.cnts[ib++];
        vb = !vb;
      }
      // Counts that stop short of h*w end the walk when one list runs out (an exhausted list with
      // pixels left in the other would otherwise never advance).
      more = (static_cast<uint64_t>(ca) + cb) > 0 && !(ca == 0 && ia >= am) && !(cb == 0 && ib >= bm);
      bool prev = v;
      v = intersect ? (va && vb) : (va || vb);
      if (v != prev || !more) {
        out.push_back(run);
        run = 0;
      }
    }
  }
}

namespace {
// t / h and t % h for a fixed h without a hardware division per call.
struct DivBy {
  uint32_t h;
  double inv;
  explicit DivBy(uint32_t h_) : h(h_), inv(1.0 / h_) {}
  inline void split(uint32_t t, uint32_t& x, uint32_t& y) const {
    uint64_t q = static_cast<uint64_t>(static_cast<double>(t) * inv);
    while (q * h > t) --q;
    while ((q + 1) * h <= t) ++q;
    x = static_cast<uint32_t>(q);
    y = t - x * h;
  }
};
}  // namespace

void to_bbox(const View& r, double bb[4]) {
  check_size(r.h, r.w, "rle_to_bbox");
  const size_t m = (r.m / 2) * 2;
  if (m == 0 || r.h == 0) {
    bb[0] = bb[1] = bb[2] = bb[3] = 0;
    return;
  }
  const uint32_t h = static_cast<uint32_t>(r.h), w = static_cast<uint32_t>(r.w);
  const DivBy div(h);
  uint32_t xs = w, ys = h, xe = 0, ye = 0, cc = 0;
  for (size_t j = 0; j < m; j += 2) {
    cc += r.cnts[j];
    // Empty foreground runs mark no pixel.
    if (r.cnts[j + 1] == 0) continue;
    uint32_t x, y, x1, y1;
    div.split(cc, x, y);  // first pixel of the run
    cc += r.cnts[j + 1];
    div.split(cc - 1, x1, y1);  // last pixel of the run
    xs = std::min(xs, x);
    ys = std::min(ys, y);
    xe = std::max(xe, x1);
    ye = std::max(ye, y);
    if (x < x1) {
      // The run wraps to a later column, so it covers every row in between.
      ys = 0;
      ye = h - 1;
    }
    ys = std::min(ys, y1);
    ye = std::max(ye, y1);
  }
  // Unsigned arithmetic on purpose: a mask whose runs are all empty reports xe - xs + 1 wrapped.
  bb[0] = xs;
  bb[2] = static_cast<uint32_t>(xe - xs + 1);
  bb[1] = ys;
  bb[3] = static_cast<uint32_t>(ye - ys + 1);
}

void from_polygon(const double* xy, size_t k, uint64_t h, uint64_t w, Counts& out) {
  const char* fn = "rle_from_polygon";
  check_size(h, w, fn);
  check::not_null(xy, static_cast<int64_t>(2 * k), fn, "xy");
  for (size_t j = 0; j < 2 * k; ++j)
    if (!std::isfinite(xy[j]) || std::fabs(xy[j]) > kMaxCoordinate)
      check::fail(fn, "xy", "coordinates must be finite numbers below 1e8 in magnitude");
  out.clear();
  const double scale = 5;
  // Vertices on the 5x grid, closed.
  std::vector<int> px(k + 1, 0), py(k + 1, 0);
  for (size_t j = 0; j < k; ++j) {
    px[j] = trunc_int(scale * xy[2 * j] + .5);
    py[j] = trunc_int(scale * xy[2 * j + 1] + .5);
  }
  if (k) {
    px[k] = px[0];
    py[k] = py[0];
  }
  // Walk the dense boundary (one unit steps along each edge's major axis on the 5x grid) and keep
  // the points where it crosses a pixel-centre column, mapped back to the 1x grid: each one starts
  // or ends a vertical run of foreground in that column.
  std::vector<uint32_t> starts;
  starts.reserve(2 * static_cast<size_t>(std::min<uint64_t>(w, 1 << 16)) + 8);
  const double wmax = static_cast<double>(static_cast<uint64_t>(w - 1));
  const double hd = static_cast<double>(h);
  bool have_prev = false;
  int pu = 0, pv = 0;
  auto visit = [&](int u, int v) {
    if (have_prev && u != pu) {
      const int xs = u < pu ? u : u - 1;
      // (xs + .5) / 5 - .5 is an integer exactly when xs = 2 (mod 5); test that first, cheaply.
      if ((static_cast<int64_t>(xs) - 2) % 5 == 0) {
        double xd = (static_cast<double>(xs) + .5) / scale - .5;
        if (std::floor(xd) == xd && !(xd < 0) && !(xd > wmax)) {
          double yd = static_cast<double>(v < pv ? v : pv);
          yd = (yd + .5) / scale - .5;
          if (yd < 0)
            yd = 0;
          else if (yd > hd)
            yd = hd;
          yd = std::ceil(yd);
          const int xi = static_cast<int>(xd), yi = static_cast<int>(yd);
          starts.push_back(static_cast<uint32_t>(xi * static_cast<int>(h) + yi));
        }
      }
    }
    pu = u;
    pv = v;
    have_prev = true;
  };
  // Only points with 1 <= u <= 5w - 1 can take part in a crossing (a crossing pairs u = 5x + 2 with a
  // neighbour, 0 <= x < w). Along an edge u is monotonic in the step, so the steps outside that band are
  // skipped (the walk resumes from the exact point before the band), and on an edge whose minor axis is u
  // only the steps where u changes are visited (found by bisection on the same formula): the result is the
  // full walk's, but an edge costs O(min(its length, w) log length) instead of O(length), so coordinates
  // near the 1e8 limit cost what in-image ones do.
  const int64_t ulo = 1, uhi = 5 * static_cast<int64_t>(w) - 1;
  auto set_prev = [&](int u, int v) {
    pu = u;
    pv = v;
    have_prev = true;
  };
  for (size_t j = 0; j < k; ++j) {
    int xs = px[j], xe = px[j + 1], ys = py[j], ye = py[j + 1];
    const int dx = std::abs(xe - xs), dy = std::abs(ys - ye);
    const bool flip = (dx >= dy && xs > xe) || (dx < dy && ys > ye);
    if (flip) {
      std::swap(xs, xe);
      std::swap(ys, ye);
    }
    const bool major_x = dx >= dy;
    const int n = major_x ? dx : dy;
    const double s = n ? static_cast<double>(major_x ? ye - ys : xe - xs) / n : 0.0;
    // The d-th visited point of this edge (d = 0 .. n, in walk order).
    auto point = [&](int d, int& u, int& v) {
      const int t = flip ? n - d : d;
      if (major_x) {
        u = t + xs;
        v = trunc_int(ys + s * t + .5);
      } else {
        u = trunc_int(xs + s * t + .5);
        v = t + ys;
      }
    };
    auto u_at = [&](int d) {
      int u, v;
      point(d, u, v);
      return static_cast<int64_t>(u);
    };
    // u is monotonic in d: find the first d with u inside the band and the last one.
    const int64_t u0 = u_at(0), un = u_at(n);
    const bool rising = un >= u0;
    auto inside_from = [&](int64_t bound_lo, int64_t bound_hi) {
      // first d with u(d) >= bound_lo (rising) or u(d) <= bound_hi (falling); n + 1 if none
      int lo = 0, hi = n + 1;
      while (lo < hi) {
        const int mid = lo + (hi - lo) / 2;
        const int64_t u = u_at(mid);
        if (rising ? u >= bound_lo : u <= bound_hi)
          hi = mid;
        else
          lo = mid + 1;
      }
      return lo;
    };
    auto inside_to = [&](int64_t bound_lo, int64_t bound_hi) {
      // last d with u(d) <= bound_hi (rising) or u(d) >= bound_lo (falling); -1 if none
      int lo = -1, hi = n;
      while (lo < hi) {
        const int mid = hi - (hi - lo) / 2;
        const int64_t u = u_at(mid);
        if (rising ? u <= bound_hi : u >= bound_lo)
          lo = mid;
        else
          hi = mid - 1;
      }
      return lo;
    };
    const int d0 = inside_from(ulo, uhi), d1 = inside_to(ulo, uhi);
    int u, v;
    if (d0 > d1) {  // the whole edge lies outside the band
      point(n, u, v);
      set_prev(u, v);
      continue;
    }
    if (d0 > 0) {
      point(d0 - 1, u, v);
      set_prev(u, v);
    }
    if (major_x || d1 - d0 < 64) {
      for (int d = d0; d <= d1; ++d) {
        point(d, u, v);
        visit(u, v);
      }
    } else {
      // Minor axis u: visit the first point of every run of equal u (where a crossing can happen) and
      // the run's last point (so the next run's first point sees the right predecessor).
      int d = d0;
      while (d <= d1) {
        point(d, u, v);
        visit(u, v);
        const int64_t cur = u;
        int lo = d, hi = d1;  // last d' in [d, d1] with u(d') == cur
        while (lo < hi) {
          const int mid = hi - (hi - lo) / 2;
          if (u_at(mid) == cur)
            lo = mid;
          else
            hi = mid - 1;
        }
        if (lo > d) {
          point(lo, u, v);
          visit(u, v);
        }
        d = lo + 1;
      }
    }
    if (d1 < n) {
      point(n, u, v);
      set_prev(u, v);
    }
  }
  starts.push_back(static_cast<uint32_t>(h * w));
  std::sort(starts.begin(), starts.end());
  // Differences between sorted crossings are the runs; empty runs fold into their neighbour.
  uint32_t prev = 0;
  for (auto& a : starts) {
    uint32_t t = a;
    a -= prev;
    prev = t;
  }
  out.push_back(starts[0]);
  size_t j = 1;
  while (j < starts.size()) {
    if (starts[j] > 0) {
      out.push_back(starts[j++]);
    } else {
      ++j;
      if (j < starts.size()) out.back() += starts[j++];
    }
  }
}

void from_bbox(const double bb[4], uint64_t h, uint64_t w, Counts& out) {
  const double xs = bb[0], xe = xs + bb[2], ys = bb[1], ye = ys + bb[3];
  const double xy[8] = {xs, ys, xs, ye, xe, ye, xe, ys};
  from_polygon(xy, 4, h, w, out);
}

void to_string(const uint32_t* cnts, size_t m, std::string& out) {
  out.clear();
  out.reserve(m * 2);
  for (size_t i = 0; i < m; ++i) {
    int64_t x = cnts[i];
    if (i > 2) x -= static_cast<int64_t>(cnts[i - 2]);
    bool more = true;
    while (more) {
      int c = static_cast<int>(x & 0x1f);
      x >>= 5;
      more = (c & 0x10) ? x != -1 : x != 0;
      if (more) c |= 0x20;
      out.push_back(static_cast<char>(c + 48));
    }
  }
}

std::string to_string(const uint32_t* cnts, size_t m) {
  std::string s;
  to_string(cnts, m, s);
  return s;
}

void from_string(const char* s, size_t len, Counts& out) {
  check::not_null(s, static_cast<int64_t>(len), "rle_from_string", "s");
  out.clear();
  size_t p = 0;
  while (p < len && s[p]) {
    int64_t x = 0;
    int k = 0;
    bool more = true;
    while (more && p < len) {
      // A count spans at most 7 characters (35 bits cover every uint32 and difference of two).
      if (k == 7)
        check::fail("rle_from_string", "s", "has a count longer than 7 characters at byte " + std::to_string(p));
      const int c = static_cast<int>(static_cast<signed char>(s[p])) - 48;
      x |= static_cast<int64_t>(c & 0x1f) << (5 * k);
      more = (c & 0x20) != 0;
      ++p;
      ++k;
      if (!more && (c & 0x10)) x |= static_cast<int64_t>(-1) * (int64_t{1} << (5 * k));
    }
    if (out.size() > 2) x += static_cast<int64_t>(out[out.size() - 2]);
    out.push_back(static_cast<uint32_t>(x));
  }
}

double box_iou(const double* D, const double* G, bool crowd) {
  const double w = std::fmin(D[2] + D[0], G[2] + G[0]) - std::fmax(D[0], G[0]);
  if (w <= 0) return 0;
  const double h = std::fmin(D[3] + D[1], G[3] + G[1]) - std::fmax(D[1], G[1]);
  if (h <= 0) return 0;
  const double i = w * h;
  const double da = D[2] * D[3];
  const double u = crowd ? da : da + G[2] * G[3] - i;
  return i / u;
}

double mask_iou(const View& d, const View& g, const double* dbb, const double* gbb, bool crowd) {
  if (!(box_iou(dbb, gbb, false) > 0)) return 0;
  if (d.h != g.h || d.w != g.w) return -1;
  uint32_t ca = d.m ? d.cnts[0] : 0, cb = g.m ? g.cnts[0] : 0;
  size_t a = 1, b = 1;
  bool va = false, vb = false;
  uint32_t inter = 0, uni = 0;
  bool more = true;
  while (more) {
    const uint32_t c = std::min(ca, cb);
    if (va || vb) {
      uni += c;
      if (va && vb) inter += c;
    }
    ca -= c;
    if (!ca && a < d.m) {
      ca = d.cnts[a++];
      va = !va;
    }
    cb -= c;
    if (!cb && b < g.m) {
      cb = g.cnts[b++];
      vb = !vb;
    }
    // Counts that stop short of h*w: the walk ends when one list runs out (see merge).
    more = (static_cast<uint64_t>(ca) + cb) > 0 && !(ca == 0 && a >= d.m) && !(cb == 0 && b >= g.m);
  }
  if (inter == 0)
    uni = 1;
  else if (crowd)
    uni = static_cast<uint32_t>(area(d));
  return static_cast<double>(inter) / static_cast<double>(uni);
}

}  // namespace rle
}  // namespace yoloseg
