// Modulated AdaIN on CPU.
//
// Each (n, c) row of H·W values is cut into chunks (cpu::Chunks); (row, chunk) items spread over the
// threads, so short rows are packed several per task and a long row is split over tasks. A row's result
// is a fixed pairwise combination of its chunks' partials: independent of the thread count. Everything
// after loading the inputs is computed in double (cpu::sum_t), far beyond fp32 and 16-bit inputs, and
// results are rounded once, to the output dtype.
//   forward   1. per chunk: the moments (count, mean, M2) of t − K, t = lrelu(x + wn·noise + b), by two
//                sweeps over the cached chunk (cpu::chunk_moments); the row's shift K is t of its first value,
//                so that on a row with |mean| >> std the shifted values are exact and small;
//             2. per row: Chan's combine of its chunks (cpu::tree_moments) -> shifted mean m, rstd;
//             3. per chunk: y = ((t − K) − m)·rstd·(1 + ys) + yb (mean = K + m is stored for the backward).
//   backward  1. per chunk: Σg, Σg·x̂ and Σx̂ with x̂ = (t − mean)·rstd;
//             2. per row: x̄ = mean x̂ (the rounding of the stored mean, ~0) is removed from x̂, so that the
//                centred x̂ − x̄ sums to 0 and m = mean(g·(x̂ − x̄)) is free of cancellation;
//             3. per chunk: e = g − ḡ − (x̂ − x̄)·m, grad_x = (1 + ys)·rstd·e·lrelu'(pre), partial sums for
//                grad_bias (of e per side of the leaky ReLU: cpu::leaky_weighted_sum) and grad_noise_weight;
//             4. per row, then per channel over N: their tree sums.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <cmath>

#include "adain.h"
#include "../cpu_vec.h"

namespace alae_fast {
namespace {

// pre = x + wn·noise + b of one chunk and t = lrelu(pre), in double (cpu::sum_t), from the raw inputs.
template <typename scalar_t, typename acc_t>
struct AdainRows {
  const scalar_t* x;          // [N, C, H, W]
  const scalar_t* noise;      // [N, 1, H, W]
  const acc_t* noise_weight;  // [C]
  const acc_t* bias;          // [C]
  int64_t C, HW;
  cpu::sum_t slope;

  // pre [size] of chunk `begin` (offset in the row) of row (n, c); xbuf, nbuf [size]: scratch for 16-bit inputs.
  void pre(int64_t row, int64_t begin, int64_t size, cpu::sum_t* out, acc_t* xbuf, acc_t* nbuf) const {
    const int64_t n = row / C, c = row % C;
    const acc_t* xr = cpu::load_row(x + row * HW + begin, xbuf, size);
    const acc_t* nr = cpu::load_row(noise + n * HW + begin, nbuf, size);
    const cpu::sum_t wn = noise_weight[c], b = bias[c];
    _Pragma("omp simd")
    for (int64_t i = 0; i < size; ++i) out[i] = xr[i] + wn * nr[i] + b;
  }

