// Modulated AdaIN on CUDA, on the row skeleton of cuda_common/rows.cuh: packed rows in
// registers up to 4096 elements (one read of x and noise), split rows and NHWC through chunk
// moments merged in a fixed order (the forward is cuda_common/row_norm.cuh's). Backward: row
// sums, then grad_x with the parameter partials, then a fixed-order sum of the partials over N
// and the chunks.
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
  using scalar_t = scalar_t_;
  using acc_t = at::opmath_type<scalar_t>;
  using Row = AdainRow<acc_t>;
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
// Backward: dpre = gain·rstd·(g − mean(g) − xhat·mean(g·xhat))·lrelu'(pre), xhat = (t − mean)·rstd.
// The stored mean is an fp32 rounding: a first pass also sums xhat, and xhat is re-centred by
// its mean, so that Σ xhat and Σ dpre (the bias gradient, 0 in exact arithmetic) do not pick up
// HW times that rounding on rows with |mean| ≫ std.

template <typename acc_t>
struct AdainGrad {
  acc_t mean, rstd, mean_xhat, mean_g, mean_gx;
  __device__ __forceinline__ AdainGrad(const acc_t* stats, int n, int c, int C)
      : mean(stats[int64_t(n) * 2 * C + c]), rstd(stats[int64_t(n) * 2 * C + C + c]), mean_xhat(0), mean_g(0),
        mean_gx(0) {}
  __device__ __forceinline__ acc_t xhat(const AdainRow<acc_t>& r, acc_t pre) const {
    return (leaky(pre, r.slope) - mean) * rstd - mean_xhat;
  }
  // From the first pass's sums (Σ g | Σ g·xhat | Σ xhat), xhat not yet re-centred.
  __device__ __forceinline__ void set_sums(const acc_t (&s)[3], int HW) {
    const acc_t inv_hw = quotient(acc_t(1), acc_t(HW));
    mean_xhat = s[2] * inv_hw;
    mean_g = s[0] * inv_hw;
    mean_gx = (s[1] - mean_xhat * s[0]) * inv_hw;
  }
  __device__ __forceinline__ acc_t grad_scale(const acc_t (&s)[3]) const { return s[1] - mean_xhat * s[0]; }
  __device__ __forceinline__ acc_t dpre(const AdainRow<acc_t>& r, acc_t pre, acc_t g) const {
    return r.gain * rstd * (g - mean_g - xhat(r, pre) * mean_gx) * leaky_grad(pre, r.slope);
  }
};

// Packed rows. Writes grad_x, grad_style and the row's partials (Σ dpre | Σ dpre·noise).
template <typename scalar_t, int VEC, int GROUP, int ITEMS, int THREADS>
__global__ void __launch_bounds__(THREADS, min_blocks_per_sm(THREADS)) adain_bwd_packed_kernel(
    const scalar_t* __restrict__ grad_y,                        // [N*C, HW]
    const scalar_t* __restrict__ x,                             // [N*C, HW]
    const scalar_t* __restrict__ noise,                         // [N, HW]
    const at::opmath_type<scalar_t>* __restrict__ noise_weight,  // [C]
    const at::opmath_type<scalar_t>* __restrict__ bias,          // [C]
    const at::opmath_type<scalar_t>* __restrict__ style,         // [N, 2C] (scale | shift)
    const at::opmath_type<scalar_t>* __restrict__ stats,         // [N, 2C] (mean | rstd)
    scalar_t* __restrict__ grad_x,                              // [N*C, HW]
    at::opmath_type<scalar_t>* __restrict__ grad_style,          // [N, 2C]
    at::opmath_type<scalar_t>* __restrict__ partial_p,           // [2, 1, N*C] (Σ dpre | Σ dpre·noise)
    int rows, int C, int HW, at::opmath_type<scalar_t> slope) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int NV = ITEMS / VEC;  // vectors per lane
  const int lane = threadIdx.x % GROUP, row = blockIdx.x * (THREADS / GROUP) + threadIdx.x / GROUP;
  const bool in_range = row < rows;
  const int hw = in_range ? HW : 0, n = in_range ? row / C : 0, c = in_range ? row % C : 0;
  const int64_t base = int64_t(row) * HW, noise_base = int64_t(n) * HW;
  const AdainRow<acc_t> r(noise_weight, bias, style, n, c, C, slope);
  AdainGrad<acc_t> grad(stats, n, c, C);
  acc_t pre[ITEMS], g[ITEMS];
  acc_t s[3] = {acc_t(0), acc_t(0), acc_t(0)};  // Σ g, Σ g·xhat, Σ xhat
