// The per-(n, c)-row skeleton shared by the instance-norm kernels (adain, style).
//
// A row is the H·W values of one (n, c). Three ways to cover it, chosen on the host (plan_rows):
//   * packed rows (HW <= 4096, NCHW): GROUP lanes per row, the row in registers, several rows per
//     block when GROUP < 128. One read of the input.
//   * split rows (NCHW): a row is cut into `splits` chunks of `chunk` elements, one block each.
//     A first kernel writes each chunk's moments (or sums); the next one combines a row's
//     partials in chunk order (deterministic, no atomics) and applies them. A row of one chunk
//     (splits == 1) runs both steps in one kernel, its block's own merge in place of the partials.
//   * NHWC: the same split kernels on a tile of 32 channels × 8 pixel lanes, so that a warp reads
//     32 consecutive channels of one pixel; rows are strided by C and never copied.
// Statistics are (count, mean, M2) triples of t minus the row's first value (row_norm.cuh):
// local two-pass moments per thread or per vector, merged with Chan's formula in a fixed order.
// No E[t²] − E[t]², so no cancellation. fp64 rows (gradcheck) are packed up to 1024 elements.
#pragma once

#include <ATen/OpMathType.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <type_traits>

#include "launch.cuh"
#include "reduce.cuh"
#include "vec.cuh"

// The types both row skeletons (row_norm.cuh, row_grad.cuh) read from an op: its element type,
// its accumulator type (fp32; fp64 for double) and its per-row state RowT<acc_t>.
#define ALAE_FAST_ROW_OP_TYPES(element_type, RowT) \
  using scalar_t = element_type;                  \
  using acc_t = at::opmath_type<scalar_t>;        \
  using Row = RowT<acc_t>

