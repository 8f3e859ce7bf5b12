// TorchScript backend (CMake target yoloseg_torch, option YOLOSEG_LIBTORCH): runs a `yoloseg export
// format=torchscript` file with libtorch. Torch headers stay inside torchscript.cpp, so code using this header
// compiles without them.
#pragma once
#include <memory>
#include <string>

#include "model_info.h"

namespace yoloseg {

class TorchScriptModel {
 public:
  // Loads the file on the CPU; throws std::runtime_error naming the file when it cannot be loaded or is not
  // a yoloseg segment export with raw outputs (end-to-end exports carry their own NMS).
  explicit TorchScriptModel(const std::string& path);
  ~TorchScriptModel();
  TorchScriptModel(const TorchScriptModel&) = delete;
  TorchScriptModel& operator=(const TorchScriptModel&) = delete;

  const ModelInfo& info() const;

  // input: (3, height, width) float32 from letterbox(); fills out with this image's outputs.
  void run(const float* input, int64_t height, int64_t width, RawOutput& out);

  // libtorch's intra-op thread count (process-wide, as torch.set_num_threads / torch.get_num_threads).
  static void set_num_threads(int n);
  static int num_threads();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace yoloseg
