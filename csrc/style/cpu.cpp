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

#include "style.h"
#include "../cpu_vec.h"

namespace alae_fast {
namespace {

std::tuple<at::Tensor, at::Tensor> style_fwd_cpu(const at::Tensor& x,       // [N, C, H, W]
                                                 const at::Tensor& bias,    // [C] acc
                                                 double eps, double leaky_slope) {
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
      const acc_t slope = acc_t(leaky_slope);
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
        const acc_t rstd = acc_t(1) / std::sqrt(var + acc_t(eps));
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
                                                 const at::Tensor& stats,       // [N, 2C] acc, (mean | std)
                                                 double eps, double leaky_slope) {
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
      const acc_t slope = acc_t(leaky_slope);
      // pre: the pre-activation row; xbuf, gbuf: acc_t copies of x and grad_y rows for 16-bit inputs.
      auto buf = cpu::scratch<acc_t>(3 * HW);
      acc_t *pre = buf.get(), *xbuf = pre + HW, *gbuf = xbuf + HW;
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / C, c = row % C;
        const acc_t* xr = cpu::load_row(xp + row * HW, xbuf, HW);
        const acc_t* gr = cpu::load_row(gyp + row * HW, gbuf, HW);
        const acc_t b = bp[c];
        const acc_t mean = statp[n * 2 * C + c], std = statp[n * 2 * C + C + c];
        const acc_t rstd = acc_t(1) / std::sqrt(std * std + acc_t(eps));
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

// Backward of style_bwd (R1's second order): the cotangents gg_x of grad_x and gg_bias of grad_bias give
// the gradients wrt grad_y, grad_stats, x and bias. Per row, with c = t − μ, r = (σ² + eps)^-½, d = lrelu'(pre),
// u = (gg_x + gg_bias[c])·d and the row means ū of u, A of grad_y·c, Uc of u·c (Σ/HW each):
//   g_grad_y = r(u − ū) − r³·c·Uc
//   g_mean   = ū,  g_std = Uc/σ (0 where σ = 0)
//   g_x      = d·[ c·(3r⁵·A·Uc − r³·U₁ − β·Uc/σ²) − r³·Uc·(grad_y − ḡ) − r³·A·(u − ū) + β(u − ū) ]
// with ḡ the mean of grad_y, U₁ = mean(u·(grad_y − ḡ)) and β = grad_std/(HW·σ) (0 where σ = 0).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> style_bwd2_cpu(
    const at::Tensor& grad_y,                  // [N, C, H, W]
    const at::Tensor& grad_stats,              // [N, 2C] acc
    const at::Tensor& x,                       // [N, C, H, W]
    const at::Tensor& bias,                    // [C] acc
    const at::Tensor& stats,                   // [N, 2C] acc, (mean | std)
    const std::optional<at::Tensor>& gg_x,     // [N, C, H, W] or none (zeros)
    const std::optional<at::Tensor>& gg_bias,  // [C] acc or none (zeros)
    double eps, double slope) {
  check_style_args("style_bwd2", x, bias);
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  check_tensor("style_bwd2", "grad_y", grad_y, x.device(), x.scalar_type(), x.sizes().vec(), "[N, C, H, W]");
  check_tensor("style_bwd2", "grad_stats", grad_stats, x.device(), bias.scalar_type(), {N, 2 * C}, "[N, 2C]");
  check_tensor("style_bwd2", "stats", stats, x.device(), bias.scalar_type(), {N, 2 * C}, "[N, 2C]");
  const bool has_ggx = gg_x.has_value() && gg_x->defined();
  const bool has_ggb = gg_bias.has_value() && gg_bias->defined();
  if (has_ggx) check_tensor("style_bwd2", "gg_x", *gg_x, x.device(), x.scalar_type(), x.sizes().vec(), "[N, C, H, W]");
  if (has_ggb) check_tensor("style_bwd2", "gg_bias", *gg_bias, x.device(), bias.scalar_type(), {C}, "[C]");
  auto g_grad_y = at::empty_like(x);
  auto g_x = at::empty_like(x);
  auto g_stats = at::empty({N, 2 * C}, bias.options());
  auto partial_b = at::empty({N, C}, bias.options());  // per-(n, c) sums, reduced over N after: deterministic
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "style_bwd2_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* gyp = grad_y.const_data_ptr<scalar_t>();
    const acc_t* gsp = grad_stats.const_data_ptr<acc_t>();
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* qp = has_ggx ? gg_x->const_data_ptr<scalar_t>() : nullptr;
    const acc_t* bp = bias.const_data_ptr<acc_t>();
    const acc_t* qbp = has_ggb ? gg_bias->const_data_ptr<acc_t>() : nullptr;
    const acc_t* statp = stats.const_data_ptr<acc_t>();
    scalar_t* ggyp = g_grad_y.mutable_data_ptr<scalar_t>();
    scalar_t* gxp = g_x.mutable_data_ptr<scalar_t>();
    acc_t* gstp = g_stats.mutable_data_ptr<acc_t>();
    acc_t* pb = partial_b.mutable_data_ptr<acc_t>();
    at::parallel_for(0, N * C, cpu::grain_rows(HW), [&](int64_t begin, int64_t end) {
      const acc_t sl = acc_t(slope), inv_m = acc_t(1) / acc_t(HW);
      // Per row: c (centered activation), d (lrelu'), u (cotangent of dt), and acc_t copies of x, grad_y, gg_x.
      auto buf = cpu::scratch<acc_t>(6 * HW);
      acc_t *cen = buf.get(), *dd = cen + HW, *uu = dd + HW, *xbuf = uu + HW, *gbuf = xbuf + HW, *qbuf = gbuf + HW;
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / C, c = row % C;
        const acc_t* xr = cpu::load_row(xp + row * HW, xbuf, HW);
        const acc_t* gr = cpu::load_row(gyp + row * HW, gbuf, HW);
        const acc_t* qr = has_ggx ? cpu::load_row(qp + row * HW, qbuf, HW) : nullptr;
        const acc_t b = bp[c], qb = has_ggb ? qbp[c] : acc_t(0);
        const acc_t mean = statp[n * 2 * C + c], sd = statp[n * 2 * C + C + c];
        const acc_t r = acc_t(1) / std::sqrt(sd * sd + acc_t(eps));
        acc_t s_g = 0, s_gc = 0, s_u = 0, s_uc = 0, s_ug = 0;
        _Pragma("omp simd reduction(+ : s_g, s_gc, s_u, s_uc, s_ug)")
        for (int64_t i = 0; i < HW; ++i) {
          const acc_t pre = xr[i] + b;
          dd[i] = cpu::leaky_grad_v(pre, sl);
          cen[i] = cpu::leaky_v(pre, sl) - mean;
          uu[i] = ((qr ? qr[i] : acc_t(0)) + qb) * dd[i];
          s_g += gr[i];
          s_gc += gr[i] * cen[i];
          s_u += uu[i];
          s_uc += uu[i] * cen[i];
          s_ug += uu[i] * gr[i];
        }
        const acc_t mean_g = s_g * inv_m, a = s_gc * inv_m, mean_u = s_u * inv_m, uc = s_uc * inv_m;
        const acc_t u1 = (s_ug - mean_g * s_u) * inv_m;
        const acc_t beta = sd > acc_t(0) ? gsp[n * 2 * C + C + c] * inv_m / sd : acc_t(0);
        const acc_t r3 = r * r * r;
        const acc_t coef_c = acc_t(3) * r3 * r * r * a * uc - r3 * u1 - (sd > acc_t(0) ? beta * uc / (sd * sd) : acc_t(0));
        const acc_t coef_g = -r3 * uc, coef_u = beta - r3 * a;
        acc_t sum_gx = 0;
        scalar_t* ggyr = ggyp + row * HW;
        scalar_t* gxr = gxp + row * HW;
        _Pragma("omp simd reduction(+ : sum_gx)")
        for (int64_t i = 0; i < HW; ++i) {
          const acc_t du = uu[i] - mean_u;
          ggyr[i] = cpu::to_scalar<scalar_t>(r * du - r3 * cen[i] * uc);
          const acc_t gx = dd[i] * (coef_c * cen[i] + coef_g * (gr[i] - mean_g) + coef_u * du);
          gxr[i] = cpu::to_scalar<scalar_t>(gx);
          sum_gx += gx;
        }
        gstp[n * 2 * C + c] = mean_u;
        gstp[n * 2 * C + C + c] = sd > acc_t(0) ? uc / sd : acc_t(0);
        pb[row] = sum_gx;
      }
    });
  });
  return {g_grad_y, g_stats, g_x, partial_b.sum(0)};
}

}  // namespace

TORCH_LIBRARY_IMPL(alae_fast_C, CPU, m) {
  m.impl("style_fwd", &style_fwd_cpu);
  m.impl("style_bwd", &style_bwd_cpu);
  m.impl("style_bwd2", &style_bwd2_cpu);
}

}  // namespace alae_fast
