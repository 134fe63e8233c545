// Style extraction on CPU.
//
// Each (n, c) row of H·W values is cut into chunks (cpu::Chunks); (row, chunk) items spread over the
// threads, so short rows are packed several per task and a long row is split over tasks. A row's result
// is a fixed pairwise combination of its chunks' partials: independent of the thread count. Everything
// after loading the inputs is computed in double (cpu::sum_t), far beyond fp32 and 16-bit inputs, and
// results are rounded once, to the output dtype.
//   forward   1. per chunk: the moments (count, mean, M2) of t − K, t = lrelu(x + b), by two sweeps over
//                the cached chunk (cpu::chunk_moments); the row's shift K is t of its first value, so that on
//                a row with |mean| >> std the shifted values are exact and small;
//             2. per row: Chan's combine of its chunks (cpu::tree_moments) -> shifted mean m, std;
//             3. per chunk: y = ((t − K) − m)·rsqrt(var + eps); the stored mean is K + m.
//   backward  1. per chunk: Σg, Σg·(t − mean), Σ(t − mean);
//             2. per row: the centred c = t − mean − mean(t − mean) sums to 0 (the stored mean's rounding
//                removed), A = mean(g·c);
//             3. per chunk: dt = r·(g − ḡ) − (r³·A − β)·c + g_mean/HW with r = rsqrt(std² + eps),
//                β = g_std/(HW·std), grad_x = dt·lrelu'(pre), and the sums of dt per side of the leaky ReLU;
//             4. per row, then per channel over N: grad_bias by cpu::leaky_weighted_sum (Σ dt = g_mean exactly).
// The double backward (style_bwd2) works on whole rows, one row per step.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>

#include "style.h"
#include "../cpu_vec.h"

namespace alae_fast {
namespace {

// pre = x + b of one chunk and t = lrelu(pre), in double (cpu::sum_t), from the raw inputs.
template <typename scalar_t, typename acc_t>
struct StyleRows {
  const scalar_t* x;  // [N, C, H, W]
  const acc_t* bias;  // [C]
  int64_t C, HW;

  // pre [size] of the chunk at `begin` (offset in the row) of `row`; xbuf [size]: scratch for 16-bit inputs.
  void pre(int64_t row, int64_t begin, int64_t size, cpu::sum_t* out, acc_t* xbuf) const {
    const acc_t* xr = cpu::load_row(x + row * HW + begin, xbuf, size);
    const cpu::sum_t b = bias[row % C];
    _Pragma("omp simd")
    for (int64_t i = 0; i < size; ++i) out[i] = xr[i] + b;
  }

