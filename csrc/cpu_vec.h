// Row helpers of the CPU kernels, written so that GCC vectorizes their loops (`omp simd`) without
// fast-math: results depend only on the compiled code, never on the thread count. The kernels spell it
// _Pragma("omp simd ...") because their loops sit inside AT_DISPATCH macro arguments. They keep the
// scalars of a loop in task locals, not in references captured by the lambda, which a store to an
// acc_t row could alias (that alone stops vectorization).
#pragma once

#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>

namespace alae_fast::cpu {

// Rows per at::parallel_for task, so that a task covers about 32K elements.
inline int64_t grain_rows(int64_t row_len) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(row_len, 1)); }

// Uninitialised per-task scratch of n values.
template <typename T>
std::unique_ptr<T[]> scratch(int64_t n) { return std::unique_ptr<T[]>(new T[n]); }

// c ? a : b by bit mask. A plain ternary feeding a multiply is turned back into a branch around the
// (possibly trapping) multiply, which GCC then will not vectorize.
template <typename T>
inline T select(bool c, T a, T b) {
  using U = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  U ua, ub;
  std::memcpy(&ua, &a, sizeof(T));
  std::memcpy(&ub, &b, sizeof(T));
  const U m = U(0) - U(c);
  const U r = (ua & m) | (ub & ~m);
  T out;
  std::memcpy(&out, &r, sizeof(T));
  return out;
}

// leaky(v, slope) and leaky_grad(v, slope) of common.h, same values (v * 1 == v), vectorizable.
template <typename T>
inline T leaky_v(T v, T slope) { return v * select(v > T(0), T(1), slope); }
template <typename T>
inline T leaky_grad_v(T v, T slope) { return select(v > T(0), T(1), slope); }

// scalar_t(v), with float -> bfloat16 (round to nearest even, NaN -> 0x7FC0 as c10 does) written
// branch-free so that it vectorizes.
template <typename scalar_t, typename acc_t>
inline scalar_t to_scalar(acc_t v) {
  if constexpr (std::is_same_v<scalar_t, c10::BFloat16> && std::is_same_v<acc_t, float>) {
    uint32_t u;
    std::memcpy(&u, &v, sizeof(u));
    const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    return c10::BFloat16(uint16_t(select(v != v, 0x7FC0u, rounded)), c10::BFloat16::from_bits());
  } else {
    return scalar_t(v);
  }
}

// src [n] as acc_t: src itself when it is acc_t already, else converted into buf [n].
template <typename acc_t, typename scalar_t>
inline const acc_t* load_row(const scalar_t* src, acc_t* buf, int64_t n) {
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    return src;
  } else {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) buf[i] = acc_t(src[i]);
    return buf;
  }
}

}  // namespace alae_fast::cpu
