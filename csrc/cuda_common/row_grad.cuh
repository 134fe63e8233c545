// The instance-norm backward shared by adain and style, on the row skeleton of rows.cuh: per
// element the pre-activation `pre` and the incoming gradient g, the row sums
// s = (Σ g | Σ g·u | Σ u) of u = Row.centred(pre), then grad_x = Row.dpre(pre, g) and
// Op::kParams row sums of it for the per-channel parameter gradients (fixed-order sums over the
// chunks and N at the end, no atomics).
//
// Passes over memory: packed rows read g and x once (kept in registers) and write grad_x; split
// and NHWC rows read g and x for the chunk sums, then read them again and write grad_x: one
// kernel when the row is one chunk (the second read closely follows the first, mostly from L2),
// two otherwise.
//
// A GradOp is a small struct passed by value to the kernels:
//   scalar_t, acc_t, Row (below): ALAE_FAST_ROW_OP_TYPES (rows.cuh);  static constexpr int kParams;
//   Row row(int n, int c) const;
//   template <int VEC> void load(const Row&, int64_t x_index, int64_t pixel_index,
//                                acc_t (&g)[VEC], acc_t (&pre)[VEC]) const;
//   template <int VEC> void add_params(const Row&, int64_t pixel_index, const acc_t (&dpre)[VEC],
//                                      acc_t (&q)[kParams]) const;      // q += this vector's partials
//   void store_row(const Row&, const acc_t (&s)[3], int n, int c) const;  // per-row outputs from s
// with Row:
//   acc_t centred(acc_t pre) const;  void set_sums(const acc_t (&s)[3], int HW);  acc_t dpre(acc_t pre, acc_t g) const;
// (RowGradMeans gives set_sums).
#pragma once

#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <cuda_runtime.h>

#include <array>

#include "reduce.cuh"
#include "rows.cuh"

namespace alae_fast {

// Blocks per SM the packed backward asks ptxas for: its rows sit in registers twice (pre and g),
// so 256-thread blocks (the 4096-element bucket) trade a few registers for a third block per SM.
constexpr int packed_grad_min_blocks(int threads) { return threads >= 256 ? 3 : min_blocks_per_sm(threads); }

// The row means a Row takes from the sums s = (Σ g | Σ g·u | Σ u) of u not yet re-centred:
// mean_u (which Row.centred then subtracts), mean_g and mean_gu, the mean of g·(u − mean_u).
template <typename acc_t>
struct RowGradMeans {
  acc_t mean_u = acc_t(0), mean_g = acc_t(0), mean_gu = acc_t(0);
  __device__ __forceinline__ void set_sums(const acc_t (&s)[3], int HW) {
    const acc_t inv_hw = quotient(acc_t(1), acc_t(HW));
    mean_u = s[2] * inv_hw;
    mean_g = s[0] * inv_hw;
    mean_gu = (s[1] - mean_u * s[0]) * inv_hw;
  }
};

// s += (g, g·u, u).
template <typename acc_t>
__device__ __forceinline__ void add_grad_sums(acc_t (&s)[3], acc_t g, acc_t u) {
  s[0] += g;
  s[1] += g * u;
  s[2] += u;
}

// Packed rows: GROUP lanes per row, ITEMS elements per lane of both pre and g in registers,
// THREADS / GROUP rows per block. Rows past N*C run with no elements so that every lane joins
// the shuffles.
template <typename Op, int VEC, int GROUP, int ITEMS, int THREADS>
__global__ void __launch_bounds__(THREADS, packed_grad_min_blocks(THREADS)) row_grad_packed_kernel(
    Op op,
    typename Op::scalar_t* __restrict__ grad_x,        // [N*C, HW]
    typename Op::acc_t* __restrict__ partial_params,  // [kParams, 1, N*C]
    int rows, int C, int HW) {
  using acc_t = typename Op::acc_t;
  const PackedLane<GROUP, THREADS> pos(rows, C, HW);
  typename Op::Row r = op.row(pos.n, pos.c);
  acc_t pre[ITEMS], g[ITEMS];
  acc_t s[3] = {acc_t(0), acc_t(0), acc_t(0)};  // Σ g, Σ g·u, Σ u
  pos.template for_each_vector<ITEMS, VEC>([&](int j, int p) {
    acc_t gv[VEC], pv[VEC];
    op.template load<VEC>(r, pos.base + p, pos.pixel_base + p, gv, pv);
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      g[j * VEC + k] = gv[k];
      pre[j * VEC + k] = pv[k];
      add_grad_sums(s, gv[k], r.centred(pv[k]));
    }
  });
  sum_group<GROUP>(s);
  r.set_sums(s, HW);
  if (pos.in_range && pos.lane == 0) op.store_row(r, s, pos.n, pos.c);  // here: s is then dead in the loop below
  acc_t q[Op::kParams] = {};
  pos.template for_each_vector<ITEMS, VEC>([&](int j, int p) {
    acc_t out[VEC];
#pragma unroll
    for (int k = 0; k < VEC; ++k) out[k] = r.dpre(pre[j * VEC + k], g[j * VEC + k]);
    store_acc<VEC>(grad_x, pos.base + p, out);
    op.template add_params<VEC>(r, pos.pixel_base + p, out, q);
  });
  sum_group<GROUP>(q);
  if (pos.in_range && pos.lane == 0) store_chunk_sums(partial_params, rows, 1, 0, pos.row, q);
}

