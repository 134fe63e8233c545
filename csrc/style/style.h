// Argument contract of the style-extraction kernels (CPU and CUDA).
#pragma once

#include "../common.h"

// The kernels every backend implements, as style_fwd_<backend>, ... (ALAE_FAST_REGISTER_KERNELS).
#define ALAE_FAST_STYLE_KERNELS(X, backend) X(style_fwd, backend) X(style_bwd, backend) X(style_bwd2, backend)

namespace alae_fast {

inline void check_style_args(const char* op, const at::Tensor& x, const at::Tensor& bias) {
  check_activation(op, "x", x, x.device());
  check_index_range(op, "x", x);
  TORCH_CHECK(x.size(2) * x.size(3) > 0, op, ": argument 'x' has no pixels (H = ", x.size(2), ", W = ", x.size(3),
              "); the per-row mean and std are undefined, so H*W must be at least 1");
  check_tensor(op, "bias", bias, x.device(), acc_type_of(x), {x.size(1)}, "[C]");
}

}  // namespace alae_fast