  // The row's shift: t of its first value (0 if that is not finite).
  cpu::sum_t shift(int64_t row, cpu::sum_t slope) const {
    const cpu::sum_t t0 = cpu::leaky_v(cpu::sum_t(x[row * HW]) + cpu::sum_t(bias[row % C]), slope);
    return std::isfinite(t0) ? t0 : 0;
  }
};

std::tuple<at::Tensor, at::Tensor> style_fwd_cpu(const at::Tensor& x,       // [N, C, H, W]
                                                 const at::Tensor& bias,    // [C] acc
                                                 double eps, double leaky_slope) {
  check_style_args("style_fwd", x, bias);
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  auto y = at::empty_like(x);
  auto stats = at::empty({N, 2 * C}, bias.options());  // (mean | std)
  if (x.numel() == 0) return {y, stats};
  const cpu::Chunks chunks(HW);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "style_fwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const StyleRows<scalar_t, acc_t> rows{x.const_data_ptr<scalar_t>(), bias.const_data_ptr<acc_t>(), C, HW};
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    acc_t* statp = stats.mutable_data_ptr<acc_t>();
    auto moments = cpu::scratch<cpu::Moments>(N * C * chunks.per_row);  // per item
    auto row_stats = cpu::scratch<cpu::sum_t>(2 * N * C);  // per row: the shifted mean m; rstd
    cpu::Moments* mp = moments.get();
    cpu::sum_t *rmp = row_stats.get(), *rp = rmp + N * C;
    cpu::parallel_chunks(N * C, chunks, [&](int64_t begin, int64_t end) {
      const cpu::sum_t slope = leaky_slope;
      auto tbuf = cpu::scratch<cpu::sum_t>(cpu::kChunk);
      auto buf = cpu::scratch<acc_t>(cpu::kChunk);  // an acc_t copy of x
      cpu::sum_t* t = tbuf.get();
      acc_t* xbuf = buf.get();
      for (int64_t item = begin; item < end; ++item) {
        const int64_t row = item / chunks.per_row, chunk = item % chunks.per_row, size = chunks.size(chunk);
        rows.pre(row, chunks.begin(chunk), size, t, xbuf);
        const cpu::sum_t shift = rows.shift(row, slope);
        _Pragma("omp simd")
        for (int64_t i = 0; i < size; ++i) t[i] = cpu::leaky_v(t[i], slope) - shift;
        mp[item] = cpu::chunk_moments(t, size);
      }
    });
    at::parallel_for(0, N * C, 64, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / C, c = row % C;
        const auto m = cpu::tree_moments(mp + row * chunks.per_row, chunks.per_row);
        const cpu::sum_t var = cpu::clamp_min_zero(m.m2 / HW);
        rmp[row] = m.mean;
        statp[n * 2 * C + c] = acc_t(rows.shift(row, leaky_slope) + m.mean);
        statp[n * 2 * C + C + c] = acc_t(std::sqrt(var));
        rp[row] = 1 / std::sqrt(var + eps);
      }
    });
    cpu::parallel_chunks(N * C, chunks, [&](int64_t begin, int64_t end) {
      const cpu::sum_t slope = leaky_slope;
      auto prebuf = cpu::scratch<cpu::sum_t>(cpu::kChunk);
      auto buf = cpu::scratch<acc_t>(cpu::kChunk);  // an acc_t copy of x
      cpu::sum_t* pre = prebuf.get();
      acc_t* xbuf = buf.get();
      for (int64_t item = begin; item < end; ++item) {
        const int64_t row = item / chunks.per_row, chunk = item % chunks.per_row, size = chunks.size(chunk);
        rows.pre(row, chunks.begin(chunk), size, pre, xbuf);
        const cpu::sum_t shift = rows.shift(row, slope), mean = rmp[row], rstd = rp[row];
        scalar_t* yr = yp + row * HW + chunks.begin(chunk);
        _Pragma("omp simd")
        for (int64_t i = 0; i < size; ++i)
          yr[i] = cpu::to_scalar<scalar_t>(acc_t(((cpu::leaky_v(pre[i], slope) - shift) - mean) * rstd));
      }
    });
  });
  return {y, stats};
}

