// Modulated AdaIN on CPU: rows (n, c) batched per task, statistics in the accumulation type.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/sum.h>
#include <torch/library.h>

#include <cmath>

#include "adain.h"
#include "../cpu_vec.h"

namespace alae_fast {
namespace {

std::tuple<at::Tensor, at::Tensor> adain_fwd_cpu(const at::Tensor& x,             // [N, C, H, W]
                                                 const at::Tensor& noise,         // [N, 1, H, W]
                                                 const at::Tensor& noise_weight,  // [C] acc
                                                 const at::Tensor& bias,          // [C] acc
                                                 const at::Tensor& style,         // [N, 2C] acc
                                                 double eps, double leaky_slope) {
  check_adain_args("adain_fwd", x, noise, noise_weight, bias, style);
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  auto y = at::empty_like(x);
  auto stats = at::empty({N, 2 * C}, style.options());  // (mean | rstd)
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "adain_fwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* np = noise.const_data_ptr<scalar_t>();
    const acc_t* wnp = noise_weight.const_data_ptr<acc_t>();
    const acc_t* bp = bias.const_data_ptr<acc_t>();
    const acc_t* sp = style.const_data_ptr<acc_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    acc_t* statp = stats.mutable_data_ptr<acc_t>();
    at::parallel_for(0, N * C, cpu::grain_rows(HW), [&](int64_t begin, int64_t end) {
      const acc_t slope = acc_t(leaky_slope);
      // t: the activated row; xbuf, nbuf: acc_t copies of x and noise rows for 16-bit inputs.
      auto buf = cpu::scratch<acc_t>(3 * HW);
      acc_t *t = buf.get(), *xbuf = t + HW, *nbuf = xbuf + HW;
      const acc_t* nr = nullptr;
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / C, c = row % C;
        if (nr == nullptr || c == 0) nr = cpu::load_row(np + n * HW, nbuf, HW);
        const acc_t* xr = cpu::load_row(xp + row * HW, xbuf, HW);
        const acc_t wn = wnp[c], b = bp[c];
        acc_t sum = 0;
        _Pragma("omp simd reduction(+ : sum)")
        for (int64_t i = 0; i < HW; ++i) {
          t[i] = cpu::leaky_v(xr[i] + wn * nr[i] + b, slope);
          sum += t[i];
        }
        const acc_t mean = sum / acc_t(HW);
        acc_t sq = 0;
        _Pragma("omp simd reduction(+ : sq)")
        for (int64_t i = 0; i < HW; ++i) sq += (t[i] - mean) * (t[i] - mean);
        const acc_t rstd = acc_t(1) / std::sqrt(sq / acc_t(HW) + acc_t(eps));
        const acc_t scale = (acc_t(1) + sp[n * 2 * C + c]) * rstd, shift = sp[n * 2 * C + C + c];
        scalar_t* yr = yp + row * HW;
        _Pragma("omp simd")
        for (int64_t i = 0; i < HW; ++i) yr[i] = cpu::to_scalar<scalar_t>((t[i] - mean) * scale + shift);
        statp[n * 2 * C + c] = mean;
        statp[n * 2 * C + C + c] = rstd;
      }
    });
  });
  return {y, stats};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> adain_bwd_cpu(
    const at::Tensor& grad_y,        // [N, C, H, W]
    const at::Tensor& x,             // [N, C, H, W]
    const at::Tensor& noise,         // [N, 1, H, W]
    const at::Tensor& noise_weight,  // [C] acc
    const at::Tensor& bias,          // [C] acc
    const at::Tensor& style,         // [N, 2C] acc
    const at::Tensor& stats,         // [N, 2C] acc, (mean | rstd)
    double eps, double leaky_slope) {
  check_adain_args("adain_bwd", x, noise, noise_weight, bias, style);
  check_tensor("adain_bwd", "grad_y", grad_y, x.device(), x.scalar_type(), x.sizes().vec(), "[N, C, H, W]");
  check_tensor("adain_bwd", "stats", stats, x.device(), style.scalar_type(), style.sizes().vec(), "[N, 2C]");
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  auto grad_x = at::empty_like(x);
  auto grad_style = at::empty_like(style);
  // Per-(n, c) partial sums, reduced over N afterwards: deterministic, no atomics.
  auto partial_wn = at::empty({N, C}, style.options());
  auto partial_b = at::empty({N, C}, style.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "adain_bwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* gyp = grad_y.const_data_ptr<scalar_t>();
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* np = noise.const_data_ptr<scalar_t>();
    const acc_t* wnp = noise_weight.const_data_ptr<acc_t>();
    const acc_t* bp = bias.const_data_ptr<acc_t>();
    const acc_t* sp = style.const_data_ptr<acc_t>();
    const acc_t* statp = stats.const_data_ptr<acc_t>();
    scalar_t* gxp = grad_x.mutable_data_ptr<scalar_t>();
    acc_t* gsp = grad_style.mutable_data_ptr<acc_t>();
    acc_t* pwn = partial_wn.mutable_data_ptr<acc_t>();
    acc_t* pb = partial_b.mutable_data_ptr<acc_t>();
    at::parallel_for(0, N * C, cpu::grain_rows(HW), [&](int64_t begin, int64_t end) {
      const acc_t slope = acc_t(leaky_slope);
      // pre: the pre-activation row; xbuf, gbuf, nbuf: acc_t copies of x, grad_y, noise rows for 16-bit inputs.
      auto buf = cpu::scratch<acc_t>(4 * HW);
      acc_t *pre = buf.get(), *xbuf = pre + HW, *gbuf = xbuf + HW, *nbuf = gbuf + HW;
      const acc_t* nr = nullptr;
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / C, c = row % C;
        if (nr == nullptr || c == 0) nr = cpu::load_row(np + n * HW, nbuf, HW);
        const acc_t* xr = cpu::load_row(xp + row * HW, xbuf, HW);
        const acc_t* gr = cpu::load_row(gyp + row * HW, gbuf, HW);
        const acc_t wn = wnp[c], b = bp[c];
        const acc_t mean = statp[n * 2 * C + c], rstd = statp[n * 2 * C + C + c];
        acc_t sum_g = 0, sum_gx = 0;
        _Pragma("omp simd reduction(+ : sum_g, sum_gx)")
        for (int64_t i = 0; i < HW; ++i) {
          pre[i] = xr[i] + wn * nr[i] + b;
          const acc_t xhat = (cpu::leaky_v(pre[i], slope) - mean) * rstd;
          sum_g += gr[i];
          sum_gx += gr[i] * xhat;
        }
        gsp[n * 2 * C + c] = sum_gx;
        gsp[n * 2 * C + C + c] = sum_g;
        const acc_t gain_rstd = (acc_t(1) + sp[n * 2 * C + c]) * rstd;
        const acc_t mean_g = sum_g / acc_t(HW), mean_gx = sum_gx / acc_t(HW);
        acc_t sum_dpre = 0, sum_dpre_noise = 0;
        scalar_t* gxr = gxp + row * HW;
        _Pragma("omp simd reduction(+ : sum_dpre, sum_dpre_noise)")
        for (int64_t i = 0; i < HW; ++i) {
          const acc_t xhat = (cpu::leaky_v(pre[i], slope) - mean) * rstd;
          const acc_t dpre = gain_rstd * (gr[i] - mean_g - xhat * mean_gx) * cpu::leaky_grad_v(pre[i], slope);
          gxr[i] = cpu::to_scalar<scalar_t>(dpre);
          sum_dpre += dpre;
          sum_dpre_noise += dpre * nr[i];
        }
        pb[row] = sum_dpre;
        pwn[row] = sum_dpre_noise;
      }
    });
  });
  return {grad_x, partial_wn.sum(0), partial_b.sum(0), grad_style};
}

}  // namespace

TORCH_LIBRARY_IMPL(alae_fast_C, CPU, m) {
  m.impl("adain_fwd", &adain_fwd_cpu);
  m.impl("adain_bwd", &adain_bwd_cpu);
}

}  // namespace alae_fast
