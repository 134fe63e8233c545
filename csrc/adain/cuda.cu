// Modulated AdaIN on CUDA: one block per (n, c) row. Rows up to 16K elements stay in registers
// (one read of x and noise, one write of y); longer rows take the looped path, which re-reads.
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

#include "adain.h"
#include "../cuda_common/launch.cuh"
#include "../cuda_common/reduce.cuh"
#include "../cuda_common/rows.cuh"

namespace alae_fast {
namespace {

// Forward. ITEMS == 0: looped path with sums shifted by the row's first value (robust variance).
template <typename scalar_t, int VEC, int ITEMS, int THREADS>
__global__ void __launch_bounds__(THREADS) adain_fwd_kernel(
    const scalar_t* __restrict__ x,                             // [N*C, HW]
    const scalar_t* __restrict__ noise,                         // [N, HW]
    const at::opmath_type<scalar_t>* __restrict__ noise_weight,  // [C]
    const at::opmath_type<scalar_t>* __restrict__ bias,          // [C]
    const at::opmath_type<scalar_t>* __restrict__ style,         // [N, 2C] (scale | shift)
    scalar_t* __restrict__ y,                                   // [N*C, HW]
    at::opmath_type<scalar_t>* __restrict__ stats,               // [N, 2C] (mean | rstd)
    int C, int HW, at::opmath_type<scalar_t> eps, at::opmath_type<scalar_t> leaky_slope) {
  using acc_t = at::opmath_type<scalar_t>;
  const int row = blockIdx.x, n = row / C, c = row % C;
  const scalar_t* xr = x + int64_t(row) * HW;
  const scalar_t* nr = noise + int64_t(n) * HW;
  scalar_t* yr = y + int64_t(row) * HW;
  const acc_t wn = noise_weight[c], b = bias[c], slope = leaky_slope, inv_hw = acc_t(1) / acc_t(HW);
  const acc_t gain = acc_t(1) + style[int64_t(n) * 2 * C + c], shift = style[int64_t(n) * 2 * C + C + c];
  auto pre = [&](scalar_t xv, scalar_t nv) { return leaky(acc_t(xv) + wn * acc_t(nv) + b, slope); };
  acc_t mean, rstd;
  if constexpr (ITEMS > 0) {
    constexpr int NV = ITEMS / VEC;  // vectors per thread
    acc_t t[ITEMS];
    acc_t s[1] = {acc_t(0)};
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int i = (j * THREADS + int(threadIdx.x)) * VEC;
      if (i < HW) {
        const auto xv = load_vec<VEC>(xr + i), nv = load_vec<VEC>(nr + i);
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          t[j * VEC + k] = pre(xv.v[k], nv.v[k]);
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
    rstd = acc_t(1) / sqrt(sq[0] * inv_hw + eps);
    const acc_t scale = gain * rstd;
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int i = (j * THREADS + int(threadIdx.x)) * VEC;
      if (i < HW) {
        Vec<scalar_t, VEC> out;
#pragma unroll
        for (int k = 0; k < VEC; ++k) out.v[k] = scalar_t((t[j * VEC + k] - mean) * scale + shift);
        store_vec<VEC>(yr + i, out);
      }
    }
  } else {
    const acc_t ref = pre(xr[0], nr[0]);
    acc_t s[2] = {acc_t(0), acc_t(0)};  // sum (t - ref), sum (t - ref)^2
    for (int i = int(threadIdx.x) * VEC; i < HW; i += THREADS * VEC) {
      const auto xv = load_vec<VEC>(xr + i), nv = load_vec<VEC>(nr + i);
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const acc_t d = pre(xv.v[k], nv.v[k]) - ref;
        s[0] += d;
        s[1] += d * d;
      }
    }
    block_sum(s);
    const acc_t dmean = s[0] * inv_hw;
    const acc_t var = s[1] * inv_hw - dmean * dmean;
    mean = ref + dmean;
    rstd = acc_t(1) / sqrt((var > acc_t(0) ? var : acc_t(0)) + eps);
    const acc_t scale = gain * rstd;
    for (int i = int(threadIdx.x) * VEC; i < HW; i += THREADS * VEC) {
      const auto xv = load_vec<VEC>(xr + i), nv = load_vec<VEC>(nr + i);
      Vec<scalar_t, VEC> out;
#pragma unroll
      for (int k = 0; k < VEC; ++k) out.v[k] = scalar_t((pre(xv.v[k], nv.v[k]) - mean) * scale + shift);
      store_vec<VEC>(yr + i, out);
    }
  }
  if (threadIdx.x == 0) {
    stats[int64_t(n) * 2 * C + c] = mean;
    stats[int64_t(n) * 2 * C + C + c] = rstd;
  }
}

// Backward. Recomputes the pre-activation from x and noise; writes grad_x, grad_style and the
// per-row partial sums of grad_noise_weight and grad_bias (reduced over N afterwards).
template <typename scalar_t, int VEC, int ITEMS, int THREADS>
__global__ void __launch_bounds__(THREADS) adain_bwd_kernel(
    const scalar_t* __restrict__ grad_y,                        // [N*C, HW]
    const scalar_t* __restrict__ x,                             // [N*C, HW]
    const scalar_t* __restrict__ noise,                         // [N, HW]
    const at::opmath_type<scalar_t>* __restrict__ noise_weight,  // [C]
    const at::opmath_type<scalar_t>* __restrict__ bias,          // [C]
    const at::opmath_type<scalar_t>* __restrict__ style,         // [N, 2C] (scale | shift)
    const at::opmath_type<scalar_t>* __restrict__ stats,         // [N, 2C] (mean | rstd)
    scalar_t* __restrict__ grad_x,                              // [N*C, HW]
    at::opmath_type<scalar_t>* __restrict__ grad_style,          // [N, 2C]
    at::opmath_type<scalar_t>* __restrict__ partial_wn,          // [N*C]
    at::opmath_type<scalar_t>* __restrict__ partial_b,           // [N*C]
    int C, int HW, at::opmath_type<scalar_t> eps, at::opmath_type<scalar_t> leaky_slope) {
  using acc_t = at::opmath_type<scalar_t>;
  const int row = blockIdx.x, n = row / C, c = row % C;
  const int64_t base = int64_t(row) * HW;
  const scalar_t* gr = grad_y + base;
  const scalar_t* xr = x + base;
  const scalar_t* nr = noise + int64_t(n) * HW;
  scalar_t* gxr = grad_x + base;
  const acc_t wn = noise_weight[c], b = bias[c], slope = leaky_slope, inv_hw = acc_t(1) / acc_t(HW);
  const acc_t mean = stats[int64_t(n) * 2 * C + c], rstd = stats[int64_t(n) * 2 * C + C + c];
  const acc_t gain = acc_t(1) + style[int64_t(n) * 2 * C + c];
  acc_t s[2] = {acc_t(0), acc_t(0)};  // sum g, sum g * xhat
  acc_t p[2] = {acc_t(0), acc_t(0)};  // sum dpre, sum dpre * noise
  // dpre from the pre-activation, the incoming gradient and the row sums (mean_g, mean_gx).
  auto dpre_of = [&](acc_t pre, acc_t g, acc_t mean_g, acc_t mean_gx) {
    const acc_t xhat = (leaky(pre, slope) - mean) * rstd;
    return gain * rstd * (g - mean_g - xhat * mean_gx) * leaky_grad(pre, slope);
  };
  if constexpr (ITEMS > 0) {
    constexpr int NV = ITEMS / VEC;  // vectors per thread
    acc_t pre[ITEMS], g[ITEMS];
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int i = (j * THREADS + int(threadIdx.x)) * VEC;
      if (i < HW) {
        const auto gv = load_vec<VEC>(gr + i), xv = load_vec<VEC>(xr + i), nv = load_vec<VEC>(nr + i);
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          pre[j * VEC + k] = acc_t(xv.v[k]) + wn * acc_t(nv.v[k]) + b;
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
        const auto nv = load_vec<VEC>(nr + i);  // shared by the C rows of sample n: an L1/L2 hit
        Vec<scalar_t, VEC> out;
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          const acc_t d = dpre_of(pre[j * VEC + k], g[j * VEC + k], mean_g, mean_gx);
          out.v[k] = scalar_t(d);
          p[0] += d;
          p[1] += d * acc_t(nv.v[k]);
        }
        store_vec<VEC>(gxr + i, out);
      }
    }
  } else {
    for (int i = int(threadIdx.x) * VEC; i < HW; i += THREADS * VEC) {
      const auto gv = load_vec<VEC>(gr + i), xv = load_vec<VEC>(xr + i), nv = load_vec<VEC>(nr + i);
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const acc_t g = acc_t(gv.v[k]), pre = acc_t(xv.v[k]) + wn * acc_t(nv.v[k]) + b;
        s[0] += g;
        s[1] += g * (leaky(pre, slope) - mean) * rstd;
      }
    }
    block_sum(s);
    const acc_t mean_g = s[0] * inv_hw, mean_gx = s[1] * inv_hw;
    for (int i = int(threadIdx.x) * VEC; i < HW; i += THREADS * VEC) {
      const auto gv = load_vec<VEC>(gr + i), xv = load_vec<VEC>(xr + i), nv = load_vec<VEC>(nr + i);
      Vec<scalar_t, VEC> out;
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const acc_t d = dpre_of(acc_t(xv.v[k]) + wn * acc_t(nv.v[k]) + b, acc_t(gv.v[k]), mean_g, mean_gx);
        out.v[k] = scalar_t(d);
        p[0] += d;
        p[1] += d * acc_t(nv.v[k]);
      }
      store_vec<VEC>(gxr + i, out);
    }
  }
  block_sum(p);
  if (threadIdx.x == 0) {
    grad_style[int64_t(n) * 2 * C + c] = s[1];
    grad_style[int64_t(n) * 2 * C + C + c] = s[0];
    partial_b[row] = p[0];
    partial_wn[row] = p[1];
  }
}