std::tuple<at::Tensor, at::Tensor> style_bwd_cpu(const at::Tensor& grad_y,      // [N, C, H, W]
                                                 const at::Tensor& grad_stats,  // [N, 2C] acc
                                                 const at::Tensor& x,           // [N, C, H, W]
                                                 const at::Tensor& bias,        // [C] acc
                                                 const at::Tensor& stats,       // [N, 2C] acc, (mean | std)
                                                 double eps, double leaky_slope) {
  check_style_args("style_bwd", x, bias);
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  check_tensor("style_bwd", "grad_y", grad_y, x.device(), x.scalar_type(), x.sizes().vec(), "[N, C, H, W]");
  check_tensor("style_bwd", "grad_stats", grad_stats, x.device(), bias.scalar_type(), {N, 2 * C}, "[N, 2C]");
  check_tensor("style_bwd", "stats", stats, x.device(), bias.scalar_type(), {N, 2 * C}, "[N, 2C]");
  auto grad_x = at::empty_like(x);
  auto grad_b = at::empty_like(bias);
  if (x.numel() == 0) return {grad_x, grad_b.zero_()};
  const cpu::Chunks chunks(HW);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "style_bwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const StyleRows<scalar_t, acc_t> rows{x.const_data_ptr<scalar_t>(), bias.const_data_ptr<acc_t>(), C, HW};
    const scalar_t* gyp = grad_y.const_data_ptr<scalar_t>();
    const acc_t* gsp = grad_stats.const_data_ptr<acc_t>();
    const acc_t* statp = stats.const_data_ptr<acc_t>();
    scalar_t* gxp = grad_x.mutable_data_ptr<scalar_t>();
    // Per item: Σg, Σg·(t − mean), Σ(t − mean) (pass 1), then Σdt over pre > 0, over pre <= 0, #(pre > 0) (pass 2).
    constexpr int kSums = 3, kCoefs = 5;
    auto sums = cpu::scratch<cpu::sum_t>(N * C * chunks.per_row * kSums);
    auto coef = cpu::scratch<cpu::sum_t>(N * C * kCoefs);  // per row: r, ḡ, mean(t − mean), r³·A − β, g_mean/HW
    auto per_row = cpu::scratch<cpu::sum_t>(N * C);       // per row: grad_bias
    cpu::sum_t *smp = sums.get(), *cfp = coef.get(), *prp = per_row.get();
    cpu::parallel_chunks(N * C, chunks, [&](int64_t begin, int64_t end) {
      const cpu::sum_t slope = leaky_slope;
      auto prebuf = cpu::scratch<cpu::sum_t>(cpu::kChunk);
      auto buf = cpu::scratch<acc_t>(2 * cpu::kChunk);  // acc_t copies of x and grad_y
      cpu::sum_t* pre = prebuf.get();
      acc_t *xbuf = buf.get(), *gbuf = xbuf + cpu::kChunk;
      for (int64_t item = begin; item < end; ++item) {
        const int64_t row = item / chunks.per_row, chunk = item % chunks.per_row, size = chunks.size(chunk);
        rows.pre(row, chunks.begin(chunk), size, pre, xbuf);
        const acc_t* gr = cpu::load_row(gyp + row * HW + chunks.begin(chunk), gbuf, size);
        const cpu::sum_t mean = statp[(row / C) * 2 * C + row % C];
        cpu::sum_t s_g = 0, s_gc = 0, s_c = 0;
        _Pragma("omp simd reduction(+ : s_g, s_gc, s_c)")
        for (int64_t i = 0; i < size; ++i) {
          const cpu::sum_t centered = cpu::leaky_v(pre[i], slope) - mean;
          s_g += gr[i];
          s_gc += gr[i] * centered;
          s_c += centered;
        }
        smp[item * kSums] = s_g, smp[item * kSums + 1] = s_gc, smp[item * kSums + 2] = s_c;
      }
    });
    at::parallel_for(0, N * C, 64, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / C, c = row % C, k = chunks.per_row;
        const cpu::sum_t* s = smp + row * k * kSums;
        const cpu::sum_t s_g = cpu::tree_sum(s, k, kSums), s_gc = cpu::tree_sum(s + 1, k, kSums);
        const cpu::sum_t mean_c = cpu::tree_sum(s + 2, k, kSums) / HW;
        const cpu::sum_t a = (s_gc - mean_c * s_g) / HW;  // mean(g·c) of the centred c
        const cpu::sum_t sd = statp[n * 2 * C + C + c];
        const cpu::sum_t r = 1 / std::sqrt(sd * sd + eps);
        // The std's gradient is 0 where std is 0 (and its NaN, if any, reaches dt through r).
        const cpu::sum_t beta = sd > 0 ? gsp[n * 2 * C + C + c] / (HW * sd) : 0;
        cpu::sum_t* cf = cfp + row * kCoefs;
        cf[0] = r, cf[1] = s_g / HW, cf[2] = mean_c, cf[3] = r * r * r * a - beta, cf[4] = gsp[n * 2 * C + c] / HW;
      }
    });
    cpu::parallel_chunks(N * C, chunks, [&](int64_t begin, int64_t end) {
      const cpu::sum_t slope = leaky_slope;
      auto prebuf = cpu::scratch<cpu::sum_t>(cpu::kChunk);
      auto buf = cpu::scratch<acc_t>(2 * cpu::kChunk);  // acc_t copies of x and grad_y
      cpu::sum_t* pre = prebuf.get();
      acc_t *xbuf = buf.get(), *gbuf = xbuf + cpu::kChunk;
      for (int64_t item = begin; item < end; ++item) {
        const int64_t row = item / chunks.per_row, chunk = item % chunks.per_row, size = chunks.size(chunk);
        const int64_t offset = chunks.begin(chunk);
        rows.pre(row, offset, size, pre, xbuf);
        const acc_t* gr = cpu::load_row(gyp + row * HW + offset, gbuf, size);
        const cpu::sum_t mean = statp[(row / C) * 2 * C + row % C];
        const cpu::sum_t* cf = cfp + row * kCoefs;
        const cpu::sum_t r = cf[0], mean_g = cf[1], mean_c = cf[2], coef_c = cf[3], g_mean = cf[4];
        cpu::sum_t s_pos = 0, s_neg = 0, n_pos = 0;
        scalar_t* gxr = gxp + row * HW + offset;
        _Pragma("omp simd reduction(+ : s_pos, s_neg, n_pos)")
        for (int64_t i = 0; i < size; ++i) {
          const cpu::sum_t centered = cpu::leaky_v(pre[i], slope) - mean - mean_c;
          const cpu::sum_t dt = r * (gr[i] - mean_g) - coef_c * centered + g_mean;
          gxr[i] = cpu::to_scalar<scalar_t>(acc_t(dt * cpu::leaky_grad_v(pre[i], slope)));
          const bool pos = pre[i] > 0;
          s_pos += cpu::select(pos, dt, cpu::sum_t(0));
          s_neg += cpu::select(pos, cpu::sum_t(0), dt);
          n_pos += cpu::select(pos, cpu::sum_t(1), cpu::sum_t(0));
        }
        cpu::sum_t* s = smp + item * kSums;
        s[0] = s_pos, s[1] = s_neg, s[2] = n_pos;
      }
    });
    at::parallel_for(0, N * C, 64, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t k = chunks.per_row;
        const cpu::sum_t* s = smp + row * k * kSums;
        // Σ dt over the row is g_mean in exact arithmetic.
        const cpu::sum_t total = gsp[(row / C) * 2 * C + row % C];
        prp[row] = cpu::leaky_weighted_sum<cpu::sum_t>(total, cpu::tree_sum(s, k, kSums), cpu::tree_sum(s + 1, k, kSums),
                                                       cpu::tree_sum(s + 2, k, kSums), HW, leaky_slope);
      }
    });
    acc_t* gbp = grad_b.mutable_data_ptr<acc_t>();
    for (int64_t c = 0; c < C; ++c) gbp[c] = acc_t(cpu::tree_sum(prp + c, N, C));
  });
  return {grad_x, grad_b};
}

