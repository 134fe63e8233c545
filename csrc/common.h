// Argument checks and scalar helpers shared by the CPU and CUDA kernels.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <limits>
#include <string>
#include <vector>

// Registers the kernels <name>_<backend> of this translation unit as the DEVICE (CPU, CUDA)
// implementations of alae_fast_C::<name>, for each name of an op's list KERNELS (ALAE_FAST_<OP>_KERNELS
// in the op's header, the one place that names its kernels).
#define ALAE_FAST_IMPL_KERNEL(name, backend) m.impl(#name, &name##_##backend);
#define ALAE_FAST_REGISTER_KERNELS(KERNELS, DEVICE, backend) \
  TORCH_LIBRARY_IMPL(alae_fast_C, DEVICE, m) { KERNELS(ALAE_FAST_IMPL_KERNEL, backend) }

#ifdef __CUDACC__
#define ALAE_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define ALAE_HOST_DEVICE inline
#endif

namespace alae_fast {

inline std::string shape_str(c10::IntArrayRef shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// Accumulation dtype: fp64 for fp64 activations, else fp32.
inline at::ScalarType acc_type_of(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// An activation tensor: floating, `ndim`-D, contiguous, on `device`.
inline void check_activation(const char* op, const char* name, const at::Tensor& t, c10::Device device,
                             int64_t ndim = 4) {
  TORCH_CHECK(t.defined(), op, ": argument '", name, "' is undefined");
  TORCH_CHECK(t.device() == device, op, ": argument '", name, "' is on ", t.device(), ", expected ", device);
  auto dt = t.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kHalf || dt == at::kBFloat16 || dt == at::kDouble, op,
              ": argument '", name, "' must be float16/bfloat16/float32/float64, got ", dt);
  TORCH_CHECK(t.dim() == ndim, op, ": argument '", name, "' must be ", ndim, "-D, got shape ",
              shape_str(t.sizes()));
  TORCH_CHECK(t.is_contiguous(), op, ": argument '", name, "' must be contiguous (NCHW)");
}

// A tensor of exactly `shape` and `dtype`, contiguous, on `device`.
inline void check_tensor(const char* op, const char* name, const at::Tensor& t, c10::Device device,
                         at::ScalarType dtype, std::vector<int64_t> shape, const char* spec) {
  TORCH_CHECK(t.defined(), op, ": argument '", name, "' is undefined");
  TORCH_CHECK(t.device() == device, op, ": argument '", name, "' is on ", t.device(), ", expected ", device);
  TORCH_CHECK(t.scalar_type() == dtype, op, ": argument '", name, "' must have dtype ", dtype, ", got ",
              t.scalar_type());
  TORCH_CHECK(t.sizes() == c10::IntArrayRef(shape), op, ": argument '", name, "' must have shape ", spec, " = ",
              shape_str(shape), ", got ", shape_str(t.sizes()));
  TORCH_CHECK(t.is_contiguous(), op, ": argument '", name, "' must be contiguous");
}

// Kernels index with int32 where a tensor allows it; refuse what would overflow.
inline void check_index_range(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.numel() <= std::numeric_limits<int32_t>::max(), op, ": argument '", name, "' has ", t.numel(),
              " elements; at most 2^31-1 are supported");
}

// x [N, C, H, W] and the noise injected into it (adain, noise): noise [N, 1, H, W] of x's dtype, scaled
// per channel by noise_weight [C] acc.
inline void check_noised_activation(const char* op, const at::Tensor& x, const at::Tensor& noise,
                                    const at::Tensor& noise_weight) {
  check_activation(op, "x", x, x.device());
  check_index_range(op, "x", x);
  check_tensor(op, "noise", noise, x.device(), x.scalar_type(), {x.size(0), 1, x.size(2), x.size(3)}, "[N, 1, H, W]");
  check_tensor(op, "noise_weight", noise_weight, x.device(), acc_type_of(x), {x.size(1)}, "[C]");
}

template <typename T>
ALAE_HOST_DEVICE T leaky(T v, T slope) { return v > T(0) ? v : v * slope; }

// d leaky / d pre; at pre == 0 it is `slope`, as in torch.nn.functional.leaky_relu.
template <typename T>
ALAE_HOST_DEVICE T leaky_grad(T pre, T slope) { return pre > T(0) ? T(1) : slope; }

}  // namespace alae_fast