// The sums (Σ g | Σ g·u | Σ u) over the tile's chunk, summed over the block: every thread of the
// block gets them (all threads must call it; inactive NHWC lanes bring no elements).
template <typename Op, typename Tile>
__device__ __forceinline__ void chunk_grad_sums(const Op& op, const Tile& tile, const typename Op::Row& r,
                                                typename Op::acc_t (&s)[3]) {
  using acc_t = typename Op::acc_t;
  constexpr int VEC = Tile::kVec;
  s[0] = s[1] = s[2] = acc_t(0);
  tile.for_each([&](int p) {
    acc_t g[VEC], pre[VEC];
    op.template load<VEC>(r, tile.x_at(p), tile.pixel_at(p), g, pre);
#pragma unroll
    for (int k = 0; k < VEC; ++k) add_grad_sums(s, g[k], r.centred(pre[k]));
  });
  tile.sum(s);
}

// From the row sums s: chunk 0 writes the per-row outputs, then grad_x of the tile's chunk and
// its parameter partials, summed over the block and written by the row's writer. All threads
// must call it.
template <typename Op, typename Tile>
__device__ __forceinline__ void grad_chunk(const Op& op, const Tile& tile, typename Op::Row& r,
                                           const typename Op::acc_t (&s)[3], int HW,
                                           typename Op::scalar_t* __restrict__ grad_x,       // like x
                                           typename Op::acc_t* __restrict__ partial_params) {  // [kParams, splits, N*C]
  using acc_t = typename Op::acc_t;
  constexpr int VEC = Tile::kVec;
  r.set_sums(s, HW);
  if (tile.split == 0 && tile.writes_row()) op.store_row(r, s, tile.n, tile.c);
  acc_t q[Op::kParams] = {};
  tile.for_each([&](int p) {
    acc_t g[VEC], pre[VEC];
    op.template load<VEC>(r, tile.x_at(p), tile.pixel_at(p), g, pre);
#pragma unroll
    for (int k = 0; k < VEC; ++k) g[k] = r.dpre(pre[k], g[k]);
    op.template add_params<VEC>(r, tile.pixel_at(p), g, q);
    store_acc<VEC>(grad_x, tile.x_at(p), g);
  });
  tile.sum(q);
  if (tile.writes_row()) store_chunk_sums(partial_params, tile.rows, tile.splits, tile.split, tile.row, q);
}

// Rows in one chunk (splits == 1): the block's row sums, then grad_x, in one kernel; the second
// read of g and x follows the first closely (mostly from L2).
template <typename Op, typename Tile>
__global__ void __launch_bounds__(Tile::kThreads, min_blocks_per_sm(Tile::kThreads)) row_grad_single_kernel(
    Op op,
    typename Op::scalar_t* __restrict__ grad_x,        // like x (NCHW or NHWC)
    typename Op::acc_t* __restrict__ partial_params,  // [kParams, 1, N*C]
    int C, int HW) {
  using acc_t = typename Op::acc_t;
  const Tile tile(C, HW, HW);
  typename Op::Row r = op.row(tile.n, tile.active() ? tile.c : 0);
  acc_t s[3];
  chunk_grad_sums(op, tile, r, s);
  grad_chunk(op, tile, r, s, HW, grad_x, partial_params);
}

