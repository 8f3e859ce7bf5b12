// yoloseg's predict path in a C++ program, without Python:
//
//   predict MODEL.torchscript IMAGE [--conf 0.25] [--iou 0.7] [--max-det 300] [--threads N] [--out overlay.png]
//           [--polygons] [--rle] [--repeat N]
//
// Prints the detections as one JSON list on stdout, {"box": [x1, y1, x2, y2], "score": s, "class": c,
// "mask_area": pixels} each, in original-image pixels (masks decoded at the original size, as retina_masks=True),
// and writes an overlay PNG (--out "" skips it). --polygons adds "polygon" (x0, y0, x1, y1, ...), --rle adds
// "rle" (the mask's COCO RLE counts string). --repeat N times N more runs of the whole path and prints the
// per-run milliseconds of each stage to stderr as JSON. Errors go to stderr with exit code 1 (2 for bad usage).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "image_io.h"
#include "pipeline.h"
#include "rle.h"
#include "torchscript.h"

namespace {

struct Args {
  std::string model, image, out = "overlay.png";
  float conf = 0.25f, iou = 0.7f;
  int64_t max_det = 300;
  int threads = 0;  // 0: libtorch's default
  bool polygons = false, rle = false;
  int repeat = 0;
};

[[noreturn]] void usage(const std::string& msg) {
  std::fprintf(stderr,
               "error: %s\nusage: predict MODEL.torchscript IMAGE [--conf 0.25] [--iou 0.7] [--max-det 300] "
               "[--threads N] [--out overlay.png] [--polygons] [--rle] [--repeat N]\n",
               msg.c_str());
  std::exit(2);
}

double number(const std::string& flag, const char* text, double lo, double hi) {
  char* end = nullptr;
  const double v = std::strtod(text, &end);
  if (end == text || *end != '\0' || !(v >= lo && v <= hi))
    usage(flag + " must be a number in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got '" + text + "'");
  return v;
}

Args parse(int argc, char** argv) {
  Args a;
  std::vector<std::string> pos;
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) usage(f + " needs a value");
      return argv[++i];
    };
    if (f == "--conf") a.conf = static_cast<float>(number(f, value(), 0, 1));
    else if (f == "--iou") a.iou = static_cast<float>(number(f, value(), 0, 1));
    else if (f == "--max-det") a.max_det = static_cast<int64_t>(number(f, value(), 0, 1e6));
    else if (f == "--threads") a.threads = static_cast<int>(number(f, value(), 1, 1024));
    else if (f == "--repeat") a.repeat = static_cast<int>(number(f, value(), 0, 1e6));
    else if (f == "--out") a.out = value();
    else if (f == "--polygons") a.polygons = true;
    else if (f == "--rle") a.rle = true;
    else if (f.rfind("--", 0) == 0) usage("unknown option " + f);
    else pos.push_back(f);
  }
  if (pos.size() != 2) usage("expected MODEL and IMAGE");
  a.model = pos[0], a.image = pos[1];
  return a;
}

double ms_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
}

// Masks blended at 50 % and 2-pixel box outlines, one colour per class.
void draw_overlay(Image& img, const yoloseg::Detections& det) {
  static const uint8_t palette[][3] = {{56, 56, 255}, {151, 157, 255}, {31, 112, 255}, {29, 178, 255},
                                       {49, 210, 207}, {10, 249, 72},  {23, 204, 146}, {134, 219, 61},
                                       {211, 188, 0},  {209, 130, 0},  {255, 105, 64}, {255, 56, 132}};
  for (int64_t i = 0; i < det.size(); ++i) {
    const uint8_t* c = palette[det.classes[i] % 12];
    const int64_t* r = det.regions.data() + 4 * i;
    const uint8_t* m = det.crops.data() + det.offsets[i];
    for (int64_t y = r[1]; y < r[3]; ++y)
      for (int64_t x = r[0]; x < r[2]; ++x)
        if (m[(y - r[1]) * (r[2] - r[0]) + (x - r[0])])
          for (int k = 0; k < 3; ++k) {
            uint8_t& p = img.bgr[3 * (y * img.width + x) + k];
            p = static_cast<uint8_t>((p + c[k] + 1) / 2);
          }
    const float* b = det.boxes.data() + 4 * i;
    const int64_t x0 = static_cast<int64_t>(b[0]), y0 = static_cast<int64_t>(b[1]);
    const int64_t x1 = std::min<int64_t>(static_cast<int64_t>(b[2]), img.width - 1);
    const int64_t y1 = std::min<int64_t>(static_cast<int64_t>(b[3]), img.height - 1);
    for (int64_t y = y0; y <= y1; ++y)
      for (int64_t x = x0; x <= x1; ++x)
        if (y - y0 < 2 || y1 - y < 2 || x - x0 < 2 || x1 - x < 2)
          for (int k = 0; k < 3; ++k) img.bgr[3 * (y * img.width + x) + k] = c[k];
  }
}

