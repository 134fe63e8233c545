// Noise injection on CPU: one task per (n, c) row.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include "../noise.h"

namespace alae_fast {
namespace {

at::Tensor noise_fwd_cpu(const at::Tensor& x,                       // [N, C, H, W]
                         const at::Tensor& noise,                   // [N, 1, H, W]
                         const at::Tensor& noise_weight,            // [C] acc
                         const std::optional<at::Tensor>& bias,     // [C] acc, or None
                         bool act) {
  check_noise_args("noise_fwd", x, noise, noise_weight, bias);
  const int64_t C = x.size(1), HW = x.size(2) * x.size(3);
  auto y = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "noise_fwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* np = noise.const_data_ptr<scalar_t>();
    const acc_t* wnp = noise_weight.const_data_ptr<acc_t>();
    const acc_t* bp = bias.has_value() ? bias->const_data_ptr<acc_t>() : nullptr;
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    const acc_t slope = act ? acc_t(kLeakySlope) : acc_t(1);
    at::parallel_for(0, x.size(0) * C, 1, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / C, c = row % C;
        const scalar_t* xr = xp + row * HW;
        const scalar_t* nr = np + n * HW;
        const acc_t wn = wnp[c], b = bp ? bp[c] : acc_t(0);
        scalar_t* yr = yp + row * HW;
        for (int64_t i = 0; i < HW; ++i) yr[i] = scalar_t(leaky(acc_t(xr[i]) + wn * acc_t(nr[i]) + b, slope));
      }
    });
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> noise_bwd_cpu(
    const at::Tensor& grad_y,                // [N, C, H, W]
    const at::Tensor& x,                     // [N, C, H, W]
    const at::Tensor& noise,                 // [N, 1, H, W]
    const at::Tensor& noise_weight,          // [C] acc
    const std::optional<at::Tensor>& bias,   // [C] acc, or None
    bool act) {
  check_noise_args("noise_bwd", x, noise, noise_weight, bias);
  check_tensor("noise_bwd", "grad_y", grad_y, x.device(), x.scalar_type(), x.sizes().vec(), "[N, C, H, W]");
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  auto grad_x = at::empty_like(x);
  // Per-(n, c) partial sums, reduced over N afterwards: deterministic, no atomics.
  auto partial_wn = at::empty({N, C}, noise_weight.options());
  auto partial_b = at::empty({N, C}, noise_weight.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "noise_bwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* gyp = grad_y.const_data_ptr<scalar_t>();
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* np = noise.const_data_ptr<scalar_t>();
    const acc_t* wnp = noise_weight.const_data_ptr<acc_t>();
    const acc_t* bp = bias.has_value() ? bias->const_data_ptr<acc_t>() : nullptr;
    scalar_t* gxp = grad_x.mutable_data_ptr<scalar_t>();
    acc_t* pwn = partial_wn.mutable_data_ptr<acc_t>();
    acc_t* pb = partial_b.mutable_data_ptr<acc_t>();
    const acc_t slope = act ? acc_t(kLeakySlope) : acc_t(1);
    at::parallel_for(0, N * C, 1, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / C, c = row % C;
        const scalar_t* xr = xp + row * HW;
        const scalar_t* gr = gyp + row * HW;
        const scalar_t* nr = np + n * HW;
        const acc_t wn = wnp[c], b = bp ? bp[c] : acc_t(0);
        scalar_t* gxr = gxp + row * HW;
        acc_t sum_dpre = 0, sum_dpre_noise = 0;
        for (int64_t i = 0; i < HW; ++i) {
          const acc_t pre = acc_t(xr[i]) + wn * acc_t(nr[i]) + b;
          const acc_t dpre = acc_t(gr[i]) * leaky_grad(pre, slope);
          gxr[i] = scalar_t(dpre);
          sum_dpre += dpre;
          sum_dpre_noise += dpre * acc_t(nr[i]);
        }
        pb[row] = sum_dpre;
        pwn[row] = sum_dpre_noise;
      }
    });
  });
  auto grad_bias = bias.has_value() ? partial_b.sum(0) : at::zeros_like(noise_weight);
  return {grad_x, partial_wn.sum(0), grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(alae_fast_C, CPU, m) {
  m.impl("noise_fwd", &noise_fwd_cpu);
  m.impl("noise_bwd", &noise_bwd_cpu);
}

}  // namespace alae_fast
