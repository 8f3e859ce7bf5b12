// COCO files -> annotation records (see coco_json.h), and masks of records as run-length counts.
#include "coco_json.h"

#include <algorithm>

// Built with -ffp-contract=off (CMakeLists.txt): bit-exact arithmetic with the COCO tools.

namespace yoloseg {
namespace coco {

using Counts = rle::Counts;

namespace {

int64_t read_id(Cursor& c, const char* what) {
  Number n = c.number();
  if (!n.valid) fail(std::string(c.name()) + ": '" + what + "' is null");
  if (n.is_int) return n.i;
  if (std::isfinite(n.d) && n.d == std::floor(n.d) && std::fabs(n.d) < 9.2e18)
    return static_cast<int64_t>(n.d);
  fail(std::string(c.name()) + ": '" + what + "' must be an integer");
}

void read_segmentation(Cursor& c, Ann& a, Store& st, const char* base) {
  const char k = c.peek();
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
    bool first = true, have_counts = false, have_size = false;
    std::string_view key;
    while (c.next_key(first, key)) {
      if (key == "size") {
        double sz[2];
        if (c.number_array(sz, 2) != 2 || !(sz[0] >= 0 && sz[0] < 4294967296.0) ||
            !(sz[1] >= 0 && sz[1] < 4294967296.0))
          fail(std::string(c.name()) + ": RLE 'size' must be [h, w]");
        a.seg_h = static_cast<uint32_t>(sz[0]);
        a.seg_w = static_cast<uint32_t>(sz[1]);
        have_size = true;
      } else if (key == "counts") {
        if (c.peek() == '"') {
          std::string_view raw = c.raw_string();
          a.seg = kSegText;
          a.seg_begin = static_cast<size_t>(raw.data() - base);
          a.seg_end = a.seg_begin + raw.size();
        } else {
          a.seg = kSegCounts;
          a.seg_begin = st.counts.size();
          c.expect('[');
          bool f2 = true;
          while (c.next_in_array(f2)) {
            Number v = c.number();
            if (!v.valid || !(v.d >= 0 && v.d <= 4294967295.0))
              fail(std::string(c.name()) + ": RLE counts must be integers in [0, 2**32)");
            st.counts.push_back(static_cast<uint32_t>(v.is_int ? v.i : static_cast<int64_t>(v.d)));
          }
          a.seg_end = st.counts.size();
        }
        have_counts = true;
      } else {
        c.skip();
      }
    }
    if (!have_counts || !have_size)
      fail(std::string(c.name()) + ": an RLE segmentation needs 'size' and 'counts'");
  } else {
    Number n = c.number();
    if (n.valid) fail(std::string(c.name()) + ": unsupported segmentation");
  }
}

// One annotation or result object; segmentations are read only when `want_seg`.
void read_ann(Cursor& c, Store& st, bool want_seg, const char* base) {
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
    } else if (key == "score") {
      Number n = c.number();
      a.has_score = n.valid;
      a.score = n.valid ? n.d : std::numeric_limits<double>::quiet_NaN();
    } else if (key == "bbox") {
      if (c.peek() != '[') {
        c.skip();
        a.bbox_len = 0;
      } else {
        a.bbox_len = static_cast<int32_t>(c.number_array(a.bbox, 4));
      }
    } else if (key == "segmentation") {
      if (want_seg) {
        read_segmentation(c, a, st, base);
      } else {
        c.skip();
        a.seg = kSegSkipped;
      }
    } else if (key == "id") {
      Number n = c.number();
      a.has_id = n.valid;
      a.id = n.is_int ? n.i : static_cast<int64_t>(n.d);
    } else if (key == "area") {
      Number n = c.number();
      a.has_area = n.valid;
      a.area = n.d;
    } else if (key == "iscrowd") {
      Number n = c.number();
      a.iscrowd = n.valid ? n.d : 0;
    } else if (key == "caption") {
      a.has_caption = true;
      c.skip();
    } else {
      c.skip();
    }
  }
}

}  // namespace

