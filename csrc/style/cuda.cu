// Instance-norm style extraction on CUDA: the forward on cuda_common/row_norm.cuh, the backward
// on cuda_common/row_grad.cuh, both on the row paths of cuda_common/rows.cuh (as adain/cuda.cu).
// Passes over memory (full reads or writes of an x-sized tensor):
//   packed rows (NCHW, HW <= 4096; 1024 in fp64), one kernel each way, the row in registers:
//     forward  1 pass: read x, write y;   backward 1 pass: read g, x, write grad_x.
//   split rows (longer NCHW rows, chunks of one block each) and NHWC rows, two kernels each way
//   (one when the row is a single chunk: its second read then closely follows the first, mostly
//   from L2):
//     forward  chunk moments (read x), then fixed-order merge + normalise (read x, write y);
//     backward chunk sums of g, g·cen, cen (read g, x), then grad_x (read g, x, write grad_x).
//   then grad_bias: a fixed-order sum of [splits·N, C] partials (no x-sized data).
// The double backward (style_bwd2, NCHW) keeps one block per row: five row sums (read g, x,
// gg_x), then g_grad_y and g_x (read g, x, gg_x, write both).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "style.h"
#include "../cuda_common/launch.cuh"
#include "../cuda_common/reduce.cuh"
#include "../cuda_common/row_grad.cuh"
#include "../cuda_common/row_norm.cuh"
#include "../cuda_common/rows.cuh"

namespace alae_fast {
namespace {

// Per-row constants: the bias and the slope (the backward adds the statistics, StyleGradRow).
template <typename acc_t>
struct StyleRow {
  acc_t b, slope;
  __device__ __forceinline__ acc_t pre(acc_t x) const { return x + b; }
  __device__ __forceinline__ acc_t act(acc_t x) const { return leaky(pre(x), slope); }
};

// The forward on the shared row skeleton: t = lrelu(x + b), y = (t − mean)·rstd, stats (mean | std).
template <typename scalar_t_>
struct StyleFwd {
  ALAE_FAST_ROW_OP_TYPES(scalar_t_, StyleRow);
  const scalar_t* x;  // [N, C, H, W] (NCHW or NHWC)
  const acc_t* bias;   // [C]
  acc_t eps, slope;

  __device__ __forceinline__ Row row(int, int c) const { return {bias[c], slope}; }
  template <int VEC>
  __device__ __forceinline__ void act(const Row& r, int64_t x_index, int64_t, acc_t (&t)[VEC]) const {
    load_acc<VEC>(x, x_index, t);
#pragma unroll
    for (int k = 0; k < VEC; ++k) t[k] = r.act(t[k]);
  }
  __device__ __forceinline__ acc_t out(const Row&, acc_t centred, acc_t rstd) const { return centred * rstd; }
  __device__ __forceinline__ acc_t stat(acc_t var, acc_t) const { return sqrt(var); }
};

// Backward (cuda_common/row_grad.cuh) from grad_y and grad_stats = (d mean | d std):
//   dt = rstd·(g − mean(g) − cen·rstd·mean(g·cen·rstd)) + g_mean + g_std·cen,  cen = t − mean,
// with g_mean = d mean / HW and g_std = d std / (HW·std) (0 where std is 0: sqrt's gradient
// there is taken as 0); dpre = dt·lrelu'(pre). The stored mean is an fp32 rounding: the row
// sums also give Σ cen, and cen is re-centred by its mean, so that Σ cen and Σ dpre (the bias
// gradient) do not pick up HW times that rounding on rows with |mean| ≫ std.
template <typename acc_t>
struct StyleGradRow : StyleRow<acc_t>, RowGradMeans<acc_t> {
  acc_t mean, rstd, g_mean, g_std;
  __device__ __forceinline__ StyleGradRow(const acc_t* bias, const acc_t* stats, const acc_t* grad_stats, int n, int c,
                                          int C, int HW, acc_t eps, acc_t slope)
      : StyleRow<acc_t>{bias[c], slope} {
    const acc_t inv_hw = quotient(acc_t(1), acc_t(HW)), sd = stats[int64_t(n) * 2 * C + C + c];
    mean = stats[int64_t(n) * 2 * C + c];
    rstd = rsqrt(sd * sd + eps);
    g_mean = grad_stats[int64_t(n) * 2 * C + c] * inv_hw;
    g_std = sd == acc_t(0) ? acc_t(0) : quotient(grad_stats[int64_t(n) * 2 * C + C + c] * inv_hw, sd);
  }
  // cen, re-centred once set_sums ran (u = cen in RowGradMeans).
  __device__ __forceinline__ acc_t centred(acc_t pre) const { return leaky(pre, this->slope) - mean - this->mean_u; }
  __device__ __forceinline__ acc_t dpre(acc_t pre, acc_t g) const {
    const acc_t cen = centred(pre), mean_g_xhat = this->mean_gu * rstd;
    return (rstd * (g - this->mean_g - cen * rstd * mean_g_xhat) + g_mean + g_std * cen) *
           leaky_grad(pre, this->slope);
  }
};

// The backward on the shared row skeleton; one parameter partial, Σ dpre (grad_bias).
template <typename scalar_t_>
struct StyleBwd {
  ALAE_FAST_ROW_OP_TYPES(scalar_t_, StyleGradRow);
  static constexpr int kParams = 1;
  const scalar_t* grad_y;   // like x
  const acc_t* grad_stats;  // [N, 2C] (d mean | d std)
  const scalar_t* x;        // [N, C, H, W] (NCHW or NHWC)
  const acc_t* bias;        // [C]
  const acc_t* stats;       // [N, 2C] (mean | std)
  int C, HW;
  acc_t eps, slope;