namespace alae_fast {

template <int V>
using Int = std::integral_constant<int, V>;

// The second argument of every row kernel's __launch_bounds__: 512 threads' worth of blocks per
// SM, which caps registers at 128 a thread. Without it ptxas picks a lower target of its own and
// spills. Row kernels use at most 256 threads, so at least two blocks fit on an SM.
constexpr int min_blocks_per_sm(int threads) { return threads >= 512 ? 1 : 512 / threads; }

// Calls f(vec) with the 16-byte width when `vectorised`, else with 1 (scalar fallback).
template <typename scalar_t, typename F>
void with_vec(bool vectorised, F&& f) {
  if (vectorised) {
    f(Int<vec16<scalar_t>()>{});
  } else {
    f(Int<1>{});
  }
}

// ---------------------------------------------------------------------------------------------
// Moments and their fixed-order merge.

// a / b without IEEE division's slow-path call, whose saved registers ptxas counts as spills.
// fp32: __fdividef (2 ulp), used only where the quotient is of the order of a deviation or a
// weight in [0, 1], never of the order of a row's |mean|. fp64: a float reciprocal refined by
// two Newton steps and a residual correction (|b| within float's normal range).
__device__ __forceinline__ float quotient(float a, float b) { return __fdividef(a, b); }
__device__ __forceinline__ double quotient(double a, double b) {
  double r = double(__fdividef(1.0f, float(b)));
  r = fma(r, fma(-b, r, 1.0), r);
  r = fma(r, fma(-b, r, 1.0), r);
  const double q = a * r;
  return fma(r, fma(-b, q, a), q);
}

template <typename acc_t>
struct Moments {
  acc_t count, mean, m2;  // m2 = Σ (t − mean)²
};

// Chan's merge. An empty side returns the other unchanged, so padding lanes never disturb a
// row (and an infinite mean is not turned into inf − inf).
template <typename acc_t>
__device__ __forceinline__ Moments<acc_t> merge(const Moments<acc_t>& a, const Moments<acc_t>& b) {
  if (b.count == acc_t(0)) return a;
  if (a.count == acc_t(0)) return b;
  const acc_t count = a.count + b.count, delta = b.mean - a.mean, wb = quotient(b.count, count);
  return {count, a.mean + delta * wb, a.m2 + b.m2 + delta * delta * a.count * wb};
}

// Moments of v[0..K), of which the first `valid` count: the mean as v[0] plus the mean offset
// from it, then centred squares.
template <typename acc_t, int K>
__device__ __forceinline__ Moments<acc_t> moments_of(const acc_t (&v)[K], int valid) {
  if (valid == 0) return {acc_t(0), acc_t(0), acc_t(0)};
  acc_t offset = acc_t(0);
#pragma unroll
  for (int k = 1; k < K; ++k) offset += k < valid ? v[k] - v[0] : acc_t(0);
  const acc_t mean = v[0] + quotient(offset, acc_t(valid));
  acc_t m2 = acc_t(0);
#pragma unroll
  for (int k = 0; k < K; ++k) m2 += k < valid ? (v[k] - mean) * (v[k] - mean) : acc_t(0);
  return {acc_t(valid), mean, m2};
}

// Variance from M2 and the count; a NaN stays NaN (no max(0, NaN) -> 0).
template <typename acc_t>
__device__ __forceinline__ acc_t variance_of(const Moments<acc_t>& m) {
  const acc_t var = quotient(m.m2, m.count);
  return var < acc_t(0) ? acc_t(0) : var;
}

// Merges m over aligned groups of LANES (a power of two <= 32) lanes of a warp by xor
// shuffles. The lower lane is always the left operand, so every lane of a group ends with
// the same bits. Every lane of the warp must call it.
template <int LANES, typename acc_t>
__device__ __forceinline__ Moments<acc_t> merge_lanes(Moments<acc_t> m) {
  const int lane = threadIdx.x % kWarp;
#pragma unroll
  for (int offset = 1; offset < LANES; offset *= 2) {
    const Moments<acc_t> other{__shfl_xor_sync(0xffffffffu, m.count, offset),
                               __shfl_xor_sync(0xffffffffu, m.mean, offset),
                               __shfl_xor_sync(0xffffffffu, m.m2, offset)};
    m = (lane & offset) ? merge(other, m) : merge(m, other);
  }
  return m;
}

// Sums v[0..K) over aligned groups of LANES lanes (power of two <= 32), lower lane first.
template <int LANES, int K, typename T>
__device__ __forceinline__ void sum_lanes(T (&v)[K]) {
  const int lane = threadIdx.x % kWarp;
#pragma unroll
  for (int offset = 1; offset < LANES; offset *= 2) {
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const T other = __shfl_xor_sync(0xffffffffu, v[k], offset);
      v[k] = (lane & offset) ? other + v[k] : v[k] + other;
    }
  }
}

// Merges m over the whole block (one row per block), in warp order; every thread gets the result.
template <typename acc_t>
__device__ __forceinline__ Moments<acc_t> merge_block(Moments<acc_t> m) {
  __shared__ acc_t partial[3][kWarp];  // [count | mean | m2, warps]
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
  m = merge_lanes<kWarp>(m);
  if (lane == 0) {
    partial[0][warp] = m.count;
    partial[1][warp] = m.mean;
    partial[2][warp] = m.m2;
  }
  __syncthreads();
  m = {partial[0][0], partial[1][0], partial[2][0]};
  for (int w = 1; w < warps; ++w) m = merge(m, Moments<acc_t>{partial[0][w], partial[1][w], partial[2][w]});
  __syncthreads();  // `partial` may be reused by the next call
  return m;
}

// Row reductions for a packed group of GROUP lanes: within a warp by shuffles, across warps
// (GROUP > 32, one row per block) through shared memory.
template <int GROUP, typename acc_t>
__device__ __forceinline__ Moments<acc_t> merge_group(Moments<acc_t> m) {
  if constexpr (GROUP <= kWarp) {
    return merge_lanes<GROUP>(m);
  } else {
    return merge_block(m);
  }
}

template <int GROUP, int K, typename T>
__device__ __forceinline__ void sum_group(T (&v)[K]) {
  if constexpr (GROUP <= kWarp) {
    sum_lanes<GROUP>(v);
  } else {
    block_sum(v);
  }
}

