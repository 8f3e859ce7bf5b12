// What an exported yoloseg model says about itself (the exporter's metadata: TorchScript's config.json extra
// file, ONNX metadata_props), read into a plain struct so a C++ program letterboxes exactly as `yoloseg predict`
// does for that file: to imgsz, padded to the next stride multiple for dynamic exports, to imgsz exactly otherwise.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "pipeline.h"

namespace yoloseg {

struct ModelInfo {
  int64_t height = 640, width = 640;  // imgsz
  int64_t stride = 32;
  bool dynamic = false;   // any stride-multiple input size; false: exactly height x width
  bool end2end = false;   // NMS inside the graph (not what postprocess() takes)
  bool half = false;
  std::string task = "segment";
  std::vector<std::string> names;  // class id -> name ("classN" where the file has none)

  // The letterbox `yoloseg predict` applies for this model (imgsz rounded up to the stride).
  LetterboxOptions letterbox_options() const;
};

// From the JSON object the exporter writes (config.json). `source` names the file in error messages.
ModelInfo model_info_from_json(const std::string& json, const std::string& source);

// From key -> value pairs whose values are JSON texts (ONNX metadata_props).
ModelInfo model_info_from_pairs(const std::vector<std::pair<std::string, std::string>>& pairs,
                                const std::string& source);

}  // namespace yoloseg

namespace yoloseg {

// A model's two outputs for one image, as postprocess() takes them: pred (channels, anchors) with
// channels = 4 + nc + nm, protos (nm, mh, mw). The pointers stay valid while `hold` is alive (the backend
// keeps its output tensors there; the next run() replaces them).
struct RawOutput {
  const float* pred = nullptr;
  int64_t channels = 0, anchors = 0;
  const float* protos = nullptr;
  int64_t nm = 0, mh = 0, mw = 0;
  std::shared_ptr<void> hold;

  int64_t nc() const { return channels - 4 - nm; }
};

}  // namespace yoloseg
