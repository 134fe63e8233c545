// The instance norm over rows shared by the CPU kernels of adain and style, the CPU counterpart of
// cuda_common/row_norm.cuh. Row (n, c) holds the HW values t = lrelu(pre), pre computed by the op from
// its inputs.
//
// Each row is cut into chunks (cpu::Chunks); (row, chunk) items spread over the threads, so short rows are
// packed several per task and a long row is split over tasks. A row's result is a fixed pairwise
// combination of its chunks' partials: independent of the thread count. Everything after loading the
// inputs is computed in double (cpu::sum_t), and results are rounded once, to the output dtype.
//   forward   1. per chunk: the moments (count, mean, M2) of t − K by two sweeps over the cached chunk
//                (cpu::chunk_moments); the row's shift K is t of its first value, so that on a row with
//                |mean| >> std the shifted values are exact and small;
//             2. per row: Chan's combine of its chunks (cpu::tree_moments) -> the shifted mean m and the
//                variance; Op::finish_row stores the row's statistics (its mean is K + m);
//             3. per chunk: y = Op::out((t − K) − m).
//   backward  1. per chunk: Σg, Σg·v and Σv of v = (t − mean)·scale, the row's Op::centre;
//             2. per row: v̄ = mean v (the rounding of the stored mean, ~0) is removed from v, so that the
//                centred v − v̄ sums to 0 and Σ g·(v − v̄) = Σ g·v − v̄·Σg is free of cancellation;
//                Op::grad_row makes the row's gradient constants of Σg and Σ g·(v − v̄);
//             3. per chunk: dt = Op::dt(g − ḡ, v − v̄), grad_x = gain·dt·lrelu'(pre), and the sums of dt per
//                side of the leaky ReLU (and of grad_x·noise for an op with noise);
//             4. per row, grad_bias = gain·Σ dt·lrelu'(pre) by cpu::leaky_weighted_sum, then per channel
//                over N: tree sums.
//
// An Op is a small struct passed to the templates, a RowNormOp with:
//   static constexpr int kLoads;  // scratch rows of acc_t that `pre` loads 16-bit inputs into
//   void pre(int64_t row, int64_t begin, int64_t size, sum_t* out, acc_t* bufs) const;
//       // out [size]: pre of values [begin, begin + size) of `row`; bufs [kLoads·size]: scratch
// for the forward:
//   struct OutRow;                                                // a row's output constants
//   OutRow finish_row(int64_t row, sum_t mean, sum_t var) const;  // stores the row's statistics
//   static sum_t out(const OutRow&, sum_t centred);               // y of t − mean
// for the backward:
//   Centring centre(int64_t row) const;
//   struct GradRow { sum_t gain, dt_sum; ... };                   // dt_sum: Σ dt over the row, exactly
//   GradRow grad_row(int64_t row, sum_t sum_g, sum_t sum_gc) const;
//   static sum_t dt(const GradRow&, sum_t g_dev, sum_t centred);  // of g − ḡ and v − v̄
//   static constexpr bool kNoise;  // pre adds noise_weight[c]·noise: also sum grad_x·noise per channel
//   const acc_t* noise(int64_t row, int64_t begin, int64_t size, acc_t* buf) const;  // if kNoise
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>

#include "../cpu_vec.h"

namespace alae_fast::cpu {

// What every Op has: its types, and the N·C rows of HW values of x [N, C, H, W].
template <typename scalar_t_>
struct RowNormOp {
  using scalar_t = scalar_t_;
  using acc_t = at::opmath_type<scalar_t>;
  int64_t N, C, HW;
  sum_t slope;  // of the leaky ReLU
  RowNormOp(const at::Tensor& x, double leaky_slope)
      : N(x.size(0)), C(x.size(1)), HW(x.size(2) * x.size(3)), slope(leaky_slope) {}
};

// v = (t − mean)·scale: what a row's output is a function of.
struct Centring {
  sum_t mean, scale;
};

// One (row, chunk) item: values [begin, begin + size) of `row`.
struct Item {
  int64_t index, row, begin, size;
};

// body(item, pre, bufs) for every item of `rows` rows, in parallel; each task has its own scratch,
// pre [kChunk] and bufs [acc_rows·kChunk].
template <typename acc_t, typename Body>
void for_each_item(int64_t rows, const Chunks& chunks, int acc_rows, const Body& body) {
  parallel_chunks(rows, chunks, [&](int64_t begin, int64_t end) {
    auto pre = scratch<sum_t>(kChunk);
    auto bufs = scratch<acc_t>(acc_rows * kChunk);
    for (int64_t index = begin; index < end; ++index) {
      const int64_t row = index / chunks.per_row, chunk = index % chunks.per_row;
      body(Item{index, row, chunks.begin(chunk), chunks.size(chunk)}, pre.get(), bufs.get());
    }
  });
}

// body(row) for every row of `rows`, in parallel.
template <typename Body>
void for_each_row(int64_t rows, const Body& body) {
  at::parallel_for(0, rows, 64, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) body(row);
  });
}

