// ONNX Runtime backend through the C API (onnxruntime_c_api.h): one session, outputs kept alive in RawOutput.hold.
#include "onnxruntime.h"

#include <onnxruntime_c_api.h>

#include <stdexcept>
#include <utility>
#include <vector>

namespace yoloseg {
namespace {

const OrtApi& ort() {
  static const OrtApi* api = OrtGetApiBase()->GetApi(ORT_API_VERSION);
  if (api == nullptr) throw std::runtime_error("onnxruntime: the library is older than the headers built against");
  return *api;
}

void check(OrtStatus* status, const std::string& what) {
  if (status == nullptr) return;
  std::string msg = what + " (" + ort().GetErrorMessage(status) + ")";
  ort().ReleaseStatus(status);
  throw std::runtime_error(msg);
}

std::string take(OrtAllocator* alloc, char* s) {
  std::string out = s ? s : "";
  if (s) ort().AllocatorFree(alloc, s);
  return out;
}

}  // namespace

struct OnnxModel::Impl {
  std::string path;
  OrtEnv* env = nullptr;
  OrtSessionOptions* options = nullptr;
  OrtSession* session = nullptr;
  OrtMemoryInfo* memory = nullptr;
  std::string input_name;
  std::vector<std::string> output_names;  // pred, protos
  ModelInfo info;

  ~Impl() {
    if (memory) ort().ReleaseMemoryInfo(memory);
    if (session) ort().ReleaseSession(session);
    if (options) ort().ReleaseSessionOptions(options);
    if (env) ort().ReleaseEnv(env);
  }
};

OnnxModel::OnnxModel(const std::string& path, int threads) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.path = path;
  const OrtApi& api = ort();
  check(api.CreateEnv(ORT_LOGGING_LEVEL_WARNING, "yoloseg", &m.env), path + ": cannot start onnxruntime");
  check(api.CreateSessionOptions(&m.options), path + ": cannot create session options");
  if (threads > 0) check(api.SetIntraOpNumThreads(m.options, threads), path + ": bad thread count");
  check(api.SetSessionGraphOptimizationLevel(m.options, ORT_ENABLE_ALL), path + ": cannot set optimization level");
  check(api.CreateSession(m.env, path.c_str(), m.options, &m.session), path + ": cannot open as an ONNX model");
  check(api.CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault, &m.memory), path + ": no CPU memory info");

  OrtAllocator* alloc = nullptr;
  check(api.GetAllocatorWithDefaultOptions(&alloc), path + ": no allocator");
  size_t n_in = 0, n_out = 0;
  check(api.SessionGetInputCount(m.session, &n_in), path + ": cannot read inputs");
  check(api.SessionGetOutputCount(m.session, &n_out), path + ": cannot read outputs");
  if (n_in != 1 || n_out < 2) throw std::runtime_error(path + ": expected one input and the outputs (pred, protos)");
  char* name = nullptr;
  check(api.SessionGetInputName(m.session, 0, alloc, &name), path + ": cannot read the input name");
  m.input_name = take(alloc, name);
  for (size_t i = 0; i < n_out; ++i) {
    check(api.SessionGetOutputName(m.session, i, alloc, &name), path + ": cannot read an output name");
    m.output_names.push_back(take(alloc, name));
  }
  OrtTypeInfo* type = nullptr;
  check(api.SessionGetInputTypeInfo(m.session, 0, &type), path + ": cannot read the input type");
  const OrtTensorTypeAndShapeInfo* tensor = nullptr;
  ONNXTensorElementDataType elem = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  OrtStatus* st = api.CastTypeInfoToTensorInfo(type, &tensor);
  if (st == nullptr && tensor != nullptr) st = api.GetTensorElementType(tensor, &elem);
  api.ReleaseTypeInfo(type);
  check(st, path + ": cannot read the input type");
  if (elem != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
    throw std::runtime_error(path + ": the input is not float32 (half=True exports are not supported here)");

  OrtModelMetadata* meta = nullptr;
  check(api.SessionGetModelMetadata(m.session, &meta), path + ": cannot read the metadata");
  char** keys = nullptr;
  int64_t n_keys = 0;
  std::vector<std::pair<std::string, std::string>> pairs;
  st = api.ModelMetadataGetCustomMetadataMapKeys(meta, alloc, &keys, &n_keys);
  for (int64_t i = 0; st == nullptr && i < n_keys; ++i) {
    char* value = nullptr;
    st = api.ModelMetadataLookupCustomMetadataMap(meta, alloc, keys[i], &value);
    pairs.emplace_back(keys[i], value ? value : "");
    if (value) api.AllocatorFree(alloc, value);
  }
  for (int64_t i = 0; i < n_keys; ++i) api.AllocatorFree(alloc, keys[i]);
  if (keys) api.AllocatorFree(alloc, keys);
  api.ReleaseModelMetadata(meta);
  check(st, path + ": cannot read the metadata");
  m.info = model_info_from_pairs(pairs, path);
  if (m.info.end2end || (n_out == 5 && m.output_names[0] == "num_dets"))
    throw std::runtime_error(path + ": an end-to-end export (NMS inside the graph); export the model without "
                                    "end2end=True for this pipeline");
  if (m.info.task != "segment")
    throw std::runtime_error(path + ": a '" + m.info.task + "' model; this pipeline runs segment models");
}

