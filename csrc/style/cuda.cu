// Instance-norm style extraction on CUDA: one block per (n, c) row, laid out like adain.cu.
// Rows up to 16K elements stay in registers; longer rows take the looped path, which re-reads.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "style.h"
#include "../cuda_common/launch.cuh"
#include "../cuda_common/reduce.cuh"
#include "../cuda_common/rows.cuh"

namespace alae_fast {
namespace {

// Forward. ITEMS == 0: looped path with sums shifted by the row's first value (robust variance).
template <typename scalar_t, int VEC, int ITEMS, int THREADS>
__global__ void __launch_bounds__(THREADS) style_fwd_kernel(
    const scalar_t* __restrict__ x,                     // [N*C, HW]
    const at::opmath_type<scalar_t>* __restrict__ bias,  // [C]
    scalar_t* __restrict__ y,                           // [N*C, HW]
    at::opmath_type<scalar_t>* __restrict__ stats,       // [N, 2C] (mean | std)
    int C, int HW, at::opmath_type<scalar_t> eps, at::opmath_type<scalar_t> leaky_slope) {
  using acc_t = at::opmath_type<scalar_t>;
  const int row = blockIdx.x, n = row / C, c = row % C;
  const scalar_t* xr = x + int64_t(row) * HW;
  scalar_t* yr = y + int64_t(row) * HW;
  const acc_t b = bias[c], slope = leaky_slope, inv_hw = acc_t(1) / acc_t(HW);
  auto act = [&](scalar_t xv) { return leaky(acc_t(xv) + b, slope); };
  acc_t mean, var;
  if constexpr (ITEMS > 0) {
    constexpr int NV = ITEMS / VEC;  // vectors per thread
    acc_t t[ITEMS];
    acc_t s[1] = {acc_t(0)};
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int i = (j * THREADS + int(threadIdx.x)) * VEC;
      if (i < HW) {
        const auto xv = load_vec<VEC>(xr + i);
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          t[j * VEC + k] = act(xv.v[k]);
          s[0] += t[j * VEC + k];
        }
      }
    }
    block_sum(s);
    mean = s[0] * inv_hw;
    acc_t sq[1] = {acc_t(0)};
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      if ((j * THREADS + int(threadIdx.x)) * VEC < HW) {
#pragma unroll
        for (int k = 0; k < VEC; ++k) sq[0] += (t[j * VEC + k] - mean) * (t[j * VEC + k] - mean);
      }
    }
    block_sum(sq);
    var = sq[0] * inv_hw;
    const acc_t rstd = acc_t(1) / sqrt(var + eps);
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int i = (j * THREADS + int(threadIdx.x)) * VEC;
      if (i < HW) {
        Vec<scalar_t, VEC> out;
#pragma unroll
        for (int k = 0; k < VEC; ++k) out.v[k] = scalar_t((t[j * VEC + k] - mean) * rstd);
        store_vec<VEC>(yr + i, out);
      }
    }
  } else {
    const acc_t ref = act(xr[0]);
    acc_t s[2] = {acc_t(0), acc_t(0)};  // sum (t - ref), sum (t - ref)^2
    for (int i = int(threadIdx.x) * VEC; i < HW; i += THREADS * VEC) {
      const auto xv = load_vec<VEC>(xr + i);
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const acc_t d = act(xv.v[k]) - ref;
        s[0] += d;
        s[1] += d * d;
      }
    }
    block_sum(s);
    const acc_t dmean = s[0] * inv_hw;
    mean = ref + dmean;
    var = s[1] * inv_hw - dmean * dmean;
    var = var > acc_t(0) ? var : acc_t(0);
    const acc_t rstd = acc_t(1) / sqrt(var + eps);
    for (int i = int(threadIdx.x) * VEC; i < HW; i += THREADS * VEC) {
      const auto xv = load_vec<VEC>(xr + i);
      Vec<scalar_t, VEC> out;
#pragma unroll
      for (int k = 0; k < VEC; ++k) out.v[k] = scalar_t((act(xv.v[k]) - mean) * rstd);
      store_vec<VEC>(yr + i, out);
    }
  }
  if (threadIdx.x == 0) {
    stats[int64_t(n) * 2 * C + c] = mean;
    stats[int64_t(n) * 2 * C + C + c] = sqrt(var);
  }
}