  __device__ __forceinline__ Row row(int n, int c) const {
    return Row(bias, stats, grad_stats, n, c, C, HW, eps, slope);
  }
  template <int VEC>
  __device__ __forceinline__ void load(const Row& r, int64_t x_index, int64_t, acc_t (&g)[VEC],
                                       acc_t (&pre)[VEC]) const {
    load_acc<VEC>(grad_y, x_index, g);
    load_acc<VEC>(x, x_index, pre);
#pragma unroll
    for (int k = 0; k < VEC; ++k) pre[k] = r.pre(pre[k]);
  }
  template <int VEC>
  __device__ __forceinline__ void add_params(const Row&, int64_t, const acc_t (&dpre)[VEC],
                                             acc_t (&q)[kParams]) const {
#pragma unroll
    for (int k = 0; k < VEC; ++k) q[0] += dpre[k];
  }
  __device__ __forceinline__ void store_row(const Row&, const acc_t (&)[3], int, int) const {}
};

// Backward of the backward (R1's second order); the formulas are those of csrc/cpu/style.cpp's style_bwd2.
// Two passes over the row: five row sums, then g_grad_y and g_x.
template <typename scalar_t, int THREADS>
__global__ void __launch_bounds__(THREADS, min_blocks_per_sm(THREADS)) style_bwd2_kernel(
    const scalar_t* __restrict__ grad_y,                      // [N*C, HW]
    const at::opmath_type<scalar_t>* __restrict__ grad_stats,  // [N, 2C]
    const scalar_t* __restrict__ x,                           // [N*C, HW]
    const at::opmath_type<scalar_t>* __restrict__ bias,        // [C]
    const at::opmath_type<scalar_t>* __restrict__ stats,       // [N, 2C] (mean | std)
    const scalar_t* __restrict__ gg_x,                        // [N*C, HW] or nullptr (zeros)
    const at::opmath_type<scalar_t>* __restrict__ gg_bias,     // [C] or nullptr (zeros)
    scalar_t* __restrict__ g_grad_y,                          // [N*C, HW]
    at::opmath_type<scalar_t>* __restrict__ g_stats,           // [N, 2C]
    scalar_t* __restrict__ g_x,                               // [N*C, HW]
    at::opmath_type<scalar_t>* __restrict__ partial_b,         // [N*C]
    int C, int HW, at::opmath_type<scalar_t> eps, at::opmath_type<scalar_t> slope) {
  using acc_t = at::opmath_type<scalar_t>;
  const int row = blockIdx.x, n = row / C, c = row % C;
  const int64_t base = int64_t(row) * HW;
  const acc_t b = bias[c], qb = gg_bias ? gg_bias[c] : acc_t(0), inv_m = acc_t(1) / acc_t(HW);
  const acc_t mean = stats[int64_t(n) * 2 * C + c], sd = stats[int64_t(n) * 2 * C + C + c];
  const acc_t r = acc_t(1) / sqrt(sd * sd + eps), r3 = r * r * r;
  acc_t s[5] = {acc_t(0), acc_t(0), acc_t(0), acc_t(0), acc_t(0)};  // Σ g, Σ g·c, Σ u, Σ u·c, Σ u·g
  for (int i = threadIdx.x; i < HW; i += THREADS) {
    const acc_t pre = acc_t(x[base + i]) + b, g = acc_t(grad_y[base + i]);
    const acc_t cen = leaky(pre, slope) - mean;
    const acc_t u = ((gg_x ? acc_t(gg_x[base + i]) : acc_t(0)) + qb) * leaky_grad(pre, slope);
    s[0] += g;
    s[1] += g * cen;
    s[2] += u;
    s[3] += u * cen;
    s[4] += u * g;
  }
  block_sum(s);
  const acc_t mean_g = s[0] * inv_m, a = s[1] * inv_m, mean_u = s[2] * inv_m, uc = s[3] * inv_m;
  const acc_t u1 = (s[4] - mean_g * s[2]) * inv_m;
  const acc_t beta = sd > acc_t(0) ? grad_stats[int64_t(n) * 2 * C + C + c] * inv_m / sd : acc_t(0);
  const acc_t coef_c = acc_t(3) * r3 * r * r * a * uc - r3 * u1 - (sd > acc_t(0) ? beta * uc / (sd * sd) : acc_t(0));
  const acc_t coef_g = -r3 * uc, coef_u = beta - r3 * a;
  acc_t p[1] = {acc_t(0)};
  for (int i = threadIdx.x; i < HW; i += THREADS) {
    const acc_t pre = acc_t(x[base + i]) + b, g = acc_t(grad_y[base + i]);
    const acc_t cen = leaky(pre, slope) - mean, d = leaky_grad(pre, slope);
    const acc_t du = ((gg_x ? acc_t(gg_x[base + i]) : acc_t(0)) + qb) * d - mean_u;
    g_grad_y[base + i] = scalar_t(r * du - r3 * cen * uc);
    const acc_t gx = d * (coef_c * cen + coef_g * (g - mean_g) + coef_u * du);
    g_x[base + i] = scalar_t(gx);
    p[0] += gx;
  }
  block_sum(p);
  if (threadIdx.x == 0) {
    g_stats[int64_t(n) * 2 * C + c] = mean_u;
    g_stats[int64_t(n) * 2 * C + C + c] = sd > acc_t(0) ? uc / sd : acc_t(0);
    partial_b[row] = p[0];
  }
}

std::tuple<at::Tensor, at::Tensor> style_fwd_cuda(const at::Tensor& x,     // [N, C, H, W], NCHW or NHWC
                                                  const at::Tensor& bias,  // [C] acc
                                                  double eps, double leaky_slope) {
  check_on_cuda("style_fwd", "x", x);
  check_style_args("style_fwd", nchw_alias(x), bias);
  const c10::cuda::CUDAGuard guard(x.device());
  auto y = at::empty_like(x);  // keeps x's memory format
  auto stats = at::zeros({x.size(0), 2 * x.size(1)}, bias.options());
  if (x.numel() == 0) return {y, stats};
  const RowLaunch rows = row_launch(x, {x.const_data_ptr(), y.const_data_ptr()});
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "style_fwd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const StyleFwd<scalar_t> op{x.const_data_ptr<scalar_t>(), bias.const_data_ptr<acc_t>(), acc_t(eps),
                                acc_t(leaky_slope)};
    launch_row_norm(op, y.mutable_data_ptr<scalar_t>(), stats.mutable_data_ptr<acc_t>(), rows, bias.options(),
                    c10::cuda::getCurrentCUDAStream());
  });
  return {y, stats};
}

