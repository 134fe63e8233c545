// Style extraction on CPU: the row norm of cpu_common/row_norm.h over t = lrelu(x + b), with
// y = (t − mean)·rsqrt(var + eps) and stats (mean | std).
//   backward: with the centred c = (t − mean) − mean(t − mean), r = rsqrt(std² + eps), A = mean(g·c) and
//             β = g_std/(HW·std): dt = r·(g − ḡ) − (r³·A − β)·c + g_mean/HW, grad_x = dt·lrelu'(pre);
//             Σ dt over a row is g_mean.
// The double backward (style_bwd2) works on whole rows, one row per step.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <cmath>

#include "style.h"
#include "../cpu_common/row_norm.h"

namespace alae_fast {
namespace {

// The inputs of both passes; pre = x + b, in double (cpu::sum_t).
template <typename scalar_t>
struct StyleInputs : cpu::RowNormOp<scalar_t> {
  using acc_t = typename cpu::RowNormOp<scalar_t>::acc_t;
  static constexpr int kLoads = 1;  // x
  const scalar_t* x;  // [N, C, H, W]
  const acc_t* bias;  // [C]
  double eps;

  StyleInputs(const at::Tensor& x_, const at::Tensor& bias_, double eps_, double leaky_slope)
      : cpu::RowNormOp<scalar_t>(x_, leaky_slope), x(x_.const_data_ptr<scalar_t>()),
        bias(bias_.const_data_ptr<acc_t>()), eps(eps_) {}

  // out [size]: pre of values [begin, begin + size) of `row`; bufs [size]: scratch for a 16-bit x.
  void pre(int64_t row, int64_t begin, int64_t size, cpu::sum_t* out, acc_t* bufs) const {
    const acc_t* xr = cpu::load_row(x + row * this->HW + begin, bufs, size);
    const cpu::sum_t b = bias[row % this->C];
    _Pragma("omp simd")
    for (int64_t i = 0; i < size; ++i) out[i] = xr[i] + b;
  }
};

// style_fwd: y = (t − mean)·rstd.
template <typename scalar_t>
struct StyleForward : StyleInputs<scalar_t> {
  using acc_t = typename StyleInputs<scalar_t>::acc_t;
  acc_t* stats;  // [N, 2C] (mean | std)

  struct OutRow {
    cpu::sum_t rstd;
  };
  OutRow finish_row(int64_t row, cpu::sum_t mean, cpu::sum_t var) const {
    const int64_t C = this->C, n = row / C, c = row % C;
    stats[n * 2 * C + c] = acc_t(mean);
    stats[n * 2 * C + C + c] = acc_t(std::sqrt(var));
    return {1 / std::sqrt(var + this->eps)};
  }
  static cpu::sum_t out(const OutRow& k, cpu::sum_t centred) { return centred * k.rstd; }
};

// style_bwd: dt = r·(g − ḡ) − (r³·A − β)·c + g_mean/HW.
template <typename scalar_t>
struct StyleBackward : StyleInputs<scalar_t> {
  using acc_t = typename StyleInputs<scalar_t>::acc_t;
  static constexpr bool kNoise = false;
  const acc_t* stats;       // [N, 2C] (mean | std)
  const acc_t* grad_stats;  // [N, 2C]

  // The backward works on t − mean, unscaled.
  cpu::Centring centre(int64_t row) const { return {stats[(row / this->C) * 2 * this->C + row % this->C], 1}; }

  struct GradRow {
    cpu::sum_t gain, dt_sum, r, coef_c, offset;  // 1, g_mean, r, r³·A − β, g_mean/HW
  };
  GradRow grad_row(int64_t row, cpu::sum_t /*sum_g*/, cpu::sum_t sum_gc) const {
    const int64_t C = this->C, HW = this->HW, n = row / C, c = row % C;
    const cpu::sum_t a = sum_gc / HW;  // A
    const cpu::sum_t sd = stats[n * 2 * C + C + c];
    const cpu::sum_t r = 1 / std::sqrt(sd * sd + this->eps);
    // The std's gradient is 0 where std is 0 (and its NaN, if any, reaches dt through r).
    const cpu::sum_t beta = sd > 0 ? grad_stats[n * 2 * C + C + c] / (HW * sd) : 0;
    const acc_t g_mean = grad_stats[n * 2 * C + c];
    return {1, g_mean, r, r * r * r * a - beta, g_mean / HW};
  }
  static cpu::sum_t dt(const GradRow& k, cpu::sum_t g_dev, cpu::sum_t centred) {
    return k.r * g_dev - k.coef_c * centred + k.offset;
  }
};

std::tuple<at::Tensor, at::Tensor> style_fwd_cpu(const at::Tensor& x,       // [N, C, H, W]
                                                 const at::Tensor& bias,    // [C] acc
                                                 double eps, double leaky_slope) {
  check_style_args("style_fwd", x, bias);
  auto y = at::empty_like(x);
  auto stats = at::empty({x.size(0), 2 * x.size(1)}, bias.options());  // (mean | std)
  if (x.numel() == 0) return {y, stats};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "style_fwd_cpu", [&] {
    const StyleForward<scalar_t> op{{x, bias, eps, leaky_slope}, stats.mutable_data_ptr<at::opmath_type<scalar_t>>()};
    cpu::row_norm_fwd(op, y.mutable_data_ptr<scalar_t>());
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
  const int64_t N = x.size(0), C = x.size(1);
  check_tensor("style_bwd", "grad_y", grad_y, x.device(), x.scalar_type(), x.sizes().vec(), "[N, C, H, W]");
  check_tensor("style_bwd", "grad_stats", grad_stats, x.device(), bias.scalar_type(), {N, 2 * C}, "[N, 2C]");
  check_tensor("style_bwd", "stats", stats, x.device(), bias.scalar_type(), {N, 2 * C}, "[N, 2C]");
  auto grad_x = at::empty_like(x);
  auto grad_b = at::empty_like(bias);
  if (x.numel() == 0) return {grad_x, grad_b.zero_()};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "style_bwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const StyleBackward<scalar_t> op{{x, bias, eps, leaky_slope}, stats.const_data_ptr<acc_t>(),
                                     grad_stats.const_data_ptr<acc_t>()};
    cpu::row_norm_bwd(op, grad_y.const_data_ptr<scalar_t>(), grad_x.mutable_data_ptr<scalar_t>(),
                      grad_b.mutable_data_ptr<acc_t>(), nullptr);
  });
  return {grad_x, grad_b};
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
  auto g_bias = at::empty_like(bias);
  AT_DISPATCH_FLOATING_TYPES(g_bias.scalar_type(), "style_bwd2_cpu_bias", [&] {
    const scalar_t* pbp = partial_b.const_data_ptr<scalar_t>();
    scalar_t* gbp = g_bias.mutable_data_ptr<scalar_t>();
    for (int64_t c = 0; c < C; ++c) gbp[c] = N > 0 ? cpu::tree_sum(pbp + c, N, C) : scalar_t(0);
  });
  return {g_grad_y, g_stats, g_x, g_bias};
}

}  // namespace

ALAE_FAST_REGISTER_KERNELS(ALAE_FAST_STYLE_KERNELS, CPU, cpu)

}  // namespace alae_fast
