// Checks every entry point of the kernels library from plain C++: valid calls give the documented
// results, invalid ones throw yoloseg::Error naming the function and argument, and nothing crashes
// (tests/test_sanitize.py runs this program built with YOLOSEG_SANITIZE=address,undefined).
// Prints one "ok <name>" line per check and "FAIL <name>: <why>" for a failed one; exit status 1 on any
// failure.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "coco_eval.h"
#include "errors.h"
#include "masks.h"
#include "nms.h"
#include "polygons.h"
#include "rle.h"

namespace {

int failures = 0;

void report(const std::string& name, bool ok, const std::string& why = "") {
  if (ok) {
    std::printf("ok %s\n", name.c_str());
  } else {
    std::printf("FAIL %s: %s\n", name.c_str(), why.c_str());
    ++failures;
  }
}

// fn() must throw yoloseg::Error whose function() and argument() are the given ones.
template <typename F>
void refuses(const std::string& name, const char* function, const char* argument, F fn) {
  try {
    fn();
  } catch (const yoloseg::Error& e) {
    const bool match = e.function() == function && e.argument() == argument;
    report(name, match, std::string("threw '") + e.what() + "', expected " + function + " / " + argument);
    return;
  } catch (const std::exception& e) {
    report(name, false, std::string("threw another exception: ") + e.what());
    return;
  }
  report(name, false, "did not throw");
}

template <typename F>
void accepts(const std::string& name, F fn) {
  try {
    report(name, fn(), "wrong result");
  } catch (const std::exception& e) {
    report(name, false, std::string("threw: ") + e.what());
  }
}

const float kNaN = std::numeric_limits<float>::quiet_NaN();
const float kInf = std::numeric_limits<float>::infinity();

void check_nms() {
  using yoloseg::NmsMethod;
  // 500 boxes, one -inf coordinate: used to throw std::length_error inside the OpenMP region.
  std::vector<float> boxes, scores;
  for (int i = 0; i < 500; ++i) {
    const float x = static_cast<float>(i % 25) * 10, y = static_cast<float>(i / 25) * 10;
    boxes.insert(boxes.end(), {x, y, x + 15, y + 15});
    scores.push_back(static_cast<float>(i % 97) / 97.0f);
  }
  accepts("nms valid", [&] {
    auto keep = yoloseg::batched_nms_kernel(boxes.data(), scores.data(), nullptr, 500, 0.1f, NmsMethod::kAuto, 2);
    return !keep.empty() && keep.size() < 500;
  });
  std::vector<float> bad = boxes;
  bad[4 * 123 + 2] = -kInf;
  for (int method = 0; method < 3; ++method)
    refuses("nms -inf box method " + std::to_string(method), "nms", "boxes", [&] {
      yoloseg::batched_nms_kernel(bad.data(), scores.data(), nullptr, 500, 0.5f, static_cast<NmsMethod>(method), 4);
    });
  bad = boxes;
  bad[7] = kNaN;
  refuses("nms NaN box", "nms", "boxes",
          [&] { yoloseg::batched_nms_kernel(bad.data(), scores.data(), nullptr, 500, 0.5f, NmsMethod::kGrid, 1); });
  std::vector<float> s2 = scores;
  s2[3] = kNaN;
  std::vector<int64_t> cls(500, 3);
  refuses("batched_nms NaN score", "batched_nms", "scores",
          [&] { yoloseg::batched_nms_kernel(boxes.data(), s2.data(), cls.data(), 500, 0.5f, NmsMethod::kAuto, 1); });
  s2[3] = -kInf;
  accepts("nms -inf score ranks last", [&] {
    auto keep = yoloseg::batched_nms_kernel(boxes.data(), s2.data(), nullptr, 500, 0.5f, NmsMethod::kAuto, 1);
    return !keep.empty();
  });
  refuses("nms negative n", "nms", "n",
          [&] { yoloseg::batched_nms_kernel(boxes.data(), scores.data(), nullptr, -1, 0.5f, NmsMethod::kAuto, 1); });
  refuses("nms null boxes", "nms", "boxes",
          [&] { yoloseg::batched_nms_kernel(nullptr, scores.data(), nullptr, 5, 0.5f, NmsMethod::kAuto, 1); });
  refuses("nms NaN threshold", "nms", "iou_threshold",
          [&] { yoloseg::batched_nms_kernel(boxes.data(), scores.data(), nullptr, 5, kNaN, NmsMethod::kAuto, 1); });
  refuses("nms bad method", "nms", "method", [&] {
    yoloseg::batched_nms_kernel(boxes.data(), scores.data(), nullptr, 5, 0.5f, static_cast<NmsMethod>(7), 1);
  });
  accepts("nms empty with null buffers", [&] {
    return yoloseg::batched_nms_kernel(nullptr, nullptr, nullptr, 0, 0.5f, NmsMethod::kAuto, 1).empty();
  });
  accepts("nms huge coordinates, any thread count", [&] {
    std::vector<float> big = {-3e38f, -3e38f, 3e38f, 3e38f, 0, 0, 1, 1, -3e38f, 0, 3e38f, 1};
    std::vector<float> sc = {0.9f, 0.8f, 0.7f};
    auto a = yoloseg::batched_nms_kernel(big.data(), sc.data(), nullptr, 3, 0.5f, NmsMethod::kGrid, -3);
    auto b = yoloseg::batched_nms_kernel(big.data(), sc.data(), nullptr, 3, 0.5f, NmsMethod::kPairwise, 100000);
    return a == b && !a.empty();
  });
  std::vector<int64_t> wide = {INT64_MIN, INT64_MAX, 0};
  accepts("batched_nms extreme class ids", [&] {
    std::vector<float> b3(boxes.begin(), boxes.begin() + 12), s3(scores.begin(), scores.begin() + 3);
    return yoloseg::batched_nms_kernel(b3.data(), s3.data(), wide.data(), 3, 0.5f, NmsMethod::kAuto, 1).size() == 3;
  });
}

void check_masks() {
  const int64_t nm = 4, mh = 8, mw = 8, n = 2;
  std::vector<float> protos(nm * mh * mw, 0.5f), coeffs(n * nm, 1.0f);
  std::vector<float> boxes = {1, 1, 20, 20, 0, 0, 32, 32};
  const auto yt = yoloseg::resample_taps(32, mh, 1, 0, mh), xt = yoloseg::resample_taps(32, mw, 1, 0, mw);
  std::vector<uint8_t> out(n * 32 * 32, 0);
  accepts("decode_masks valid", [&] {
    yoloseg::decode_masks_kernel(protos.data(), nm, mh, mw, coeffs.data(), boxes.data(), n, yt, xt, 32, 32,
                                 out.data(), 2);
    return out[1 * 32 + 1] == 1 && out[0] == 0 && out[32 * 32] == 1;
  });
  std::vector<float> nan_box = {kNaN, 0, 10, 10, 0, 0, 32, 32};
  refuses("decode_masks NaN box", "decode_masks", "boxes", [&] {
    yoloseg::decode_masks_kernel(protos.data(), nm, mh, mw, coeffs.data(), nan_box.data(), n, yt, xt, 32, 32,
                                 out.data(), 1);
  });
  accepts("box_region NaN is empty", [&] {
    const auto r = yoloseg::box_region(nan_box.data(), 640, 640);
    return r.x0 == 0 && r.x1 == 0 && r.y0 == 0 && r.y1 == 0;
  });
  accepts("box_region inf clips", [&] {
    const float b[4] = {-kInf, -kInf, kInf, kInf};
    const auto r = yoloseg::box_region(b, 10, 20);
    return r.x0 == 0 && r.y0 == 0 && r.x1 == 20 && r.y1 == 10;
  });
  refuses("box_region zero height", "box_region", "out_h", [&] { yoloseg::box_region(boxes.data(), 0, 10); });
  refuses("resample_taps absurd size", "resample_taps", "out",
          [&] { yoloseg::resample_taps(int64_t{1} << 40, 8, 1, 0, 8); });
  refuses("resample_taps overflowing f", "resample_taps", "f",
          [&] { yoloseg::resample_taps(8, 8, INT64_MAX / 2, 0, 8); });
  refuses("resample_taps window past the grid", "resample_taps", "offset + content",
          [&] { yoloseg::resample_taps(8, 8, 1, 4, 8); });
  refuses("decode_masks taps of another size", "decode_masks", "ytaps", [&] {
    yoloseg::decode_masks_kernel(protos.data(), nm, mh, mw, coeffs.data(), boxes.data(), n, yt, xt, 16, 32,
                                 out.data(), 1);
  });
  refuses("decode_masks negative n", "decode_masks", "n", [&] {
    yoloseg::decode_masks_kernel(protos.data(), nm, mh, mw, coeffs.data(), boxes.data(), -2, yt, xt, 32, 32,
                                 out.data(), 1);
  });
  refuses("decode_masks null out", "decode_masks", "out", [&] {
    yoloseg::decode_masks_kernel(protos.data(), nm, mh, mw, coeffs.data(), boxes.data(), n, yt, xt, 32, 32,
                                 nullptr, 1);
  });
  std::vector<float> nan_coef = coeffs;
  nan_coef[5] = kNaN;
  refuses("decode_masks NaN coefficient", "decode_masks", "coeffs", [&] {
    yoloseg::decode_masks_kernel(protos.data(), nm, mh, mw, nan_coef.data(), boxes.data(), n, yt, xt, 32, 32,
                                 out.data(), 1);
  });
  std::vector<int64_t> regions = {0, 0, 40, 10, 0, 0, 0, 0}, offsets = {0, 0}, windows(8);
  std::vector<uint8_t> crops(400);
  refuses("decode_crops region past the output", "decode_mask_crops", "regions", [&] {
    yoloseg::decode_crops_kernel(protos.data(), nm, mh, mw, coeffs.data(), boxes.data(), n, yt, xt, 32, 32,
                                 regions.data(), offsets.data(), crops.data(), windows.data(), 1);
  });
}

void check_polygons() {
  const int64_t h = 6, w = 7;
  std::vector<uint8_t> mask(h * w, 0);
  mask[2 * w + 3] = 1;
  std::vector<int64_t> win(4);
  accepts("mask_windows valid", [&] {
    yoloseg::mask_windows_kernel(mask.data(), 1, h, w, win.data(), 0);
    return win == std::vector<int64_t>{3, 2, 4, 3};
  });
  refuses("mask_windows negative side", "mask_windows", "h",
          [&] { yoloseg::mask_windows_kernel(mask.data(), 1, -6, w, win.data(), 1); });
  refuses("mask_windows overflowing count", "mask_windows", "n * h * w",
          [&] { yoloseg::mask_windows_kernel(mask.data(), INT64_MAX / 4, h, w, win.data(), 1); });
  accepts("mask_windows_within extreme bounds", [&] {
    const int64_t b[4] = {INT64_MIN, INT64_MIN, INT64_MAX, INT64_MAX};
    yoloseg::mask_windows_within_kernel(mask.data(), 1, h, w, b, win.data(), 1);
    return win == std::vector<int64_t>{3, 2, 4, 3};
  });
  accepts("closest_vertices exact at int32 extremes", [&] {
    const int32_t a[4] = {INT32_MIN, INT32_MIN, INT32_MAX, INT32_MAX};
    const int32_t b[4] = {INT32_MAX, INT32_MAX - 1, INT32_MIN + 1, INT32_MIN};
    int64_t i = -1, j = -1;
    yoloseg::closest_vertices_kernel(a, 2, b, 2, &i, &j);
    return i == 0 && j == 1;
  });
  refuses("closest_vertices empty", "closest_vertices", "n", [&] {
    int64_t i, j;
    const int32_t b[2] = {0, 0};
    yoloseg::closest_vertices_kernel(nullptr, 0, b, 1, &i, &j);
  });
  std::vector<std::vector<int32_t>> polys;
  accepts("mask_polygons valid", [&] {
    const int64_t all[4] = {0, 0, w, h};
    yoloseg::mask_polygons_kernel(mask.data(), 1, h, w, all, false, polys, 2);
    return polys.size() == 1 && polys[0] == std::vector<int32_t>{3, 2};
  });
  refuses("mask_polygons absurd side", "mask_polygons", "w", [&] {
    const int64_t all[4] = {0, 0, w, h};
    yoloseg::mask_polygons_kernel(mask.data(), 1, h, int64_t{1} << 40, all, false, polys, 1);
  });
  refuses("crop_polygons region past the limit", "crop_polygons", "regions", [&] {
    const int64_t reg[4] = {0, 0, INT64_MAX, INT64_MAX}, off[1] = {0}, wnd[4] = {0, 0, 1, 1};
    yoloseg::crop_polygons_kernel(mask.data(), 1, reg, off, wnd, false, polys, 1);
  });
}

void check_rle() {
  namespace R = yoloseg::rle;
  R::Counts c;
  refuses("rle encode absurd size", "rle_encode", "size", [&] {
    const uint8_t m = 0;
    R::encode_strided(&m, uint64_t{1} << 32, 1, 1, 1, c);
  });
  refuses("rle from_string long count", "rle_from_string", "s", [&] {
    const std::string s(40, 'o');  // every character says "more follows"
    R::from_string(s.data(), s.size(), c);
  });
  accepts("rle round trip", [&] {
    const uint8_t m[6] = {0, 1, 1, 0, 1, 0};
    R::encode_colmajor(m, 3, 2, c);
    const std::string s = R::to_string(c.data(), c.size());
    R::Counts back;
    R::from_string(s.data(), s.size(), back);
    uint8_t out[6];
    return back == c && R::decode_colmajor(R::View{3, 2, back.data(), back.size()}, out) &&
           std::memcmp(out, m, 6) == 0;
  });
  const uint32_t over[3] = {4, 4, 4};
  refuses("rle validate counts past h*w", "RLE", "counts", [&] { R::validate(R::View{2, 2, over, 3}, "RLE"); });
  refuses("rle to_bbox size past the limit", "rle_to_bbox", "size", [&] {
    double bb[4];
    R::to_bbox(R::View{uint64_t{1} << 32, 1, over, 3}, bb);
  });
  refuses("rle from_polygon NaN", "rle_from_polygon", "xy", [&] {
    const double xy[6] = {0, 0, std::nan(""), 1, 1, 1};
    R::from_polygon(xy, 3, 10, 10, c);
  });
  refuses("rle from_polygon huge image", "rle_from_polygon", "size", [&] {
    const double xy[6] = {0, 0, 1, 1, 1, 0};
    R::from_polygon(xy, 3, 100000, 100000, c);
  });
  refuses("rle encode_window outside the mask", "rle_encode_window", "y0", [&] {
    const uint8_t m[4] = {1, 1, 1, 1};
    R::encode_window(m, 2, 2, 2, 9, 0, 10, 10, c);
  });
}

void check_coco() {
  namespace C = yoloseg::coco;
  C::Params p;
  p.iou_thrs = {0.5};
  p.rec_thrs = {0.0, 0.5, 1.0};
  p.max_dets = {100};
  p.area_lo = {0};
  p.area_hi = {1e10};
  p.segm = true;
  p.num_threads = 2;
  const std::string gt =
      R"({"images":[{"id":1,"height":100000,"width":100000}],"categories":[{"id":1}],)"
      R"("annotations":[{"id":1,"image_id":1,"category_id":1,"area":4,"bbox":[0,0,2,2],"iscrowd":0,)"
      R"("segmentation":[[0,0,2,0,2,2,0,2]]}]})";
  const std::string dt = R"([{"image_id":1,"category_id":1,"score":0.9,"segmentation":{"size":[100000,100000],"counts":[0,4]}}])";
  try {
    C::evaluate(gt.data(), gt.size(), dt.data(), dt.size(), p);
    report("coco huge image refused", false, "did not throw");
  } catch (const std::invalid_argument& e) {
    report("coco huge image refused", std::strstr(e.what(), "size") != nullptr, e.what());
  }
  p.iou_thrs = {std::nan("")};
  try {
    C::evaluate(gt.data(), gt.size(), dt.data(), dt.size(), p);
    report("coco NaN threshold refused", false, "did not throw");
  } catch (const std::invalid_argument& e) {
    report("coco NaN threshold refused", std::strstr(e.what(), "iou_thrs") != nullptr, e.what());
  }
}

}  // namespace

int main() {
  check_nms();
  check_masks();
  check_polygons();
  check_rle();
  check_coco();
  std::printf("%d failure(s)\n", failures);
  return failures == 0 ? 0 : 1;
}
