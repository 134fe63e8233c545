// Blended resampling on CUDA (2x2 box down, nearest up). blend_up and blend_real are elementwise
// over 2x2 blocks with 16-byte vectors; blend_down fuses avgpool2 + 1x1 from_rgb + lrelu + lerp.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <initializer_list>

#include "blend.h"
#include "../cuda_common/launch.cuh"
#include "../cuda_common/reduce.cuh"
#include "../cuda_common/rows.cuh"

namespace alae_fast {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxImgChannels = 4;  // K of blend_down: RGB or grey images, pooled values kept in registers

// Loads VEC elements, as one 16-byte access when VECTORISED.
template <int VEC, bool VECTORISED, typename T>
__device__ __forceinline__ Vec<T, VEC> load(const T* __restrict__ p) {
  if constexpr (VECTORISED) {
    return load_vec<VEC>(p);
  } else {
    Vec<T, VEC> v;
#pragma unroll
    for (int k = 0; k < VEC; ++k) v.v[k] = p[k];
    return v;
  }
}

template <int VEC, bool VECTORISED, typename T>
__device__ __forceinline__ void store(T* __restrict__ p, const Vec<T, VEC>& v) {
  if constexpr (VECTORISED) {
    store_vec<VEC>(p, v);
  } else {
#pragma unroll
    for (int k = 0; k < VEC; ++k) p[k] = v.v[k];
  }
}

// y = lerp(nearest_up2(low), high, alpha); each thread covers VEC consecutive elements of a high row.
template <typename scalar_t, int VEC>
__global__ void __launch_bounds__(kThreads) blend_up_fwd_kernel(const scalar_t* __restrict__ low,   // [N*C*H/2, W/2]
                                                                const scalar_t* __restrict__ high,  // [N*C*H, W]
                                                                scalar_t* __restrict__ y,           // [N*C*H, W]
                                                                int64_t vectors, int H, int W,
                                                                at::opmath_type<scalar_t> alpha) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t v = int64_t(blockIdx.x) * kThreads + threadIdx.x; v < vectors; v += int64_t(gridDim.x) * kThreads) {
    const int64_t i = v * VEC, row = i / W;  // row of high over N*C*H
    const int w = int(i - row * W);
    const scalar_t* lr = low + (row / H * (H / 2) + row % H / 2) * (W / 2);
    const auto hv = load_vec<VEC>(high + i);
    Vec<scalar_t, VEC> out;
#pragma unroll
    for (int k = 0; k < VEC; ++k) out.v[k] = scalar_t(blend_lerp(acc_t(lr[(w + k) / 2]), acc_t(hv.v[k]), alpha));
    store_vec<VEC>(y + i, out);
  }
}

// Calls f(j, top, bottom) for each group of P consecutive low-resolution pixels (grid-stride over
// `groups`): j = the group's first low pixel over N*C*H/2 rows of W/2; top, bottom = the index in
// the full-resolution [N*C*H, W] tensor of the first element of its 2x2 blocks' upper and lower rows.
template <int P, typename F>
__device__ __forceinline__ void for_each_block_group(int64_t groups, int W, F&& f) {
  const int W2 = W / 2;
  for (int64_t v = int64_t(blockIdx.x) * kThreads + threadIdx.x; v < groups; v += int64_t(gridDim.x) * kThreads) {
    const int64_t j = v * P, r = j / W2;  // first low pixel, its low row
    const int w2 = int(j - r * W2);
    const int64_t top = 2 * r * W + 2 * w2;
    f(j, top, top + W);
  }
}