std::tuple<at::Tensor, at::Tensor> style_bwd_cuda(const at::Tensor& grad_y,      // [N, C, H, W], x's memory format
                                                  const at::Tensor& grad_stats,  // [N, 2C] acc
                                                  const at::Tensor& x,           // [N, C, H, W], NCHW or NHWC
                                                  const at::Tensor& bias,        // [C] acc
                                                  const at::Tensor& stats,       // [N, 2C] acc, (mean | std)
                                                  double eps, double leaky_slope) {
  check_on_cuda("style_bwd", "x", x);
  TORCH_CHECK(is_nhwc(grad_y) == is_nhwc(x), "style_bwd: argument 'grad_y' must have the memory format of 'x'");
  check_style_args("style_bwd", nchw_alias(x), bias);
  const int64_t N = x.size(0), C = x.size(1);
  check_tensor("style_bwd", "grad_y", nchw_alias(grad_y), x.device(), x.scalar_type(), x.sizes().vec(),
               "[N, C, H, W]");
  check_tensor("style_bwd", "grad_stats", grad_stats, x.device(), bias.scalar_type(), {N, 2 * C}, "[N, 2C]");
  check_tensor("style_bwd", "stats", stats, x.device(), bias.scalar_type(), {N, 2 * C}, "[N, 2C]");
  const c10::cuda::CUDAGuard guard(x.device());
  auto grad_x = at::empty_like(x);
  auto grad_b = at::zeros_like(bias);
  if (x.numel() == 0) return {grad_x, grad_b};
  const RowLaunch rows = row_launch(x, {grad_y.const_data_ptr(), x.const_data_ptr(), grad_x.const_data_ptr()});
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "style_bwd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const StyleBwd<scalar_t> op{grad_y.const_data_ptr<scalar_t>(), grad_stats.const_data_ptr<acc_t>(),
                                x.const_data_ptr<scalar_t>(), bias.const_data_ptr<acc_t>(),
                                stats.const_data_ptr<acc_t>(), int(C), int(rows.HW), acc_t(eps), acc_t(leaky_slope)};
    launch_row_grad(op, grad_x.mutable_data_ptr<scalar_t>(), {grad_b.mutable_data_ptr<acc_t>()}, rows, bias.options(),
                    c10::cuda::getCurrentCUDAStream());
  });
  return {grad_x, grad_b};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> style_bwd2_cuda(
    const at::Tensor& grad_y,                  // [N, C, H, W]
    const at::Tensor& grad_stats,              // [N, 2C] acc
    const at::Tensor& x,                       // [N, C, H, W]
    const at::Tensor& bias,                    // [C] acc
    const at::Tensor& stats,                   // [N, 2C] acc, (mean | std)
    const std::optional<at::Tensor>& gg_x,     // [N, C, H, W] or none
    const std::optional<at::Tensor>& gg_bias,  // [C] acc or none
    double eps, double slope) {
  check_on_cuda("style_bwd2", "x", x);
  check_style_args("style_bwd2", x, bias);
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  check_tensor("style_bwd2", "grad_y", grad_y, x.device(), x.scalar_type(), x.sizes().vec(), "[N, C, H, W]");
  check_tensor("style_bwd2", "grad_stats", grad_stats, x.device(), bias.scalar_type(), {N, 2 * C}, "[N, 2C]");
  check_tensor("style_bwd2", "stats", stats, x.device(), bias.scalar_type(), {N, 2 * C}, "[N, 2C]");
  const bool has_ggx = gg_x.has_value() && gg_x->defined();
  const bool has_ggb = gg_bias.has_value() && gg_bias->defined();
  if (has_ggx) check_tensor("style_bwd2", "gg_x", *gg_x, x.device(), x.scalar_type(), x.sizes().vec(), "[N, C, H, W]");
  if (has_ggb) check_tensor("style_bwd2", "gg_bias", *gg_bias, x.device(), bias.scalar_type(), {C}, "[C]");
  const c10::cuda::CUDAGuard guard(x.device());
  auto g_grad_y = at::empty_like(x);
  auto g_x = at::empty_like(x);
  auto g_stats = at::zeros({N, 2 * C}, bias.options());
  auto g_b = at::zeros_like(bias);
  if (x.numel() == 0) return {g_grad_y, g_stats, g_x, g_b};
  auto partial_b = at::empty({N, C}, bias.options());
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "style_bwd2_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    auto launch = [&](auto threads) {
      constexpr int kThreads = decltype(threads)::value;
      style_bwd2_kernel<scalar_t, kThreads><<<unsigned(N * C), kThreads, 0, stream>>>(
          grad_y.const_data_ptr<scalar_t>(), grad_stats.const_data_ptr<acc_t>(), x.const_data_ptr<scalar_t>(),
          bias.const_data_ptr<acc_t>(), stats.const_data_ptr<acc_t>(),
          has_ggx ? gg_x->const_data_ptr<scalar_t>() : nullptr, has_ggb ? gg_bias->const_data_ptr<acc_t>() : nullptr,
          g_grad_y.mutable_data_ptr<scalar_t>(), g_stats.mutable_data_ptr<acc_t>(), g_x.mutable_data_ptr<scalar_t>(),
          partial_b.mutable_data_ptr<acc_t>(), int(C), int(HW), acc_t(eps), acc_t(slope));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    if (HW <= 1024) {
      launch(Int<128>{});
    } else {
      launch(Int<256>{});
    }
    sum_over_n(partial_b.const_data_ptr<acc_t>(), g_b.mutable_data_ptr<acc_t>(), int(N), int(C), stream);
  });
  return {g_grad_y, g_stats, g_x, g_b};
}

}  // namespace

ALAE_FAST_REGISTER_KERNELS(ALAE_FAST_STYLE_KERNELS, CUDA, cuda)

}  // namespace alae_fast
