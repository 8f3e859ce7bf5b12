// COCO evaluation (see coco_eval.h): a streaming JSON reader for COCO files, pycocotools' loading
// rules, per image/category IoU and greedy matching, and accumulation. Bindings: family "coco_eval".
#include "coco_eval.h"

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <string_view>
#include <unordered_map>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "registry.h"
#include "rle.h"

namespace yoloseg {
namespace coco {
namespace {

using Counts = rle::Counts;
constexpr int kParallelGroups = 256;  // below this many image/category groups, stay single-threaded

[[noreturn]] void fail(const std::string& msg) { throw std::invalid_argument(msg); }

// ---------------------------------------------------------------------------------------------
// JSON reader: a cursor over the text with just enough structure for COCO files. Accepts what
// Python's json module accepts (including NaN / Infinity); unknown keys are skipped.
struct Number {
  double d = 0;
  int64_t i = 0;
  bool is_int = false;
  bool valid = false;  // false for null
};

class Cursor {
 public:
  Cursor(const char* s, size_t n, const char* name) : p_(s), begin_(s), end_(s + n), name_(name) {}

  [[noreturn]] void error(const char* what) const {
    fail(std::string(name_) + ": invalid JSON (" + what + ") at byte " + std::to_string(p_ - begin_));
  }
  void ws() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\n' || *p_ == '\r' || *p_ == '\t')) ++p_;
  }
  char peek() {
    ws();
    return p_ < end_ ? *p_ : '\0';
  }
  void expect(char c) {
    ws();
    if (p_ >= end_ || *p_ != c) error("unexpected character");
    ++p_;
  }
  bool at_end() {
    ws();
    return p_ >= end_;
  }
  // Containers: `bool first = true; while (next_in_array(first)) {...}` after consuming '['.
  bool next_in_array(bool& first) {
    char c = peek();
    if (c == ']') {
      ++p_;
      return false;
    }
    if (!first) {
      if (c != ',') error("expected ',' or ']'");
      ++p_;
    }
    first = false;
    return true;
  }
  bool next_key(bool& first, std::string_view& key) {
    char c = peek();
    if (c == '}') {
      ++p_;
      return false;
    }
    if (!first) {
      if (c != ',') error("expected ',' or '}'");
      ++p_;
    }
    first = false;
    key = string(key_buf_);
    expect(':');
    return true;
  }
  // A string; the view points into the text or, when it had escapes, into `buf`.
  std::string_view string(std::string& buf) {
    ws();
    if (p_ >= end_ || *p_ != '"') error("expected a string");
    const char* s = ++p_;
    while (p_ < end_ && *p_ != '"' && *p_ != '\\') ++p_;
    if (p_ >= end_) error("unterminated string");
    if (*p_ == '"') return std::string_view(s, static_cast<size_t>(p_++ - s));
    buf.assign(s, p_);
    while (true) {
      if (p_ >= end_) error("unterminated string");
      char c = *p_++;
      if (c == '"') break;
      if (c != '\\') {
        buf.push_back(c);
        continue;
      }
      if (p_ >= end_) error("unterminated string");
      char e = *p_++;
      switch (e) {
        case '"': buf.push_back('"'); break;
        case '\\': buf.push_back('\\'); break;
        case '/': buf.push_back('/'); break;
        case 'b': buf.push_back('\b'); break;
        case 'f': buf.push_back('\f'); break;
        case 'n': buf.push_back('\n'); break;
        case 'r': buf.push_back('\r'); break;
        case 't': buf.push_back('\t'); break;
        case 'u': {
          uint32_t cp = hex4();
          if (cp >= 0xD800 && cp < 0xDC00 && p_ + 1 < end_ && p_[0] == '\\' && p_[1] == 'u') {
            p_ += 2;
            uint32_t lo = hex4();
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          utf8(cp, buf);
          break;
        }
        default: error("bad escape");
      }
    }
    return buf;
  }
  Number number() {
    ws();
    Number n;
    if (p_ >= end_) error("expected a value");
    const char c = *p_;
    if (c == 'n') return literal("null", n);
    if (c == 't') {
      literal("true", n);
      n.i = 1, n.d = 1, n.is_int = true;
      return n;
    }
    if (c == 'f') {
      literal("false", n);
      n.is_int = true;
      n.valid = true;
      return n;
    }
    if (c == 'N') {
      literal("NaN", n);
      n.d = std::numeric_limits<double>::quiet_NaN();
      n.valid = true;
      return n;
    }
    if (c == 'I' || (c == '-' && p_ + 1 < end_ && p_[1] == 'I')) {
      bool neg = c == '-';
      p_ += neg;
      literal("Infinity", n);
      n.d = neg ? -std::numeric_limits<double>::infinity() : std::numeric_limits<double>::infinity();
      n.valid = true;
      return n;
    }
    const char* s = p_;
    bool integral = true;
    while (p_ < end_) {
      char d = *p_;
      if ((d >= '0' && d <= '9') || d == '-' || d == '+') {
        ++p_;
      } else if (d == '.' || d == 'e' || d == 'E') {
        integral = false;
        ++p_;
      } else {
        break;
      }
    }
    if (p_ == s) error("expected a number");
    n.valid = true;
    if (integral) {
      auto r = std::from_chars(s, p_, n.i);
      if (r.ec == std::errc() && r.ptr == p_) {
        n.is_int = true;
        n.d = static_cast<double>(n.i);
        return n;
      }
    }
    auto r = std::from_chars(s, p_, n.d);
    if (r.ptr != p_ || (r.ec != std::errc() && r.ec != std::errc::result_out_of_range))
      error("bad number");
    if (r.ec == std::errc::result_out_of_range) n.d = std::strtod(std::string(s, p_).c_str(), nullptr);
    return n;
  }
  // Skip any value.
  void skip() {
    char c = peek();
    if (c == '"') {
      ++p_;
      while (p_ < end_ && *p_ != '"') p_ += (*p_ == '\\') ? 2 : 1;
      if (p_ >= end_) error("unterminated string");
      ++p_;
    } else if (c == '{') {
      ++p_;
      bool first = true;
      std::string_view k;
      while (next_key(first, k)) skip();
    } else if (c == '[') {
      ++p_;
      bool first = true;
      while (next_in_array(first)) skip();
    } else {
      number();
    }
  }
  // Numbers of an array (nulls read as NaN); returns the count.
  size_t number_array(std::vector<double>& out) {
    expect('[');
    bool first = true;
    size_t n = 0;
    while (next_in_array(first)) {
      Number v = number();
      out.push_back(v.valid ? v.d : std::numeric_limits<double>::quiet_NaN());
      ++n;
    }
    return n;
  }
  const char* name() const { return name_; }

 private:
  Number& literal(const char* word, Number& n) {
    size_t len = std::strlen(word);
    if (static_cast<size_t>(end_ - p_) < len || std::memcmp(p_, word, len) != 0) error("bad literal");
    p_ += len;
    return n;
  }
  uint32_t hex4() {
    if (end_ - p_ < 4) error("bad \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      char c = *p_++;
      v <<= 4;
      if (c >= '0' && c <= '9') v |= c - '0';
      else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
      else error("bad \\u escape");
    }
    return v;
  }
  static void utf8(uint32_t cp, std::string& b) {
    if (cp < 0x80) {
      b.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      b.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      b.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      b.push_back(static_cast<char>(0xE0 | (cp >> 12)));
      b.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      b.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      b.push_back(static_cast<char>(0xF0 | (cp >> 18)));
      b.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      b.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      b.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }

  const char* p_;
  const char* begin_;
  const char* end_;
  const char* name_;
  std::string key_buf_;
};

// ---------------------------------------------------------------------------------------------
// Parsed annotations (ground truth and detections share the record).
enum SegKind : uint8_t { kSegNone = 0, kSegPolys = 1, kSegRle = 2 };

struct Ann {
  int64_t id = 0, image_id = 0, category_id = 0;
  double iscrowd = 0, area = 0, score = 0;
  double bbox[4] = {0, 0, 0, 0};
  int bbox_len = -1;  // -1: no bbox key
  bool has_id = false, has_image = false, has_cat = false, has_area = false, has_score = false;
  bool has_caption = false, has_keypoints = false;
  uint8_t seg = kSegNone;
  uint64_t seg_h = 0, seg_w = 0;
  size_t seg_begin = 0, seg_end = 0;  // polygons: range in Store::polys; RLE: range in Store::counts
};

struct Store {
  std::vector<Ann> anns;
  std::vector<double> coords;                    // polygon coordinates
  std::vector<std::pair<size_t, size_t>> polys;  // (begin, size) in coords
  Counts counts;                                 // RLE counts arena
};

int64_t read_id(Cursor& c, const char* what) {
  Number n = c.number();
  if (!n.valid) fail(std::string(c.name()) + ": '" + what + "' is null");
  if (n.is_int) return n.i;
  if (std::isfinite(n.d) && n.d == std::floor(n.d) && std::fabs(n.d) < 9.2e18)
    return static_cast<int64_t>(n.d);
  fail(std::string(c.name()) + ": '" + what + "' must be an integer");
}

void read_segmentation(Cursor& c, Ann& a, Store& st, std::string& buf) {
  char k = c.peek();
  if (k == '[') {
    c.expect('[');
    a.seg = kSegPolys;
    a.seg_begin = st.polys.size();
    bool first = true;
    while (c.next_in_array(first)) {
      if (c.peek() != '[') fail(std::string(c.name()) + ": a polygon must be a list of numbers");
      size_t b = st.coords.size();
      size_t n = c.number_array(st.coords);
      st.polys.emplace_back(b, n);
    }
    a.seg_end = st.polys.size();
  } else if (k == '{') {
    c.expect('{');
    bool first = true;
    std::string_view key;
    bool have_counts = false, have_size = false;
    a.seg_begin = st.counts.size();
    while (c.next_key(first, key)) {
      if (key == "size") {
        std::vector<double> sz;
        if (c.number_array(sz) != 2 || !(sz[0] >= 0) || !(sz[1] >= 0))
          fail(std::string(c.name()) + ": RLE 'size' must be [h, w]");
        a.seg_h = static_cast<uint64_t>(sz[0]);
        a.seg_w = static_cast<uint64_t>(sz[1]);
        have_size = true;
      } else if (key == "counts") {
        st.counts.resize(a.seg_begin);
        if (c.peek() == '"') {
          std::string_view s = c.string(buf);
          Counts tmp;
          rle::from_string(s.data(), s.size(), tmp);
          st.counts.insert(st.counts.end(), tmp.begin(), tmp.end());
        } else {
          c.expect('[');
          bool f2 = true;
          while (c.next_in_array(f2)) {
            Number v = c.number();
            if (!v.valid || v.d < 0 || v.d > 4294967295.0)
              fail(std::string(c.name()) + ": RLE counts must be integers in [0, 2**32)");
            st.counts.push_back(static_cast<uint32_t>(v.is_int ? v.i : static_cast<int64_t>(v.d)));
          }
        }
        have_counts = true;
      } else {
        c.skip();
      }
    }
    if (!have_counts || !have_size)
      fail(std::string(c.name()) + ": an RLE segmentation needs 'size' and 'counts'");
    a.seg = kSegRle;
    a.seg_end = st.counts.size();
  } else {
    Number n = c.number();
    if (n.valid) fail(std::string(c.name()) + ": unsupported segmentation");
  }
}

// One annotation or detection object. `want_seg` false skips segmentations (bbox evaluation).
void read_ann(Cursor& c, Store& st, bool want_seg, std::string& buf) {
  st.anns.emplace_back();
  Ann& a = st.anns.back();
  c.expect('{');
  bool first = true;
  std::string_view key;
  while (c.next_key(first, key)) {
    if (key == "image_id") {
      a.image_id = read_id(c, "image_id");
      a.has_image = true;
    } else if (key == "category_id") {
      a.category_id = read_id(c, "category_id");
      a.has_cat = true;
    } else if (key == "id") {
      Number n = c.number();
      a.has_id = n.valid;
      a.id = n.is_int ? n.i : static_cast<int64_t>(n.d);
    } else if (key == "score") {
      Number n = c.number();
      a.has_score = n.valid;
      a.score = n.valid ? n.d : std::numeric_limits<double>::quiet_NaN();
    } else if (key == "area") {
      Number n = c.number();
      a.has_area = n.valid;
      a.area = n.d;
    } else if (key == "iscrowd") {
      Number n = c.number();
      a.iscrowd = n.valid ? n.d : 0;
    } else if (key == "bbox") {
      if (c.peek() != '[') {
        c.skip();
        a.bbox_len = 0;
        continue;
      }
      std::vector<double> v;
      v.reserve(4);
      a.bbox_len = static_cast<int>(c.number_array(v));
      for (int i = 0; i < 4 && i < a.bbox_len; ++i) a.bbox[i] = v[i];
    } else if (key == "segmentation") {
      if (want_seg)
        read_segmentation(c, a, st, buf);
      else {
        c.skip();
        a.seg = kSegPolys;  // present, content unused
      }
    } else if (key == "caption") {
      a.has_caption = true;
      c.skip();
    } else if (key == "keypoints") {
      a.has_keypoints = true;
      c.skip();
    } else {
      c.skip();
    }
  }
}

struct Image {
  int64_t id;
  double h, w;
  bool has_size;
};

struct GtFile {
  std::vector<Image> images;
  std::vector<int64_t> cat_ids;
  Store store;
};

void parse_gt(const char* s, size_t n, bool want_seg, GtFile& gt) {
  Cursor c(s, n, "gt");
  std::string buf;
  c.expect('{');
  bool first = true;
  std::string_view key;
  bool seen_images = false, seen_anns = false, seen_cats = false;
  while (c.next_key(first, key)) {
    if (key == "images") {
      seen_images = true;
      gt.images.clear();
      c.expect('[');
      bool f = true;
      while (c.next_in_array(f)) {
        Image im{0, 0, 0, false};
        bool have_id = false, have_h = false, have_w = false;
        c.expect('{');
        bool f2 = true;
        std::string_view k2;
        while (c.next_key(f2, k2)) {
          if (k2 == "id") {
            im.id = read_id(c, "images.id");
            have_id = true;
          } else if (k2 == "height") {
            Number v = c.number();
            im.h = v.d;
            have_h = v.valid;
          } else if (k2 == "width") {
            Number v = c.number();
            im.w = v.d;
            have_w = v.valid;
          } else {
            c.skip();
          }
        }
        if (!have_id) fail("gt: an image has no 'id'");
        im.has_size = have_h && have_w;
        gt.images.push_back(im);
      }
    } else if (key == "categories") {
      seen_cats = true;
      gt.cat_ids.clear();
      c.expect('[');
      bool f = true;
      while (c.next_in_array(f)) {
        c.expect('{');
        bool f2 = true, have_id = false;
        std::string_view k2;
        while (c.next_key(f2, k2)) {
          if (k2 == "id") {
            gt.cat_ids.push_back(read_id(c, "categories.id"));
            have_id = true;
          } else {
            c.skip();
          }
        }
        if (!have_id) fail("gt: a category has no 'id'");
      }
    } else if (key == "annotations") {
      seen_anns = true;
      gt.store = Store();
      c.expect('[');
      bool f = true;
      while (c.next_in_array(f)) read_ann(c, gt.store, want_seg, buf);
    } else {
      c.skip();
    }
  }
  if (!c.at_end()) c.error("trailing data");
  if (!seen_images) fail("gt: no 'images' list");
  (void)seen_anns;
  (void)seen_cats;
}

void parse_dt(const char* s, size_t n, bool want_seg, Store& st) {
  Cursor c(s, n, "dt");
  std::string buf;
  if (c.peek() != '[') fail("dt: results must be a list of objects");
  c.expect('[');
  bool f = true;
  while (c.next_in_array(f)) {
    if (c.peek() != '{') fail("dt: results must be a list of objects");
    read_ann(c, st, want_seg, buf);
  }
  if (!c.at_end()) c.error("trailing data");
}

// ---------------------------------------------------------------------------------------------
// Masks: every annotation taking part in a segm evaluation gets its RLE as counts + box + area.
struct Mask {
  uint64_t h = 0, w = 0;
  Counts own;                       // when rasterised here
  const uint32_t* cnts = nullptr;   // points into own or the store's arena
  size_t m = 0;
  double bb[4] = {0, 0, 0, 0};
  rle::View view() const { return rle::View{h, w, cnts, m}; }
};

// pycocotools' annToRLE: polygons (parts unioned) in the image size, RLEs as given.
void build_mask(const Ann& a, const Store& st, uint64_t img_h, uint64_t img_w, Mask& out) {
  if (a.seg == kSegRle) {
    out.h = a.seg_h;
    out.w = a.seg_w;
    out.cnts = st.counts.data() + a.seg_begin;
    out.m = a.seg_end - a.seg_begin;
  } else {
    out.h = img_h;
    out.w = img_w;
    const size_t np = a.seg_end - a.seg_begin;
    // A first part of exactly 4 numbers with all parts of 4 reads as boxes [x, y, w, h].
    bool boxes = np > 0;
    for (size_t i = a.seg_begin; i < a.seg_end && boxes; ++i) boxes = st.polys[i].second == 4;
    std::vector<Counts> parts(np);
    for (size_t i = 0; i < np; ++i) {
      const auto& pr = st.polys[a.seg_begin + i];
      const double* xy = st.coords.data() + pr.first;
      for (size_t j = 0; j < pr.second; ++j)
        if (!std::isfinite(xy[j]) || std::fabs(xy[j]) > 1e8)
          fail("gt: polygon coordinates must be finite numbers below 1e8 in magnitude");
      if (boxes)
        rle::from_bbox(xy, img_h, img_w, parts[i]);
      else
        rle::from_polygon(xy, pr.second / 2, img_h, img_w, parts[i]);
    }
    if (np == 0) {
      out.own.assign(1, static_cast<uint32_t>(img_h * img_w));
    } else if (np == 1) {
      out.own.swap(parts[0]);
    } else {
      std::vector<rle::View> views;
      for (auto& p : parts) views.push_back(rle::View{img_h, img_w, p.data(), p.size()});
      rle::merge(views, false, out.h, out.w, out.own);
    }
    out.cnts = out.own.data();
    out.m = out.own.size();
  }
  rle::to_bbox(out.view(), out.bb);
}

// ---------------------------------------------------------------------------------------------
// Evaluation state.
enum DetState : uint8_t { kIgnored = 0, kTP = 1, kFP = 2 };

struct Group {
  int cat = 0, img = 0;
  size_t gt_begin = 0, gt_end = 0;  // in gt_order
  size_t dt_begin = 0, dt_end = 0;  // in dt_order (file order within the group)
  size_t kept_off = 0, kept = 0;    // score-sorted detections kept (<= max maxDets)
};

template <typename F>
void parallel_for(size_t n, int threads, F&& fn) {
#ifdef _OPENMP
  const int nt = threads > 0 ? threads : omp_get_max_threads();
  if (nt > 1 && n > static_cast<size_t>(kParallelGroups)) {
#pragma omp parallel for schedule(dynamic, 16) num_threads(nt)
    for (int64_t i = 0; i < static_cast<int64_t>(n); ++i) fn(static_cast<size_t>(i));
    return;
  }
#endif
  for (size_t i = 0; i < n; ++i) fn(i);
}

}  // namespace

Result evaluate(const char* gt_json, size_t gt_len, const char* dt_json, size_t dt_len,
                const Params& P) {
  const size_t T = P.iou_thrs.size(), R = P.rec_thrs.size(), A = P.area_lo.size(),
               M = P.max_dets.size();
  if (T == 0 || R == 0 || A == 0 || M == 0 || P.area_hi.size() != A)
    fail("evaluation parameters must not be empty");
  const int64_t max_det = *std::max_element(P.max_dets.begin(), P.max_dets.end());

  GtFile gt;
  parse_gt(gt_json, gt_len, P.segm, gt);
  Store dt;
  parse_dt(dt_json, dt_len, true, dt);

  Result res;
  // Images and categories: sorted unique ids; for repeated image ids the last entry's size counts.
  std::unordered_map<int64_t, int> img_index, cat_index;
  for (auto& im : gt.images) res.img_ids.push_back(im.id);
  std::sort(res.img_ids.begin(), res.img_ids.end());
  res.img_ids.erase(std::unique(res.img_ids.begin(), res.img_ids.end()), res.img_ids.end());
  for (size_t i = 0; i < res.img_ids.size(); ++i) img_index[res.img_ids[i]] = static_cast<int>(i);
  std::vector<const Image*> img_info(res.img_ids.size(), nullptr);
  for (auto& im : gt.images) img_info[img_index[im.id]] = &im;
  res.cat_ids = gt.cat_ids;
  std::sort(res.cat_ids.begin(), res.cat_ids.end());
  res.cat_ids.erase(std::unique(res.cat_ids.begin(), res.cat_ids.end()), res.cat_ids.end());
  for (size_t k = 0; k < res.cat_ids.size(); ++k) cat_index[res.cat_ids[k]] = static_cast<int>(k);
  const size_t I = res.img_ids.size(), K = res.cat_ids.size();

  auto find = [](const std::unordered_map<int64_t, int>& m, int64_t id) {
    auto it = m.find(id);
    return it == m.end() ? -1 : it->second;
  };

  // Ground truth in pycocotools' order: images ascending, file order within an image; an id that
  // occurs twice resolves to its last annotation (COCO.loadAnns).
  std::vector<Ann>& ga = gt.store.anns;
  std::vector<std::pair<int64_t, size_t>> gt_keys;  // (group key, annotation)
  {
    std::unordered_map<int64_t, size_t> by_id;
    by_id.reserve(ga.size() * 2);
    for (size_t i = 0; i < ga.size(); ++i) {
      if (!ga[i].has_id) fail("gt: annotation " + std::to_string(i) + " has no 'id'");
      by_id[ga[i].id] = i;
    }
    const bool unique = by_id.size() == ga.size();
    std::vector<std::pair<int, size_t>> seq;
    for (size_t i = 0; i < ga.size(); ++i) {
      if (!ga[i].has_image || !ga[i].has_cat)
        fail("gt: annotation " + std::to_string(ga[i].id) + " lacks image_id or category_id");
      int ii = find(img_index, ga[i].image_id);
      if (ii >= 0 && find(cat_index, ga[i].category_id) >= 0) seq.emplace_back(ii, i);
    }
    std::stable_sort(seq.begin(), seq.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    for (auto& [ii, i] : seq) {
      size_t r = unique ? i : by_id[ga[i].id];
      int ri = find(img_index, ga[r].image_id), rk = find(cat_index, ga[r].category_id);
      if (ri < 0 || rk < 0) continue;
      const Ann& g = ga[r];
      if (!g.has_area) fail("gt: annotation " + std::to_string(g.id) + " has no 'area'");
      if (!P.segm && g.bbox_len != 4)
        fail("gt: annotation " + std::to_string(g.id) + " needs a 'bbox' of 4 numbers");
      if (P.segm && g.seg == kSegNone)
        fail("gt: annotation " + std::to_string(g.id) + " has no 'segmentation'");
      gt_keys.emplace_back(static_cast<int64_t>(rk) * static_cast<int64_t>(I) + ri, r);
    }
    std::stable_sort(gt_keys.begin(), gt_keys.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
  }

  // Detections: COCO.loadRes rules, decided by the first result.
  std::vector<Ann>& da = dt.anns;
  std::vector<std::pair<int64_t, size_t>> dt_keys;
  bool box_branch = true;
  if (!da.empty()) {
    const Ann& d0 = da[0];
    if (d0.has_caption) fail("dt: caption results cannot be evaluated");
    if (d0.bbox_len > 0)
      box_branch = true;
    else if (d0.seg != kSegNone)
      box_branch = false;
    else
      fail("dt: results need a 'bbox' or a 'segmentation'");
  }
  for (size_t i = 0; i < da.size(); ++i) {
    Ann& d = da[i];
    auto which = [i]() { return "dt: result " + std::to_string(i); };
    if (!d.has_image || !d.has_cat) fail(which() + " lacks image_id or category_id");
    int ii = find(img_index, d.image_id);
    if (ii < 0)
      fail(which() + " has image_id " + std::to_string(d.image_id) + ", which is not in gt images");
    if (!d.has_score || std::isnan(d.score)) fail(which() + " has no score or a NaN score");
    if (box_branch || d.bbox_len >= 0) {
      if (d.bbox_len != 4) fail(which() + " needs a 'bbox' of 4 numbers");
      for (double v : d.bbox)
        if (!std::isfinite(v)) fail(which() + " has a non-finite bbox");
    }
    d.id = static_cast<int64_t>(i) + 1;
    d.iscrowd = 0;
    int kk = find(cat_index, d.category_id);
    if (kk < 0) continue;
    if (box_branch) {
      d.area = d.bbox[2] * d.bbox[3];
      if (P.segm && d.seg == kSegNone) {
        // loadRes gives box results a 4-corner polygon.
        const double x1 = d.bbox[0], x2 = d.bbox[0] + d.bbox[2], y1 = d.bbox[1],
                     y2 = d.bbox[1] + d.bbox[3];
        const double xy[8] = {x1, y1, x1, y2, x2, y2, x2, y1};
        d.seg = kSegPolys;
        d.seg_begin = dt.polys.size();
        dt.polys.emplace_back(dt.coords.size(), 8);
        dt.coords.insert(dt.coords.end(), xy, xy + 8);
        d.seg_end = dt.polys.size();
      }
    } else if (d.seg == kSegNone) {
      fail(which() + " has no 'segmentation'");
    }
    dt_keys.emplace_back(static_cast<int64_t>(kk) * static_cast<int64_t>(I) + ii, i);
  }
  std::stable_sort(dt_keys.begin(), dt_keys.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  res.num_gt = gt_keys.size();
  res.num_dt = dt_keys.size();

  // Masks (run-length only): ground truth for segm, detections for segm or mask-only results.
  auto check_polys = [&](const Ann& a, const Store& st, const char* who) {
    if (a.seg != kSegPolys) return;
    const Image* im = img_info[img_index[a.image_id]];
    if (!im->has_size || !(im->h >= 0) || !(im->w >= 0) || im->h > 1e9 || im->w > 1e9)
      fail(std::string(who) + ": image " + std::to_string(a.image_id) +
           " needs 'height' and 'width' to rasterise polygons");
    for (size_t p = a.seg_begin; p < a.seg_end; ++p)
      for (size_t j = 0; j < st.polys[p].second; ++j) {
        double v = st.coords[st.polys[p].first + j];
        if (!std::isfinite(v) || std::fabs(v) > 1e8)
          fail(std::string(who) + ": annotation " + std::to_string(a.id) +
               " has polygon coordinates that are not finite numbers below 1e8");
      }
  };
  std::vector<Mask> gmask, dmask;
  if (P.segm) {
    for (auto& kv : gt_keys) check_polys(ga[kv.second], gt.store, "gt");
    gmask.resize(gt_keys.size());
  }
  const bool need_dmask = P.segm || !box_branch;
  if (need_dmask) {
    for (auto& kv : dt_keys) check_polys(da[kv.second], dt, "dt");
    dmask.resize(dt_keys.size());
  }

  // Groups: one per (category, image) with ground truth or detections, ordered by category, image.
  std::vector<Group> groups;
  {
    size_t gi = 0, di = 0, off = 0;
    while (gi < gt_keys.size() || di < dt_keys.size()) {
      int64_t key = std::numeric_limits<int64_t>::max();
      if (gi < gt_keys.size()) key = gt_keys[gi].first;
      if (di < dt_keys.size()) key = std::min(key, dt_keys[di].first);
      Group g;
      g.cat = static_cast<int>(key / static_cast<int64_t>(I));
      g.img = static_cast<int>(key % static_cast<int64_t>(I));
      g.gt_begin = gi;
      while (gi < gt_keys.size() && gt_keys[gi].first == key) ++gi;
      g.gt_end = gi;
      g.dt_begin = di;
      while (di < dt_keys.size() && dt_keys[di].first == key) ++di;
      g.dt_end = di;
      g.kept = std::min<size_t>(g.dt_end - g.dt_begin, static_cast<size_t>(std::max<int64_t>(max_det, 0)));
      g.kept_off = off;
      off += g.kept;
      groups.push_back(g);
    }
  }
  const size_t total_kept = groups.empty() ? 0 : groups.back().kept_off + groups.back().kept;
  std::vector<double> kept_scores(total_kept);
  std::vector<uint8_t> states(total_kept * A * T);
  std::vector<int64_t> npig(groups.size() * A, 0);

  const double eps = std::nextafter(1.0, 2.0) - 1.0;  // np.spacing(1)
  const int threads = P.num_threads;
  {
    // Masks, in parallel; then results that came as masks take area and box from them.
    parallel_for(gmask.size(), threads, [&](size_t j) {
      const Ann& a = ga[gt_keys[j].second];
      const Image* im = img_info[img_index[a.image_id]];
      build_mask(a, gt.store, static_cast<uint64_t>(im->h), static_cast<uint64_t>(im->w), gmask[j]);
    });
    parallel_for(dmask.size(), threads, [&](size_t j) {
      Ann& a = da[dt_keys[j].second];
      const Image* im = img_info[img_index[a.image_id]];
      build_mask(a, dt, static_cast<uint64_t>(im->h), static_cast<uint64_t>(im->w), dmask[j]);
      if (!box_branch) {
        a.area = static_cast<double>(rle::area(dmask[j].view()));
        if (a.bbox_len < 0) std::copy(dmask[j].bb, dmask[j].bb + 4, a.bbox);
      }
    });
  }

  // evaluateImg for every group and area range at maxDets[-1].
  parallel_for(groups.size(), threads, [&](size_t gidx) {
    const Group& g = groups[gidx];
    const size_t nd = g.dt_end - g.dt_begin, G = g.gt_end - g.gt_begin, D = g.kept;
    std::vector<size_t> order(nd);
    std::iota(order.begin(), order.end(), size_t{0});
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return da[dt_keys[g.dt_begin + a].second].score > da[dt_keys[g.dt_begin + b].second].score;
    });
    std::vector<const Ann*> dts(D), gts(G);
    for (size_t j = 0; j < D; ++j) {
      dts[j] = &da[dt_keys[g.dt_begin + order[j]].second];
      kept_scores[g.kept_off + j] = dts[j]->score;
    }
    std::vector<uint8_t> crowd(G), ignore(G);
    for (size_t j = 0; j < G; ++j) {
      gts[j] = &ga[gt_keys[g.gt_begin + j].second];
      crowd[j] = static_cast<int64_t>(gts[j]->iscrowd) != 0;
      ignore[j] = gts[j]->iscrowd != 0;
    }
    // IoU (D x G), as computeIoU.
    std::vector<double> iou(D * G);
    for (size_t d = 0; d < D; ++d)
      for (size_t j = 0; j < G; ++j) {
        if (P.segm) {
          const Mask& dm = dmask[g.dt_begin + order[d]];
          const Mask& gm = gmask[g.gt_begin + j];
          iou[d * G + j] = rle::mask_iou(dm.view(), gm.view(), dm.bb, gm.bb, crowd[j]);
        } else {
          iou[d * G + j] = rle::box_iou(dts[d]->bbox, gts[j]->bbox, crowd[j]);
        }
      }
    std::vector<size_t> gorder(G);
    std::vector<uint8_t> gig(G), gmatched(G);
    uint8_t* st = states.data() + g.kept_off * A * T;
    for (size_t a = 0; a < A; ++a) {
      const double lo = P.area_lo[a], hi = P.area_hi[a];
      // Ground truth: ignored ones (crowd or out of range) last, stable.
      size_t n0 = 0;
      for (size_t j = 0; j < G; ++j)
        if (!(ignore[j] || gts[j]->area < lo || gts[j]->area > hi)) gorder[n0++] = j;
      npig[gidx * A + a] = static_cast<int64_t>(n0);
      size_t n1 = n0;
      for (size_t j = 0; j < G; ++j)
        if (ignore[j] || gts[j]->area < lo || gts[j]->area > hi) gorder[n1++] = j;
      for (size_t j = 0; j < G; ++j) gig[j] = j >= n0;
      for (size_t t = 0; t < T; ++t) {
        uint8_t* s = st + (a * T + t) * D;
        std::fill(gmatched.begin(), gmatched.end(), uint8_t{0});
        const double thr = std::min(P.iou_thrs[t], 1 - 1e-10);
        for (size_t d = 0; d < D; ++d) {
          double best = thr;
          ptrdiff_t m = -1;
          const double* row = iou.data() + d * G;
          for (size_t j = 0; j < G; ++j) {
            const size_t gj = gorder[j];
            if (gmatched[j] && !crowd[gj]) continue;
            if (m > -1 && !gig[m] && gig[j]) break;
            if (row[gj] < best) continue;
            best = row[gj];
            m = static_cast<ptrdiff_t>(j);
          }
          const bool out_of_range = dts[d]->area < lo || dts[d]->area > hi;
          if (m == -1) {
            s[d] = out_of_range ? kIgnored : kFP;
            continue;
          }
          gmatched[m] = 1;
          if (gig[m])
            s[d] = kIgnored;
          else if (gts[gorder[m]]->id != 0)
            s[d] = kTP;
          else  // a match to ground-truth id 0 reads as unmatched
            s[d] = out_of_range ? kIgnored : kFP;
        }
      }
    }
  });

  // accumulate: per category, merge the images' detections by score (stable: image order, then
  // rank within the image), then precision/recall per IoU threshold and area range.
  res.precision.assign(T * R * K * A * M, -1.0);
  res.recall.assign(T * K * A * M, -1.0);
  res.scores.assign(T * R * K * A * M, -1.0);
  // Groups are ordered by category: cat_begin[k] is the first group of category k or later.
  std::vector<size_t> cat_begin(K + 1);
  for (size_t k = 0; k <= K; ++k)
    cat_begin[k] = static_cast<size_t>(
        std::lower_bound(groups.begin(), groups.end(), static_cast<int>(k),
                         [](const Group& g, int c) { return g.cat < c; }) -
        groups.begin());

  struct Entry {
    double score;
    uint32_t group, rank;
  };
  auto accumulate_cat = [&](size_t k) {
    const size_t gb = cat_begin[k], ge = cat_begin[k + 1];
    if (gb == ge) return;
    std::vector<Entry> ents;
    std::vector<double> rc, pr;
    for (size_t mi = 0; mi < M; ++mi) {
      const size_t cap = static_cast<size_t>(std::max<int64_t>(P.max_dets[mi], 0));
      ents.clear();
      for (size_t gi = gb; gi < ge; ++gi) {
        const Group& g = groups[gi];
        for (size_t d = 0; d < std::min(cap, g.kept); ++d)
          ents.push_back(Entry{kept_scores[g.kept_off + d], static_cast<uint32_t>(gi),
                               static_cast<uint32_t>(d)});
      }
      std::stable_sort(ents.begin(), ents.end(),
                       [](const Entry& a, const Entry& b) { return a.score > b.score; });
      const size_t nd = ents.size();
      rc.resize(nd);
      pr.resize(nd);
      for (size_t a = 0; a < A; ++a) {
        int64_t np_ = 0;
        for (size_t gi = gb; gi < ge; ++gi) np_ += npig[gi * A + a];
        if (np_ == 0) continue;
        const double npd = static_cast<double>(np_);
        for (size_t t = 0; t < T; ++t) {
          double tp = 0, fp = 0;
          for (size_t i = 0; i < nd; ++i) {
            const Group& g = groups[ents[i].group];
            const uint8_t s = states[g.kept_off * A * T + (a * T + t) * g.kept + ents[i].rank];
            if (s == kTP) tp += 1;
            else if (s == kFP) fp += 1;
            rc[i] = tp / npd;
            pr[i] = tp / (fp + tp + eps);
          }
          const size_t rk = ((t * K + k) * A + a) * M + mi;
          res.recall[rk] = nd ? rc[nd - 1] : 0;
          for (size_t i = nd; i-- > 1;)
            if (pr[i] > pr[i - 1]) pr[i - 1] = pr[i];
          size_t i = 0;
          for (size_t r = 0; r < R; ++r) {
            while (i < nd && rc[i] < P.rec_thrs[r]) ++i;
            const size_t pk = (((t * R + r) * K + k) * A + a) * M + mi;
            if (i < nd) {
              res.precision[pk] = pr[i];
              res.scores[pk] = ents[i].score;
            } else {
              res.precision[pk] = 0;
              res.scores[pk] = 0;
            }
          }
        }
      }
    }
  };
  parallel_for(K, threads, accumulate_cat);
  return res;
}

}  // namespace coco
}  // namespace yoloseg

// ---------------------------------------------------------------------------------------------
// Bindings.
namespace py = pybind11;

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
