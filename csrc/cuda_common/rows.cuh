// Launch-shape choices shared by the per-(n, c)-row kernels (one block per row).
#pragma once

#include <cstdint>
#include <type_traits>

#include "vec.cuh"

namespace alae_fast {

template <int V>
using Int = std::integral_constant<int, V>;

// Calls f(items, threads) with compile-time constants for the row length HW: a row of at most
// items * threads elements lives in registers (items per thread); items == 0 is the looped path
// that re-reads global memory, for rows beyond the largest bucket. fp64 (gradcheck only) stops at
// 4K elements: its 32-item bucket would spill registers.
template <typename acc_t, typename F>
void with_row_bucket(int64_t HW, F&& f) {
  if (HW <= 1024) {
    f(Int<8>{}, Int<128>{});
  } else if (HW <= 4096) {
    f(Int<16>{}, Int<256>{});
  } else if constexpr (sizeof(acc_t) == 4) {
    if (HW <= 16384) {
      f(Int<32>{}, Int<512>{});
    } else {
      f(Int<0>{}, Int<512>{});
    }
  } else {
    f(Int<0>{}, Int<512>{});
  }
}

// Calls f(vec) with the 16-byte width when `vectorised`, else with 1 (scalar fallback).
template <typename scalar_t, typename F>
void with_vec(bool vectorised, F&& f) {
  if (vectorised) {
    f(Int<vec16<scalar_t>()>{});
  } else {
    f(Int<1>{});
  }
}

}  // namespace alae_fast
