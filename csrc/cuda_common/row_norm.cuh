// The instance-norm forward shared by adain and style: t = Op.act(...) per element, the row's
// moments, then y = Op.out(t − mean, rstd) and the row statistics (mean | Op.stat(var, rstd)).
//
// Passes over memory: packed rows read x once (kept in registers) and write y; split and NHWC
// rows read x for the chunk moments, then read it again and write y: one kernel when the row
// is one chunk (the second read closely follows the first, mostly from L2), two otherwise.
//
// Moments are taken of t − shift, shift = the row's first t: a row with |mean| ≫ std then keeps
// its deviations exact, and y uses the shifted mean, not its fp32 rounding.
//
// An Op is a small struct passed by value to the kernels:
//   scalar_t, acc_t, Row (per-row constants): ALAE_FAST_ROW_OP_TYPES (rows.cuh);  acc_t eps;
//   Row row(int n, int c) const;
//   template <int VEC> void act(const Row&, int64_t x_index, int64_t pixel_index, acc_t (&t)[VEC]) const;
//   acc_t out(const Row&, acc_t centred, acc_t rstd) const;
//   acc_t stat(acc_t var, acc_t rstd) const;   // the second statistic written to stats[:, C:]
#pragma once

#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <cuda_runtime.h>

#include "rows.cuh"

