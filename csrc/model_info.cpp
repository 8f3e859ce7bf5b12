// Exporter metadata -> ModelInfo (model_info.h), read with the JSON cursor of coco_json.h.
#include "model_info.h"

#include <stdexcept>

#include "coco_json.h"

namespace yoloseg {
namespace {

bool truthy(coco::Cursor& c) {
  if (c.peek() == '"') {  // "true" / "1" written as text
    std::string buf;
    const std::string_view s = c.string(buf);
    return s == "true" || s == "True" || s == "1" || s == "yes" || s == "on";
  }
  const coco::Number n = c.number();  // true / false / a number (null: false)
  return n.d != 0;
}

int64_t integer(coco::Cursor& c, const std::string& key, const std::string& source) {
  const coco::Number n = c.number();
  if (!n.valid || !n.is_int) throw std::invalid_argument(source + ": metadata '" + key + "' is not an integer");
  return n.i;
}

// One key's value at the cursor into info.
void read_value(coco::Cursor& c, std::string_view key, ModelInfo& info, const std::string& source) {
  const std::string k(key);
  if (key == "imgsz") {
    if (c.peek() == '[') {
      c.expect('[');
      std::vector<int64_t> v;
      bool first = true;
      while (c.next_in_array(first)) v.push_back(integer(c, k, source));
      if (v.size() != 1 && v.size() != 2) throw std::invalid_argument(source + ": metadata 'imgsz' must be [h, w]");
      info.height = v[0];
      info.width = v.back();
    } else {
      info.height = info.width = integer(c, k, source);
    }
    if (info.height <= 0 || info.width <= 0)
      throw std::invalid_argument(source + ": metadata 'imgsz' must be positive");
  } else if (key == "stride") {
    info.stride = integer(c, k, source);
    if (info.stride <= 0) throw std::invalid_argument(source + ": metadata 'stride' must be positive");
  } else if (key == "dynamic") {
    info.dynamic = truthy(c);
  } else if (key == "end2end") {
    info.end2end = truthy(c);
  } else if (key == "half") {
    info.half = truthy(c);
  } else if (key == "task" && c.peek() == '"') {
    std::string buf;
    info.task = std::string(c.string(buf));
  } else if (key == "names" && c.peek() == '{') {
    c.expect('{');
    bool first = true;
    std::string_view id;
    std::string buf;
    while (c.next_key(first, id)) {
      int64_t i = -1;
      try {
        i = std::stoll(std::string(id));
      } catch (const std::exception&) {
        throw std::invalid_argument(source + ": metadata 'names' has a non-integer key");
      }
      if (i < 0 || i > 100000) throw std::invalid_argument(source + ": metadata 'names' has a bad class id");
      if (static_cast<int64_t>(info.names.size()) <= i) info.names.resize(static_cast<size_t>(i + 1));
      info.names[static_cast<size_t>(i)] = std::string(c.string(buf));
    }
    for (size_t i = 0; i < info.names.size(); ++i)
      if (info.names[i].empty()) info.names[i] = "class" + std::to_string(i);
  } else {
    c.skip();
  }
}

}  // namespace

LetterboxOptions ModelInfo::letterbox_options() const {
  LetterboxOptions o;
  o.stride = stride;
  o.auto_pad = dynamic;
  o.height = dynamic ? (height + stride - 1) / stride * stride : height;
  o.width = dynamic ? (width + stride - 1) / stride * stride : width;
  return o;
}

ModelInfo model_info_from_json(const std::string& json, const std::string& source) {
  ModelInfo info;
  coco::Cursor c(json.data(), json.size(), source.c_str());
  c.expect('{');
  bool first = true;
  std::string_view key;
  while (c.next_key(first, key)) read_value(c, key, info, source);
  return info;
}

ModelInfo model_info_from_pairs(const std::vector<std::pair<std::string, std::string>>& pairs,
                                const std::string& source) {
  ModelInfo info;
  for (const auto& [key, text] : pairs) {
    try {
      coco::Cursor c(text.data(), text.size(), source.c_str());
      read_value(c, key, info, source);
    } catch (const std::invalid_argument&) {  // a value stored as plain text rather than JSON
      if (key == "task") {
        info.task = text;
      } else if (key == "dynamic" || key == "end2end" || key == "half") {
        (key == "dynamic" ? info.dynamic : key == "end2end" ? info.end2end : info.half) =
            text == "true" || text == "True" || text == "1";
      } else {
        throw;
      }
    }
  }
  return info;
}

}  // namespace yoloseg
