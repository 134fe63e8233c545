// Host-side helpers shared by the CUDA ops: device checks, memory formats and grid sizes.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/util/Exception.h>
#include <c10/util/strides.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace alae_fast {

// The first tensor decides the device; the shared checks then require every other to match it.
inline void check_on_cuda(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.defined() && t.is_cuda(), op, ": argument '", name, "' must be a CUDA tensor, got ",
              t.defined() ? t.device().str() : std::string("undefined"));
}

// Multiprocessors of the current device, looked up once per device.
inline int sm_count() {
  constexpr int kMaxDevices = 64;
  static int cached[kMaxDevices] = {};
  int device = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  if (device >= kMaxDevices) device = kMaxDevices - 1;
  if (cached[device] == 0) {
    int sms = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    cached[device] = sms;
  }
  return cached[device];
}

// x may be NCHW or NHWC (channels_last, not also contiguous).
inline bool is_nhwc(const at::Tensor& x) {
  return !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
}

// The shared argument checks expect NCHW: an NCHW-strided alias of an NHWC tensor's storage
// lets them check its dtype, device and sizes (the kernels never read through it).
inline at::Tensor nchw_alias(const at::Tensor& x) {
  return is_nhwc(x) ? x.as_strided(x.sizes(), c10::contiguous_strides(x.sizes())) : x;
}

// Blocks for a grid-stride loop over `work` items, `per_block` per block per pass: enough to
// fill every SM a few times over, never more than the work needs.
inline unsigned grid_for(int64_t work, int per_block) {
  const int sms = sm_count();
  const int64_t needed = (work + per_block - 1) / per_block;
  return unsigned(std::max<int64_t>(1, std::min<int64_t>(needed, int64_t(sms) * 8)));
}

// Threads for a block that loops over a row of `items` vectors: a multiple of 32 in [32, 512].
inline int threads_for_row(int64_t items) {
  return int(std::min<int64_t>(512, std::max<int64_t>(32, (items + 31) / 32 * 32)));
}

}  // namespace alae_fast