void parse_gt(const char* s, size_t n, bool want_seg, GtFile& gt) {
  Cursor c(s, n, "gt");
  gt.store.text = s;
  if (c.peek() != '{') fail("gt: a COCO file must be a JSON object");
  c.expect('{');
  bool first = true, seen_images = false;
  std::string_view key;
  while (c.next_key(first, key)) {
    if (key == "images") {
      seen_images = true;
      gt.images.clear();
      c.expect('[');
      bool f = true;
      while (c.next_in_array(f)) {
        Image im;
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
      gt.store.anns.clear();
      c.expect('[');
      bool f = true;
      while (c.next_in_array(f)) read_ann(c, gt.store, want_seg, s);
    } else {
      c.skip();
    }
  }
  if (!c.at_end()) c.error("trailing data");
  if (!seen_images) fail("gt: no 'images' list");
}

void parse_dt(const char* s, size_t n, bool segm, Store& st) {
  Cursor c(s, n, "dt");
  st.text = s;
  if (c.peek() != '[') fail("dt: results must be a list of objects");
  c.expect('[');
  bool f = true, want_seg = true;
  while (c.next_in_array(f)) {
    if (c.peek() != '{') fail("dt: results must be a list of objects");
    read_ann(c, st, want_seg, s);
    if (st.anns.size() == 1 && !segm && st.anns[0].bbox_len > 0) want_seg = false;
  }
  if (!c.at_end()) c.error("trailing data");
}

namespace {
// *p was a backslash: the character the escape stands for (compressed RLE text only ever escapes
// the backslash itself, but any JSON escape is understood).
inline int unescape_at(const char*& p, const char* e) {
  if (p >= e) return '\\';
  const char c = *p++;
  switch (c) {
    case 'n': return '\n';
    case 't': return '\t';
    case 'r': return '\r';
    case 'b': return '\b';
    case 'f': return '\f';
    case 'u': {
      int v = 0;
      for (int i = 0; i < 4 && p < e; ++i) {
        const char h = *p++;
        v = v * 16 + (h >= '0' && h <= '9' ? h - '0' : (h | 0x20) - 'a' + 10);
      }
      return static_cast<signed char>(static_cast<char>(v));
    }
    default: return static_cast<signed char>(c);
  }
}
}  // namespace

// The same scheme as rle::from_string, reading the JSON text directly.
void decode_rle_text(const char* s, size_t len, Counts& out) {
  out.clear();
  out.reserve(len);
  const char* p = s;
  const char* e = s + len;
  while (p < e) {
    int64_t x = 0;
    int k = 0;
    bool more = true;
    while (more && p < e) {
      if (k == 7) fail("segmentation: RLE text has a count longer than 7 characters");
      int ch = static_cast<signed char>(*p++);
      if (ch == '\\') ch = unescape_at(p, e);
      const int c = ch - 48;
      x |= static_cast<int64_t>(c & 0x1f) << (5 * k);
      more = (c & 0x20) != 0;
      ++k;
      if (!more && (c & 0x10)) x |= static_cast<int64_t>(-1) * (int64_t{1} << (5 * k));
    }
    const size_t m = out.size();
    if (m > 2) x += static_cast<int64_t>(out[m - 2]);
    out.push_back(static_cast<uint32_t>(x));
  }
}

// pycocotools' annToRLE: polygons (parts unioned) in the image size, RLEs as given. The counts end
// up in `own` unless they can be viewed in place (uncompressed RLE).
rle::View mask_of(const Ann& a, const Store& st, uint64_t img_h, uint64_t img_w, Counts& own,
                  std::vector<Counts>& scratch) {
  if (a.seg == kSegCounts) {
    const rle::View v{a.seg_h, a.seg_w, st.counts.data() + a.seg_begin, a.seg_end - a.seg_begin};
    rle::validate(v, "coco_evaluate: segmentation");
    return v;
  }
  if (a.seg == kSegText) {
    decode_rle_text(st.text + a.seg_begin, a.seg_end - a.seg_begin, own);
    const rle::View v{a.seg_h, a.seg_w, own.data(), own.size()};
    rle::validate(v, "coco_evaluate: segmentation");
    return v;
  }
  // Polygons, every part rasterised (parts of fewer than 3 points give little or nothing; the
  // COCO tools reject some such lists outright, and an empty list gives an empty mask here).
  const size_t np = a.seg_end - a.seg_begin;
  if (scratch.size() < np) scratch.resize(np);
  for (size_t i = 0; i < np; ++i) {
    const auto& pr = st.polys[a.seg_begin + i];
    rle::from_polygon(st.coords.data() + pr.first, pr.second / 2, img_h, img_w, scratch[i]);
  }
  uint64_t h = img_h, w = img_w;
  if (np == 0) {
    own.assign(1, static_cast<uint32_t>(img_h * img_w));
  } else if (np == 1) {
    own.swap(scratch[0]);
  } else {
    std::vector<rle::View> views;
    for (size_t i = 0; i < np; ++i)
      views.push_back(rle::View{img_h, img_w, scratch[i].data(), scratch[i].size()});
    rle::merge(views, false, h, w, own);
  }
  return rle::View{h, w, own.data(), own.size()};
}

}  // namespace coco
}  // namespace yoloseg