#pragma unroll
  for (int j = 0; j < NV; ++j) {
    const int p = (j * GROUP + lane) * VEC;
    if (p < hw) {
      acc_t gv[VEC], xv[VEC], nv[VEC];
      load_acc<VEC>(grad_y, base + p, gv);
      load_acc<VEC>(x, base + p, xv);
      load_acc<VEC>(noise, noise_base + p, nv);
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        g[j * VEC + k] = gv[k];
        pre[j * VEC + k] = r.pre(xv[k], nv[k]);
        const acc_t xh = grad.xhat(r, pre[j * VEC + k]);
        s[0] += gv[k];
        s[1] += gv[k] * xh;
        s[2] += xh;
      }
    }
  }
  sum_group<GROUP>(s);
  grad.set_sums(s, HW);
  acc_t q[2] = {acc_t(0), acc_t(0)};  // Σ dpre, Σ dpre·noise
#pragma unroll
  for (int j = 0; j < NV; ++j) {
    const int p = (j * GROUP + lane) * VEC;
    if (p < hw) {
      acc_t nv[VEC], out[VEC];
      load_acc<VEC>(noise, noise_base + p, nv);  // shared by the C rows of sample n: a cache hit
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        out[k] = grad.dpre(r, pre[j * VEC + k], g[j * VEC + k]);
        q[0] += out[k];
        q[1] += out[k] * nv[k];
      }
      store_acc<VEC>(grad_x, base + p, out);
    }
  }
  sum_group<GROUP>(q);
  if (in_range && lane == 0) {
    grad_style[int64_t(n) * 2 * C + c] = grad.grad_scale(s);
    grad_style[int64_t(n) * 2 * C + C + c] = s[0];
    partial_p[row] = q[0];
    partial_p[int64_t(rows) + row] = q[1];
  }
}

// Split rows, pass 1: chunk sums (Σ g | Σ g·xhat | Σ xhat).
template <typename scalar_t, typename Tile>
__global__ void __launch_bounds__(Tile::kThreads, min_blocks_per_sm(Tile::kThreads)) adain_bwd_sums_kernel(
    const scalar_t* __restrict__ grad_y,                        // like x
    const scalar_t* __restrict__ x,                             // [N, C, H, W] (NCHW or NHWC)
    const scalar_t* __restrict__ noise,                         // [N, HW]
    const at::opmath_type<scalar_t>* __restrict__ noise_weight,  // [C]
    const at::opmath_type<scalar_t>* __restrict__ bias,          // [C]
    const at::opmath_type<scalar_t>* __restrict__ style,         // [N, 2C]
    const at::opmath_type<scalar_t>* __restrict__ stats,         // [N, 2C] (mean | rstd)
    at::opmath_type<scalar_t>* __restrict__ partial_s,           // [3, splits, N*C]
    int C, int HW, int chunk, at::opmath_type<scalar_t> slope) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int VEC = Tile::kVec;
  const Tile tile(C, HW, chunk);
  const int c = tile.active() ? tile.c : 0;
  const AdainRow<acc_t> r(noise_weight, bias, style, tile.n, c, C, slope);
  const AdainGrad<acc_t> grad(stats, tile.n, c, C);
  acc_t s[3] = {acc_t(0), acc_t(0), acc_t(0)};
  tile.for_each([&](int p) {
    acc_t gv[VEC], xv[VEC], nv[VEC];
    load_acc<VEC>(grad_y, tile.x_at(p), gv);
    load_acc<VEC>(x, tile.x_at(p), xv);
    load_acc<VEC>(noise, tile.pixel_at(p), nv);
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      const acc_t xh = grad.xhat(r, r.pre(xv[k], nv[k]));
      s[0] += gv[k];
      s[1] += gv[k] * xh;
      s[2] += xh;
    }
  });
  tile.sum(s);
  if (tile.writes_row()) store_chunk_sums(partial_s, tile.rows, tile.splits, tile.split, tile.row, s);
}