// Both ops read the 2x2 blocks of P consecutive low-resolution pixels: rows 2*r and 2*r + 1 of the
// full-resolution tensor, 2P elements each, where r runs over N*C*H/2.
// blend_up_bwd: grad_high = alpha*g; grad_low = (1-alpha)*sum of the 2x2 block of g.
template <typename scalar_t, int P, bool VECTORISED>
__global__ void __launch_bounds__(kThreads) blend_up_bwd_kernel(const scalar_t* __restrict__ grad_y,  // [N*C*H, W]
                                                                scalar_t* __restrict__ grad_low,  // [N*C*H/2, W/2]
                                                                scalar_t* __restrict__ grad_high,  // [N*C*H, W]
                                                                int64_t groups, int W,
                                                                at::opmath_type<scalar_t> alpha) {
  using acc_t = at::opmath_type<scalar_t>;
  for_each_block_group<P>(groups, W, [&](int64_t j, int64_t top, int64_t bottom) {
    const auto g0 = load<2 * P, VECTORISED>(grad_y + top), g1 = load<2 * P, VECTORISED>(grad_y + bottom);
    Vec<scalar_t, 2 * P> h0, h1;
    Vec<scalar_t, P> l;
#pragma unroll
    for (int k = 0; k < 2 * P; ++k) {
      h0.v[k] = scalar_t(alpha * acc_t(g0.v[k]));
      h1.v[k] = scalar_t(alpha * acc_t(g1.v[k]));
    }
#pragma unroll
    for (int k = 0; k < P; ++k) {
      const acc_t s = acc_t(g0.v[2 * k]) + acc_t(g0.v[2 * k + 1]) + acc_t(g1.v[2 * k]) + acc_t(g1.v[2 * k + 1]);
      l.v[k] = scalar_t((acc_t(1) - alpha) * s);
    }
    store<2 * P, VECTORISED>(grad_high + top, h0);
    store<2 * P, VECTORISED>(grad_high + bottom, h1);
    store<P, false>(grad_low + j, l);
  });
}

// blend_real: y = alpha*x + (1-alpha)*mean of the 2x2 block of x.
template <typename scalar_t, int P, bool VECTORISED>
__global__ void __launch_bounds__(kThreads) blend_real_fwd_kernel(const scalar_t* __restrict__ x,  // [N*C*H, W]
                                                                  scalar_t* __restrict__ y,        // [N*C*H, W]
                                                                  int64_t groups, int W,
                                                                  at::opmath_type<scalar_t> alpha) {
  using acc_t = at::opmath_type<scalar_t>;
  for_each_block_group<P>(groups, W, [&](int64_t, int64_t top, int64_t bottom) {
    const auto x0 = load<2 * P, VECTORISED>(x + top), x1 = load<2 * P, VECTORISED>(x + bottom);
    Vec<scalar_t, 2 * P> y0, y1;
#pragma unroll
    for (int k = 0; k < P; ++k) {
      const int a = 2 * k, b = 2 * k + 1;
      const acc_t rest = (acc_t(1) - alpha) * acc_t(0.25) *
                         (acc_t(x0.v[a]) + acc_t(x0.v[b]) + acc_t(x1.v[a]) + acc_t(x1.v[b]));
      y0.v[a] = scalar_t(alpha * acc_t(x0.v[a]) + rest);
      y0.v[b] = scalar_t(alpha * acc_t(x0.v[b]) + rest);
      y1.v[a] = scalar_t(alpha * acc_t(x1.v[a]) + rest);
      y1.v[b] = scalar_t(alpha * acc_t(x1.v[b]) + rest);
    }
    store<2 * P, VECTORISED>(y + top, y0);
    store<2 * P, VECTORISED>(y + bottom, y1);
  });
}

// avgpool2 of the K <= kMaxImgChannels image channels at low pixel (h2, w2) of sample n.
template <typename scalar_t>
__device__ __forceinline__ void pool_pixel(const scalar_t* __restrict__ img,  // [N, K, H, W]
                                           int64_t n, int h2, int w2, int K, int H, int W,
                                           at::opmath_type<scalar_t> (&pooled)[kMaxImgChannels]) {
  using acc_t = at::opmath_type<scalar_t>;
#pragma unroll
  for (int k = 0; k < kMaxImgChannels; ++k) {
    pooled[k] = acc_t(0);
    if (k < K) {
      const scalar_t* r0 = img + ((n * K + k) * H + 2 * h2) * W + 2 * w2;
      pooled[k] = (acc_t(r0[0]) + acc_t(r0[1]) + acc_t(r0[W]) + acc_t(r0[W + 1])) * acc_t(0.25);
    }
  }
}

