// Argument contract of the noise-injection kernels (CPU and CUDA).
#pragma once

#include <optional>

#include "../common.h"

// The kernels every backend implements, as noise_fwd_<backend>, ... (ALAE_FAST_REGISTER_KERNELS).
#define ALAE_FAST_NOISE_KERNELS(X, backend) X(noise_fwd, backend) X(noise_bwd, backend)

namespace alae_fast {

inline void check_noise_args(const char* op, const at::Tensor& x, const at::Tensor& noise,
                             const at::Tensor& noise_weight, const std::optional<at::Tensor>& bias) {
  check_noised_activation(op, x, noise, noise_weight);
  if (bias.has_value()) check_tensor(op, "bias", *bias, x.device(), acc_type_of(x), {x.size(1)}, "[C]");
}

}  // namespace alae_fast
