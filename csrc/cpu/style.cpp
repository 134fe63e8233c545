// Style extraction on CPU: rows (n, c) batched per task, statistics in the accumulation type.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/sum.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>

#include "../style.h"
#include "vec_cpu.h"

namespace alae_fast {
namespace {

std::tuple<at::Tensor, at::Tensor> style_fwd_cpu(const at::Tensor& x,       // [N, C, H, W]
                                                 const at::Tensor& bias) {  // [C] acc
  check_style_args("style_fwd", x, bias);
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  auto y = at::empty_like(x);
  auto stats = at::empty({N, 2 * C}, bias.options());  // (mean | std)
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "style_fwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const acc_t* bp = bias.const_data_ptr<acc_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    acc_t* statp = stats.mutable_data_ptr<acc_t>();
    at::parallel_for(0, N * C, cpu::grain_rows(HW), [&](int64_t begin, int64_t end) {
      const acc_t slope = acc_t(kLeakySlope);
      // t: the activated row; xbuf: an acc_t copy of the x row for 16-bit inputs.
      auto buf = cpu::scratch<acc_t>(2 * HW);
      acc_t *t = buf.get(), *xbuf = t + HW;
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / C, c = row % C;
        const acc_t* xr = cpu::load_row(xp + row * HW, xbuf, HW);
        const acc_t b = bp[c];
        acc_t sum = 0;
        _Pragma("omp simd reduction(+ : sum)")
        for (int64_t i = 0; i < HW; ++i) {
          t[i] = cpu::leaky_v(xr[i] + b, slope);
          sum += t[i];
        }
        // Corrected two-pass statistics: the residual sum fixes the rounding of the first mean, so a
        // constant row gets mean == t and var == 0 exactly (its std gradient is then 0, as in the reference).
        const acc_t mean0 = sum / acc_t(HW);
        acc_t res = 0, sq = 0;
        _Pragma("omp simd reduction(+ : res, sq)")
        for (int64_t i = 0; i < HW; ++i) {
          res += t[i] - mean0;
          sq += (t[i] - mean0) * (t[i] - mean0);
        }
        const acc_t mean = mean0 + res / acc_t(HW);
        const acc_t var = std::max(acc_t(0), (sq - res * res / acc_t(HW)) / acc_t(HW));
        const acc_t rstd = acc_t(1) / std::sqrt(var + acc_t(kStyleEps));
        scalar_t* yr = yp + row * HW;
        _Pragma("omp simd")
        for (int64_t i = 0; i < HW; ++i) yr[i] = cpu::to_scalar<scalar_t>((t[i] - mean) * rstd);
        statp[n * 2 * C + c] = mean;
        statp[n * 2 * C + C + c] = std::sqrt(var);
      }
    });
  });
  return {y, stats};
}

std::tuple<at::Tensor, at::Tensor> style_bwd_cpu(const at::Tensor& grad_y,      // [N, C, H, W]
                                                 const at::Tensor& grad_stats,  // [N, 2C] acc
                                                 const at::Tensor& x,           // [N, C, H, W]
                                                 const at::Tensor& bias,        // [C] acc
                                                 const at::Tensor& stats) {     // [N, 2C] acc, (mean | std)
  check_style_args("style_bwd", x, bias);
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  check_tensor("style_bwd", "grad_y", grad_y, x.device(), x.scalar_type(), x.sizes().vec(), "[N, C, H, W]");
  check_tensor("style_bwd", "grad_stats", grad_stats, x.device(), bias.scalar_type(), {N, 2 * C}, "[N, 2C]");
  check_tensor("style_bwd", "stats", stats, x.device(), bias.scalar_type(), {N, 2 * C}, "[N, 2C]");
  auto grad_x = at::empty_like(x);
  // Per-(n, c) partial sums, reduced over N afterwards: deterministic, no atomics.
  auto partial_b = at::empty({N, C}, bias.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "style_bwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* gyp = grad_y.const_data_ptr<scalar_t>();
    const acc_t* gsp = grad_stats.const_data_ptr<acc_t>();
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const acc_t* bp = bias.const_data_ptr<acc_t>();
    const acc_t* statp = stats.const_data_ptr<acc_t>();
    scalar_t* gxp = grad_x.mutable_data_ptr<scalar_t>();
    acc_t* pb = partial_b.mutable_data_ptr<acc_t>();
    at::parallel_for(0, N * C, cpu::grain_rows(HW), [&](int64_t begin, int64_t end) {
      const acc_t slope = acc_t(kLeakySlope);
      // pre: the pre-activation row; xbuf, gbuf: acc_t copies of x and grad_y rows for 16-bit inputs.
      auto buf = cpu::scratch<acc_t>(3 * HW);
      acc_t *pre = buf.get(), *xbuf = pre + HW, *gbuf = xbuf + HW;
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / C, c = row % C;
        const acc_t* xr = cpu::load_row(xp + row * HW, xbuf, HW);
        const acc_t* gr = cpu::load_row(gyp + row * HW, gbuf, HW);
        const acc_t b = bp[c];
        const acc_t mean = statp[n * 2 * C + c], std = statp[n * 2 * C + C + c];
        const acc_t rstd = acc_t(1) / std::sqrt(std * std + acc_t(kStyleEps));
        acc_t sum_g = 0, sum_gx = 0;
        _Pragma("omp simd reduction(+ : sum_g, sum_gx)")
        for (int64_t i = 0; i < HW; ++i) {
          pre[i] = xr[i] + b;
          const acc_t xhat = (cpu::leaky_v(pre[i], slope) - mean) * rstd;
          sum_g += gr[i];
          sum_gx += gr[i] * xhat;
        }
        const acc_t mean_g = sum_g / acc_t(HW), rstd2_mean_gx = rstd * rstd * (sum_gx / acc_t(HW));
        // Gradients reaching t through the mean and the std outputs; d std is 0 where std is 0.
        const acc_t g_mean = gsp[n * 2 * C + c] / acc_t(HW);
        const acc_t g_std = std > acc_t(0) ? gsp[n * 2 * C + C + c] / (acc_t(HW) * std) : acc_t(0);
        acc_t sum_dpre = 0;
        scalar_t* gxr = gxp + row * HW;
        _Pragma("omp simd reduction(+ : sum_dpre)")
        for (int64_t i = 0; i < HW; ++i) {
          const acc_t centered = cpu::leaky_v(pre[i], slope) - mean;
          const acc_t dt = rstd * (gr[i] - mean_g) - centered * rstd2_mean_gx + g_mean + g_std * centered;
          const acc_t dpre = dt * cpu::leaky_grad_v(pre[i], slope);
          gxr[i] = cpu::to_scalar<scalar_t>(dpre);
          sum_dpre += dpre;
        }
        pb[row] = sum_dpre;
      }
    });
  });
  return {grad_x, partial_b.sum(0)};
}

}  // namespace

TORCH_LIBRARY_IMPL(alae_fast_C, CPU, m) {
  m.impl("style_fwd", &style_fwd_cpu);
  m.impl("style_bwd", &style_bwd_cpu);
}

}  // namespace alae_fast