// Split rows, pass 1: the chunk sums (Σ g | Σ g·u | Σ u) of one chunk.
template <typename Op, typename Tile>
__global__ void __launch_bounds__(Tile::kThreads, min_blocks_per_sm(Tile::kThreads)) row_grad_sums_kernel(
    Op op,
    typename Op::acc_t* __restrict__ partial_sums,  // [3, splits, N*C]
    int C, int HW, int chunk) {
  using acc_t = typename Op::acc_t;
  const Tile tile(C, HW, chunk);
  const typename Op::Row r = op.row(tile.n, tile.active() ? tile.c : 0);
  acc_t s[3];
  chunk_grad_sums(op, tile, r, s);
  if (tile.writes_row()) store_chunk_sums(partial_sums, tile.rows, tile.splits, tile.split, tile.row, s);
}

// Split rows, pass 2: the row's chunk sums added in chunk order, then grad_chunk.
template <typename Op, typename Tile>
__global__ void __launch_bounds__(Tile::kThreads, min_blocks_per_sm(Tile::kThreads)) row_grad_apply_kernel(
    Op op,
    const typename Op::acc_t* __restrict__ partial_sums,  // [3, splits, N*C] (Σ g | Σ g·u | Σ u)
    typename Op::scalar_t* __restrict__ grad_x,          // like x (NCHW or NHWC)
    typename Op::acc_t* __restrict__ partial_params,     // [kParams, splits, N*C]
    int C, int HW, int chunk) {
  using acc_t = typename Op::acc_t;
  const Tile tile(C, HW, chunk);
  typename Op::Row r = op.row(tile.n, tile.active() ? tile.c : 0);
  acc_t s[3];
  row_sums(partial_sums, tile.rows, tile.splits, tile.row, s);
  grad_chunk(op, tile, r, s, HW, grad_x, partial_params);
}

// Runs the backward of `op` on the rows of x (row_launch): writes grad_x (like x), the per-row
// outputs of op.store_row, and param_grads[k] [C] = plane k of the parameter partials summed over
// the chunks and N in order. `acc_options`: the accumulator dtype and device.
template <typename Op>
void launch_row_grad(const Op& op, typename Op::scalar_t* grad_x,
                     const std::array<typename Op::acc_t*, Op::kParams>& param_grads, const RowLaunch& rows,
                     const at::TensorOptions& acc_options, cudaStream_t stream) {
  using scalar_t = typename Op::scalar_t;
  using acc_t = typename Op::acc_t;
  const int64_t N = rows.N, C = rows.C, HW = rows.HW;
  const RowPlan& plan = rows.plan;
  // Per-(chunk, row) parameter partials: plane k is [splits·N, C], summed over its rows below.
  const at::Tensor partial_params = at::empty({Op::kParams, plan.splits, N * C}, acc_options);
  if (plan.packed) {
    with_packed_launch<scalar_t, acc_t>(rows.vectorised, N * C, HW, [&](auto vec, auto group, auto items, auto threads,
                                                                    unsigned blocks) {
      row_grad_packed_kernel<Op, decltype(vec)::value, decltype(group)::value, decltype(items)::value,
                             decltype(threads)::value><<<blocks, decltype(threads)::value, 0, stream>>>(
          op, grad_x, partial_params.mutable_data_ptr<acc_t>(), int(N * C), int(C), int(HW));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  } else {
    with_split_tile<scalar_t>(rows.nhwc, rows.vectorised, plan, N, C, [&](auto tile, dim3 grid, dim3 block) {
      using Tile = typename decltype(tile)::type;
      if (plan.splits == 1) {
        row_grad_single_kernel<Op, Tile><<<grid, block, 0, stream>>>(op, grad_x,
                                                                     partial_params.mutable_data_ptr<acc_t>(), int(C),
                                                                     int(HW));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        return;
      }
      const at::Tensor partial_sums = at::empty({3, plan.splits, N * C}, acc_options);
      row_grad_sums_kernel<Op, Tile><<<grid, block, 0, stream>>>(op, partial_sums.mutable_data_ptr<acc_t>(), int(C),
                                                                 int(HW), plan.chunk);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      row_grad_apply_kernel<Op, Tile><<<grid, block, 0, stream>>>(op, partial_sums.const_data_ptr<acc_t>(), grad_x,
                                                                  partial_params.mutable_data_ptr<acc_t>(), int(C),
                                                                  int(HW), plan.chunk);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  const int terms = int(plan.splits * N);
  for (int k = 0; k < Op::kParams; ++k) {
    sum_over_n(partial_params.const_data_ptr<acc_t>() + int64_t(k) * terms * C, param_grads[k], terms, int(C), stream);
  }
}

}  // namespace alae_fast