  // The row's shift: t of its first value (0 if that is not finite).
  cpu::sum_t shift(int64_t row) const {
    const cpu::sum_t wn = noise_weight[row % C], b = bias[row % C];
    const cpu::sum_t t0 = cpu::leaky_v(cpu::sum_t(x[row * HW]) + wn * cpu::sum_t(noise[(row / C) * HW]) + b, slope);
    return std::isfinite(t0) ? t0 : 0;
  }
};

std::tuple<at::Tensor, at::Tensor> adain_fwd_cpu(const at::Tensor& x,             // [N, C, H, W]
                                                 const at::Tensor& noise,         // [N, 1, H, W]
                                                 const at::Tensor& noise_weight,  // [C] acc
                                                 const at::Tensor& bias,          // [C] acc
                                                 const at::Tensor& style,         // [N, 2C] acc
                                                 double eps, double leaky_slope) {
  check_adain_args("adain_fwd", x, noise, noise_weight, bias, style);
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  auto y = at::empty_like(x);
  auto stats = at::empty({N, 2 * C}, style.options());  // (mean | rstd)
  if (x.numel() == 0) return {y, stats.zero_()};
  const cpu::Chunks chunks(HW);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "adain_fwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const AdainRows<scalar_t, acc_t> rows{x.const_data_ptr<scalar_t>(), noise.const_data_ptr<scalar_t>(),
                                          noise_weight.const_data_ptr<acc_t>(), bias.const_data_ptr<acc_t>(),
                                          C, HW, leaky_slope};
    const acc_t* sp = style.const_data_ptr<acc_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    acc_t* statp = stats.mutable_data_ptr<acc_t>();
    auto moments = cpu::scratch<cpu::Moments>(N * C * chunks.per_row);  // per item
    auto row_mean = cpu::scratch<cpu::sum_t>(N * C);  // per row: the shifted mean m
    cpu::Moments* mp = moments.get();
    cpu::sum_t* rmp = row_mean.get();
    cpu::parallel_chunks(N * C, chunks, [&](int64_t begin, int64_t end) {
      const cpu::sum_t slope = rows.slope;
      auto tbuf = cpu::scratch<cpu::sum_t>(cpu::kChunk);
      auto buf = cpu::scratch<acc_t>(2 * cpu::kChunk);  // acc_t copies of x and noise
      cpu::sum_t* t = tbuf.get();
      acc_t *xbuf = buf.get(), *nbuf = xbuf + cpu::kChunk;
      for (int64_t item = begin; item < end; ++item) {
        const int64_t row = item / chunks.per_row, chunk = item % chunks.per_row, size = chunks.size(chunk);
        rows.pre(row, chunks.begin(chunk), size, t, xbuf, nbuf);
        const cpu::sum_t shift = rows.shift(row);
        _Pragma("omp simd")
        for (int64_t i = 0; i < size; ++i) t[i] = cpu::leaky_v(t[i], slope) - shift;
        mp[item] = cpu::chunk_moments(t, size);
      }
    });
    at::parallel_for(0, N * C, 64, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / C, c = row % C;
        const auto m = cpu::tree_moments(mp + row * chunks.per_row, chunks.per_row);
        rmp[row] = m.mean;
        statp[n * 2 * C + c] = acc_t(rows.shift(row) + m.mean);
        statp[n * 2 * C + C + c] = acc_t(1 / std::sqrt(cpu::clamp_min_zero(m.m2 / HW) + eps));
      }
    });
    cpu::parallel_chunks(N * C, chunks, [&](int64_t begin, int64_t end) {
      const cpu::sum_t slope = rows.slope;
      auto prebuf = cpu::scratch<cpu::sum_t>(cpu::kChunk);
      auto buf = cpu::scratch<acc_t>(2 * cpu::kChunk);  // acc_t copies of x and noise
      cpu::sum_t* pre = prebuf.get();
      acc_t *xbuf = buf.get(), *nbuf = xbuf + cpu::kChunk;
      for (int64_t item = begin; item < end; ++item) {
        const int64_t row = item / chunks.per_row, chunk = item % chunks.per_row, size = chunks.size(chunk);
        const int64_t n = row / C, c = row % C;
        rows.pre(row, chunks.begin(chunk), size, pre, xbuf, nbuf);
        const cpu::sum_t shift = rows.shift(row), mean = rmp[row];
        const cpu::sum_t scale = (1 + cpu::sum_t(sp[n * 2 * C + c])) * statp[n * 2 * C + C + c], offset = sp[n * 2 * C + C + c];
        scalar_t* yr = yp + row * HW + chunks.begin(chunk);
        _Pragma("omp simd")
        for (int64_t i = 0; i < size; ++i)
          yr[i] = cpu::to_scalar<scalar_t>(acc_t(((cpu::leaky_v(pre[i], slope) - shift) - mean) * scale + offset));
      }
    });
  });
  return {y, stats};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> adain_bwd_cpu(
    const at::Tensor& grad_y,        // [N, C, H, W]
    const at::Tensor& x,             // [N, C, H, W]
    const at::Tensor& noise,         // [N, 1, H, W]
    const at::Tensor& noise_weight,  // [C] acc
    const at::Tensor& bias,          // [C] acc
    const at::Tensor& style,         // [N, 2C] acc
    const at::Tensor& stats,         // [N, 2C] acc, (mean | rstd)
    double eps, double leaky_slope) {
  check_adain_args("adain_bwd", x, noise, noise_weight, bias, style);
  check_tensor("adain_bwd", "grad_y", grad_y, x.device(), x.scalar_type(), x.sizes().vec(), "[N, C, H, W]");
  check_tensor("adain_bwd", "stats", stats, x.device(), style.scalar_type(), style.sizes().vec(), "[N, 2C]");
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  auto grad_x = at::empty_like(x);
  auto grad_style = at::empty_like(style);
  auto grad_wn = at::empty_like(noise_weight);
  auto grad_b = at::empty_like(bias);
  if (x.numel() == 0) return {grad_x, grad_wn.zero_(), grad_b.zero_(), grad_style.zero_()};
  const cpu::Chunks chunks(HW);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "adain_bwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const AdainRows<scalar_t, acc_t> rows{x.const_data_ptr<scalar_t>(), noise.const_data_ptr<scalar_t>(),
                                          noise_weight.const_data_ptr<acc_t>(), bias.const_data_ptr<acc_t>(),
                                          C, HW, leaky_slope};
    const scalar_t* gyp = grad_y.const_data_ptr<scalar_t>();
    const scalar_t* np = noise.const_data_ptr<scalar_t>();
    const acc_t* sp = style.const_data_ptr<acc_t>();
    const acc_t* statp = stats.const_data_ptr<acc_t>();
    scalar_t* gxp = grad_x.mutable_data_ptr<scalar_t>();
    acc_t* gsp = grad_style.mutable_data_ptr<acc_t>();
    const int64_t items = N * C * chunks.per_row;
    // Per item: Σg, Σg·x̂, Σx̂ (pass 1), then Σe over pre > 0, Σe over pre <= 0, #(pre > 0), Σ dpre·noise (pass 2).
    constexpr int kSums = 4;
    auto sums = cpu::scratch<cpu::sum_t>(items * kSums);
    auto coef = cpu::scratch<cpu::sum_t>(N * C * 3);  // per row: ḡ, x̄, m
    auto per_row = cpu::scratch<cpu::sum_t>(N * C * 2);  // per row: grad_bias, grad_noise_weight
    cpu::sum_t *smp = sums.get(), *cfp = coef.get(), *prp = per_row.get();
    cpu::parallel_chunks(N * C, chunks, [&](int64_t begin, int64_t end) {
      const cpu::sum_t slope = rows.slope;
      auto prebuf = cpu::scratch<cpu::sum_t>(cpu::kChunk);
      auto buf = cpu::scratch<acc_t>(3 * cpu::kChunk);  // acc_t copies of x, noise, grad_y
      cpu::sum_t* pre = prebuf.get();
      acc_t *xbuf = buf.get(), *nbuf = xbuf + cpu::kChunk, *gbuf = nbuf + cpu::kChunk;
      for (int64_t item = begin; item < end; ++item) {
        const int64_t row = item / chunks.per_row, chunk = item % chunks.per_row, size = chunks.size(chunk);
        const int64_t n = row / C, c = row % C;
        rows.pre(row, chunks.begin(chunk), size, pre, xbuf, nbuf);
        const acc_t* gr = cpu::load_row(gyp + row * HW + chunks.begin(chunk), gbuf, size);
        const cpu::sum_t mean = statp[n * 2 * C + c], rstd = statp[n * 2 * C + C + c];
        cpu::sum_t s_g = 0, s_gx = 0, s_x = 0;
        _Pragma("omp simd reduction(+ : s_g, s_gx, s_x)")
        for (int64_t i = 0; i < size; ++i) {
          const cpu::sum_t xhat = (cpu::leaky_v(pre[i], slope) - mean) * rstd;
          s_g += gr[i];
          s_gx += gr[i] * xhat;
          s_x += xhat;
        }
        smp[item * kSums] = s_g, smp[item * kSums + 1] = s_gx, smp[item * kSums + 2] = s_x;
      }
    });
    at::parallel_for(0, N * C, 64, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / C, c = row % C;
        const cpu::sum_t* s = smp + row * chunks.per_row * kSums;
        const cpu::sum_t s_g = cpu::tree_sum(s, chunks.per_row, kSums), s_gx = cpu::tree_sum(s + 1, chunks.per_row, kSums);
        const cpu::sum_t mean_x = cpu::tree_sum(s + 2, chunks.per_row, kSums) / HW;
        const cpu::sum_t s_gxc = s_gx - mean_x * s_g;  // Σ g·(x̂ − x̄)
        gsp[n * 2 * C + c] = acc_t(s_gxc);
        gsp[n * 2 * C + C + c] = acc_t(s_g);
        cfp[row * 3] = s_g / HW, cfp[row * 3 + 1] = mean_x, cfp[row * 3 + 2] = s_gxc / HW;
      }
    });
    cpu::parallel_chunks(N * C, chunks, [&](int64_t begin, int64_t end) {
      const cpu::sum_t slope = rows.slope;
      auto prebuf = cpu::scratch<cpu::sum_t>(cpu::kChunk);
      auto buf = cpu::scratch<acc_t>(3 * cpu::kChunk);  // acc_t copies of x, noise, grad_y
      cpu::sum_t* pre = prebuf.get();
      acc_t *xbuf = buf.get(), *nbuf = xbuf + cpu::kChunk, *gbuf = nbuf + cpu::kChunk;
      for (int64_t item = begin; item < end; ++item) {
        const int64_t row = item / chunks.per_row, chunk = item % chunks.per_row, size = chunks.size(chunk);
        const int64_t n = row / C, c = row % C, offset = chunks.begin(chunk);
        rows.pre(row, offset, size, pre, xbuf, nbuf);
        const acc_t* gr = cpu::load_row(gyp + row * HW + offset, gbuf, size);
        const acc_t* nr = cpu::load_row(np + n * HW + offset, nbuf, size);
        const cpu::sum_t mean = statp[n * 2 * C + c], rstd = statp[n * 2 * C + C + c];
        const cpu::sum_t gain_rstd = (acc_t(1) + sp[n * 2 * C + c]) * rstd;
        const cpu::sum_t mean_g = cfp[row * 3], mean_x = cfp[row * 3 + 1], m = cfp[row * 3 + 2];
        cpu::sum_t s_pos = 0, s_neg = 0, n_pos = 0, s_noise = 0;
        scalar_t* gxr = gxp + row * HW + offset;
        _Pragma("omp simd reduction(+ : s_pos, s_neg, n_pos, s_noise)")
        for (int64_t i = 0; i < size; ++i) {
          const cpu::sum_t xhat = (cpu::leaky_v(pre[i], slope) - mean) * rstd;
          const cpu::sum_t e = gr[i] - mean_g - (xhat - mean_x) * m;
          const cpu::sum_t dpre = gain_rstd * e * cpu::leaky_grad_v(pre[i], slope);
          gxr[i] = cpu::to_scalar<scalar_t>(acc_t(dpre));
          const bool pos = pre[i] > 0;
          s_pos += cpu::select(pos, e, cpu::sum_t(0));
          s_neg += cpu::select(pos, cpu::sum_t(0), e);
          n_pos += cpu::select(pos, cpu::sum_t(1), cpu::sum_t(0));
          s_noise += dpre * nr[i];
        }
        cpu::sum_t* s = smp + item * kSums;
        s[0] = s_pos, s[1] = s_neg, s[2] = n_pos, s[3] = s_noise;
      }
    });
    at::parallel_for(0, N * C, 64, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / C, c = row % C, k = chunks.per_row;
        const cpu::sum_t* s = smp + row * k * kSums;
        const cpu::sum_t gain_rstd = (acc_t(1) + sp[n * 2 * C + c]) * statp[n * 2 * C + C + c];
        // Σ e over the row is 0 in exact arithmetic.
        prp[row * 2] = gain_rstd * cpu::leaky_weighted_sum<cpu::sum_t>(0, cpu::tree_sum(s, k, kSums),
                                                                       cpu::tree_sum(s + 1, k, kSums),
                                                                       cpu::tree_sum(s + 2, k, kSums), HW, rows.slope);
        prp[row * 2 + 1] = cpu::tree_sum(s + 3, k, kSums);
      }
    });
    acc_t* gbp = grad_b.mutable_data_ptr<acc_t>();
    acc_t* gwp = grad_wn.mutable_data_ptr<acc_t>();
    for (int64_t c = 0; c < C; ++c) {
      gbp[c] = acc_t(cpu::tree_sum(prp + 2 * c, N, 2 * C));
      gwp[c] = acc_t(cpu::tree_sum(prp + 2 * c + 1, N, 2 * C));
    }
  });
  return {grad_x, grad_wn, grad_b, grad_style};
}

}  // namespace

TORCH_LIBRARY_IMPL(alae_fast_C, CPU, m) {
  m.impl("adain_fwd", &adain_fwd_cpu);
  m.impl("adain_bwd", &adain_bwd_cpu);
}

}  // namespace alae_fast