// Backward of style_bwd (R1's second order): the cotangents gg_x of grad_x and gg_bias of grad_bias give
// the gradients wrt grad_y, grad_stats, x and bias. Per row, with c = t − μ, r = (σ² + eps)^-½, d = lrelu'(pre),
// u = (gg_x + gg_bias[c])·d and the row means ū of u, A of grad_y·c, Uc of u·c (Σ/HW each):
//   g_grad_y = r(u − ū) − r³·c·Uc
//   g_mean   = ū,  g_std = Uc/σ (0 where σ = 0)
//   g_x      = d·[ c·(3r⁵·A·Uc − r³·U₁ − β·Uc/σ²) − r³·Uc·(grad_y − ḡ) − r³·A·(u − ū) + β(u − ū) ]
// with ḡ the mean of grad_y, U₁ = mean(u·(grad_y − ḡ)) and β = grad_std/(HW·σ) (0 where σ = 0).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> style_bwd2_cpu(
    const at::Tensor& grad_y,                  // [N, C, H, W]
    const at::Tensor& grad_stats,              // [N, 2C] acc
    const at::Tensor& x,                       // [N, C, H, W]
    const at::Tensor& bias,                    // [C] acc
    const at::Tensor& stats,                   // [N, 2C] acc, (mean | std)
    const std::optional<at::Tensor>& gg_x,     // [N, C, H, W] or none (zeros)
    const std::optional<at::Tensor>& gg_bias,  // [C] acc or none (zeros)
    double eps, double slope) {
  check_style_args("style_bwd2", x, bias);
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  check_tensor("style_bwd2", "grad_y", grad_y, x.device(), x.scalar_type(), x.sizes().vec(), "[N, C, H, W]");
  check_tensor("style_bwd2", "grad_stats", grad_stats, x.device(), bias.scalar_type(), {N, 2 * C}, "[N, 2C]");
  check_tensor("style_bwd2", "stats", stats, x.device(), bias.scalar_type(), {N, 2 * C}, "[N, 2C]");
  const bool has_ggx = gg_x.has_value() && gg_x->defined();
  const bool has_ggb = gg_bias.has_value() && gg_bias->defined();
  if (has_ggx) check_tensor("style_bwd2", "gg_x", *gg_x, x.device(), x.scalar_type(), x.sizes().vec(), "[N, C, H, W]");
  if (has_ggb) check_tensor("style_bwd2", "gg_bias", *gg_bias, x.device(), bias.scalar_type(), {C}, "[C]");
  auto g_grad_y = at::empty_like(x);
  auto g_x = at::empty_like(x);
  auto g_stats = at::empty({N, 2 * C}, bias.options());
  auto partial_b = at::empty({N, C}, bias.options());  // per-(n, c) sums, reduced over N after: deterministic
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "style_bwd2_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* gyp = grad_y.const_data_ptr<scalar_t>();
    const acc_t* gsp = grad_stats.const_data_ptr<acc_t>();
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* qp = has_ggx ? gg_x->const_data_ptr<scalar_t>() : nullptr;
    const acc_t* bp = bias.const_data_ptr<acc_t>();
    const acc_t* qbp = has_ggb ? gg_bias->const_data_ptr<acc_t>() : nullptr;
    const acc_t* statp = stats.const_data_ptr<acc_t>();
    scalar_t* ggyp = g_grad_y.mutable_data_ptr<scalar_t>();
    scalar_t* gxp = g_x.mutable_data_ptr<scalar_t>();
    acc_t* gstp = g_stats.mutable_data_ptr<acc_t>();
    acc_t* pb = partial_b.mutable_data_ptr<acc_t>();
    at::parallel_for(0, N * C, cpu::grain_rows(HW), [&](int64_t begin, int64_t end) {
      const acc_t sl = acc_t(slope), inv_m = acc_t(1) / acc_t(HW);
      // Per row: c (centered activation), d (lrelu'), u (cotangent of dt), and acc_t copies of x, grad_y, gg_x.
      auto buf = cpu::scratch<acc_t>(6 * HW);
      acc_t *cen = buf.get(), *dd = cen + HW, *uu = dd + HW, *xbuf = uu + HW, *gbuf = xbuf + HW, *qbuf = gbuf + HW;
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / C, c = row % C;
        const acc_t* xr = cpu::load_row(xp + row * HW, xbuf, HW);
        const acc_t* gr = cpu::load_row(gyp + row * HW, gbuf, HW);
        const acc_t* qr = has_ggx ? cpu::load_row(qp + row * HW, qbuf, HW) : nullptr;
        const acc_t b = bp[c], qb = has_ggb ? qbp[c] : acc_t(0);
        const acc_t mean = statp[n * 2 * C + c], sd = statp[n * 2 * C + C + c];
        const acc_t r = acc_t(1) / std::sqrt(sd * sd + acc_t(eps));
        acc_t s_g = 0, s_gc = 0, s_u = 0, s_uc = 0, s_ug = 0;
        _Pragma("omp simd reduction(+ : s_g, s_gc, s_u, s_uc, s_ug)")
        for (int64_t i = 0; i < HW; ++i) {
          const acc_t pre = xr[i] + b;
          dd[i] = cpu::leaky_grad_v(pre, sl);
          cen[i] = cpu::leaky_v(pre, sl) - mean;
          uu[i] = ((qr ? qr[i] : acc_t(0)) + qb) * dd[i];
          s_g += gr[i];
          s_gc += gr[i] * cen[i];
          s_u += uu[i];
          s_uc += uu[i] * cen[i];
          s_ug += uu[i] * gr[i];
        }
        const acc_t mean_g = s_g * inv_m, a = s_gc * inv_m, mean_u = s_u * inv_m, uc = s_uc * inv_m;
        const acc_t u1 = (s_ug - mean_g * s_u) * inv_m;
        const acc_t beta = sd > acc_t(0) ? gsp[n * 2 * C + C + c] * inv_m / sd : acc_t(0);
        const acc_t r3 = r * r * r;
        const acc_t coef_c = acc_t(3) * r3 * r * r * a * uc - r3 * u1 - (sd > acc_t(0) ? beta * uc / (sd * sd) : acc_t(0));
        const acc_t coef_g = -r3 * uc, coef_u = beta - r3 * a;
        acc_t sum_gx = 0;
        scalar_t* ggyr = ggyp + row * HW;
        scalar_t* gxr = gxp + row * HW;
        _Pragma("omp simd reduction(+ : sum_gx)")
        for (int64_t i = 0; i < HW; ++i) {
          const acc_t du = uu[i] - mean_u;
          ggyr[i] = cpu::to_scalar<scalar_t>(r * du - r3 * cen[i] * uc);
          const acc_t gx = dd[i] * (coef_c * cen[i] + coef_g * (gr[i] - mean_g) + coef_u * du);
          gxr[i] = cpu::to_scalar<scalar_t>(gx);
          sum_gx += gx;
        }
        gstp[n * 2 * C + c] = mean_u;
        gstp[n * 2 * C + C + c] = sd > acc_t(0) ? uc / sd : acc_t(0);
        pb[row] = sum_gx;
      }
    });
  });
  auto g_bias = at::empty_like(bias);
  AT_DISPATCH_FLOATING_TYPES(g_bias.scalar_type(), "style_bwd2_cpu_bias", [&] {
    const scalar_t* pbp = partial_b.const_data_ptr<scalar_t>();
    scalar_t* gbp = g_bias.mutable_data_ptr<scalar_t>();
    for (int64_t c = 0; c < C; ++c) gbp[c] = N > 0 ? cpu::tree_sum(pbp + c, N, C) : scalar_t(0);
  });
  return {g_grad_y, g_stats, g_x, g_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(alae_fast_C, CPU, m) {
  m.impl("style_fwd", &style_fwd_cpu);
  m.impl("style_bwd", &style_bwd_cpu);
  m.impl("style_bwd2", &style_bwd2_cpu);
}

}  // namespace alae_fast
