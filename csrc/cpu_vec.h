// Row helpers of the CPU kernels, written so that GCC vectorizes their loops (`omp simd`) without
// fast-math: results depend only on the compiled code, never on the thread count. The kernels spell it
// _Pragma("omp simd ...") because their loops sit inside AT_DISPATCH macro arguments. They keep the
// scalars of a loop in task locals, not in references captured by the lambda, which a store to an
// acc_t row could alias (that alone stops vectorization).
#pragma once

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
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

// Rows in chunks. A row of `len` values is cut into chunks of kChunk values (the last one shorter); the
// row kernels work on (row, chunk) items, several short rows or a slice of a long row per task, and
// combine a row's per-chunk partial results in a fixed pairwise tree (tree_sum, tree_moments). Results
// therefore never depend on the thread count, and a long row is spread over threads even when there are
// fewer rows than threads.
constexpr int64_t kChunk = 256;

struct Chunks {
  int64_t len;      // values per row
  int64_t per_row;  // chunks per row (1 for an empty row)
  explicit Chunks(int64_t row_len) : len(row_len), per_row(std::max<int64_t>(1, (row_len + kChunk - 1) / kChunk)) {}
  int64_t begin(int64_t chunk) const { return chunk * kChunk; }
  int64_t size(int64_t chunk) const { return std::min(kChunk, len - chunk * kChunk); }
};

// body(begin, end) over the items [begin, end) of `rows` rows, item = row * per_row + chunk, in parallel
// with about 32K values per task.
template <typename F>
void parallel_chunks(int64_t rows, const Chunks& chunks, const F& body) {
  at::parallel_for(0, rows * chunks.per_row, grain_rows(std::min(kChunk, chunks.len)), body);
}

// v[0] + v[stride] + ... + v[(n − 1)·stride] (n >= 1), added pairwise in a fixed order.
template <typename T>
T tree_sum(const T* v, int64_t n, int64_t stride = 1) {
  if (n == 1) return v[0];
  const int64_t half = n / 2;
  return tree_sum(v, half, stride) + tree_sum(v + half * stride, n - half, stride);
}

// Accumulation type of the row reductions: double, also for fp32 rows, so that sums of many terms that
// cancel (a gradient through instance norm) keep the accuracy of their terms.
using sum_t = double;

// Count, mean and M2 = Σ (v − mean)² of a run of values.
struct Moments {
  sum_t count, mean, m2;
};

// Moments of v[0, n) (n >= 1, v cache-resident): a second sweep sums the residuals v − mean0 of the first
// mean, which corrects its rounding (a constant run gets its value as mean and M2 = 0 exactly) and gives M2
// without cancellation. A run holding NaN or inf gets the mean of its plain sum (inf, −inf or NaN) and M2 = NaN.
template <typename T>
Moments chunk_moments(const T* v, int64_t n) {
  sum_t sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) sum += sum_t(v[i]);
  const sum_t mean0 = sum / sum_t(n);
  if (!std::isfinite(mean0)) return {sum_t(n), mean0, std::numeric_limits<sum_t>::quiet_NaN()};
  sum_t res = 0, sq = 0;
#pragma omp simd reduction(+ : res, sq)
  for (int64_t i = 0; i < n; ++i) {
    const sum_t d = sum_t(v[i]) - mean0;
    res += d;
    sq += d * d;
  }
  return {sum_t(n), mean0 + res / sum_t(n), sq - res * res / sum_t(n)};
}

// Chan's combine of the moments of two runs, a before b. Non-finite means combine as a plain sum would
// (inf with a finite mean gives inf, inf with −inf NaN).
inline Moments combine(const Moments& a, const Moments& b) {
  const sum_t count = a.count + b.count, delta = b.mean - a.mean, share_b = b.count / count;
  const sum_t mean = std::isfinite(delta) ? a.mean + delta * share_b : (a.mean * a.count + b.mean * b.count) / count;
  return {count, mean, a.m2 + b.m2 + delta * delta * a.count * share_b};
}

// Moments of the runs m[0], ..., m[n − 1] (n >= 1), combined pairwise in a fixed order.
inline Moments tree_moments(const Moments* m, int64_t n) {
  if (n == 1) return m[0];
  const int64_t half = n / 2;
  return combine(tree_moments(m, half), tree_moments(m + half, n - half));
}

// max(v, 0) that keeps NaN (std::max(T(0), NaN) is 0).
template <typename T>
inline T clamp_min_zero(T v) { return v < T(0) ? T(0) : v; }

// Σ d_i·e_i over a row with d_i = 1 where pre_i > 0 and `slope` elsewhere, from the sums of e over each
// side (sum_pos over count_pos values, sum_neg over the others) and `total`, the exact value of Σ e_i.
// Since Σ d·e = total + (slope − 1)·sum_neg = slope·total + (1 − slope)·sum_pos, it uses the side with
// fewer values: less rounding, and exactly `total` (or slope·total) for a row on one side. NaN in either
// sum propagates.
template <typename T>
inline T leaky_weighted_sum(T total, T sum_pos, T sum_neg, T count_pos, T count, T slope) {
  const T minority = count_pos * T(2) >= count ? total + (slope - T(1)) * sum_neg
                                               : slope * total + (T(1) - slope) * sum_pos;
  return minority + T(0) * (sum_pos + sum_neg);
}

}  // namespace alae_fast::cpu