OnnxModel::~OnnxModel() = default;

const ModelInfo& OnnxModel::info() const { return impl_->info; }

void OnnxModel::run(const float* input, int64_t height, int64_t width, RawOutput& out) {
  Impl& m = *impl_;
  const OrtApi& api = ort();
  if (input == nullptr || height <= 0 || width <= 0)
    throw std::invalid_argument(m.path + ": run() needs a (3, h, w) input");
  if (!m.info.dynamic && (height != m.info.height || width != m.info.width))
    throw std::invalid_argument(m.path + " was exported for " + std::to_string(m.info.height) + "x" +
                                std::to_string(m.info.width) + " inputs (dynamic=False), got " +
                                std::to_string(height) + "x" + std::to_string(width));
  const int64_t shape[4] = {1, 3, height, width};
  OrtValue* x = nullptr;
  check(api.CreateTensorWithDataAsOrtValue(m.memory, const_cast<float*>(input),
                                           static_cast<size_t>(3 * height * width) * sizeof(float), shape, 4,
                                           ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, &x),
        m.path + ": cannot wrap the input");
  const char* in_names[1] = {m.input_name.c_str()};
  const char* out_names[2] = {m.output_names[0].c_str(), m.output_names[1].c_str()};
  OrtValue* outs[2] = {nullptr, nullptr};
  OrtStatus* st = api.Run(m.session, nullptr, in_names, &x, 1, out_names, 2, outs);
  api.ReleaseValue(x);
  auto values = std::shared_ptr<OrtValue*>(new OrtValue*[2]{outs[0], outs[1]}, [](OrtValue** v) {
    for (int i = 0; i < 2; ++i)
      if (v[i]) ort().ReleaseValue(v[i]);
    delete[] v;
  });
  check(st, m.path + ": inference failed");
  int64_t dims[2][4] = {{0}};
  float* data[2] = {nullptr, nullptr};
  for (int k = 0; k < 2; ++k) {
    OrtTensorTypeAndShapeInfo* info = nullptr;
    check(api.GetTensorTypeAndShape(outs[k], &info), m.path + ": cannot read an output shape");
    size_t nd = 0;
    ONNXTensorElementDataType elem = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
    st = api.GetDimensionsCount(info, &nd);
    if (st == nullptr && nd == static_cast<size_t>(k == 0 ? 3 : 4)) st = api.GetDimensions(info, dims[k], nd);
    if (st == nullptr) st = api.GetTensorElementType(info, &elem);
    api.ReleaseTensorTypeAndShapeInfo(info);
    check(st, m.path + ": cannot read an output shape");
    if (nd != static_cast<size_t>(k == 0 ? 3 : 4) || elem != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || dims[k][0] != 1)
      throw std::runtime_error(m.path + ": outputs are not float32 pred (1, 4+nc+nm, A) and protos (1, nm, h, w)");
    check(api.GetTensorMutableData(outs[k], reinterpret_cast<void**>(&data[k])), m.path + ": cannot read an output");
  }
  if (dims[0][1] < 5 + dims[1][1]) throw std::runtime_error(m.path + ": pred has fewer channels than 4 + 1 + nm");
  out.pred = data[0], out.channels = dims[0][1], out.anchors = dims[0][2];
  out.protos = data[1], out.nm = dims[1][1], out.mh = dims[1][2], out.mw = dims[1][3];
  out.hold = values;
}

}  // namespace yoloseg