// Backward from grad_y and grad_stats = (d mean | d std). Recomputes the pre-activation from x;
// writes grad_x and per-row partial sums of grad_bias (reduced over N afterwards).
template <typename scalar_t, int VEC, int ITEMS, int THREADS>
__global__ void __launch_bounds__(THREADS) style_bwd_kernel(
    const scalar_t* __restrict__ grad_y,                      // [N*C, HW]
    const at::opmath_type<scalar_t>* __restrict__ grad_stats,  // [N, 2C]
    const scalar_t* __restrict__ x,                           // [N*C, HW]
    const at::opmath_type<scalar_t>* __restrict__ bias,        // [C]
    const at::opmath_type<scalar_t>* __restrict__ stats,       // [N, 2C] (mean | std)
    scalar_t* __restrict__ grad_x,                            // [N*C, HW]
    at::opmath_type<scalar_t>* __restrict__ partial_b,         // [N*C]
    int C, int HW, at::opmath_type<scalar_t> eps, at::opmath_type<scalar_t> leaky_slope) {
  using acc_t = at::opmath_type<scalar_t>;
  const int row = blockIdx.x, n = row / C, c = row % C;
  const int64_t base = int64_t(row) * HW;
  const scalar_t* gr = grad_y + base;
  const scalar_t* xr = x + base;
  scalar_t* gxr = grad_x + base;
  const acc_t b = bias[c], slope = leaky_slope, inv_hw = acc_t(1) / acc_t(HW);
  const acc_t mean = stats[int64_t(n) * 2 * C + c], std = stats[int64_t(n) * 2 * C + C + c];
  const acc_t rstd = acc_t(1) / sqrt(std * std + eps);
  // Gradients reaching t through the mean and std outputs; d std / d t is 0 where std is 0.
  const acc_t g_mean = grad_stats[int64_t(n) * 2 * C + c] * inv_hw;
  const acc_t g_std = std > acc_t(0) ? grad_stats[int64_t(n) * 2 * C + C + c] * inv_hw / std : acc_t(0);
  acc_t s[2] = {acc_t(0), acc_t(0)};  // sum g, sum g * xhat
  acc_t p[1] = {acc_t(0)};            // sum dpre
  auto dpre_of = [&](acc_t pre, acc_t g, acc_t mean_g, acc_t mean_gx) {
    const acc_t centered = leaky(pre, slope) - mean;
    const acc_t dt = rstd * (g - mean_g - centered * rstd * mean_gx) + g_mean + g_std * centered;
    return dt * leaky_grad(pre, slope);
  };
  if constexpr (ITEMS > 0) {
    constexpr int NV = ITEMS / VEC;  // vectors per thread
    acc_t pre[ITEMS], g[ITEMS];
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int i = (j * THREADS + int(threadIdx.x)) * VEC;
      if (i < HW) {
        const auto gv = load_vec<VEC>(gr + i), xv = load_vec<VEC>(xr + i);
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          pre[j * VEC + k] = acc_t(xv.v[k]) + b;
          g[j * VEC + k] = acc_t(gv.v[k]);
          s[0] += g[j * VEC + k];
          s[1] += g[j * VEC + k] * (leaky(pre[j * VEC + k], slope) - mean) * rstd;
        }
      }
    }
    block_sum(s);
    const acc_t mean_g = s[0] * inv_hw, mean_gx = s[1] * inv_hw;
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int i = (j * THREADS + int(threadIdx.x)) * VEC;
      if (i < HW) {
        Vec<scalar_t, VEC> out;
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          const acc_t d = dpre_of(pre[j * VEC + k], g[j * VEC + k], mean_g, mean_gx);
          out.v[k] = scalar_t(d);
          p[0] += d;
        }
        store_vec<VEC>(gxr + i, out);
      }
    }
  } else {
    for (int i = int(threadIdx.x) * VEC; i < HW; i += THREADS * VEC) {
      const auto gv = load_vec<VEC>(gr + i), xv = load_vec<VEC>(xr + i);
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const acc_t g = acc_t(gv.v[k]);
        s[0] += g;
        s[1] += g * (leaky(acc_t(xv.v[k]) + b, slope) - mean) * rstd;
      }
    }
    block_sum(s);
    const acc_t mean_g = s[0] * inv_hw, mean_gx = s[1] * inv_hw;
    for (int i = int(threadIdx.x) * VEC; i < HW; i += THREADS * VEC) {
      const auto gv = load_vec<VEC>(gr + i), xv = load_vec<VEC>(xr + i);
      Vec<scalar_t, VEC> out;
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const acc_t d = dpre_of(acc_t(xv.v[k]) + b, acc_t(gv.v[k]), mean_g, mean_gx);
        out.v[k] = scalar_t(d);
        p[0] += d;
      }
      store_vec<VEC>(gxr + i, out);
    }
  }
  block_sum(p);
  if (threadIdx.x == 0) partial_b[row] = p[0];
}

