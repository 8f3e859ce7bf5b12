// Run-length encoded binary masks in the COCO layout: a mask of h rows and w columns is read in
// column-major order (pixel index y + h*x) and stored as alternating run lengths, starting with a
// run of zeros (which may be empty). The compressed text form packs each count (the third count on
// as a difference to the count two before) into 5-bit groups, 6 bits per character offset by '0'.
// Everything here works on raw buffers; the Python face lives in yoloseg/metrics/rle.py.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace yoloseg {
namespace rle {

using Counts = std::vector<uint32_t>;

// Sizes: every function that takes a mask size refuses (yoloseg::Error, errors.h) h or w above 2^24
// and h * w above 2^31 - 1 (counts are 32-bit and the polygon rasteriser indexes pixels in int, as
// the COCO tools do). Polygon coordinates must be finite with magnitude at most 1e8.
constexpr uint64_t kMaxPixels = (uint64_t{1} << 31) - 1;
constexpr double kMaxCoordinate = 1e8;

// A read-only view of one mask's counts.
struct View {
  uint64_t h = 0, w = 0;
  const uint32_t* cnts = nullptr;
  size_t m = 0;
};

// Throws yoloseg::Error when the size is too large (above).
void check_size(uint64_t h, uint64_t w, const char* fn);
// Throws yoloseg::Error when the size is too large or the counts add up to more than h*w. area, merge,
// to_bbox and mask_iou read the counts they are given without this check (they never read past
// cnts[m - 1]); for counts from outside, validate first or their results are meaningless. Counts that
// add up to less than h*w are allowed: decode leaves the rest 0, and merge and mask_iou stop their walk
// where the shorter list ends.
void validate(const View& r, const char* fn);

// Encode one mask given by `get(i)` for pixel index i in column-major order (nonzero = foreground).
void encode_colmajor(const uint8_t* mask, uint64_t h, uint64_t w, Counts& out);
// Encode one mask stored row-major (h, w) with arbitrary strides (in bytes) into column-major runs.
void encode_strided(const uint8_t* mask, uint64_t h, uint64_t w, int64_t stride_y,
                    int64_t stride_x, Counts& out);
// Encode an h x w mask that is zero outside the window [x0, x0 + ww) x [y0, y0 + wh), whose pixels are
// given row-major at `win` (rows stride_y bytes apart). Reads only the window, which must lie inside
// the mask (refused otherwise).
void encode_window(const uint8_t* win, uint64_t wh, uint64_t ww, int64_t stride_y, uint64_t y0, uint64_t x0,
                   uint64_t h, uint64_t w, Counts& out);
// Write the mask into `out` (h*w bytes, column-major). Returns false when the counts overrun h*w;
// pixels past the last count are left 0.
bool decode_colmajor(const View& r, uint8_t* out);
// Number of foreground pixels.
uint64_t area(const View& r);
// Union (intersect=false) or intersection of n masks of one size; mismatched sizes give an empty
// 0x0 mask, as the COCO tools do.
void merge(const std::vector<View>& rs, bool intersect, uint64_t& h, uint64_t& w, Counts& out);
// Tight box [x, y, w, h] of the foreground (all zeros when the mask is empty).
void to_bbox(const View& r, double bb[4]);
// Rasterise a polygon of k points (xy interleaved) the COCO way: 5x upsampled boundary, rounded
// with (int)(5x+.5), sampled back at pixel centres.
void from_polygon(const double* xy, size_t k, uint64_t h, uint64_t w, Counts& out);
// Rasterise a box [x, y, w, h] (as its 4-corner polygon).
void from_bbox(const double bb[4], uint64_t h, uint64_t w, Counts& out);
// Compressed text <-> counts. from_string refuses a count longer than 7 characters; counts that
// decode to negative numbers wrap as in the COCO tools (validate() then refuses them).
std::string to_string(const uint32_t* cnts, size_t m);
void to_string(const uint32_t* cnts, size_t m, std::string& out);
void from_string(const char* s, size_t len, Counts& out);

// Box IoU of boxes [x, y, w, h] on continuous coordinates; with crowd the union is the detection area.
double box_iou(const double* d, const double* g, bool crowd);
// Mask IoU; dbb/gbb are the masks' boxes (to_bbox). Non-overlapping boxes give 0, a size mismatch -1,
// with crowd the union is the detection area.
double mask_iou(const View& d, const View& g, const double* dbb, const double* gbb, bool crowd);

}  // namespace rle
}  // namespace yoloseg