// The row's shift: t of its first value (0 if that is not finite).
template <typename Op>
sum_t row_shift(const Op& op, int64_t row) {
  typename Op::acc_t bufs[Op::kLoads];
  sum_t t0;
  op.pre(row, 0, 1, &t0, bufs);
  t0 = leaky_v(t0, op.slope);
  return std::isfinite(t0) ? t0 : 0;
}

// The forward of `op` (op.N·op.C rows of op.HW >= 1 values): y, and the statistics by op.finish_row.
template <typename Op>
void row_norm_fwd(const Op& op, typename Op::scalar_t* y /* [N·C, HW] */) {
  using scalar_t = typename Op::scalar_t;
  using acc_t = typename Op::acc_t;
  using OutRow = typename Op::OutRow;
  const int64_t rows = op.N * op.C, HW = op.HW;
  const Chunks chunks(HW);
  auto moments = scratch<Moments>(rows * chunks.per_row);  // per item
  auto shifts = scratch<sum_t>(2 * rows);                  // per row: K, then m
  auto out_rows = scratch<OutRow>(rows);
  Moments* mp = moments.get();
  sum_t* kp = shifts.get();
  OutRow* orp = out_rows.get();
  for_each_item<acc_t>(rows, chunks, Op::kLoads, [&](Item it, sum_t* t, acc_t* bufs) {
    op.pre(it.row, it.begin, it.size, t, bufs);
    const sum_t slope = op.slope, shift = row_shift(op, it.row);
#pragma omp simd
    for (int64_t i = 0; i < it.size; ++i) t[i] = leaky_v(t[i], slope) - shift;
    mp[it.index] = chunk_moments(t, it.size);
  });
  for_each_row(rows, [&](int64_t row) {
    const Moments m = tree_moments(mp + row * chunks.per_row, chunks.per_row);
    kp[2 * row] = row_shift(op, row);
    kp[2 * row + 1] = m.mean;
    orp[row] = op.finish_row(row, kp[2 * row] + m.mean, clamp_min_zero(m.m2 / HW));
  });
  for_each_item<acc_t>(rows, chunks, Op::kLoads, [&](Item it, sum_t* pre, acc_t* bufs) {
    op.pre(it.row, it.begin, it.size, pre, bufs);
    const sum_t slope = op.slope, shift = kp[2 * it.row], mean = kp[2 * it.row + 1];
    const OutRow k = orp[it.row];
    scalar_t* yr = y + it.row * HW + it.begin;
#pragma omp simd
    for (int64_t i = 0; i < it.size; ++i)
      yr[i] = to_scalar<scalar_t>(acc_t(Op::out(k, (leaky_v(pre[i], slope) - shift) - mean)));
  });
}