// ---------------------------------------------------------------------------------------------
// Split rows: tilings of one chunk of rows onto a block.

// Elements [begin, end) of row chunk `split` of `chunk` elements each.
struct ChunkRange {
  int begin, end;
};

__device__ __forceinline__ ChunkRange chunk_range(int split, int chunk, int HW) {
  const int begin = split * chunk;
  return {begin, min(begin + chunk, HW)};
}

// NCHW: grid (N*C, splits), THREADS threads on one chunk of one row, VEC elements per access.
template <int THREADS, int VEC>
struct NchwTile {
  static constexpr int kThreads = THREADS, kVec = VEC;
  int n, c, split, splits, HW;
  int64_t rows, row;  // N*C, and n*C + c
  int64_t row_base;   // index of the row's first element
  ChunkRange range;

  __device__ __forceinline__ NchwTile(int C, int HW_, int chunk) {
    row = blockIdx.x;
    rows = gridDim.x;
    n = int(row / C);
    c = int(row % C);
    split = blockIdx.y;
    splits = gridDim.y;
    HW = HW_;
    row_base = row * HW;
    range = chunk_range(split, chunk, HW);
  }
  __device__ __forceinline__ int64_t x_at(int p) const { return row_base + p; }           // in [N, C, H, W]
  __device__ __forceinline__ int64_t pixel_at(int p) const { return int64_t(n) * HW + p; }  // in [N, H, W]
  // f(p) for the VEC elements p .. p + VEC − 1 (chunk and HW are multiples of VEC).
  template <typename F>
  __device__ __forceinline__ void for_each(F&& f) const {
    for (int p = range.begin + int(threadIdx.x) * VEC; p < range.end; p += THREADS * VEC) f(p);
  }
  template <typename acc_t>
  __device__ __forceinline__ Moments<acc_t> merge(const Moments<acc_t>& m) const {
    return merge_block(m);
  }
  template <int K, typename T>
  __device__ __forceinline__ void sum(T (&v)[K]) const {
    block_sum(v);
  }
  __device__ __forceinline__ bool active() const { return true; }
  __device__ __forceinline__ bool writes_row() const { return threadIdx.x == 0; }  // one thread per row
};

// NHWC: grid (ceil(C / 32), splits, N), block (32 channels, 8 pixel lanes). Thread (x, y) owns
// channel 32·blockIdx.x + x and pixels begin + y, begin + y + 8, ... of the chunk, so a warp
// reads 32 consecutive channels of one pixel.
constexpr int kNhwcChannels = 32, kNhwcLanes = 8;

struct NhwcTile {
  static constexpr int kThreads = kNhwcChannels * kNhwcLanes, kVec = 1;
  int n, c, split, splits, C, HW;  // c may be >= C in the last tile: inactive
  int64_t rows, row;        // N*C, and n*C + c (clamped to a valid row when inactive)
  ChunkRange range;

