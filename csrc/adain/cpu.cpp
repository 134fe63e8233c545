// Modulated AdaIN on CPU: the row norm of cpu_common/row_norm.h over t = lrelu(x + wn·noise + b), with
// y = ((t − mean)·rstd)·(1 + ys) + yb and stats (mean | rstd).
//   backward: with x̂ = (t − mean)·rstd, centred x̂ − x̄, and m = mean(g·(x̂ − x̄)):
//             e = g − ḡ − (x̂ − x̄)·m, grad_x = (1 + ys)·rstd·e·lrelu'(pre) (Σ e over a row is 0),
//             grad_style = (Σ g·(x̂ − x̄) | Σ g), and grad_noise_weight = Σ grad_x·noise.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <cmath>

#include "adain.h"
#include "../cpu_common/row_norm.h"

namespace alae_fast {
namespace {

// The inputs of both passes; pre = x + wn·noise + b, in double (cpu::sum_t).
template <typename scalar_t>
struct AdainInputs : cpu::RowNormOp<scalar_t> {
  using acc_t = typename cpu::RowNormOp<scalar_t>::acc_t;
  static constexpr int kLoads = 2;  // x, noise
  const scalar_t* x;          // [N, C, H, W]
  const scalar_t* noise_px;   // [N, 1, H, W]
  const acc_t* noise_weight;  // [C]
  const acc_t* bias;          // [C]
  const acc_t* style;         // [N, 2C] (ys | yb)

  AdainInputs(const at::Tensor& x_, const at::Tensor& noise, const at::Tensor& noise_weight_, const at::Tensor& bias_,
              const at::Tensor& style_, double leaky_slope)
      : cpu::RowNormOp<scalar_t>(x_, leaky_slope), x(x_.const_data_ptr<scalar_t>()),
        noise_px(noise.const_data_ptr<scalar_t>()), noise_weight(noise_weight_.const_data_ptr<acc_t>()),
        bias(bias_.const_data_ptr<acc_t>()), style(style_.const_data_ptr<acc_t>()) {}

  // out [size]: pre of values [begin, begin + size) of `row`; bufs [2·size]: scratch for 16-bit x, noise.
  void pre(int64_t row, int64_t begin, int64_t size, cpu::sum_t* out, acc_t* bufs) const {
    const acc_t* xr = cpu::load_row(x + row * this->HW + begin, bufs, size);
    const acc_t* nr = noise(row, begin, size, bufs + size);
    const cpu::sum_t wn = noise_weight[row % this->C], b = bias[row % this->C];
    _Pragma("omp simd")
    for (int64_t i = 0; i < size; ++i) out[i] = xr[i] + wn * nr[i] + b;
  }

  // noise [size] at values [begin, begin + size) of `row`; buf [size]: scratch for 16-bit inputs.
  const acc_t* noise(int64_t row, int64_t begin, int64_t size, acc_t* buf) const {
    return cpu::load_row(noise_px + (row / this->C) * this->HW + begin, buf, size);
  }
};

// adain_fwd: y = (t − mean)·(1 + ys)·rstd + yb.
template <typename scalar_t>
struct AdainForward : AdainInputs<scalar_t> {
  using acc_t = typename AdainInputs<scalar_t>::acc_t;
  acc_t* stats;  // [N, 2C] (mean | rstd)
  double eps;

