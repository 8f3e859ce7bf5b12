// The whole YOLO-seg predict path around the network, on raw buffers (no torch, no Python, no OpenCV):
//
//   image (BGR uint8)  --letterbox()-->  input (3, H, W) float32 RGB in [0, 1]  --your model-->
//   pred (4 + nc + nm, A), protos (nm, H/4, W/4)  --postprocess()-->  Detections
//
// letterbox() is yoloseg.data.LetterBox followed by the predictor's BGR->RGB and /255: its pixels equal
// cv2.resize(INTER_LINEAR) + cv2.copyMakeBorder on 8-bit images, byte for byte. postprocess() is what
// `yoloseg predict` runs after the forward pass on the CPU (yoloseg.engine.predictor.segment_postprocess
// calls it): best class per anchor, confidence filter, per-class NMS, boxes mapped to the original image,
// masks decoded into packed box crops, empty masks dropped, optional polygons. Thread-safe: no global state.
#pragma once
#include <cstdint>
#include <vector>

namespace yoloseg {

// Where an image of src_h x src_w sits in the network input of dst_h x dst_w: resized to new_h x new_w
// (one scale, `ratio`, for both axes), top/left padding above and left of it.
struct Letterbox {
  int64_t src_h = 0, src_w = 0;
  int64_t dst_h = 0, dst_w = 0;
  int64_t new_h = 0, new_w = 0;
  int64_t top = 0, left = 0;
  double ratio = 1.0;
};

struct LetterboxOptions {
  int64_t height = 640, width = 640;  // target size (the model's imgsz)
  bool auto_pad = true;  // pad only up to the next multiple of stride (dynamic models); false: to height x width
  int64_t stride = 32;
  bool scaleup = true;   // false: never enlarge (ratio <= 1)
  uint8_t pad_value = 114;
};

// The geometry alone (no pixels): allocate 3 * dst_h * dst_w floats for letterbox() from it.
Letterbox letterbox_geometry(int64_t src_h, int64_t src_w, const LetterboxOptions& opt);

// The geometry recovered from the two shapes alone, as yoloseg.ops.scale_boxes assumes it (centred padding,
// gain = min(dst_h / src_h, dst_w / src_w)). For any centred letterbox it equals letterbox_geometry's.
Letterbox letterbox_from_shapes(int64_t src_h, int64_t src_w, int64_t dst_h, int64_t dst_w);

// bgr: src_h x src_w x 3 uint8, rows `row_stride` bytes apart (>= 3 * src_w). out: 3 * dst_h * dst_w floats
// (planes R, G, B), written whole. Returns the geometry. Throws std::invalid_argument on bad sizes.
Letterbox letterbox(const uint8_t* bgr, int64_t src_h, int64_t src_w, int64_t row_stride,
                    const LetterboxOptions& opt, float* out, int nthreads = 1);

// Same resize + pad into a caller buffer of dst_h x dst_w x 3 uint8 BGR (what cv2 gives before the
// conversion to float); the geometry `lb` comes from letterbox_geometry().
void letterbox_u8(const uint8_t* bgr, int64_t src_h, int64_t src_w, int64_t row_stride, const Letterbox& lb,
                  uint8_t pad_value, uint8_t* out, int nthreads = 1);

enum class Polygons : int { kNone = 0, kLargest = 1, kAll = 2 };

struct PostprocessOptions {
  float conf = 0.25f;                // keep scores > conf
  float iou = 0.7f;                  // NMS: drop IoU > iou with a kept, higher-scored box
  int64_t max_det = 300;
  bool agnostic = false;             // NMS across classes
  std::vector<int64_t> classes;      // keep only these class ids (empty: all)
  bool retina_masks = true;          // masks at the original image size; false: at the network input size
  Polygons polygons = Polygons::kNone;  // kLargest: the largest outer contour; kAll: all, joined into one
  int nthreads = 1;
};

// n detections, by descending score. Boxes are x1, y1, x2, y2 in original-image pixels (clipped).
// Masks live on a mask_h x mask_w grid (the original image with retina_masks, else the network input) as
// packed crops: mask i is the (y1 - y0) x (x1 - x0) uint8 {0, 1} block at crops[offsets[i]] covering
// regions[i] = [x0, y0, x1, y1) and is zero elsewhere; windows[i] = [x0, y0, x1, y1) of its set pixels
// (never empty: detections whose mask is empty are dropped). polygons[i] = x0, y0, x1, y1, ... in
// original-image pixels (filled when asked for).
struct Detections {
  int64_t mask_h = 0, mask_w = 0;
  std::vector<float> boxes;       // (n, 4)
  std::vector<float> scores;      // (n,)
  std::vector<int64_t> classes;   // (n,)
  std::vector<uint8_t> crops;
  std::vector<int64_t> regions;   // (n, 4)
  std::vector<int64_t> offsets;   // (n,)
  std::vector<int64_t> windows;   // (n, 4)
  std::vector<std::vector<float>> polygons;

  int64_t size() const { return static_cast<int64_t>(scores.size()); }
  // Set pixels of mask i.
  int64_t mask_area(int64_t i) const;
  // Mask i as a dense mask_h x mask_w uint8 {0, 1} image, rows `stride` bytes apart (written whole).
  void mask_dense(int64_t i, uint8_t* out, int64_t stride) const;
};

// pred: (4 + nc + nm, anchors) float32, row-major (the model's first output for one image): box cx, cy, w, h
// in input pixels, nc class scores, nm mask coefficients. protos: (nm, mh, mw) float32 (its second output).
// lb: the letterbox that made the input (dst_h x dst_w; the protos are its 1/4 grid).
// Throws std::invalid_argument on inconsistent sizes or non-finite boxes of candidates.
Detections postprocess(const float* pred, int64_t nc, int64_t nm, int64_t anchors, const float* protos,
                       int64_t mh, int64_t mw, const Letterbox& lb, const PostprocessOptions& opt);

}  // namespace yoloseg