  __device__ __forceinline__ NhwcTile(int C_, int HW_, int chunk) {
    C = C_;
    HW = HW_;
    n = blockIdx.z;
    c = blockIdx.x * kNhwcChannels + threadIdx.x;
    split = blockIdx.y;
    splits = gridDim.y;
    rows = int64_t(gridDim.z) * C;
    row = int64_t(n) * C + (c < C ? c : 0);
    range = chunk_range(split, chunk, HW);
  }
  __device__ __forceinline__ int64_t x_at(int p) const { return (int64_t(n) * HW + p) * C + c; }
  __device__ __forceinline__ int64_t pixel_at(int p) const { return int64_t(n) * HW + p; }
  template <typename F>
  __device__ __forceinline__ void for_each(F&& f) const {
    if (!active()) return;
    for (int p = range.begin + int(threadIdx.y); p < range.end; p += kNhwcLanes) f(p);
  }
  // Merges over the 8 pixel lanes of each channel, in lane order; every lane gets the result.
  template <typename acc_t>
  __device__ __forceinline__ Moments<acc_t> merge(Moments<acc_t> m) const {
    __shared__ acc_t partial[3][kNhwcLanes][kNhwcChannels];
    partial[0][threadIdx.y][threadIdx.x] = m.count;
    partial[1][threadIdx.y][threadIdx.x] = m.mean;
    partial[2][threadIdx.y][threadIdx.x] = m.m2;
    __syncthreads();
    m = {partial[0][0][threadIdx.x], partial[1][0][threadIdx.x], partial[2][0][threadIdx.x]};
    for (int y = 1; y < kNhwcLanes; ++y)
      m = alae_fast::merge(m, Moments<acc_t>{partial[0][y][threadIdx.x], partial[1][y][threadIdx.x],
                                             partial[2][y][threadIdx.x]});
    __syncthreads();
    return m;
  }
  template <int K, typename T>
  __device__ __forceinline__ void sum(T (&v)[K]) const {
    __shared__ T partial[K][kNhwcLanes][kNhwcChannels];
#pragma unroll
    for (int k = 0; k < K; ++k) partial[k][threadIdx.y][threadIdx.x] = v[k];
    __syncthreads();
#pragma unroll
    for (int k = 0; k < K; ++k) {
      T s = partial[k][0][threadIdx.x];
      for (int y = 1; y < kNhwcLanes; ++y) s += partial[k][y][threadIdx.x];
      v[k] = s;
    }
    __syncthreads();
  }
  __device__ __forceinline__ bool active() const { return c < C; }
  __device__ __forceinline__ bool writes_row() const { return active() && threadIdx.y == 0; }
};

// Loads VEC consecutive elements at `index` (VEC == 1: one, at any stride) as acc_t.
template <int VEC, typename acc_t, typename scalar_t>
__device__ __forceinline__ void load_acc(const scalar_t* __restrict__ p, int64_t index, acc_t (&out)[VEC]) {
  if constexpr (VEC == 1) {
    out[0] = acc_t(p[index]);
  } else {
    const auto v = load_vec<VEC>(p + index);
#pragma unroll
    for (int k = 0; k < VEC; ++k) out[k] = acc_t(v.v[k]);
  }
}

template <int VEC, typename acc_t, typename scalar_t>
__device__ __forceinline__ void store_acc(scalar_t* __restrict__ p, int64_t index, const acc_t (&in)[VEC]) {
  if constexpr (VEC == 1) {
    p[index] = scalar_t(in[0]);
  } else {
    Vec<scalar_t, VEC> v;
#pragma unroll
    for (int k = 0; k < VEC; ++k) v.v[k] = scalar_t(in[k]);
    store_vec<VEC>(p + index, v);
  }
}

// Chunk moments of a split row: planes [2, splits, N*C] = (mean | m2); the count follows from
// the chunk's range. Merged in chunk order by every reader, so all agree bit for bit.
template <typename acc_t>
__device__ __forceinline__ void store_chunk_moments(acc_t* __restrict__ partial, int64_t rows, int splits,
                                                    int split, int64_t row, const Moments<acc_t>& m) {
  partial[int64_t(split) * rows + row] = m.mean;
  partial[(int64_t(splits) + split) * rows + row] = m.m2;
}

template <typename acc_t>
__device__ __forceinline__ Moments<acc_t> row_moments(const acc_t* __restrict__ partial, int64_t rows, int splits,
                                                      int64_t row, int chunk, int HW) {
  Moments<acc_t> m{acc_t(0), acc_t(0), acc_t(0)};
  for (int s = 0; s < splits; ++s) {
    const ChunkRange r = chunk_range(s, chunk, HW);
    m = merge(m, Moments<acc_t>{acc_t(r.end - r.begin), partial[int64_t(s) * rows + row],
                                partial[(int64_t(splits) + s) * rows + row]});
  }
  return m;
}

