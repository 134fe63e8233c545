// Argument contract of the modulated AdaIN kernels (CPU and CUDA).
#pragma once

#include "../common.h"

// The kernels every backend implements, as adain_fwd_<backend>, ... (ALAE_FAST_REGISTER_KERNELS).
#define ALAE_FAST_ADAIN_KERNELS(X, backend) X(adain_fwd, backend) X(adain_bwd, backend)

namespace alae_fast {

inline void check_adain_args(const char* op, const at::Tensor& x, const at::Tensor& noise,
                             const at::Tensor& noise_weight, const at::Tensor& bias, const at::Tensor& style) {
  check_noised_activation(op, x, noise, noise_weight);
  check_tensor(op, "bias", bias, x.device(), acc_type_of(x), {x.size(1)}, "[C]");
  check_tensor(op, "style", style, x.device(), acc_type_of(x), {x.size(0), 2 * x.size(1)}, "[N, 2C]");
}

}  // namespace alae_fast