// Backward of the backward (R1's second order); the formulas are those of csrc/cpu/style.cpp's style_bwd2.
// Two passes over the row: five row sums, then g_grad_y and g_x.
template <typename scalar_t, int THREADS>
__global__ void __launch_bounds__(THREADS) style_bwd2_kernel(
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

std::tuple<at::Tensor, at::Tensor> style_fwd_cuda(const at::Tensor& x,       // [N, C, H, W]
                                                  const at::Tensor& bias,    // [C] acc
                                                  double eps, double leaky_slope) {
  check_on_cuda("style_fwd", "x", x);
  check_style_args("style_fwd", x, bias);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  auto y = at::empty_like(x);
  auto stats = at::zeros({N, 2 * C}, bias.options());
  if (x.numel() == 0) return {y, stats};
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "style_fwd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const bool vectorised =
        HW % vec16<scalar_t>() == 0 && aligned16(x.const_data_ptr()) && aligned16(y.const_data_ptr());
    with_vec<scalar_t>(vectorised, [&](auto vec) {
      with_row_bucket<acc_t>(HW, [&](auto items, auto threads) {
        constexpr int kThreads = decltype(threads)::value;
        style_fwd_kernel<scalar_t, decltype(vec)::value, decltype(items)::value, kThreads>
            <<<unsigned(N * C), kThreads, 0, stream>>>(x.const_data_ptr<scalar_t>(), bias.const_data_ptr<acc_t>(),
                                                       y.mutable_data_ptr<scalar_t>(), stats.mutable_data_ptr<acc_t>(),
                                                       int(C), int(HW), acc_t(eps), acc_t(leaky_slope));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  });
  return {y, stats};
}

std::tuple<at::Tensor, at::Tensor> style_bwd_cuda(const at::Tensor& grad_y,      // [N, C, H, W]
                                                  const at::Tensor& grad_stats,  // [N, 2C] acc
                                                  const at::Tensor& x,           // [N, C, H, W]
                                                  const at::Tensor& bias,        // [C] acc
                                                  const at::Tensor& stats,       // [N, 2C] acc, (mean | std)
                                                  double eps, double leaky_slope) {
  check_on_cuda("style_bwd", "x", x);
  check_style_args("style_bwd", x, bias);
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  check_tensor("style_bwd", "grad_y", grad_y, x.device(), x.scalar_type(), x.sizes().vec(), "[N, C, H, W]");
  check_tensor("style_bwd", "grad_stats", grad_stats, x.device(), bias.scalar_type(), {N, 2 * C}, "[N, 2C]");
  check_tensor("style_bwd", "stats", stats, x.device(), bias.scalar_type(), {N, 2 * C}, "[N, 2C]");
  const c10::cuda::CUDAGuard guard(x.device());
  auto grad_x = at::empty_like(x);
  auto grad_b = at::zeros_like(bias);
  if (x.numel() == 0) return {grad_x, grad_b};
  auto partial_b = at::empty({N, C}, bias.options());  // per-(n, c) partial sums, reduced over N below
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "style_bwd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const bool vectorised = HW % vec16<scalar_t>() == 0 && aligned16(grad_y.const_data_ptr()) &&
                            aligned16(x.const_data_ptr()) && aligned16(grad_x.const_data_ptr());
    with_vec<scalar_t>(vectorised, [&](auto vec) {
      with_row_bucket<acc_t>(HW, [&](auto items, auto threads) {
        constexpr int kThreads = decltype(threads)::value;
        style_bwd_kernel<scalar_t, decltype(vec)::value, decltype(items)::value, kThreads>
            <<<unsigned(N * C), kThreads, 0, stream>>>(
                grad_y.const_data_ptr<scalar_t>(), grad_stats.const_data_ptr<acc_t>(), x.const_data_ptr<scalar_t>(),
                bias.const_data_ptr<acc_t>(), stats.const_data_ptr<acc_t>(), grad_x.mutable_data_ptr<scalar_t>(),
                partial_b.mutable_data_ptr<acc_t>(), int(C), int(HW), acc_t(eps), acc_t(leaky_slope));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
    sum_over_n_kernel<acc_t><<<unsigned((C + 255) / 256), 256, 0, stream>>>(
        partial_b.const_data_ptr<acc_t>(), grad_b.mutable_data_ptr<acc_t>(), int(N), int(C));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
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
    } else if (HW <= 4096) {
      launch(Int<256>{});
    } else {
      launch(Int<512>{});
    }
    sum_over_n_kernel<acc_t><<<unsigned((C + 255) / 256), 256, 0, stream>>>(
        partial_b.const_data_ptr<acc_t>(), g_b.mutable_data_ptr<acc_t>(), int(N), int(C));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {g_grad_y, g_stats, g_x, g_b};
}

}  // namespace

TORCH_LIBRARY_IMPL(alae_fast_C, CUDA, m) {
  m.impl("style_fwd", &style_fwd_cuda);
  m.impl("style_bwd", &style_bwd_cuda);
  m.impl("style_bwd2", &style_bwd2_cuda);
}

}  // namespace alae_fast
