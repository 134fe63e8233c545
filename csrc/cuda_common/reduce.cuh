// Deterministic reductions for the CUDA kernels: warp shuffles, then a fixed-order sum of the
// per-warp partials in shared memory. No atomics anywhere, so two runs give identical bits.
#pragma once

#include <c10/cuda/CUDAException.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace alae_fast {

constexpr int kWarp = 32;

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Sums each of v[0..K) over the block and returns the totals to every thread.
// blockDim.x must be a multiple of 32 (at most 1024). Safe to call repeatedly in one kernel.
template <int K, typename T>
__device__ __forceinline__ void block_sum(T (&v)[K]) {
  __shared__ T partial[K][kWarp];  // [K, warps]
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    v[k] = warp_sum(v[k]);
    if (lane == 0) partial[k][warp] = v[k];
  }
  __syncthreads();
#pragma unroll
  for (int k = 0; k < K; ++k) {
    T s = T(0);
    for (int w = 0; w < warps; ++w) s += partial[k][w];
    v[k] = s;
  }
  __syncthreads();  // `partial` may be reused by the next call
}

// out[c] = sum_n partial[n, c], summed in order of n: the deterministic second pass of every
// per-channel parameter gradient.
template <typename acc_t>
__global__ void sum_over_n_kernel(const acc_t* __restrict__ partial,  // [N, C]
                                  acc_t* __restrict__ out,            // [C]
                                  int N, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  acc_t s = acc_t(0);
  for (int n = 0; n < N; ++n) s += partial[int64_t(n) * C + c];
  out[c] = s;
}

// Launches sum_over_n_kernel on `stream` for partial [N, C] -> out [C].
template <typename acc_t>
void sum_over_n(const acc_t* partial, acc_t* out, int N, int C, cudaStream_t stream) {
  sum_over_n_kernel<acc_t><<<unsigned((C + 255) / 256), 256, 0, stream>>>(partial, out, N, C);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace alae_fast