std::tuple<at::Tensor, at::Tensor> adain_fwd_cuda(const at::Tensor& x,             // [N, C, H, W]
                                                  const at::Tensor& noise,         // [N, 1, H, W]
                                                  const at::Tensor& noise_weight,  // [C] acc
                                                  const at::Tensor& bias,          // [C] acc
                                                  const at::Tensor& style,         // [N, 2C] acc
                                                  double eps, double leaky_slope) {
  check_on_cuda("adain_fwd", "x", x);
  check_adain_args("adain_fwd", x, noise, noise_weight, bias, style);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  auto y = at::empty_like(x);
  auto stats = at::empty({N, 2 * C}, style.options());
  if (x.numel() == 0) return {y, stats.zero_()};
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "adain_fwd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const bool vectorised = HW % vec16<scalar_t>() == 0 && aligned16(x.const_data_ptr()) &&
                            aligned16(noise.const_data_ptr()) && aligned16(y.const_data_ptr());
    with_vec<scalar_t>(vectorised, [&](auto vec) {
      with_row_bucket<acc_t>(HW, [&](auto items, auto threads) {
        constexpr int kThreads = decltype(threads)::value;
        adain_fwd_kernel<scalar_t, decltype(vec)::value, decltype(items)::value, kThreads>
            <<<unsigned(N * C), kThreads, 0, stream>>>(
            x.const_data_ptr<scalar_t>(), noise.const_data_ptr<scalar_t>(), noise_weight.const_data_ptr<acc_t>(),
            bias.const_data_ptr<acc_t>(), style.const_data_ptr<acc_t>(), y.mutable_data_ptr<scalar_t>(),
            stats.mutable_data_ptr<acc_t>(), int(C), int(HW), acc_t(eps),
            acc_t(leaky_slope));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  });
  return {y, stats};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> adain_bwd_cuda(
    const at::Tensor& grad_y,        // [N, C, H, W]
    const at::Tensor& x,             // [N, C, H, W]
    const at::Tensor& noise,         // [N, 1, H, W]
    const at::Tensor& noise_weight,  // [C] acc
    const at::Tensor& bias,          // [C] acc
    const at::Tensor& style,         // [N, 2C] acc
    const at::Tensor& stats,         // [N, 2C] acc, (mean | rstd)
    double eps, double leaky_slope) {
  check_on_cuda("adain_bwd", "x", x);
  check_adain_args("adain_bwd", x, noise, noise_weight, bias, style);
  check_tensor("adain_bwd", "grad_y", grad_y, x.device(), x.scalar_type(), x.sizes().vec(), "[N, C, H, W]");
  check_tensor("adain_bwd", "stats", stats, x.device(), style.scalar_type(), style.sizes().vec(), "[N, 2C]");
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  auto grad_x = at::empty_like(x);
  auto grad_style = at::zeros_like(style);
  auto partial_wn = at::empty({N, C}, style.options());  // per-(n, c) partial sums, reduced over N below
  auto partial_b = at::empty({N, C}, style.options());
  auto grad_wn = at::zeros_like(noise_weight);
  auto grad_b = at::zeros_like(bias);
  if (x.numel() == 0) return {grad_x, grad_wn, grad_b, grad_style};
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "adain_bwd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const bool vectorised = HW % vec16<scalar_t>() == 0 && aligned16(grad_y.const_data_ptr()) &&
                            aligned16(x.const_data_ptr()) && aligned16(noise.const_data_ptr()) &&
                            aligned16(grad_x.const_data_ptr());
    with_vec<scalar_t>(vectorised, [&](auto vec) {
      with_row_bucket<acc_t>(HW, [&](auto items, auto threads) {
        constexpr int kThreads = decltype(threads)::value;
        adain_bwd_kernel<scalar_t, decltype(vec)::value, decltype(items)::value, kThreads>
            <<<unsigned(N * C), kThreads, 0, stream>>>(
            grad_y.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), noise.const_data_ptr<scalar_t>(),
            noise_weight.const_data_ptr<acc_t>(), bias.const_data_ptr<acc_t>(), style.const_data_ptr<acc_t>(),
            stats.const_data_ptr<acc_t>(), grad_x.mutable_data_ptr<scalar_t>(), grad_style.mutable_data_ptr<acc_t>(),
            partial_wn.mutable_data_ptr<acc_t>(), partial_b.mutable_data_ptr<acc_t>(), int(C), int(HW),
            acc_t(eps), acc_t(leaky_slope));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
    const unsigned blocks = unsigned((C + 255) / 256);
    sum_over_n_kernel<acc_t><<<blocks, 256, 0, stream>>>(partial_wn.const_data_ptr<acc_t>(),
                                                        grad_wn.mutable_data_ptr<acc_t>(), int(N), int(C));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    sum_over_n_kernel<acc_t><<<blocks, 256, 0, stream>>>(partial_b.const_data_ptr<acc_t>(),
                                                        grad_b.mutable_data_ptr<acc_t>(), int(N), int(C));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {grad_x, grad_wn, grad_b, grad_style};
}

}  // namespace

TORCH_LIBRARY_IMPL(alae_fast_C, CUDA, m) {
  m.impl("adain_fwd", &adain_fwd_cuda);
  m.impl("adain_bwd", &adain_bwd_cuda);
}

}  // namespace alae_fast
