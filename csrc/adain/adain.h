// Argument contract of the modulated AdaIN kernels (CPU and CUDA).
#pragma once

#include "../common.h"

namespace alae_fast {

inline void check_adain_args(const char* op, const at::Tensor& x, const at::Tensor& noise,
                             const at::Tensor& noise_weight, const at::Tensor& bias, const at::Tensor& style) {
  check_activation(op, "x", x, x.device());
  check_index_range(op, "x", x);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const auto acc = acc_type_of(x);
  check_tensor(op, "noise", noise, x.device(), x.scalar_type(), {N, 1, H, W}, "[N, 1, H, W]");
  check_tensor(op, "noise_weight", noise_weight, x.device(), acc, {C}, "[C]");
  check_tensor(op, "bias", bias, x.device(), acc, {C}, "[C]");
  check_tensor(op, "style", style, x.device(), acc, {N, 2 * C}, "[N, 2C]");
}

}  // namespace alae_fast
