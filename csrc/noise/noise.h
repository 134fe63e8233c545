// Argument contract of the noise-injection kernels (CPU and CUDA).
#pragma once

#include <optional>

#include "../common.h"

namespace alae_fast {

inline void check_noise_args(const char* op, const at::Tensor& x, const at::Tensor& noise,
                             const at::Tensor& noise_weight, const std::optional<at::Tensor>& bias) {
  check_noised_activation(op, x, noise, noise_weight);
  if (bias.has_value()) check_tensor(op, "bias", *bias, x.device(), acc_type_of(x), {x.size(1)}, "[C]");
}

}  // namespace alae_fast
