// Noise injection on CPU: rows (n, c) batched per task.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros_like.h>

#include "noise.h"
#include "../cpu_vec.h"

namespace alae_fast {
namespace {

at::Tensor noise_fwd_cpu(const at::Tensor& x,                       // [N, C, H, W]
                         const at::Tensor& noise,                   // [N, 1, H, W]
                         const at::Tensor& noise_weight,            // [C] acc
                         const std::optional<at::Tensor>& bias,     // [C] acc, or None
                         bool act, double leaky_slope) {
  check_noise_args("noise_fwd", x, noise, noise_weight, bias);
  const int64_t C = x.size(1), HW = x.size(2) * x.size(3);
  auto y = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "noise_fwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* np = noise.const_data_ptr<scalar_t>();
    const acc_t* wnp = noise_weight.const_data_ptr<acc_t>();
    const acc_t* bp = bias.has_value() ? bias->const_data_ptr<acc_t>() : nullptr;
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, x.size(0) * C, cpu::grain_rows(HW), [&](int64_t begin, int64_t end) {
      const acc_t slope = act ? acc_t(leaky_slope) : acc_t(1);
      // xbuf, nbuf: acc_t copies of x and noise rows for 16-bit inputs.
      auto buf = cpu::scratch<acc_t>(2 * HW);
      acc_t *xbuf = buf.get(), *nbuf = xbuf + HW;
      const acc_t* nr = nullptr;
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / C, c = row % C;
        if (nr == nullptr || c == 0) nr = cpu::load_row(np + n * HW, nbuf, HW);
        const acc_t* xr = cpu::load_row(xp + row * HW, xbuf, HW);
        const acc_t wn = wnp[c], b = bp ? bp[c] : acc_t(0);
        scalar_t* yr = yp + row * HW;
        _Pragma("omp simd")
        for (int64_t i = 0; i < HW; ++i) yr[i] = cpu::to_scalar<scalar_t>(cpu::leaky_v(xr[i] + wn * nr[i] + b, slope));
      }
    });
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> noise_bwd_cpu(
    const at::Tensor& grad_y,                // [N, C, H, W]
    const at::Tensor& x,                     // [N, C, H, W]
    const at::Tensor& noise,                 // [N, 1, H, W]
    const at::Tensor& noise_weight,          // [C] acc
    const std::optional<at::Tensor>& bias,   // [C] acc, or None
    bool act, double leaky_slope) {
  check_noise_args("noise_bwd", x, noise, noise_weight, bias);
  check_tensor("noise_bwd", "grad_y", grad_y, x.device(), x.scalar_type(), x.sizes().vec(), "[N, C, H, W]");
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  auto grad_x = at::empty_like(x);
  auto grad_wn = at::zeros_like(noise_weight);
  auto grad_b = at::zeros_like(noise_weight);
  if (x.numel() == 0) return {grad_x, grad_wn, grad_b};
  const cpu::Chunks chunks(HW);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "noise_bwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* gyp = grad_y.const_data_ptr<scalar_t>();
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* np = noise.const_data_ptr<scalar_t>();
    const acc_t* wnp = noise_weight.const_data_ptr<acc_t>();
    const acc_t* bp = bias.has_value() ? bias->const_data_ptr<acc_t>() : nullptr;
    scalar_t* gxp = grad_x.mutable_data_ptr<scalar_t>();
    // Per (row, chunk) item: Σ dpre, Σ dpre·noise; added per row and then over N in a fixed pairwise order
    // (cpu::Chunks), so that the sums are as accurate as a pairwise sum and independent of the thread count.
    auto sums = cpu::scratch<cpu::sum_t>(N * C * chunks.per_row * 2);
    auto per_row = cpu::scratch<cpu::sum_t>(N * C * 2);
    cpu::sum_t *smp = sums.get(), *prp = per_row.get();
    cpu::parallel_chunks(N * C, chunks, [&](int64_t begin, int64_t end) {
      const acc_t slope = act ? acc_t(leaky_slope) : acc_t(1);
      // xbuf, gbuf, nbuf: acc_t copies of x, grad_y and noise chunks for 16-bit inputs.
      auto buf = cpu::scratch<acc_t>(3 * cpu::kChunk);
      acc_t *xbuf = buf.get(), *gbuf = xbuf + cpu::kChunk, *nbuf = gbuf + cpu::kChunk;
      for (int64_t item = begin; item < end; ++item) {
        const int64_t row = item / chunks.per_row, chunk = item % chunks.per_row, size = chunks.size(chunk);
        const int64_t n = row / C, c = row % C, offset = chunks.begin(chunk);
        const acc_t* nr = cpu::load_row(np + n * HW + offset, nbuf, size);
        const acc_t* xr = cpu::load_row(xp + row * HW + offset, xbuf, size);
        const acc_t* gr = cpu::load_row(gyp + row * HW + offset, gbuf, size);
        const acc_t wn = wnp[c], b = bp ? bp[c] : acc_t(0);
        scalar_t* gxr = gxp + row * HW + offset;
        cpu::sum_t sum_dpre = 0, sum_dpre_noise = 0;
        _Pragma("omp simd reduction(+ : sum_dpre, sum_dpre_noise)")
        for (int64_t i = 0; i < size; ++i) {
          const acc_t dpre = gr[i] * cpu::leaky_grad_v(xr[i] + wn * nr[i] + b, slope);
          gxr[i] = cpu::to_scalar<scalar_t>(dpre);
          sum_dpre += dpre;
          sum_dpre_noise += cpu::sum_t(dpre) * nr[i];
        }
        smp[item * 2] = sum_dpre, smp[item * 2 + 1] = sum_dpre_noise;
      }
    });
    at::parallel_for(0, N * C, 64, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const cpu::sum_t* s = smp + row * chunks.per_row * 2;
        prp[row * 2] = cpu::tree_sum(s, chunks.per_row, 2);
        prp[row * 2 + 1] = cpu::tree_sum(s + 1, chunks.per_row, 2);
      }
    });
    acc_t* gwp = grad_wn.mutable_data_ptr<acc_t>();
    acc_t* gbp = grad_b.mutable_data_ptr<acc_t>();
    for (int64_t c = 0; c < C; ++c) {
      gwp[c] = acc_t(cpu::tree_sum(prp + 2 * c + 1, N, 2 * C));
      if (bp) gbp[c] = acc_t(cpu::tree_sum(prp + 2 * c, N, 2 * C));
    }
  });
  return {grad_x, grad_wn, grad_b};
}

}  // namespace

ALAE_FAST_REGISTER_KERNELS(ALAE_FAST_NOISE_KERNELS, CPU, cpu)

}  // namespace alae_fast
