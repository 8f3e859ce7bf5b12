// The kernels' own error type and the helpers every entry point uses to check its arguments.
//
// Every public function of the library (nms.h, masks.h, polygons.h, rle.h, coco_eval.h) checks its
// arguments before it touches a buffer and throws yoloseg::Error for anything it cannot process:
// null buffers with a non-zero count, negative or absurd sizes, counts whose products overflow,
// non-finite boxes, buffers that do not match each other. Error derives from std::invalid_argument,
// so existing `catch (const std::invalid_argument&)` sites keep working; function() and argument()
// name where the problem is, what() reads "<function>: <argument> <problem>".
//
// No exception ever leaves an OpenMP region: parallel loops run their body through ParallelErrors,
// which keeps the first exception thrown by any thread and rethrows it after the region has ended.
#pragma once

#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <string>

namespace yoloseg {

class Error : public std::invalid_argument {
 public:
  Error(std::string function, std::string argument, const std::string& problem)
      : std::invalid_argument(function + ": " + (argument.empty() ? "" : argument + " ") + problem),
        function_(std::move(function)),
        argument_(std::move(argument)) {}
  // The kernel that refused ("nms", "decode_masks", "rle_decode", ...).
  const std::string& function() const noexcept { return function_; }
  // The argument at fault ("boxes", "out_h", ...); empty when the problem is not one argument's.
  const std::string& argument() const noexcept { return argument_; }

 private:
  std::string function_, argument_;
};

// Largest side (rows or columns) any kernel accepts for an image, mask or prototype grid: 2^24
// pixels. Larger sizes are refused as absurd before any allocation or index arithmetic.
constexpr int64_t kMaxSide = int64_t{1} << 24;

// Thread counts the kernels accept: values below 1 run serially, values above kMaxThreads are capped.
constexpr int kMaxThreads = 256;
inline int clamp_threads(int nthreads) { return nthreads < 1 ? 1 : (nthreads > kMaxThreads ? kMaxThreads : nthreads); }

namespace check {

[[noreturn]] inline void fail(const char* fn, const char* arg, const std::string& problem) {
  throw Error(fn, arg, problem);
}

inline void not_null(const void* p, int64_t count, const char* fn, const char* arg) {
  if (p == nullptr && count > 0) fail(fn, arg, "is a null buffer for " + std::to_string(count) + " elements");
}

inline void count(int64_t n, const char* fn, const char* arg) {
  if (n < 0) fail(fn, arg, "must be >= 0, got " + std::to_string(n));
}

inline void side(int64_t v, const char* fn, const char* arg, bool allow_zero = false) {
  if (v < (allow_zero ? 0 : 1) || v > kMaxSide)
    fail(fn, arg,
         std::string("must be in [") + (allow_zero ? "0" : "1") + ", " + std::to_string(kMaxSide) + "], got " +
             std::to_string(v));
}

// a * b for non-negative a, b; throws when the product does not fit in int64.
inline int64_t mul(int64_t a, int64_t b, const char* fn, const char* what) {
  if (a < 0 || b < 0 || (a != 0 && b > std::numeric_limits<int64_t>::max() / a))
    fail(fn, what, "overflows a 64-bit count");
  return a * b;
}

// a + b for non-negative a, b; throws when the sum does not fit in int64.
inline int64_t add(int64_t a, int64_t b, const char* fn, const char* what) {
  if (a < 0 || b < 0 || a > std::numeric_limits<int64_t>::max() - b) fail(fn, what, "overflows a 64-bit count");
  return a + b;
}

// Every value of x[0 .. n) finite (allow_inf: only NaN refused).
template <typename T>
inline void finite(const T* x, int64_t n, const char* fn, const char* arg, bool allow_inf = false) {
  for (int64_t i = 0; i < n; ++i) {
    const T v = x[i];
    if (allow_inf ? std::isnan(v) : !std::isfinite(v))
      fail(fn, arg, allow_inf ? "contains NaN values" : "contains NaN or infinite values");
  }
}

}  // namespace check

// First exception of a parallel loop, rethrown on the calling thread after the region:
//   ParallelErrors errs;
//   #pragma omp parallel for
//   for (...) errs.run([&] { body(i); });
//   errs.rethrow();
class ParallelErrors {
 public:
  template <typename F>
  void run(F&& f) noexcept {
    if (failed_.load(std::memory_order_relaxed)) return;  // skip work whose result is thrown away
    try {
      f();
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!first_) first_ = std::current_exception();
      failed_.store(true, std::memory_order_relaxed);
    }
  }
  void rethrow() {
    if (first_) std::rethrow_exception(first_);
  }

 private:
  std::mutex mu_;
  std::exception_ptr first_;
  std::atomic<bool> failed_{false};
};

}  // namespace yoloseg
