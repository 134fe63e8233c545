// Modulated AdaIN on CUDA: the forward on cuda_common/row_norm.cuh, the backward on
// cuda_common/row_grad.cuh, both on the row paths of cuda_common/rows.cuh. Passes over memory
// (full reads or writes of an x-sized tensor; noise is [N, HW], shared by the C rows of a sample):
//   packed rows (NCHW, HW <= 4096; 1024 in fp64), one kernel each way, the row in registers:
//     forward  1 pass: read x (+ noise), write y;
//     backward 1 pass: read g, x (+ noise), write grad_x.
//   split rows (longer NCHW rows, chunks of one block each) and NHWC rows, two kernels each way
//   (one when the row is a single chunk: its second read then closely follows the first, mostly
//   from L2):
//     forward  chunk moments (read x), then fixed-order merge + normalise (read x, write y);
//     backward chunk sums of g, g·xhat, xhat (read g, x), then grad_x (read g, x, write grad_x).
//   then grad_bias and grad_noise_weight: a fixed-order sum of [splits·N, C] partials (no x-sized data).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "adain.h"
#include "../cuda_common/launch.cuh"
#include "../cuda_common/row_grad.cuh"
#include "../cuda_common/row_norm.cuh"
#include "../cuda_common/rows.cuh"

namespace alae_fast {
namespace {

// Per-row constants and the pre-activation t = lrelu(x + wn·noise + b).
template <typename acc_t>
struct AdainRow {
  acc_t wn, b, gain, shift, slope;
  __device__ __forceinline__ AdainRow(const acc_t* noise_weight, const acc_t* bias, const acc_t* style, int n, int c,
                                      int C, acc_t slope_)
      : wn(noise_weight[c]), b(bias[c]), gain(acc_t(1) + style[int64_t(n) * 2 * C + c]),
        shift(style[int64_t(n) * 2 * C + C + c]), slope(slope_) {}
  __device__ __forceinline__ acc_t pre(acc_t x, acc_t noise) const { return x + wn * noise + b; }
  __device__ __forceinline__ acc_t act(acc_t x, acc_t noise) const { return leaky(pre(x, noise), slope); }
};

// The forward on the shared row skeleton: t = lrelu(x + wn·noise + b), y = (t − mean)·rstd·gain + shift.
template <typename scalar_t_>
struct AdainFwd {
  ALAE_FAST_ROW_OP_TYPES(scalar_t_, AdainRow);
  const scalar_t* x;         // [N, C, H, W] (NCHW or NHWC)
  const scalar_t* noise;     // [N, HW]
  const acc_t* noise_weight;  // [C]
  const acc_t* bias;          // [C]
  const acc_t* style;         // [N, 2C] (scale | shift)
  int C;
  acc_t eps, slope;