// pre[c] = bias[c] + sum_k weight[c, k] * pooled[k]
template <typename acc_t>
__device__ __forceinline__ acc_t from_rgb(const acc_t* __restrict__ weight, const acc_t* __restrict__ bias, int c,
                                          int K, const acc_t (&pooled)[kMaxImgChannels]) {
  acc_t pre = bias[c];
#pragma unroll
  for (int k = 0; k < kMaxImgChannels; ++k) {
    if (k < K) pre += weight[c * K + k] * pooled[k];
  }
  return pre;
}

// Calls f(n, hw2, h2, w2, pooled) for each low-resolution pixel hw2 = h2·(W/2) + w2 of sample n
// (grid-stride over N·(H/2)·(W/2) pixels), with pooled = avgpool2 of its K image channels.
template <typename scalar_t, typename F>
__device__ __forceinline__ void for_each_pooled_pixel(const scalar_t* __restrict__ img,  // [N, K, H, W]
                                                      int64_t pixels, int K, int H, int W, F&& f) {
  const int H2 = H / 2, W2 = W / 2;
  for (int64_t v = int64_t(blockIdx.x) * kThreads + threadIdx.x; v < pixels; v += int64_t(gridDim.x) * kThreads) {
    const int64_t n = v / (int64_t(H2) * W2);
    const int hw2 = int(v - n * H2 * W2), h2 = hw2 / W2, w2 = hw2 % W2;
    at::opmath_type<scalar_t> pooled[kMaxImgChannels];
    pool_pixel(img, n, h2, w2, K, H, W, pooled);
    f(n, hw2, h2, w2, pooled);
  }
}

// One thread per low-resolution pixel: pools img once, then walks the C output channels.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) blend_down_fwd_kernel(
    const scalar_t* __restrict__ img,                     // [N, K, H, W]
    const at::opmath_type<scalar_t>* __restrict__ weight,  // [C, K]
    const at::opmath_type<scalar_t>* __restrict__ bias,    // [C]
    const scalar_t* __restrict__ new_,                    // [N, C, H/2, W/2]
    scalar_t* __restrict__ y,                             // [N, C, H/2, W/2]
    int64_t pixels, int C, int K, int H, int W, at::opmath_type<scalar_t> alpha, at::opmath_type<scalar_t> slope) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t plane = int64_t(H / 2) * (W / 2);  // low pixels per channel
  for_each_pooled_pixel(img, pixels, K, H, W, [&](int64_t n, int hw2, int, int,
                                                  const acc_t (&pooled)[kMaxImgChannels]) {
    for (int c = 0; c < C; ++c) {
      const int64_t o = (n * C + c) * plane + hw2;
      y[o] = scalar_t(blend_lerp(leaky(from_rgb(weight, bias, c, K, pooled), slope), acc_t(new_[o]), alpha));
    }
  });
}

// Backward, per low-resolution pixel: grad_new = alpha*g and grad_img (sum over c of W[c,k]*dpre / 4).
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) blend_down_bwd_pixel_kernel(
    const scalar_t* __restrict__ grad_y,                  // [N, C, H/2, W/2]
    const scalar_t* __restrict__ img,                     // [N, K, H, W]
    const at::opmath_type<scalar_t>* __restrict__ weight,  // [C, K]
    const at::opmath_type<scalar_t>* __restrict__ bias,    // [C]
    scalar_t* __restrict__ grad_img,                      // [N, K, H, W]
    scalar_t* __restrict__ grad_new,                      // [N, C, H/2, W/2]
    int64_t pixels, int C, int K, int H, int W, at::opmath_type<scalar_t> alpha, at::opmath_type<scalar_t> slope) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t plane = int64_t(H / 2) * (W / 2);  // low pixels per channel
  for_each_pooled_pixel(img, pixels, K, H, W, [&](int64_t n, int hw2, int h2, int w2,
                                                  const acc_t (&pooled)[kMaxImgChannels]) {
    acc_t g_pooled[kMaxImgChannels] = {};
    for (int c = 0; c < C; ++c) {
      const int64_t o = (n * C + c) * plane + hw2;
      const acc_t g = acc_t(grad_y[o]);
      grad_new[o] = scalar_t(alpha * g);
      const acc_t dpre = (acc_t(1) - alpha) * g * leaky_grad(from_rgb(weight, bias, c, K, pooled), slope);
#pragma unroll
      for (int k = 0; k < kMaxImgChannels; ++k) {
        if (k < K) g_pooled[k] += weight[c * K + k] * dpre;
      }
    }
#pragma unroll
    for (int k = 0; k < kMaxImgChannels; ++k) {
      if (k < K) {
        scalar_t* r0 = grad_img + ((n * K + k) * H + 2 * h2) * W + 2 * w2;
        const scalar_t q = scalar_t(g_pooled[k] * acc_t(0.25));
        r0[0] = q;
        r0[1] = q;
        r0[W] = q;
        r0[W + 1] = q;
      }
    }
  });
}