namespace alae_fast {

// The row's shift: t at element 0 (x_index, pixel_index), or 0 when that is not finite, so that
// an inf reaches the moments as an inf (mean ±inf, variance NaN, as in the reference).
template <typename Op>
__device__ __forceinline__ typename Op::acc_t row_shift(const Op& op, const typename Op::Row& r, int64_t x_index,
                                                        int64_t pixel_index) {
  typename Op::acc_t t[1];
  op.template act<1>(r, x_index, pixel_index, t);
  return isfinite(t[0]) ? t[0] : typename Op::acc_t(0);
}

// Packed rows: GROUP lanes per row, ITEMS elements per lane in registers, THREADS / GROUP rows
// per block. Rows past N*C run with no elements so that every lane joins the shuffles.
template <typename Op, int VEC, int GROUP, int ITEMS, int THREADS>
__global__ void __launch_bounds__(THREADS, min_blocks_per_sm(THREADS)) row_norm_packed_kernel(
    Op op,
    typename Op::scalar_t* __restrict__ y,  // [N*C, HW]
    typename Op::acc_t* __restrict__ stats,  // [N, 2C] (mean | Op.stat)
    int rows, int C, int HW) {
  using acc_t = typename Op::acc_t;
  const PackedLane<GROUP, THREADS> pos(rows, C, HW);
  const typename Op::Row r = op.row(pos.n, pos.c);
  const acc_t shift = pos.in_range ? row_shift(op, r, pos.base, pos.pixel_base) : acc_t(0);
  acc_t t[ITEMS];  // t − shift
  int valid = 0;
  pos.template for_each_vector<ITEMS, VEC>([&](int j, int p) {
    acc_t v[VEC];
    op.template act<VEC>(r, pos.base + p, pos.pixel_base + p, v);
#pragma unroll
    for (int k = 0; k < VEC; ++k) t[j * VEC + k] = v[k] - shift;
    valid += VEC;
  });
  const Moments<acc_t> m = merge_group<GROUP>(moments_of(t, valid));
  if (!pos.in_range) return;
  const acc_t var = variance_of(m), rstd = rsqrt(var + op.eps);
  pos.template for_each_vector<ITEMS, VEC>([&](int j, int p) {
    acc_t out[VEC];
#pragma unroll
    for (int k = 0; k < VEC; ++k) out[k] = op.out(r, t[j * VEC + k] - m.mean, rstd);
    store_acc<VEC>(y, pos.base + p, out);
  });
  if (pos.lane == 0) {
    stats[int64_t(pos.n) * 2 * C + pos.c] = shift + m.mean;
    stats[int64_t(pos.n) * 2 * C + C + pos.c] = op.stat(var, rstd);
  }
}

// The moments of t − shift over the tile's chunk, merged over the block: every thread of the
// block gets them (all threads must call it; inactive NHWC lanes bring no elements).
template <typename Op, typename Tile>
__device__ __forceinline__ Moments<typename Op::acc_t> chunk_moments(const Op& op, const Tile& tile,
                                                                     const typename Op::Row& r,
                                                                     typename Op::acc_t shift) {
  using acc_t = typename Op::acc_t;
  constexpr int VEC = Tile::kVec;
  Moments<acc_t> m{acc_t(0), acc_t(0), acc_t(0)};
  tile.for_each([&](int p) {
    acc_t t[VEC];
    op.template act<VEC>(r, tile.x_at(p), tile.pixel_at(p), t);
#pragma unroll
    for (int k = 0; k < VEC; ++k) t[k] -= shift;
    m = merge(m, moments_of(t, VEC));
  });
  return tile.merge(m);
}

// y = Op.out(t − shift − m.mean, rstd) over the tile's chunk, from the row's moments m of
// t − shift; chunk 0 writes the row's statistics. Active threads only.
template <typename Op, typename Tile>
__device__ __forceinline__ void normalise_chunk(const Op& op, const Tile& tile, const typename Op::Row& r,
                                                typename Op::acc_t shift, const Moments<typename Op::acc_t>& m,
                                                typename Op::scalar_t* __restrict__ y,  // like x
                                                typename Op::acc_t* __restrict__ stats,  // [N, 2C]
                                                int C) {
  using acc_t = typename Op::acc_t;
  constexpr int VEC = Tile::kVec;
  const acc_t var = variance_of(m), rstd = rsqrt(var + op.eps);
  tile.for_each([&](int p) {
    acc_t t[VEC];
    op.template act<VEC>(r, tile.x_at(p), tile.pixel_at(p), t);
#pragma unroll
    for (int k = 0; k < VEC; ++k) t[k] = op.out(r, (t[k] - shift) - m.mean, rstd);
    store_acc<VEC>(y, tile.x_at(p), t);
  });
  if (tile.split == 0 && tile.writes_row()) {
    stats[int64_t(tile.n) * 2 * C + tile.c] = shift + m.mean;
    stats[int64_t(tile.n) * 2 * C + C + tile.c] = op.stat(var, rstd);
  }
}

// Rows in one chunk (splits == 1): the block's moments, then the normalisation, in one kernel;
// the second read of the chunk follows the first closely (mostly from L2).
template <typename Op, typename Tile>
__global__ void __launch_bounds__(Tile::kThreads, min_blocks_per_sm(Tile::kThreads)) row_norm_single_kernel(
    Op op,
    typename Op::scalar_t* __restrict__ y,   // like x (NCHW or NHWC)
    typename Op::acc_t* __restrict__ stats,  // [N, 2C] (mean | Op.stat)
    int C, int HW) {
  using acc_t = typename Op::acc_t;
  const Tile tile(C, HW, HW);
  const typename Op::Row r = op.row(tile.n, tile.active() ? tile.c : 0);
  const acc_t shift = tile.active() ? row_shift(op, r, tile.x_at(0), tile.pixel_at(0)) : acc_t(0);
  const Moments<acc_t> m = chunk_moments(op, tile, r, shift);  // of t − shift, the whole row
  if (!tile.active()) return;
  normalise_chunk(op, tile, r, shift, m, y, stats, C);
}

// Split rows, pass 1: the moments of one chunk of t − shift.
template <typename Op, typename Tile>
__global__ void __launch_bounds__(Tile::kThreads, min_blocks_per_sm(Tile::kThreads)) row_moments_kernel(
    Op op,
    typename Op::acc_t* __restrict__ partial,  // [2, splits, N*C] (mean | m2)
    int C, int HW, int chunk) {
  using acc_t = typename Op::acc_t;
  const Tile tile(C, HW, chunk);
  const typename Op::Row r = op.row(tile.n, tile.active() ? tile.c : 0);
  const acc_t shift = tile.active() ? row_shift(op, r, tile.x_at(0), tile.pixel_at(0)) : acc_t(0);
  const Moments<acc_t> m = chunk_moments(op, tile, r, shift);
  if (tile.writes_row()) store_chunk_moments(partial, tile.rows, tile.splits, tile.split, tile.row, m);
}

// Split rows, pass 2: merge the row's chunk moments in order, then normalise one chunk.
template <typename Op, typename Tile>
__global__ void __launch_bounds__(Tile::kThreads, min_blocks_per_sm(Tile::kThreads)) row_norm_apply_kernel(
    Op op,
    const typename Op::acc_t* __restrict__ partial,  // [2, splits, N*C] (mean | m2)
    typename Op::scalar_t* __restrict__ y,           // like x (NCHW or NHWC)
    typename Op::acc_t* __restrict__ stats,          // [N, 2C] (mean | Op.stat)
    int C, int HW, int chunk) {
  using acc_t = typename Op::acc_t;
  const Tile tile(C, HW, chunk);
  if (!tile.active()) return;
  const typename Op::Row r = op.row(tile.n, tile.c);
  const acc_t shift = row_shift(op, r, tile.x_at(0), tile.pixel_at(0));
  const Moments<acc_t> m = row_moments(partial, tile.rows, tile.splits, tile.row, chunk, HW);  // of t − shift
  normalise_chunk(op, tile, r, shift, m, y, stats, C);
}

// Runs the forward of `op` on the rows of x (row_launch): y like x, stats [N, 2C].
// `acc_options`: the accumulator dtype and device, for the split path's chunk moments.
template <typename Op>
void launch_row_norm(const Op& op, typename Op::scalar_t* y, typename Op::acc_t* stats, const RowLaunch& rows,
                     const at::TensorOptions& acc_options, cudaStream_t stream) {
  using scalar_t = typename Op::scalar_t;
  using acc_t = typename Op::acc_t;
  const int64_t N = rows.N, C = rows.C, HW = rows.HW;
  const RowPlan& plan = rows.plan;
  if (plan.packed) {
    with_packed_launch<scalar_t, acc_t>(rows.vectorised, N * C, HW, [&](auto vec, auto group, auto items, auto threads,
                                                                    unsigned blocks) {
      row_norm_packed_kernel<Op, decltype(vec)::value, decltype(group)::value, decltype(items)::value,
                             decltype(threads)::value>
          <<<blocks, decltype(threads)::value, 0, stream>>>(op, y, stats, int(N * C), int(C), int(HW));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return;
  }
  with_split_tile<scalar_t>(rows.nhwc, rows.vectorised, plan, N, C, [&](auto tile, dim3 grid, dim3 block) {
    using Tile = typename decltype(tile)::type;
    if (plan.splits == 1) {
      row_norm_single_kernel<Op, Tile><<<grid, block, 0, stream>>>(op, y, stats, int(C), int(HW));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      return;
    }
    const at::Tensor partial = at::empty({2, plan.splits, N * C}, acc_options);  // chunk moments (mean | m2)
    row_moments_kernel<Op, Tile><<<grid, block, 0, stream>>>(op, partial.mutable_data_ptr<acc_t>(), int(C),
                                                             int(HW), plan.chunk);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    row_norm_apply_kernel<Op, Tile><<<grid, block, 0, stream>>>(op, partial.const_data_ptr<acc_t>(), y, stats,
                                                                int(C), int(HW), plan.chunk);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace alae_fast
