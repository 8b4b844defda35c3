// What every entry point of pgmld's C++ (shim.cpp, dist.cpp, and the NCCL plugin nccl.cpp)
// needs at the C boundary: tch's tensor handles as a vector, and a caught exception's message
// copied into the caller's buffer, so no exception crosses into Rust.
#pragma once

#include <ATen/ATen.h>

#include <cstddef>
#include <cstring>
#include <vector>

namespace pgmld {

// Second handles to the same tensors (results written in place land in the caller's).
inline std::vector<at::Tensor> tensor_list(const at::Tensor *const *tensors, size_t n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    out.push_back(*tensors[i]);
  }
  return out;
}

// Copies `what` into err (NUL-terminated, truncated to err_len) and returns 1, the
// entry points' failure status.
inline int report(const char *what, char *err, size_t err_len) {
  if (err != nullptr && err_len > 0) {
    std::strncpy(err, what, err_len - 1);
    err[err_len - 1] = '\0';
  }
  return 1;
}

}  // namespace pgmld

// An entry point's body between these: any C++ exception becomes its message in `err` and
// the failure status 1 (the function must have `char *err, size_t err_len` parameters).
#define PGMLD_TRY try {
#define PGMLD_CATCH                                       \
  }                                                       \
  catch (const std::exception &e) {                       \
    return pgmld::report(e.what(), err, err_len);         \
  }                                                       \
  catch (...) {                                           \
    return pgmld::report("unknown C++ exception", err, err_len); \
  }