// Backward, one block per (n, c) row: partial sums over the row of dpre (bias) and dpre*pooled[k] (weight).
template <typename scalar_t>
__global__ void blend_down_bwd_param_kernel(const scalar_t* __restrict__ grad_y,                  // [N, C, H/2, W/2]
                                            const scalar_t* __restrict__ img,                     // [N, K, H, W]
                                            const at::opmath_type<scalar_t>* __restrict__ weight,  // [C, K]
                                            const at::opmath_type<scalar_t>* __restrict__ bias,    // [C]
                                            at::opmath_type<scalar_t>* __restrict__ partial_w,     // [N, C, K]
                                            at::opmath_type<scalar_t>* __restrict__ partial_b,     // [N, C]
                                            int C, int K, int H, int W, at::opmath_type<scalar_t> alpha,
                                            at::opmath_type<scalar_t> slope) {
  using acc_t = at::opmath_type<scalar_t>;
  const int row = blockIdx.x, n = row / C, c = row % C, H2 = H / 2, W2 = W / 2;
  const scalar_t* gr = grad_y + int64_t(row) * H2 * W2;
  acc_t s[1 + kMaxImgChannels] = {};  // sum dpre, then sum dpre * pooled[k]
  for (int hw2 = threadIdx.x; hw2 < H2 * W2; hw2 += blockDim.x) {
    acc_t pooled[kMaxImgChannels];
    pool_pixel(img, n, hw2 / W2, hw2 % W2, K, H, W, pooled);
    const acc_t dpre =
        (acc_t(1) - alpha) * acc_t(gr[hw2]) * leaky_grad(from_rgb(weight, bias, c, K, pooled), slope);
    s[0] += dpre;
#pragma unroll
    for (int k = 0; k < kMaxImgChannels; ++k) s[1 + k] += dpre * pooled[k];
  }
  block_sum(s);
  if (threadIdx.x == 0) {
    partial_b[row] = s[0];
    for (int k = 0; k < K; ++k) partial_w[int64_t(row) * K + k] = s[1 + k];
  }
}

