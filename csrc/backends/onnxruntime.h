// ONNX Runtime backend (CMake target yoloseg_onnxruntime, built when ONNXRUNTIME_ROOT points at an onnxruntime
// release with include/ and lib/): runs a `yoloseg export format=onnx` file through the C API. onnxruntime
// headers stay inside onnxruntime.cpp.
#pragma once
#include <memory>
#include <string>

#include "model_info.h"

namespace yoloseg {

class OnnxModel {
 public:
  // Opens the file on the CPU with `threads` intra-op threads (0: onnxruntime's default); throws
  // std::runtime_error naming the file when it cannot be opened or is not a yoloseg segment export with raw
  // float32 outputs (end-to-end and half-precision exports are refused).
  explicit OnnxModel(const std::string& path, int threads = 0);
  ~OnnxModel();
  OnnxModel(const OnnxModel&) = delete;
  OnnxModel& operator=(const OnnxModel&) = delete;

  const ModelInfo& info() const;

  // input: (3, height, width) float32 from letterbox(); fills out with this image's outputs.
  void run(const float* input, int64_t height, int64_t width, RawOutput& out);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace yoloseg