  struct OutRow {
    cpu::sum_t scale, offset;  // (1 + ys)·rstd, yb
  };
  OutRow finish_row(int64_t row, cpu::sum_t mean, cpu::sum_t var) const {
    const int64_t C = this->C, n = row / C, c = row % C;
    stats[n * 2 * C + c] = acc_t(mean);
    stats[n * 2 * C + C + c] = acc_t(1 / std::sqrt(var + eps));
    const acc_t* ys = this->style + n * 2 * C;
    // The scale takes rstd as stored, which the backward reads.
    return {(1 + cpu::sum_t(ys[c])) * stats[n * 2 * C + C + c], ys[C + c]};
  }
  static cpu::sum_t out(const OutRow& k, cpu::sum_t centred) { return centred * k.scale + k.offset; }
};

// adain_bwd: dt = e = g − ḡ − (x̂ − x̄)·m, grad_x = (1 + ys)·rstd·e·lrelu'(pre).
template <typename scalar_t>
struct AdainBackward : AdainInputs<scalar_t> {
  using acc_t = typename AdainInputs<scalar_t>::acc_t;
  static constexpr bool kNoise = true;
  const acc_t* stats;  // [N, 2C] (mean | rstd)
  acc_t* grad_style;   // [N, 2C]

  cpu::Centring centre(int64_t row) const {
    const int64_t C = this->C, n = row / C, c = row % C;
    return {stats[n * 2 * C + c], stats[n * 2 * C + C + c]};
  }

  struct GradRow {
    cpu::sum_t gain, dt_sum, m;  // (1 + ys)·rstd, Σe = 0, mean(g·(x̂ − x̄))
  };
  GradRow grad_row(int64_t row, cpu::sum_t sum_g, cpu::sum_t sum_gc) const {
    const int64_t C = this->C, n = row / C, c = row % C;
    grad_style[n * 2 * C + c] = acc_t(sum_gc);
    grad_style[n * 2 * C + C + c] = acc_t(sum_g);
    return {(acc_t(1) + this->style[n * 2 * C + c]) * cpu::sum_t(stats[n * 2 * C + C + c]), 0, sum_gc / this->HW};
  }
  static cpu::sum_t dt(const GradRow& k, cpu::sum_t g_dev, cpu::sum_t centred) { return g_dev - centred * k.m; }
};

std::tuple<at::Tensor, at::Tensor> adain_fwd_cpu(const at::Tensor& x,             // [N, C, H, W]
                                                 const at::Tensor& noise,         // [N, 1, H, W]
                                                 const at::Tensor& noise_weight,  // [C] acc
                                                 const at::Tensor& bias,          // [C] acc
                                                 const at::Tensor& style,         // [N, 2C] acc
                                                 double eps, double leaky_slope) {
  check_adain_args("adain_fwd", x, noise, noise_weight, bias, style);
  auto y = at::empty_like(x);
  auto stats = at::empty({x.size(0), 2 * x.size(1)}, style.options());  // (mean | rstd)
  if (x.numel() == 0) return {y, stats.zero_()};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "adain_fwd_cpu", [&] {
    const AdainForward<scalar_t> op{{x, noise, noise_weight, bias, style, leaky_slope},
                                    stats.mutable_data_ptr<at::opmath_type<scalar_t>>(), eps};
    cpu::row_norm_fwd(op, y.mutable_data_ptr<scalar_t>());
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
  auto grad_x = at::empty_like(x);
  auto grad_style = at::empty_like(style);
  auto grad_wn = at::empty_like(noise_weight);
  auto grad_b = at::empty_like(bias);
  if (x.numel() == 0) return {grad_x, grad_wn.zero_(), grad_b.zero_(), grad_style.zero_()};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "adain_bwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const AdainBackward<scalar_t> op{{x, noise, noise_weight, bias, style, leaky_slope},
                                     stats.const_data_ptr<acc_t>(), grad_style.mutable_data_ptr<acc_t>()};
    cpu::row_norm_bwd(op, grad_y.const_data_ptr<scalar_t>(), grad_x.mutable_data_ptr<scalar_t>(),
                      grad_b.mutable_data_ptr<acc_t>(), grad_wn.mutable_data_ptr<acc_t>());
  });
  return {grad_x, grad_wn, grad_b, grad_style};
}

}  // namespace

ALAE_FAST_REGISTER_KERNELS(ALAE_FAST_ADAIN_KERNELS, CPU, cpu)

}  // namespace alae_fast
