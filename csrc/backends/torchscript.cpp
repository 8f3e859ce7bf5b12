// TorchScript backend: torch::jit::load + forward under InferenceMode; outputs kept alive in RawOutput.hold.
#include "torchscript.h"

#include <ATen/Parallel.h>
#include <torch/script.h>

#include <stdexcept>
#include <unordered_map>
#include <vector>

namespace yoloseg {

struct TorchScriptModel::Impl {
  std::string path;
  torch::jit::Module module;
  ModelInfo info;
  bool half_input = false;
};

namespace {

std::vector<torch::jit::IValue> elements(const torch::jit::IValue& v) {
  if (v.isTuple()) return v.toTupleRef().elements().vec();
  if (v.isList()) return v.toList().vec();
  if (v.isGenericDict()) {
    std::vector<torch::jit::IValue> out;
    for (const auto& kv : v.toGenericDict()) out.push_back(kv.value());
    return out;
  }
  return {v};
}

}  // namespace

TorchScriptModel::TorchScriptModel(const std::string& path) : impl_(std::make_unique<Impl>()) {
  impl_->path = path;
  std::unordered_map<std::string, std::string> extra{{"config.json", ""}, {"config.txt", ""}};
  try {
    impl_->module = torch::jit::load(path, torch::kCPU, extra);
  } catch (const c10::Error& e) {
    throw std::runtime_error(path + ": cannot load as a TorchScript model (" + e.what_without_backtrace() + ")");
  }
  impl_->module.eval();
  const std::string& meta = !extra["config.json"].empty() ? extra["config.json"] : extra["config.txt"];
  if (!meta.empty()) impl_->info = model_info_from_json(meta, path);
  if (impl_->info.end2end)
    throw std::runtime_error(path + ": an end-to-end export (NMS inside the graph); export the model without "
                                    "end2end=True for this pipeline");
  if (impl_->info.task != "segment")
    throw std::runtime_error(path + ": a '" + impl_->info.task + "' model; this pipeline runs segment models");
  for (const auto& p : impl_->module.parameters()) {
    impl_->half_input = p.scalar_type() == torch::kHalf;
    break;
  }
}

TorchScriptModel::~TorchScriptModel() = default;

const ModelInfo& TorchScriptModel::info() const { return impl_->info; }

void TorchScriptModel::set_num_threads(int n) {
  if (n < 1) throw std::invalid_argument("TorchScriptModel::set_num_threads: n must be >= 1");
  at::set_num_threads(n);
}

int TorchScriptModel::num_threads() { return at::get_num_threads(); }

void TorchScriptModel::run(const float* input, int64_t height, int64_t width, RawOutput& out) {
  const ModelInfo& mi = impl_->info;
  if (input == nullptr || height <= 0 || width <= 0)
    throw std::invalid_argument(impl_->path + ": run() needs a (3, h, w) input");
  if (!mi.dynamic && (height != mi.height || width != mi.width))
    throw std::invalid_argument(impl_->path + " was exported for " + std::to_string(mi.height) + "x" +
                                std::to_string(mi.width) + " inputs (dynamic=False), got " + std::to_string(height) +
                                "x" + std::to_string(width));
  if (mi.dynamic && (height % mi.stride || width % mi.stride))
    throw std::invalid_argument(impl_->path + ": input size " + std::to_string(height) + "x" + std::to_string(width) +
                                " must be a multiple of the stride " + std::to_string(mi.stride));
  c10::InferenceMode guard;
  // from_blob does not own `input`; the forward pass only reads it.
  torch::Tensor x = torch::from_blob(const_cast<float*>(input), {1, 3, height, width}, torch::kFloat32);
  if (impl_->half_input) x = x.to(torch::kHalf);
  std::vector<torch::jit::IValue> outs;
  try {
    outs = elements(impl_->module.forward({x}));
  } catch (const c10::Error& e) {
    throw std::runtime_error(impl_->path + ": forward failed (" + e.what_without_backtrace() + ")");
  }
  if (outs.size() == 2 && (outs[0].isTuple() || outs[0].isList())) outs = elements(outs[0]);  // ((pred, protos), extra)
  if (outs.size() < 2 || !outs[0].isTensor() || !outs[1].isTensor())
    throw std::runtime_error(impl_->path + ": expected the outputs (pred, protos)");
  torch::Tensor pred = outs[0].toTensor().to(torch::kFloat32).contiguous();
  torch::Tensor protos = outs[1].toTensor().to(torch::kFloat32).contiguous();
  if (pred.dim() != 3 || pred.size(0) != 1 || protos.dim() != 4 || protos.size(0) != 1 ||
      pred.size(1) < 5 + protos.size(1))
    throw std::runtime_error(impl_->path + ": outputs are not pred (1, 4+nc+nm, A) and protos (1, nm, h, w)");
  out.channels = pred.size(1), out.anchors = pred.size(2);
  out.nm = protos.size(1), out.mh = protos.size(2), out.mw = protos.size(3);
  out.pred = pred.data_ptr<float>();
  out.protos = protos.data_ptr<float>();
  out.hold = std::make_shared<std::pair<torch::Tensor, torch::Tensor>>(std::move(pred), std::move(protos));
}

}  // namespace yoloseg