  __device__ __forceinline__ Row row(int n, int c) const { return Row(noise_weight, bias, style, n, c, C, slope); }
  template <int VEC>
  __device__ __forceinline__ void act(const Row& r, int64_t x_index, int64_t pixel_index, acc_t (&t)[VEC]) const {
    acc_t nv[VEC];
    load_acc<VEC>(x, x_index, t);
    load_acc<VEC>(noise, pixel_index, nv);
#pragma unroll
    for (int k = 0; k < VEC; ++k) t[k] = r.act(t[k], nv[k]);
  }
  __device__ __forceinline__ acc_t out(const Row& r, acc_t centred, acc_t rstd) const {
    return centred * (r.gain * rstd) + r.shift;
  }
  __device__ __forceinline__ acc_t stat(acc_t, acc_t rstd) const { return rstd; }
};

// ---------------------------------------------------------------------------------------------
// Backward (cuda_common/row_grad.cuh): dpre = gain·rstd·(g − mean(g) − xhat·mean(g·xhat))·lrelu'(pre),
// xhat = (t − mean)·rstd. The stored mean is an fp32 rounding: the row sums also give Σ xhat,
// and xhat is re-centred by its mean, so that Σ xhat and Σ dpre (the bias gradient, 0 in exact
// arithmetic) do not pick up HW times that rounding on rows with |mean| ≫ std.

template <typename acc_t>
struct AdainGradRow : AdainRow<acc_t>, RowGradMeans<acc_t> {
  acc_t mean, rstd;
  __device__ __forceinline__ AdainGradRow(const acc_t* noise_weight, const acc_t* bias, const acc_t* style,
                                          const acc_t* stats, int n, int c, int C, acc_t slope)
      : AdainRow<acc_t>(noise_weight, bias, style, n, c, C, slope), mean(stats[int64_t(n) * 2 * C + c]),
        rstd(stats[int64_t(n) * 2 * C + C + c]) {}
  // xhat, re-centred once set_sums ran (u = xhat in RowGradMeans).
  __device__ __forceinline__ acc_t centred(acc_t pre) const {
    return (leaky(pre, this->slope) - mean) * rstd - this->mean_u;
  }
  __device__ __forceinline__ acc_t grad_scale(const acc_t (&s)[3]) const { return s[1] - this->mean_u * s[0]; }
  __device__ __forceinline__ acc_t dpre(acc_t pre, acc_t g) const {
    return this->gain * rstd * (g - this->mean_g - centred(pre) * this->mean_gu) * leaky_grad(pre, this->slope);
  }
};

// The backward on the shared row skeleton; parameter partials (Σ dpre | Σ dpre·noise) give
// grad_bias and grad_noise_weight, the row sums give grad_style.
template <typename scalar_t_>
struct AdainBwd {
  ALAE_FAST_ROW_OP_TYPES(scalar_t_, AdainGradRow);
  static constexpr int kParams = 2;
  const scalar_t* grad_y;     // like x
  const scalar_t* x;          // [N, C, H, W] (NCHW or NHWC)
  const scalar_t* noise;      // [N, HW]
  const acc_t* noise_weight;  // [C]
  const acc_t* bias;          // [C]
  const acc_t* style;         // [N, 2C] (scale | shift)
  const acc_t* stats;         // [N, 2C] (mean | rstd)
  acc_t* grad_style;          // [N, 2C], written
  int C;
  acc_t slope;