// Chunk sums of a split row: K planes [K, splits, N*C], added in chunk order by every reader.
template <int K, typename acc_t>
__device__ __forceinline__ void store_chunk_sums(acc_t* __restrict__ partial, int64_t rows, int splits, int split,
                                                 int64_t row, const acc_t (&v)[K]) {
#pragma unroll
  for (int k = 0; k < K; ++k) partial[(int64_t(k) * splits + split) * rows + row] = v[k];
}

template <int K, typename acc_t>
__device__ __forceinline__ void row_sums(const acc_t* __restrict__ partial, int64_t rows, int splits, int64_t row,
                                         acc_t (&v)[K]) {
#pragma unroll
  for (int k = 0; k < K; ++k) {
    acc_t s = acc_t(0);
    for (int j = 0; j < splits; ++j) s += partial[(int64_t(k) * splits + j) * rows + row];
    v[k] = s;
  }
}

// ---------------------------------------------------------------------------------------------
// Host side: which path, how many chunks.

constexpr int kPackedMaxHW = 4096;     // longest row the packed (register) kernels hold
constexpr int kPackedMaxHW64 = 1024;   // the same in fp64 (gradcheck only), whose registers are twice as wide
constexpr int kMinChunk = 4096;        // shortest chunk worth a block of its own
constexpr int kChunkAlign = 128;       // chunks are a multiple of every vector width
constexpr int kBlocksPerSmTarget = 4;  // split until the grid covers the SMs this many times

struct RowPlan {
  bool packed;  // NCHW rows in registers, no split
  int splits, chunk;
};

// ALAE_FAST_CUDA_ROW_CHUNK=L (tests) forces the split path with chunks of about L elements.
inline int forced_chunk() {
  const char* env = std::getenv("ALAE_FAST_CUDA_ROW_CHUNK");
  return env ? std::atoi(env) : 0;
}

// Rows of N·C·HW elements; sms: the device's multiprocessors (sm_count()). One chunk of every
// row takes N·C blocks in NCHW, N·ceil(C/32) in NHWC.
inline RowPlan plan_rows(int64_t N, int64_t C, int64_t HW, bool nhwc, bool fp64, int sms) {
  const int64_t row_blocks = nhwc ? N * ((C + kNhwcChannels - 1) / kNhwcChannels) : N * C;
  const int forced = forced_chunk();
  if (!nhwc && forced <= 0 && HW <= (fp64 ? kPackedMaxHW64 : kPackedMaxHW)) return {true, 1, int(HW)};
  int64_t splits;
  if (forced > 0) {
    splits = (HW + forced - 1) / forced;
  } else {
    const int64_t wanted = (int64_t(sms) * kBlocksPerSmTarget + row_blocks - 1) / row_blocks;
    splits = std::max<int64_t>(1, std::min<int64_t>(wanted, (HW + kMinChunk - 1) / kMinChunk));
  }
  int64_t chunk = (HW + splits - 1) / splits;
  chunk = (chunk + kChunkAlign - 1) / kChunkAlign * kChunkAlign;
  splits = (HW + chunk - 1) / chunk;
  return {false, int(splits), int(chunk)};
}

// The rows of an activation x [N, C, H, W] (NCHW or NHWC) and the plan that covers them.
// `vectorised`: NCHW rows move 16 bytes at a time.
struct RowLaunch {
  int64_t N, C, HW;
  bool nhwc, vectorised;
  RowPlan plan;
};

// `buffers`: every x-sized or [N, HW] buffer the kernels read or write along the rows.
inline RowLaunch row_launch(const at::Tensor& x, std::initializer_list<const void*> buffers) {
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  const bool nhwc = is_nhwc(x);
  return {N, C, HW, nhwc, !nhwc && vectorisable(HW, x.element_size(), buffers),
          plan_rows(N, C, HW, nhwc, x.scalar_type() == at::kDouble, sm_count())};
}

