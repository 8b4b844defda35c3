// The libtorch kernels that tch 0.24 does not bind: its generator leaves out the ops that
// update lists of tensors in place (the fused and foreach optimizer kernels). Each entry
// point takes tch's tensor handles (at::Tensor*), catches every C++ exception and copies
// its message into `err`, returning non-zero, so no exception crosses into Rust.

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/profiler_kineto.h>

#include <cstring>
#include <exception>
#include <vector>

#include "ffi.h"

using pgmld::report;
using pgmld::tensor_list;

extern "C" {

// torch.optim.AdamW(fused=True)'s update, amsgrad off: for every i, params[i] moves by
// its gradient grads[i] with the moments exp_avgs[i] / exp_avg_sqs[i] and the step count
// steps[i] (a float scalar tensor, already incremented for this update, as torch's
// optimizer does before calling the kernel). One kernel launch per parameter on the CPU,
// a few for the whole list on CUDA. With lr_tensor (a float scalar tensor on the
// parameters' device) the kernel reads the learning rate from it when it runs, so a CUDA
// graph that captured the update follows the schedule (torch's capturable lr); else `lr`.
int pgmld_fused_adamw(const at::Tensor *const *params, const at::Tensor *const *grads,
                      const at::Tensor *const *exp_avgs, const at::Tensor *const *exp_avg_sqs,
                      const at::Tensor *const *steps, size_t n, double lr,
                      const at::Tensor *lr_tensor, double beta1, double beta2,
                      double weight_decay, double eps, char *err, size_t err_len) {
  try {
    at::NoGradGuard no_grad;
    auto p = tensor_list(params, n);
    auto g = tensor_list(grads, n);
    auto m = tensor_list(exp_avgs, n);
    auto v = tensor_list(exp_avg_sqs, n);
    auto s = tensor_list(steps, n);
    std::vector<at::Tensor> no_max;
    if (lr_tensor != nullptr) {
      at::_fused_adamw_(p, g, m, v, no_max, s, *lr_tensor, beta1, beta2, weight_decay, eps,
                        /*amsgrad=*/false, /*maximize=*/false);
    } else {
      at::_fused_adamw_(p, g, m, v, no_max, s, lr, beta1, beta2, weight_decay, eps,
                        /*amsgrad=*/false, /*maximize=*/false);
    }
    return 0;
  } catch (const std::exception &e) {
    return report(e.what(), err, err_len);
  } catch (...) {
    return report("unknown C++ exception", err, err_len);
  }
}

// torch.nn.utils.clip_grad_norm_(foreach=True): the global L2 norm of the gradients
// (per-tensor norms by one _foreach_norm, then the norm of those), and when max_norm > 0
// every gradient scaled in place by min(1, max_norm / (norm + 1e-6)) with one
// _foreach_mul_. A few kernel launches on CUDA for the whole list instead of two per
// tensor, and no host sync: the scale stays a device tensor. *total receives a new
// at::Tensor (the norm, a 0-dim float tensor) that the caller owns.
int pgmld_clip_grad_norm(const at::Tensor *const *grads, size_t n, double max_norm,
                         void **total, char *err, size_t err_len) {
  try {
    at::NoGradGuard no_grad;
    auto g = tensor_list(grads, n);
    auto norms = at::_foreach_norm(g, 2);
    for (auto &norm : norms) {
      norm = norm.to(at::kFloat);  // gradients of several dtypes stack as float
    }
    auto norm = at::linalg_vector_norm(at::stack(norms), 2);
    if (max_norm > 0) {
      auto coef = at::clamp_max(at::reciprocal(norm + 1e-6) * max_norm, 1.0);
      at::_foreach_mul_(g, coef);
    }
    *total = new at::Tensor(std::move(norm));
    return 0;
  } catch (const std::exception &e) {
    return report(e.what(), err, err_len);
  } catch (...) {
    return report("unknown C++ exception", err, err_len);
  }
}

// Drops the gradients of `params` (torch's zero_grad(set_to_none=True), its default): the
// next backward pass stores its gradients instead of adding them to zeroed ones, which
// saves a zeroing and an addition per parameter (two kernel launches each on a GPU) and
// frees the gradients' memory between steps.
int pgmld_clear_grads(const at::Tensor *const *params, size_t n, char *err, size_t err_len) {
  PGMLD_TRY
  for (size_t i = 0; i < n; ++i) {
    params[i]->mutable_grad().reset();
  }
  return 0;
  PGMLD_CATCH
}

// torch.backends.cuda.matmul.fp32_precision and torch.backends.cudnn.conv.fp32_precision
// (what HF's `tf32` training argument sets; the new names of allow_tf32): whether float32
// matrix products and convolutions on Ampere and newer GPUs may use TensorFloat-32.
// Process-wide, as in PyTorch; no effect on the CPU. Each argument is an
// at::Float32Precision (0 none: inherit, 1 ieee, 2 tf32), or -1 to leave it. Returns the
// settings found, matmul | conv << 4, or -1 when libtorch refused (never throws). Only the
// new API is used: reading the legacy flags after it throws.
int pgmld_set_tf32(int matmul, int conv) {
  using at::Float32Backend, at::Float32Op, at::Float32Precision;
  try {
    auto &ctx = at::globalContext();
    int before = static_cast<int>(ctx.float32Precision(Float32Backend::CUDA, Float32Op::MATMUL)) |
                 static_cast<int>(ctx.float32Precision(Float32Backend::CUDA, Float32Op::CONV)) << 4;
    if (matmul >= 0) {
      ctx.setFloat32Precision(Float32Backend::CUDA, Float32Op::MATMUL,
                              static_cast<Float32Precision>(matmul));
    }
    if (conv >= 0) {
      ctx.setFloat32Precision(Float32Backend::CUDA, Float32Op::CONV,
                              static_cast<Float32Precision>(conv));
    }
    return before;
  } catch (...) {
    return -1;
  }
}

// Autocast on this thread (autocast state is thread-local in ATen): `device_type` is
// c10::DeviceType (0 CPU, 1 CUDA); when `enabled`, the ops autocast lists run in
// `dtype` (a c10::ScalarType, 15 = BFloat16) and the precision-sensitive ones (layer_norm,
// softmax, losses) in float32, as torch.autocast does. Returns whether it was enabled
// before, so the caller can restore it; leaving the last autocast region clears the cast
// cache, as torch.autocast's exit does.
int pgmld_set_autocast(int device_type, int enabled, int dtype) {
  auto device = static_cast<c10::DeviceType>(device_type);
  bool before = at::autocast::is_autocast_enabled(device);
  if (enabled != 0) {
    at::autocast::set_autocast_dtype(device, static_cast<c10::ScalarType>(dtype));
  }
  at::autocast::set_autocast_enabled(device, enabled != 0);
  if (enabled == 0 && before) {
    at::autocast::clear_cache();
  }
  return before ? 1 : 0;
}

// Whether autocast keeps the casts of weights it made until its region ends
// (torch.autocast's cache_enabled). Off while a CUDA graph is captured, as
// torch.cuda.graph's documentation asks: a cached cast would be made once in the capture and
// its memory left to the graph. Returns the setting found.
int pgmld_set_autocast_cache(int enabled) {
  bool before = at::autocast::is_autocast_cache_enabled();
  at::autocast::set_autocast_cache_enabled(enabled != 0);
  return before ? 1 : 0;
}

// torch.profiler for this process (Kineto): CPU ops, and with `cuda` the CUDA kernels and
// runtime calls CUPTI sees (every thread's). What the GPU rows of issue #18 need to say
// where a step's time goes (launch gaps, cast kernels, the slowest kernels).
int pgmld_profiler_start(int cuda, char *err, size_t err_len) {
  PGMLD_TRY
  using torch::profiler::impl::ActivityType;
  using torch::profiler::impl::ProfilerConfig;
  using torch::profiler::impl::ProfilerState;
  std::set<ActivityType> activities{ActivityType::CPU};
  if (cuda != 0) {
    activities.insert(ActivityType::CUDA);
  }
  // Input shapes too: they tell a 0-dim scalar's conversion (no kernel on a GPU) from a
  // tensor's (bench/tune/gpu/trace_summary.py).
  ProfilerConfig config(ProfilerState::KINETO, /*report_input_shapes=*/true);
  torch::autograd::profiler::prepareProfiler(config, activities);
  torch::autograd::profiler::enableProfiler(config, activities);
  return 0;
  PGMLD_CATCH
}

// Stops what pgmld_profiler_start started and writes the Chrome trace (JSON) to `path`;
// a null `path` discards it.
int pgmld_profiler_stop(const char *path, char *err, size_t err_len) {
  PGMLD_TRY
  auto result = torch::autograd::profiler::disableProfiler();
  if (path != nullptr) {
    result->save(path);
  }
  return 0;
  PGMLD_CATCH
}

}  // extern "C"