// The backward of `op` (op.N·op.C rows of op.HW >= 1 values): grad_x, grad_bias and, for an op with
// noise, grad_noise_weight; the op's own gradients by op.grad_row.
template <typename Op>
void row_norm_bwd(const Op& op,
                  const typename Op::scalar_t* grad_y,          // [N·C, HW]
                  typename Op::scalar_t* grad_x,                // [N·C, HW]
                  typename Op::acc_t* grad_bias,                // [C]
                  typename Op::acc_t* grad_noise_weight) {      // [C] if Op::kNoise, else unused
  using scalar_t = typename Op::scalar_t;
  using acc_t = typename Op::acc_t;
  using GradRow = typename Op::GradRow;
  const int64_t N = op.N, C = op.C, HW = op.HW, rows = N * C;
  const Chunks chunks(HW);
  const int64_t k = chunks.per_row;
  // Per item: Σg, Σg·v, Σv (pass 1), then Σdt over pre > 0, over pre <= 0, #(pre > 0) and Σ grad_x·noise (pass 2).
  constexpr int kSums = Op::kNoise ? 4 : 3;
  // An item's acc_t scratch rows: the op's loads, then grad_y, then noise.
  constexpr int kGradYBuf = Op::kLoads, kNoiseBuf = Op::kLoads + 1, kBufs = Op::kLoads + 1 + Op::kNoise;
  auto sums = scratch<sum_t>(rows * k * kSums);
  auto means = scratch<sum_t>(2 * rows);     // per row: ḡ, v̄
  auto grad_rows = scratch<GradRow>(rows);
  auto per_row = scratch<sum_t>((1 + Op::kNoise) * rows);  // per row: grad_bias, then Σ grad_x·noise
  sum_t *smp = sums.get(), *mnp = means.get(), *prp = per_row.get();
  GradRow* grp = grad_rows.get();
  for_each_item<acc_t>(rows, chunks, kBufs, [&](Item it, sum_t* pre, acc_t* bufs) {
    op.pre(it.row, it.begin, it.size, pre, bufs);
    const acc_t* g = load_row(grad_y + it.row * HW + it.begin, bufs + kGradYBuf * kChunk, it.size);
    const Centring z = op.centre(it.row);
    const sum_t slope = op.slope, mean = z.mean, scale = z.scale;
    sum_t s_g = 0, s_gv = 0, s_v = 0;
#pragma omp simd reduction(+ : s_g, s_gv, s_v)
    for (int64_t i = 0; i < it.size; ++i) {
      const sum_t v = (leaky_v(pre[i], slope) - mean) * scale;
      s_g += g[i];
      s_gv += g[i] * v;
      s_v += v;
    }
    sum_t* s = smp + it.index * kSums;
    s[0] = s_g, s[1] = s_gv, s[2] = s_v;
  });
  for_each_row(rows, [&](int64_t row) {
    const sum_t* s = smp + row * k * kSums;
    const sum_t s_g = tree_sum(s, k, kSums), mean_v = tree_sum(s + 2, k, kSums) / HW;
    mnp[2 * row] = s_g / HW, mnp[2 * row + 1] = mean_v;
    grp[row] = op.grad_row(row, s_g, tree_sum(s + 1, k, kSums) - mean_v * s_g);
  });
  for_each_item<acc_t>(rows, chunks, kBufs, [&](Item it, sum_t* pre, acc_t* bufs) {
    op.pre(it.row, it.begin, it.size, pre, bufs);
    const acc_t* g = load_row(grad_y + it.row * HW + it.begin, bufs + kGradYBuf * kChunk, it.size);
    const acc_t* noise = nullptr;
    if constexpr (Op::kNoise) noise = op.noise(it.row, it.begin, it.size, bufs + kNoiseBuf * kChunk);
    const Centring z = op.centre(it.row);
    const GradRow kr = grp[it.row];
    const sum_t slope = op.slope, mean = z.mean, scale = z.scale, gain = kr.gain;
    const sum_t mean_g = mnp[2 * it.row], mean_v = mnp[2 * it.row + 1];
    sum_t s_pos = 0, s_neg = 0, n_pos = 0, s_noise = 0;
    scalar_t* gxr = grad_x + it.row * HW + it.begin;
#pragma omp simd reduction(+ : s_pos, s_neg, n_pos, s_noise)
    for (int64_t i = 0; i < it.size; ++i) {
      const sum_t v = (leaky_v(pre[i], slope) - mean) * scale;
      const sum_t dt = Op::dt(kr, g[i] - mean_g, v - mean_v);
      const sum_t dpre = gain * dt * leaky_grad_v(pre[i], slope);
      gxr[i] = to_scalar<scalar_t>(acc_t(dpre));
      const bool pos = pre[i] > 0;
      s_pos += select(pos, dt, sum_t(0));
      s_neg += select(pos, sum_t(0), dt);
      n_pos += select(pos, sum_t(1), sum_t(0));
      if constexpr (Op::kNoise) s_noise += dpre * noise[i];
    }
    sum_t* s = smp + it.index * kSums;
    s[0] = s_pos, s[1] = s_neg, s[2] = n_pos;
    if constexpr (Op::kNoise) s[3] = s_noise;
  });
  for_each_row(rows, [&](int64_t row) {
    const sum_t* s = smp + row * k * kSums;
    const GradRow& kr = grp[row];
    prp[row] = kr.gain * leaky_weighted_sum<sum_t>(kr.dt_sum, tree_sum(s, k, kSums), tree_sum(s + 1, k, kSums),
                                                   tree_sum(s + 2, k, kSums), HW, op.slope);
    if constexpr (Op::kNoise) prp[rows + row] = tree_sum(s + 3, k, kSums);
  });
  for (int64_t c = 0; c < C; ++c) {
    grad_bias[c] = acc_t(tree_sum(prp + c, N, C));
    if constexpr (Op::kNoise) grad_noise_weight[c] = acc_t(tree_sum(prp + rows + c, N, C));
  }
}

}  // namespace alae_fast::cpu