// Split rows, pass 2: grad_x of one chunk and its parameter partials; chunk 0 writes grad_style.
template <typename scalar_t, typename Tile>
__global__ void __launch_bounds__(Tile::kThreads, min_blocks_per_sm(Tile::kThreads)) adain_bwd_apply_kernel(
    const scalar_t* __restrict__ grad_y,                        // like x
    const scalar_t* __restrict__ x,                             // [N, C, H, W] (NCHW or NHWC)
    const scalar_t* __restrict__ noise,                         // [N, HW]
    const at::opmath_type<scalar_t>* __restrict__ noise_weight,  // [C]
    const at::opmath_type<scalar_t>* __restrict__ bias,          // [C]
    const at::opmath_type<scalar_t>* __restrict__ style,         // [N, 2C]
    const at::opmath_type<scalar_t>* __restrict__ stats,         // [N, 2C] (mean | rstd)
    const at::opmath_type<scalar_t>* __restrict__ partial_s,     // [3, splits, N*C] (Σ g | Σ g·xhat | Σ xhat)
    scalar_t* __restrict__ grad_x,                              // like x
    at::opmath_type<scalar_t>* __restrict__ grad_style,          // [N, 2C]
    at::opmath_type<scalar_t>* __restrict__ partial_p,           // [2, splits, N*C] (Σ dpre | Σ dpre·noise)
    int C, int HW, int chunk, at::opmath_type<scalar_t> slope) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int VEC = Tile::kVec;
  const Tile tile(C, HW, chunk);
  const int c = tile.active() ? tile.c : 0;
  const AdainRow<acc_t> r(noise_weight, bias, style, tile.n, c, C, slope);
  acc_t s[3];
  row_sums(partial_s, tile.rows, tile.splits, tile.row, s);
  AdainGrad<acc_t> grad(stats, tile.n, c, C);
  grad.set_sums(s, HW);
  acc_t q[2] = {acc_t(0), acc_t(0)};
  tile.for_each([&](int p) {
    acc_t gv[VEC], xv[VEC], nv[VEC];
    load_acc<VEC>(grad_y, tile.x_at(p), gv);
    load_acc<VEC>(x, tile.x_at(p), xv);
    load_acc<VEC>(noise, tile.pixel_at(p), nv);
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      gv[k] = grad.dpre(r, r.pre(xv[k], nv[k]), gv[k]);
      q[0] += gv[k];
      q[1] += gv[k] * nv[k];
    }
    store_acc<VEC>(grad_x, tile.x_at(p), gv);
  });
  tile.sum(q);
  if (tile.writes_row()) {
    store_chunk_sums(partial_p, tile.rows, tile.splits, tile.split, tile.row, q);
    if (tile.split == 0) {
      grad_style[int64_t(tile.n) * 2 * C + c] = grad.grad_scale(s);
      grad_style[int64_t(tile.n) * 2 * C + C + c] = s[0];
    }
  }
}

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
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  const bool nhwc = is_nhwc(x);
  auto y = at::empty_like(x);  // keeps x's memory format
  auto stats = at::empty({N, 2 * C}, style.options());
  if (x.numel() == 0) return {y, stats.zero_()};
  const RowPlan plan = plan_rows(N, C, HW, nhwc, x.scalar_type() == at::kDouble, sm_count());
  auto partial = at::empty({plan.packed ? 0 : 2 * plan.splits * N * C}, style.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "adain_fwd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const bool vectorised = !nhwc && HW % vec16<scalar_t>() == 0 && aligned16(x.const_data_ptr()) &&
                            aligned16(noise.const_data_ptr()) && aligned16(y.const_data_ptr());
    const AdainFwd<scalar_t> op{x.const_data_ptr<scalar_t>(), noise.const_data_ptr<scalar_t>(),
                                noise_weight.const_data_ptr<acc_t>(), bias.const_data_ptr<acc_t>(),
                                style.const_data_ptr<acc_t>(), int(C), acc_t(eps), acc_t(leaky_slope)};
    launch_row_norm(op, y.mutable_data_ptr<scalar_t>(), stats.mutable_data_ptr<acc_t>(), plan, nhwc, vectorised, N,
                    C, HW, partial, c10::cuda::getCurrentCUDAStream());
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
  const bool nhwc = is_nhwc(x);
  TORCH_CHECK(is_nhwc(grad_y) == nhwc, "adain_bwd: argument 'grad_y' must have the memory format of 'x'");
  check_adain_args("adain_bwd", nchw_alias(x), noise, noise_weight, bias, style);
  check_tensor("adain_bwd", "grad_y", nchw_alias(grad_y), x.device(), x.scalar_type(), x.sizes().vec(),
               "[N, C, H, W]");
  check_tensor("adain_bwd", "stats", stats, x.device(), style.scalar_type(), style.sizes().vec(), "[N, 2C]");
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  auto grad_x = at::empty_like(x);
  auto grad_style = at::zeros_like(style);
  auto grad_wn = at::zeros_like(noise_weight);
  auto grad_b = at::zeros_like(bias);
  if (x.numel() == 0) return {grad_x, grad_wn, grad_b, grad_style};
  auto stream = c10::cuda::getCurrentCUDAStream();
  const RowPlan plan = plan_rows(N, C, HW, nhwc, x.scalar_type() == at::kDouble, sm_count());
  // (Σ dpre | Σ dpre·noise) per chunk and row, summed below over the chunks and N in order.
  auto partial_p = at::empty({2, plan.splits, N * C}, style.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "adain_bwd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const bool vectorised = !nhwc && HW % vec16<scalar_t>() == 0 && aligned16(grad_y.const_data_ptr()) &&
                            aligned16(x.const_data_ptr()) && aligned16(noise.const_data_ptr()) &&
                            aligned16(grad_x.const_data_ptr());
    if (plan.packed) {
      with_vec<scalar_t>(vectorised, [&](auto vec) {
        with_packed_bucket<acc_t>(HW, [&](auto group, auto items) {
          constexpr int kGroup = decltype(group)::value, kThreads = kPackedThreads(kGroup);
          const unsigned blocks = unsigned((N * C + kThreads / kGroup - 1) / (kThreads / kGroup));
          adain_bwd_packed_kernel<scalar_t, decltype(vec)::value, kGroup, decltype(items)::value, kThreads>
              <<<blocks, kThreads, 0, stream>>>(
                  grad_y.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), noise.const_data_ptr<scalar_t>(),
                  noise_weight.const_data_ptr<acc_t>(), bias.const_data_ptr<acc_t>(), style.const_data_ptr<acc_t>(),
                  stats.const_data_ptr<acc_t>(), grad_x.mutable_data_ptr<scalar_t>(),
                  grad_style.mutable_data_ptr<acc_t>(), partial_p.mutable_data_ptr<acc_t>(), int(N * C), int(C),
                  int(HW), acc_t(leaky_slope));
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
      });
    } else {
      auto partial_s = at::empty({3, plan.splits, N * C}, style.options());
      with_split_tile<scalar_t>(nhwc, vectorised, plan, N, C, [&](auto tile, dim3 grid, dim3 block) {
        using Tile = typename decltype(tile)::type;
        adain_bwd_sums_kernel<scalar_t, Tile><<<grid, block, 0, stream>>>(
            grad_y.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), noise.const_data_ptr<scalar_t>(),
            noise_weight.const_data_ptr<acc_t>(), bias.const_data_ptr<acc_t>(), style.const_data_ptr<acc_t>(),
            stats.const_data_ptr<acc_t>(), partial_s.mutable_data_ptr<acc_t>(), int(C), int(HW), plan.chunk,
            acc_t(leaky_slope));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        adain_bwd_apply_kernel<scalar_t, Tile><<<grid, block, 0, stream>>>(
            grad_y.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), noise.const_data_ptr<scalar_t>(),
            noise_weight.const_data_ptr<acc_t>(), bias.const_data_ptr<acc_t>(), style.const_data_ptr<acc_t>(),
            stats.const_data_ptr<acc_t>(), partial_s.const_data_ptr<acc_t>(), grad_x.mutable_data_ptr<scalar_t>(),
            grad_style.mutable_data_ptr<acc_t>(), partial_p.mutable_data_ptr<acc_t>(), int(C), int(HW), plan.chunk,
            acc_t(leaky_slope));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    }
    // partial_p plane k is [splits·N, C]: grad_b from plane 0, grad_wn from plane 1.
    const unsigned blocks = unsigned((C + 255) / 256);
    const int terms = int(plan.splits * N);
    sum_over_n_kernel<acc_t><<<blocks, 256, 0, stream>>>(partial_p.const_data_ptr<acc_t>(),
                                                        grad_b.mutable_data_ptr<acc_t>(), terms, int(C));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    sum_over_n_kernel<acc_t><<<blocks, 256, 0, stream>>>(partial_p.const_data_ptr<acc_t>() + terms * C,
                                                        grad_wn.mutable_data_ptr<acc_t>(), terms, int(C));
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