void print_json(const yoloseg::Detections& det, const Args& a) {
  std::printf("[");
  for (int64_t i = 0; i < det.size(); ++i) {
    const float* b = det.boxes.data() + 4 * i;
    std::printf("%s\n  {\"box\": [%.9g, %.9g, %.9g, %.9g], \"score\": %.9g, \"class\": %lld, \"mask_area\": %lld",
                i ? "," : "", b[0], b[1], b[2], b[3], det.scores[i], static_cast<long long>(det.classes[i]),
                static_cast<long long>(det.mask_area(i)));
    if (a.polygons) {
      std::printf(", \"polygon\": [");
      const auto& p = det.polygons[i];
      for (size_t k = 0; k < p.size(); ++k) std::printf("%s%.9g", k ? ", " : "", p[k]);
      std::printf("]");
    }
    if (a.rle) {
      const int64_t* r = det.regions.data() + 4 * i;
      yoloseg::rle::Counts counts;
      yoloseg::rle::encode_window(det.crops.data() + det.offsets[i], r[3] - r[1], r[2] - r[0], r[2] - r[0], r[1], r[0],
                                  det.mask_h, det.mask_w, counts);
      std::string text;  // COCO RLE characters are '0'..'o': only the backslash needs escaping in JSON
      for (char ch : yoloseg::rle::to_string(counts.data(), counts.size()))
        text += ch == '\\' ? std::string("\\\\") : std::string(1, ch);
      std::printf(", \"rle\": \"%s\"", text.c_str());
    }
    std::printf("}");
  }
  std::printf("%s]\n", det.size() ? "\n" : "");
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  try {
    if (a.threads > 0) yoloseg::TorchScriptModel::set_num_threads(a.threads);
    yoloseg::TorchScriptModel model(a.model);
    Image img = read_image(a.image);

    yoloseg::PostprocessOptions opt;
    opt.conf = a.conf, opt.iou = a.iou, opt.max_det = a.max_det, opt.retina_masks = true;
    opt.polygons = a.polygons ? yoloseg::Polygons::kLargest : yoloseg::Polygons::kNone;
    opt.nthreads = yoloseg::TorchScriptModel::num_threads();  // the kernels follow libtorch's setting
    const yoloseg::LetterboxOptions lbo = model.info().letterbox_options();
    const yoloseg::Letterbox geo = yoloseg::letterbox_geometry(img.height, img.width, lbo);
    std::vector<float> input(static_cast<size_t>(3 * geo.dst_h * geo.dst_w));

    // The whole path: letterbox -> model -> postprocess. Run once, then --repeat more times for timings.
    yoloseg::Detections det;
    std::vector<double> t_lb, t_inf, t_post;
    for (int run = 0; run <= a.repeat; ++run) {
      auto t0 = std::chrono::steady_clock::now();
      const yoloseg::Letterbox lb =
          yoloseg::letterbox(img.bgr.data(), img.height, img.width, 3 * img.width, lbo, input.data(), opt.nthreads);
      const double d0 = ms_since(t0);
      t0 = std::chrono::steady_clock::now();
      yoloseg::RawOutput out;
      model.run(input.data(), lb.dst_h, lb.dst_w, out);
      const double d1 = ms_since(t0);
      t0 = std::chrono::steady_clock::now();
      det = yoloseg::postprocess(out.pred, out.nc(), out.nm, out.anchors, out.protos, out.mh, out.mw, lb, opt);
      const double d2 = ms_since(t0);
      if (run > 0) t_lb.push_back(d0), t_inf.push_back(d1), t_post.push_back(d2);
    }
    print_json(det, a);
    if (a.repeat > 0) {
      auto list = [](const std::vector<double>& v) {
        std::string s = "[";
        for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
        return s + "]";
      };
      std::fprintf(stderr, "{\"letterbox_ms\": %s, \"inference_ms\": %s, \"postprocess_ms\": %s}\n",
                   list(t_lb).c_str(), list(t_inf).c_str(), list(t_post).c_str());
    }
    if (!a.out.empty()) {
      draw_overlay(img, det);
      write_png(a.out, img);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