  __device__ __forceinline__ Row row(int n, int c) const {
    return Row(noise_weight, bias, style, stats, n, c, C, slope);
  }
  template <int VEC>
  __device__ __forceinline__ void load(const Row& r, int64_t x_index, int64_t pixel_index, acc_t (&g)[VEC],
                                       acc_t (&pre)[VEC]) const {
    acc_t nv[VEC];
    load_acc<VEC>(grad_y, x_index, g);
    load_acc<VEC>(x, x_index, pre);
    load_acc<VEC>(noise, pixel_index, nv);
#pragma unroll
    for (int k = 0; k < VEC; ++k) pre[k] = r.pre(pre[k], nv[k]);
  }
  template <int VEC>
  __device__ __forceinline__ void add_params(const Row&, int64_t pixel_index, const acc_t (&dpre)[VEC],
                                             acc_t (&q)[kParams]) const {
    acc_t nv[VEC];
    load_acc<VEC>(noise, pixel_index, nv);  // also read by load() and by the C rows of sample n: cached
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      q[0] += dpre[k];
      q[1] += dpre[k] * nv[k];
    }
  }
  __device__ __forceinline__ void store_row(const Row& r, const acc_t (&s)[3], int n, int c) const {
    grad_style[int64_t(n) * 2 * C + c] = r.grad_scale(s);
    grad_style[int64_t(n) * 2 * C + C + c] = s[0];
  }
};

// ---------------------------------------------------------------------------------------------
// Host

std::tuple<at::Tensor, at::Tensor> adain_fwd_cuda(const at::Tensor& x,             // [N, C, H, W], NCHW or NHWC
                                                  const at::Tensor& noise,         // [N, 1, H, W]
                                                  const at::Tensor& noise_weight,  // [C] acc
                                                  const at::Tensor& bias,          // [C] acc
                                                  const at::Tensor& style,         // [N, 2C] acc
                                                  double eps, double leaky_slope) {
  check_on_cuda("adain_fwd", "x", x);
  check_adain_args("adain_fwd", nchw_alias(x), noise, noise_weight, bias, style);
  const c10::cuda::CUDAGuard guard(x.device());
  auto y = at::empty_like(x);  // keeps x's memory format
  auto stats = at::empty({x.size(0), 2 * x.size(1)}, style.options());
  if (x.numel() == 0) return {y, stats.zero_()};
  const RowLaunch rows = row_launch(x, {x.const_data_ptr(), noise.const_data_ptr(), y.const_data_ptr()});
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "adain_fwd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const AdainFwd<scalar_t> op{x.const_data_ptr<scalar_t>(), noise.const_data_ptr<scalar_t>(),
                                noise_weight.const_data_ptr<acc_t>(), bias.const_data_ptr<acc_t>(),
                                style.const_data_ptr<acc_t>(), int(rows.C), acc_t(eps), acc_t(leaky_slope)};
    launch_row_norm(op, y.mutable_data_ptr<scalar_t>(), stats.mutable_data_ptr<acc_t>(), rows, style.options(),
                    c10::cuda::getCurrentCUDAStream());
  });
  return {y, stats};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> adain_bwd_cuda(
    const at::Tensor& grad_y,        // [N, C, H, W], same memory format as x
    const at::Tensor& x,             // [N, C, H, W], NCHW or NHWC
    const at::Tensor& noise,         // [N, 1, H, W]
    const at::Tensor& noise_weight,  // [C] acc
    const at::Tensor& bias,          // [C] acc
    const at::Tensor& style,         // [N, 2C] acc
    const at::Tensor& stats,         // [N, 2C] acc, (mean | rstd)
    double eps, double leaky_slope) {
  check_on_cuda("adain_bwd", "x", x);
  TORCH_CHECK(is_nhwc(grad_y) == is_nhwc(x), "adain_bwd: argument 'grad_y' must have the memory format of 'x'");
  check_adain_args("adain_bwd", nchw_alias(x), noise, noise_weight, bias, style);
  check_tensor("adain_bwd", "grad_y", nchw_alias(grad_y), x.device(), x.scalar_type(), x.sizes().vec(),
               "[N, C, H, W]");
  check_tensor("adain_bwd", "stats", stats, x.device(), style.scalar_type(), style.sizes().vec(), "[N, 2C]");
  const c10::cuda::CUDAGuard guard(x.device());
  auto grad_x = at::empty_like(x);
  auto grad_style = at::zeros_like(style);
  auto grad_wn = at::zeros_like(noise_weight);
  auto grad_b = at::zeros_like(bias);
  if (x.numel() == 0) return {grad_x, grad_wn, grad_b, grad_style};
  const RowLaunch rows = row_launch(
      x, {grad_y.const_data_ptr(), x.const_data_ptr(), noise.const_data_ptr(), grad_x.const_data_ptr()});
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "adain_bwd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const AdainBwd<scalar_t> op{grad_y.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                                noise.const_data_ptr<scalar_t>(), noise_weight.const_data_ptr<acc_t>(),
                                bias.const_data_ptr<acc_t>(), style.const_data_ptr<acc_t>(),
                                stats.const_data_ptr<acc_t>(), grad_style.mutable_data_ptr<acc_t>(), int(rows.C),
                                acc_t(leaky_slope)};
    // Parameter partials (Σ dpre | Σ dpre·noise): grad_bias, then grad_noise_weight.
    launch_row_grad(op, grad_x.mutable_data_ptr<scalar_t>(),
                    {grad_b.mutable_data_ptr<acc_t>(), grad_wn.mutable_data_ptr<acc_t>()}, rows, style.options(),
                    c10::cuda::getCurrentCUDAStream());
  });
  return {grad_x, grad_wn, grad_b, grad_style};
}

}  // namespace

ALAE_FAST_REGISTER_KERNELS(ALAE_FAST_ADAIN_KERNELS, CUDA, cuda)

}  // namespace alae_fast