at::Tensor blend_up_fwd_cuda(const at::Tensor& low,   // [N, C, H/2, W/2]
                             const at::Tensor& high,  // [N, C, H, W]
                             double alpha) {
  check_on_cuda("blend_up_fwd", "high", high);
  check_blend_up_args("blend_up_fwd", low, high, alpha);
  const c10::cuda::CUDAGuard guard(high.device());
  const int64_t H = high.size(2), W = high.size(3);
  auto y = at::empty_like(high);
  if (high.numel() == 0) return y;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, high.scalar_type(), "blend_up_fwd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const bool vectorised = vectorisable(W, high.element_size(), {high.const_data_ptr(), y.const_data_ptr()});
    with_vec<scalar_t>(vectorised, [&](auto vec) {
      constexpr int kVec = decltype(vec)::value;
      const int64_t vectors = high.numel() / kVec;
      blend_up_fwd_kernel<scalar_t, kVec><<<grid_for(vectors, kThreads), kThreads, 0, stream>>>(
          low.const_data_ptr<scalar_t>(), high.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(), vectors,
          int(H), int(W), acc_t(alpha));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return y;
}

// Calls f(p, vectorised): P low pixels per thread, 2P full-resolution elements as one 16-byte access
// per row when W/2 is a multiple of P and `ptrs` are aligned; one pixel and scalar accesses otherwise.
template <typename scalar_t, typename F>
void with_block_vec(int64_t W, std::initializer_list<const void*> ptrs, F&& f) {
  constexpr int kP = vec16<scalar_t>() / 2;
  bool vectorised = (W / 2) % kP == 0;
  for (const void* p : ptrs) vectorised = vectorised && aligned16(p);
  if (vectorised) {
    f(Int<kP>{}, std::true_type{});
  } else {
    f(Int<1>{}, std::false_type{});
  }
}

std::tuple<at::Tensor, at::Tensor> blend_up_bwd_cuda(const at::Tensor& grad_y,  // [N, C, H, W]
                                                     double alpha) {
  check_on_cuda("blend_up_bwd", "grad_y", grad_y);
  check_blend_full_args("blend_up_bwd", "grad_y", grad_y, alpha);
  const c10::cuda::CUDAGuard guard(grad_y.device());
  const int64_t N = grad_y.size(0), C = grad_y.size(1), H = grad_y.size(2), W = grad_y.size(3);
  auto grad_low = at::empty({N, C, H / 2, W / 2}, grad_y.options());
  auto grad_high = at::empty_like(grad_y);
  if (grad_y.numel() == 0) return {grad_low, grad_high};
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_y.scalar_type(), "blend_up_bwd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    with_block_vec<scalar_t>(W, {grad_y.const_data_ptr(), grad_high.const_data_ptr()}, [&](auto p, auto vectorised) {
      constexpr int kP = decltype(p)::value;
      const int64_t groups = grad_low.numel() / kP;
      blend_up_bwd_kernel<scalar_t, kP, decltype(vectorised)::value>
          <<<grid_for(groups, kThreads), kThreads, 0, stream>>>(
              grad_y.const_data_ptr<scalar_t>(), grad_low.mutable_data_ptr<scalar_t>(),
              grad_high.mutable_data_ptr<scalar_t>(), groups, int(W), acc_t(alpha));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return {grad_low, grad_high};
}

at::Tensor blend_real_fwd_cuda(const at::Tensor& x,  // [N, C, H, W]
                               double alpha) {
  check_on_cuda("blend_real_fwd", "x", x);
  check_blend_full_args("blend_real_fwd", "x", x, alpha);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t W = x.size(3);
  auto y = at::empty_like(x);
  if (x.numel() == 0) return y;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "blend_real_fwd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    with_block_vec<scalar_t>(W, {x.const_data_ptr(), y.const_data_ptr()}, [&](auto p, auto vectorised) {
      constexpr int kP = decltype(p)::value;
      const int64_t groups = x.numel() / 4 / kP;
      blend_real_fwd_kernel<scalar_t, kP, decltype(vectorised)::value>
          <<<grid_for(groups, kThreads), kThreads, 0, stream>>>(x.const_data_ptr<scalar_t>(),
                                                                y.mutable_data_ptr<scalar_t>(), groups, int(W),
                                                                acc_t(alpha));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return y;
}

// Both blend_down entry points: img on CUDA, the shared checks of blend.h (`other`: new or
// grad_y, [N, C, H/2, W/2]), and at most kMaxImgChannels image channels.
void check_blend_down_cuda_args(const char* op, const at::Tensor& img, const at::Tensor& weight,
                                const at::Tensor& bias, const char* other_name, const at::Tensor& other, double alpha,
                                double slope) {
  check_on_cuda(op, "img", img);
  check_blend_down_args(op, img, weight, bias, other_name, other, alpha, slope);
  TORCH_CHECK(img.size(1) <= kMaxImgChannels, op, ": argument 'img' has K = ", img.size(1),
              " channels; the CUDA kernel supports at most ", kMaxImgChannels, " (use impl='ref' or 'triton')");
}

at::Tensor blend_down_fwd_cuda(const at::Tensor& img,     // [N, K, H, W]
                               const at::Tensor& weight,  // [C, K] acc
                               const at::Tensor& bias,    // [C] acc
                               const at::Tensor& new_,    // [N, C, H/2, W/2]
                               double alpha, double slope) {
  check_blend_down_cuda_args("blend_down_fwd", img, weight, bias, "new", new_, alpha, slope);
  const c10::cuda::CUDAGuard guard(img.device());
  const int64_t N = img.size(0), K = img.size(1), H = img.size(2), W = img.size(3), C = new_.size(1);
  auto y = at::empty_like(new_);
  const int64_t pixels = N * (H / 2) * (W / 2);
  if (y.numel() == 0) return y;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, img.scalar_type(), "blend_down_fwd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    blend_down_fwd_kernel<scalar_t><<<grid_for(pixels, kThreads), kThreads, 0, stream>>>(
        img.const_data_ptr<scalar_t>(), weight.const_data_ptr<acc_t>(), bias.const_data_ptr<acc_t>(),
        new_.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(), pixels, int(C), int(K), int(H), int(W),
        acc_t(alpha), acc_t(slope));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> blend_down_bwd_cuda(
    const at::Tensor& grad_y,  // [N, C, H/2, W/2]
    const at::Tensor& img,     // [N, K, H, W]
    const at::Tensor& weight,  // [C, K] acc
    const at::Tensor& bias,    // [C] acc
    double alpha, double slope) {
  check_blend_down_cuda_args("blend_down_bwd", img, weight, bias, "grad_y", grad_y, alpha, slope);
  const c10::cuda::CUDAGuard guard(img.device());
  const int64_t N = img.size(0), K = img.size(1), H = img.size(2), W = img.size(3), C = grad_y.size(1);
  auto grad_img = at::empty_like(img);  // every element written by the pixel kernel
  auto grad_new = at::empty_like(grad_y);
  auto grad_w = at::zeros_like(weight);
  auto grad_b = at::zeros_like(bias);
  const int64_t pixels = N * (H / 2) * (W / 2);
  if (grad_y.numel() == 0) return {grad_img.zero_(), grad_w, grad_b, grad_new};
  auto partial_w = at::empty({N, C, K}, weight.options());  // per-(n, c) partial sums, reduced over N below
  auto partial_b = at::empty({N, C}, bias.options());
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, img.scalar_type(), "blend_down_bwd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    blend_down_bwd_pixel_kernel<scalar_t><<<grid_for(pixels, kThreads), kThreads, 0, stream>>>(
        grad_y.const_data_ptr<scalar_t>(), img.const_data_ptr<scalar_t>(), weight.const_data_ptr<acc_t>(),
        bias.const_data_ptr<acc_t>(), grad_img.mutable_data_ptr<scalar_t>(), grad_new.mutable_data_ptr<scalar_t>(),
        pixels, int(C), int(K), int(H), int(W), acc_t(alpha), acc_t(slope));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    blend_down_bwd_param_kernel<scalar_t><<<unsigned(N * C), threads_for_row((H / 2) * (W / 2)), 0, stream>>>(
        grad_y.const_data_ptr<scalar_t>(), img.const_data_ptr<scalar_t>(), weight.const_data_ptr<acc_t>(),
        bias.const_data_ptr<acc_t>(), partial_w.mutable_data_ptr<acc_t>(), partial_b.mutable_data_ptr<acc_t>(),
        int(C), int(K), int(H), int(W), acc_t(alpha), acc_t(slope));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    sum_over_n(partial_w.const_data_ptr<acc_t>(), grad_w.mutable_data_ptr<acc_t>(), int(N), int(C * K), stream);
    sum_over_n(partial_b.const_data_ptr<acc_t>(), grad_b.mutable_data_ptr<acc_t>(), int(N), int(C), stream);
  });
  return {grad_img, grad_w, grad_b, grad_new};
}

}  // namespace

ALAE_FAST_REGISTER_KERNELS(ALAE_FAST_BLEND_KERNELS, CUDA, cuda)

}  // namespace alae_fast
