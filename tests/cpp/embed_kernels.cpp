// Calls yoloseg's kernels from plain C++ (no Python, no torch) and prints inputs and results, one
// "name v1 v2 ..." line each, for tests/test_cpp_embed.py to compare with the Python module.
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "nms.h"
#include "polygons.h"
#include "rle.h"

namespace {

uint64_t state = 12345;
double next_uniform() {  // deterministic, independent of the platform's <random>
  state = state * 6364136223846793005ULL + 1442695040888963407ULL;
  return static_cast<double>(state >> 11) / 9007199254740992.0;
}

template <typename T>
void print(const char* name, const std::vector<T>& v) {
  std::printf("%s", name);
  for (const T& x : v) std::printf(" %.9g", static_cast<double>(x));
  std::printf("\n");
}

}  // namespace

int main() {
  // NMS: 300 boxes in 4 classes.
  const int64_t n = 300;
  std::vector<float> boxes, scores;
  std::vector<int64_t> classes;
  for (int64_t i = 0; i < n; ++i) {
    const float x = static_cast<float>(next_uniform() * 200), y = static_cast<float>(next_uniform() * 200);
    const float w = static_cast<float>(5 + next_uniform() * 60), h = static_cast<float>(5 + next_uniform() * 60);
    boxes.insert(boxes.end(), {x, y, x + w, y + h});
    scores.push_back(static_cast<float>(next_uniform()));
    classes.push_back(static_cast<int64_t>(next_uniform() * 4));
  }
  const auto keep = yoloseg::batched_nms_kernel(boxes.data(), scores.data(), classes.data(), n, 0.5f,
                                                yoloseg::NmsMethod::kAuto, 1);
  print("boxes", boxes);
  print("scores", scores);
  print("classes", classes);
  print("keep", keep);

  // A 24 x 32 mask with two parts -> its outer contours joined into one polygon, and its COCO RLE.
  const int64_t h = 24, w = 32;
  std::vector<uint8_t> mask(h * w, 0);
  for (int64_t y = 2; y < 10; ++y)
    for (int64_t x = 3; x < 12; ++x) mask[y * w + x] = 1;
  for (int64_t y = 12; y < 22; ++y)
    for (int64_t x = 15 + (y % 3); x < 29; ++x) mask[y * w + x] = 1;
  const int64_t window[4] = {0, 0, w, h};
  std::vector<std::vector<int32_t>> polys;
  yoloseg::mask_polygons_kernel(mask.data(), 1, h, w, window, true, polys, 1);
  print("mask", mask);
  print("polygon", polys[0]);
  yoloseg::rle::Counts counts;
  yoloseg::rle::encode_strided(mask.data(), h, w, w, 1, counts);
  std::printf("rle %s\n", yoloseg::rle::to_string(counts.data(), counts.size()).c_str());
  return 0;
}
