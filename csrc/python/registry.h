// Kernel families register their pybind11 bindings here, so that adding a family never edits
// bindings.cpp:  static yoloseg::Registrar reg_nms("nms", init_nms);  in the family's .cpp file.
#pragma once
#include <pybind11/pybind11.h>

#include <utility>
#include <vector>

namespace yoloseg {

using InitFn = void (*)(pybind11::module_&);

inline std::vector<std::pair<const char*, InitFn>>& registered_families() {
  static std::vector<std::pair<const char*, InitFn>> families;
  return families;
}

struct Registrar {
  Registrar(const char* name, InitFn fn) { registered_families().emplace_back(name, fn); }
};

}  // namespace yoloseg