// Calls f(group, items): a packed row of HW <= group * items elements, `group` lanes each
// holding `items` (a multiple of every vector width), several rows per block for group < 128.
// fp64 rows stop at 1024 elements (kPackedMaxHW64).
template <typename acc_t, typename F>
void with_packed_bucket(int64_t HW, F&& f) {
  if (HW <= 64) {
    f(Int<8>{}, Int<8>{});
  } else if (HW <= 256) {
    f(Int<32>{}, Int<8>{});
  } else if constexpr (sizeof(acc_t) > 4) {
    f(Int<128>{}, Int<8>{});
  } else if (HW <= 1024) {
    f(Int<128>{}, Int<8>{});
  } else {
    f(Int<256>{}, Int<16>{});
  }
}

constexpr int kPackedThreads(int group) { return group < 128 ? 128 : group; }

// A thread's place in a packed row kernel: GROUP lanes per row, THREADS / GROUP rows per block.
// Rows past `rows` get n = c = 0 and no elements (hw = 0), so that their lanes still join the
// row's shuffles.
template <int GROUP, int THREADS>
struct PackedLane {
  int lane, row, n, c, hw;
  bool in_range;
  int64_t base, pixel_base;  // the row's first element in [N*C, HW], its sample's in [N, HW]
  __device__ __forceinline__ PackedLane(int rows, int C, int HW) {
    lane = threadIdx.x % GROUP;
    row = blockIdx.x * (THREADS / GROUP) + threadIdx.x / GROUP;
    in_range = row < rows;
    hw = in_range ? HW : 0;
    n = in_range ? row / C : 0;
    c = in_range ? row % C : 0;
    base = int64_t(row) * HW;
    pixel_base = int64_t(n) * HW;
  }
  // f(j, p) for each vector j < ITEMS / VEC this lane holds: row elements p .. p + VEC − 1,
  // p = (j·GROUP + lane)·VEC, those past the row skipped.
  template <int ITEMS, int VEC, typename F>
  __device__ __forceinline__ void for_each_vector(F&& f) const {
#pragma unroll
    for (int j = 0; j < ITEMS / VEC; ++j) {
      const int p = (j * GROUP + lane) * VEC;
      if (p < hw) f(j, p);
    }
  }
};

// Calls f(Int<VEC>, Int<GROUP>, Int<ITEMS>, Int<THREADS>, blocks): the template arguments and the
// grid of a packed row kernel over `rows` rows of HW elements (VEC: the 16-byte width when
// `vectorised`, else 1; THREADS / GROUP rows per block).
template <typename scalar_t, typename acc_t, typename F>
void with_packed_launch(bool vectorised, int64_t rows, int64_t HW, F&& f) {
  with_vec<scalar_t>(vectorised, [&](auto vec) {
    with_packed_bucket<acc_t>(HW, [&](auto group, auto items) {
      constexpr int kGroup = decltype(group)::value, kThreads = kPackedThreads(kGroup);
      constexpr int kRowsPerBlock = kThreads / kGroup;
      f(vec, group, items, Int<kThreads>{}, unsigned((rows + kRowsPerBlock - 1) / kRowsPerBlock));
    });
  });
}

// Threads of the NCHW split kernels.
constexpr int kSplitThreads = 256;

// Calls f(std::type_identity<Tile>, grid, block) for the split kernels of `plan`.
template <typename scalar_t, typename F>
void with_split_tile(bool nhwc, bool vectorised, const RowPlan& plan, int64_t N, int64_t C, F&& f) {
  if (nhwc) {
    const dim3 grid(unsigned((C + kNhwcChannels - 1) / kNhwcChannels), unsigned(plan.splits), unsigned(N));
    f(std::type_identity<NhwcTile>{}, grid, dim3(kNhwcChannels, kNhwcLanes));
  } else {
    const dim3 grid(unsigned(N * C), unsigned(plan.splits), 1);
    with_vec<scalar_t>(vectorised, [&](auto vec) {
      f(std::type_identity<NchwTile<kSplitThreads, decltype(vec)::value>>{}, grid, dim3(kSplitThreads));
    });
  }
}

}  // namespace alae_fast
