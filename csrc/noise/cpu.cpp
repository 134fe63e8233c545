// Noise injection on CPU: rows (n, c) batched per task.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include "noise.h"
#include "../cpu_vec.h"

namespace alae_fast {
namespace {

at::Tensor noise_fwd_cpu(const at::Tensor& x,                       // [N, C, H, W]
                         const at::Tensor& noise,                   // [N, 1, H, W]
                         const at::Tensor& noise_weight,            // [C] acc
                         const std::optional<at::Tensor>& bias,     // [C] acc, or None
                         bool act, double leaky_slope) {
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
    at::parallel_for(0, x.size(0) * C, cpu::grain_rows(HW), [&](int64_t begin, int64_t end) {
      const acc_t slope = act ? acc_t(leaky_slope) : acc_t(1);
      // xbuf, nbuf: acc_t copies of x and noise rows for 16-bit inputs.
      auto buf = cpu::scratch<acc_t>(2 * HW);
      acc_t *xbuf = buf.get(), *nbuf = xbuf + HW;
      const acc_t* nr = nullptr;
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / C, c = row % C;
        if (nr == nullptr || c == 0) nr = cpu::load_row(np + n * HW, nbuf, HW);
        const acc_t* xr = cpu::load_row(xp + row * HW, xbuf, HW);
        const acc_t wn = wnp[c], b = bp ? bp[c] : acc_t(0);
        scalar_t* yr = yp + row * HW;
        _Pragma("omp simd")
        for (int64_t i = 0; i < HW; ++i) yr[i] = cpu::to_scalar<scalar_t>(cpu::leaky_v(xr[i] + wn * nr[i] + b, slope));
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
    bool act, double leaky_slope) {
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
    at::parallel_for(0, N * C, cpu::grain_rows(HW), [&](int64_t begin, int64_t end) {
      const acc_t slope = act ? acc_t(leaky_slope) : acc_t(1);
      // xbuf, gbuf, nbuf: acc_t copies of x, grad_y and noise rows for 16-bit inputs.
      auto buf = cpu::scratch<acc_t>(3 * HW);
      acc_t *xbuf = buf.get(), *gbuf = xbuf + HW, *nbuf = gbuf + HW;
      const acc_t* nr = nullptr;
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / C, c = row % C;
        if (nr == nullptr || c == 0) nr = cpu::load_row(np + n * HW, nbuf, HW);
        const acc_t* xr = cpu::load_row(xp + row * HW, xbuf, HW);
        const acc_t* gr = cpu::load_row(gyp + row * HW, gbuf, HW);
        const acc_t wn = wnp[c], b = bp ? bp[c] : acc_t(0);
        scalar_t* gxr = gxp + row * HW;
        acc_t sum_dpre = 0, sum_dpre_noise = 0;
        _Pragma("omp simd reduction(+ : sum_dpre, sum_dpre_noise)")
        for (int64_t i = 0; i < HW; ++i) {
          const acc_t dpre = gr[i] * cpu::leaky_grad_v(xr[i] + wn * nr[i] + b, slope);
          gxr[i] = cpu::to_scalar<scalar_t>(dpre);
          sum_dpre += dpre;
          sum_dpre_noise += dpre * nr[i];
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
