// Reading COCO JSON for the evaluation (coco_eval.cpp): a small streaming JSON cursor with just
// enough structure to pull out the fields an evaluation needs and skip the rest (it accepts what
// Python's json module accepts, including NaN and Infinity), and the annotation records it fills.
#pragma once

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "rle.h"

namespace yoloseg {
namespace coco {

[[noreturn]] inline void fail(const std::string& msg) { throw std::invalid_argument(msg); }

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
    throw std::invalid_argument(std::string(name_) + ": invalid JSON (" + what + ") at byte " + std::to_string(p_ - begin_));
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
  // The raw (still escaped) content of a string: [begin, end) in the text.
  std::string_view raw_string() {
    ws();
    if (p_ >= end_ || *p_ != '"') error("expected a string");
    const char* s = ++p_;
    skip_string_body();
    return std::string_view(s, static_cast<size_t>(p_ - 1 - s));
  }
  // Skip any value.
  void skip() {
    char c = peek();
    if (c == '"') {
      ++p_;
      skip_string_body();
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
  // Numbers of an array (nulls read as NaN); returns the count, stores at most `cap`.
  size_t number_array(double* out, size_t cap) {
    expect('[');
    bool first = true;
    size_t n = 0;
    while (next_in_array(first)) {
      Number v = number();
      if (n < cap) out[n] = v.valid ? v.d : std::numeric_limits<double>::quiet_NaN();
      ++n;
    }
    return n;
  }
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
  // After the opening quote: move past the closing one (a quote preceded by an odd number of
  // backslashes is escaped).
  void skip_string_body() {
    while (true) {
      const void* q = std::memchr(p_, '"', static_cast<size_t>(end_ - p_));
      if (!q) {
        p_ = end_;
        error("unterminated string");
      }
      const char* e = static_cast<const char*>(q);
      const char* b = e;
      while (b > p_ && b[-1] == '\\') --b;
      p_ = e + 1;
      if (((e - b) & 1) == 0) return;
    }
  }
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
// COCO records read from the text (coco_json.cpp).
enum SegKind : uint8_t {
  kSegNone = 0,    // no segmentation key
  kSegSkipped,     // present but not read (not needed)
  kSegPolys,       // polygons: [seg_begin, seg_end) in Store::polys
  kSegCounts,      // uncompressed RLE: [seg_begin, seg_end) in Store::counts
  kSegText,        // compressed RLE: the JSON string's raw text [seg_begin, seg_end) in the source
};

struct Ann {
  int64_t id = 0, image_id = 0, category_id = 0;
  double iscrowd = 0, area = 0, score = 0;
  double bbox[4] = {0, 0, 0, 0};
  int32_t bbox_len = -1;  // -1: no bbox key
  uint8_t seg = kSegNone;
  bool has_id = false, has_image = false, has_cat = false, has_area = false, has_score = false;
  bool has_caption = false;
  uint32_t seg_h = 0, seg_w = 0;
  size_t seg_begin = 0, seg_end = 0;
};

struct Store {
  const char* text = nullptr;  // the JSON source (compressed RLE strings point into it)
  std::vector<Ann> anns;
  std::vector<double> coords;                    // polygon coordinates
  std::vector<std::pair<size_t, size_t>> polys;  // (begin, size) in coords
  rle::Counts counts;                                 // uncompressed RLE counts
};

struct Image {
  int64_t id = 0;
  double h = 0, w = 0;
  bool has_size = false;
};

struct GtFile {
  std::vector<Image> images;
  std::vector<int64_t> cat_ids;
  Store store;
};

// Read a COCO instances file (segmentations only when `want_seg`).
void parse_gt(const char* s, size_t n, bool want_seg, GtFile& gt);
// Read a results list; segmentations are read for segm, or when the first result has no box.
void parse_dt(const char* s, size_t n, bool segm, Store& st);
// Decode a compressed RLE given as raw JSON string text (escapes resolved on the fly).
void decode_rle_text(const char* s, size_t len, rle::Counts& out);
// pycocotools' annToRLE for one record: polygons (parts unioned) in the image size, RLEs as given.
// Counts land in `own` unless they can be viewed in place; `scratch` is reusable work space.
rle::View mask_of(const Ann& a, const Store& st, uint64_t img_h, uint64_t img_w, rle::Counts& own,
                  std::vector<rle::Counts>& scratch);

}  // namespace coco
}  // namespace yoloseg
