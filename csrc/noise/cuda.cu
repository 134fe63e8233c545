// Noise injection on CUDA. Forward: a grid-stride elementwise kernel over 16-byte vectors.
// Backward: one block per (n, c) row, one pass that writes grad_x and the row's parameter partials.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <optional>

#include "noise.h"
#include "../cuda_common/launch.cuh"
#include "../cuda_common/reduce.cuh"
#include "../cuda_common/rows.cuh"

namespace alae_fast {
namespace {

constexpr int kThreads = 256;

// A vector never straddles two rows: the vector path needs HW % VEC == 0.
template <typename scalar_t, int VEC>
__global__ void __launch_bounds__(kThreads) noise_fwd_kernel(
    const scalar_t* __restrict__ x,                             // [N*C, HW]
    const scalar_t* __restrict__ noise,                         // [N, HW]
    const at::opmath_type<scalar_t>* __restrict__ noise_weight,  // [C]
    const at::opmath_type<scalar_t>* __restrict__ bias,          // [C] or nullptr
    scalar_t* __restrict__ y,                                   // [N*C, HW]
    int64_t vectors, int C, int HW, at::opmath_type<scalar_t> slope) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t v = int64_t(blockIdx.x) * kThreads + threadIdx.x; v < vectors; v += int64_t(gridDim.x) * kThreads) {
    const int64_t i = v * VEC, row = i / HW;
    const int n = int(row / C), c = int(row % C);
    const int64_t hw = i - row * HW;
    const acc_t wn = noise_weight[c], b = bias ? bias[c] : acc_t(0);
    const auto xv = load_vec<VEC>(x + i), nv = load_vec<VEC>(noise + int64_t(n) * HW + hw);
    Vec<scalar_t, VEC> out;
#pragma unroll
    for (int k = 0; k < VEC; ++k) out.v[k] = scalar_t(leaky(acc_t(xv.v[k]) + wn * acc_t(nv.v[k]) + b, slope));
    store_vec<VEC>(y + i, out);
  }
}

template <typename scalar_t, int VEC>
__global__ void noise_bwd_kernel(const scalar_t* __restrict__ grad_y,                        // [N*C, HW]
                                 const scalar_t* __restrict__ x,                             // [N*C, HW]
                                 const scalar_t* __restrict__ noise,                         // [N, HW]
                                 const at::opmath_type<scalar_t>* __restrict__ noise_weight,  // [C]
                                 const at::opmath_type<scalar_t>* __restrict__ bias,          // [C] or nullptr
                                 scalar_t* __restrict__ grad_x,                              // [N*C, HW]
                                 at::opmath_type<scalar_t>* __restrict__ partial_wn,          // [N*C]
                                 at::opmath_type<scalar_t>* __restrict__ partial_b,           // [N*C]
                                 int C, int HW, at::opmath_type<scalar_t> slope) {
  using acc_t = at::opmath_type<scalar_t>;
  const int row = blockIdx.x, n = row / C, c = row % C;
  const int64_t base = int64_t(row) * HW;
  const scalar_t* nr = noise + int64_t(n) * HW;
  const acc_t wn = noise_weight[c], b = bias ? bias[c] : acc_t(0);
  acc_t p[2] = {acc_t(0), acc_t(0)};  // sum dpre, sum dpre * noise
  for (int i = int(threadIdx.x) * VEC; i < HW; i += int(blockDim.x) * VEC) {
    const auto gv = load_vec<VEC>(grad_y + base + i), xv = load_vec<VEC>(x + base + i), nv = load_vec<VEC>(nr + i);
    Vec<scalar_t, VEC> out;
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      const acc_t d = acc_t(gv.v[k]) * leaky_grad(acc_t(xv.v[k]) + wn * acc_t(nv.v[k]) + b, slope);
      out.v[k] = scalar_t(d);
      p[0] += d;
      p[1] += d * acc_t(nv.v[k]);
    }
    store_vec<VEC>(grad_x + base + i, out);
  }
  block_sum(p);
  if (threadIdx.x == 0) {
    partial_b[row] = p[0];
    partial_wn[row] = p[1];
  }
}

