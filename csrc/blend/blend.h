// Argument contract of the blended-resampling kernels (CPU and CUDA).
#pragma once

#include "../common.h"

// The kernels every backend implements, as blend_up_fwd_<backend>, ... (ALAE_FAST_REGISTER_KERNELS).
#define ALAE_FAST_BLEND_KERNELS(X, backend) \
  X(blend_up_fwd, backend) X(blend_up_bwd, backend) X(blend_real_fwd, backend) \
  X(blend_down_fwd, backend) X(blend_down_bwd, backend)

namespace alae_fast {

// lerp(a, b, w) as torch.lerp evaluates it, exact at both ends.
template <typename T>
ALAE_HOST_DEVICE T blend_lerp(T a, T b, T w) {
  return w < T(0.5) ? a + w * (b - a) : b - (b - a) * (T(1) - w);
}

// A full-resolution activation that 2x2 resampling can halve.
inline void check_even_activation(const char* op, const char* name, const at::Tensor& t) {
  check_activation(op, name, t, t.device());
  check_index_range(op, name, t);
  TORCH_CHECK(t.size(2) % 2 == 0 && t.size(3) % 2 == 0, op, ": argument '", name,
              "' needs even H and W for 2x2 resampling, got ", t.size(2), "x", t.size(3));
}

inline void check_alpha(const char* op, double alpha) {
  TORCH_CHECK(alpha >= 0.0 && alpha <= 1.0, op, ": argument 'alpha' must be in [0, 1], got ", alpha);
}

// A leaky ReLU slope: finite and >= 0 (NaN fails the comparison too).
inline void check_slope(const char* op, double slope) {
  TORCH_CHECK(slope >= 0.0 && slope <= std::numeric_limits<double>::max(), op,
              ": argument 'slope' must be finite and >= 0, got ", slope);
}

// blend_up_fwd: low [N, C, H/2, W/2], high [N, C, H, W].
inline void check_blend_up_args(const char* op, const at::Tensor& low, const at::Tensor& high, double alpha) {
  check_even_activation(op, "high", high);
  const int64_t N = high.size(0), C = high.size(1), H = high.size(2), W = high.size(3);
  check_tensor(op, "low", low, high.device(), high.scalar_type(), {N, C, H / 2, W / 2}, "[N, C, H/2, W/2]");
  check_alpha(op, alpha);
}

// blend_up_bwd and blend_real_fwd: one full-resolution activation `name`.
inline void check_blend_full_args(const char* op, const char* name, const at::Tensor& t, double alpha) {
  check_even_activation(op, name, t);
  check_alpha(op, alpha);
}

// blend_down_fwd/bwd: img [N, K, H, W], weight [C, K] acc, bias [C] acc, and `name` ([N, C, H/2, W/2],
// img's dtype) which is `new` in the forward and `grad_y` in the backward.
inline void check_blend_down_args(const char* op, const at::Tensor& img, const at::Tensor& weight,
                                  const at::Tensor& bias, const char* name, const at::Tensor& half, double alpha,
                                  double slope) {
  check_even_activation(op, "img", img);
  check_activation(op, name, half, img.device());
  check_index_range(op, name, half);
  const int64_t N = img.size(0), K = img.size(1), H = img.size(2), W = img.size(3), C = half.size(1);
  const auto acc = acc_type_of(img);
  check_tensor(op, name, half, img.device(), img.scalar_type(), {N, C, H / 2, W / 2}, "[N, C, H/2, W/2]");
  check_tensor(op, "weight", weight, img.device(), acc, {C, K}, "[C, K]");
  check_tensor(op, "bias", bias, img.device(), acc, {C}, "[C]");
  check_alpha(op, alpha);
  check_slope(op, slope);
}

}  // namespace alae_fast
