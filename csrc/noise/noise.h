// Argument contract of the noise-injection kernels (CPU and CUDA).
#pragma once

#include <optional>

#include "../common.h"

namespace alae_fast {

inline void check_noise_args(const char* op, const at::Tensor& x, const at::Tensor& noise,
                             const at::Tensor& noise_weight, const std::optional<at::Tensor>& bias) {
  check_activation(op, "x", x, x.device());
  check_index_range(op, "x", x);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const auto acc = acc_type_of(x);
  check_tensor(op, "noise", noise, x.device(), x.scalar_type(), {N, 1, H, W}, "[N, 1, H, W]");
  check_tensor(op, "noise_weight", noise_weight, x.device(), acc, {C}, "[C]");
  if (bias.has_value()) check_tensor(op, "bias", *bias, x.device(), acc, {C}, "[C]");
}

}  // namespace alae_fast