// Both entry points: x on CUDA, then the shared argument checks of noise.h.
void check_noise_cuda_args(const char* op, const at::Tensor& x, const at::Tensor& noise, const at::Tensor& noise_weight,
                           const std::optional<at::Tensor>& bias) {
  check_on_cuda(op, "x", x);
  check_noise_args(op, x, noise, noise_weight, bias);
}

at::Tensor noise_fwd_cuda(const at::Tensor& x,                    // [N, C, H, W]
                          const at::Tensor& noise,                // [N, 1, H, W]
                          const at::Tensor& noise_weight,         // [C] acc
                          const std::optional<at::Tensor>& bias,  // [C] acc, or None
                          bool act, double leaky_slope) {
  check_noise_cuda_args("noise_fwd", x, noise, noise_weight, bias);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t C = x.size(1), HW = x.size(2) * x.size(3);
  auto y = at::empty_like(x);
  if (x.numel() == 0) return y;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "noise_fwd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const bool vectorised =
        vectorisable(HW, x.element_size(), {x.const_data_ptr(), noise.const_data_ptr(), y.const_data_ptr()});
    with_vec<scalar_t>(vectorised, [&](auto vec) {
      constexpr int kVec = decltype(vec)::value;
      const int64_t vectors = x.numel() / kVec;
      noise_fwd_kernel<scalar_t, kVec><<<grid_for(vectors, kThreads), kThreads, 0, stream>>>(
          x.const_data_ptr<scalar_t>(), noise.const_data_ptr<scalar_t>(), noise_weight.const_data_ptr<acc_t>(),
          bias.has_value() ? bias->const_data_ptr<acc_t>() : nullptr, y.mutable_data_ptr<scalar_t>(), vectors,
          int(C), int(HW), act ? acc_t(leaky_slope) : acc_t(1));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> noise_bwd_cuda(
    const at::Tensor& grad_y,               // [N, C, H, W]
    const at::Tensor& x,                    // [N, C, H, W]
    const at::Tensor& noise,                // [N, 1, H, W]
    const at::Tensor& noise_weight,         // [C] acc
    const std::optional<at::Tensor>& bias,  // [C] acc, or None
    bool act, double leaky_slope) {
  check_noise_cuda_args("noise_bwd", x, noise, noise_weight, bias);
  check_tensor("noise_bwd", "grad_y", grad_y, x.device(), x.scalar_type(), x.sizes().vec(), "[N, C, H, W]");
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  auto grad_x = at::empty_like(x);
  auto grad_wn = at::zeros_like(noise_weight);
  auto grad_b = at::zeros_like(noise_weight);  // stays zero when there is no bias
  if (x.numel() == 0) return {grad_x, grad_wn, grad_b};
  auto partial_wn = at::empty({N, C}, noise_weight.options());  // per-(n, c) partial sums, reduced over N below
  auto partial_b = at::empty({N, C}, noise_weight.options());
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "noise_bwd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const bool vectorised = vectorisable(HW, x.element_size(), {grad_y.const_data_ptr(), x.const_data_ptr(),
                                                                noise.const_data_ptr(), grad_x.const_data_ptr()});
    with_vec<scalar_t>(vectorised, [&](auto vec) {
      constexpr int kVec = decltype(vec)::value;
      noise_bwd_kernel<scalar_t, kVec><<<unsigned(N * C), threads_for_row(HW / kVec), 0, stream>>>(
          grad_y.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), noise.const_data_ptr<scalar_t>(),
          noise_weight.const_data_ptr<acc_t>(), bias.has_value() ? bias->const_data_ptr<acc_t>() : nullptr,
          grad_x.mutable_data_ptr<scalar_t>(), partial_wn.mutable_data_ptr<acc_t>(),
          partial_b.mutable_data_ptr<acc_t>(), int(C), int(HW), act ? acc_t(leaky_slope) : acc_t(1));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    sum_over_n(partial_wn.const_data_ptr<acc_t>(), grad_wn.mutable_data_ptr<acc_t>(), int(N), int(C), stream);
    if (bias.has_value()) {
      sum_over_n(partial_b.const_data_ptr<acc_t>(), grad_b.mutable_data_ptr<acc_t>(), int(N), int(C), stream);
    }
  });
  return {grad_x, grad_wn, grad_b};
}

}  // namespace

ALAE_FAST_REGISTER_KERNELS(ALAE_FAST_NOISE_KERNELS, CUDA, cuda)

}  // namespace alae_fast
