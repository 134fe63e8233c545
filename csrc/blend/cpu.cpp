// Blended 2x2 resampling on CPU: tasks over pairs of full-resolution rows (blend_down: (n, h/2) rows, all
// channels), batched by grain size.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros_like.h>

#include <algorithm>

#include "blend.h"
#include "../cpu_vec.h"

namespace alae_fast {
namespace {

// blend_lerp(lo, hi, w) as base + q * (hi - lo): base = lo, q = w below 1/2, else base = hi, q = w - 1
// (exact), which is the same value without a branch in the loop.
template <typename acc_t>
struct Lerp {
  bool from_lo;
  acc_t q;
  explicit Lerp(acc_t w) : from_lo(w < acc_t(0.5)), q(from_lo ? w : w - acc_t(1)) {}
  acc_t operator()(acc_t lo, acc_t hi) const { return (from_lo ? lo : hi) + q * (hi - lo); }
};

at::Tensor blend_up_fwd_cpu(const at::Tensor& low,   // [N, C, H/2, W/2]
                            const at::Tensor& high,  // [N, C, H, W]
                            double alpha) {
  check_blend_up_args("blend_up_fwd", low, high, alpha);
  const int64_t W = high.size(3), W2 = W / 2;
  auto y = at::empty_like(high);
  if (y.numel() == 0) return y;  // the row count below divides by W/2
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, high.scalar_type(), "blend_up_fwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* lp = low.const_data_ptr<scalar_t>();
    const scalar_t* hp = high.const_data_ptr<scalar_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    // row = (n * C + c) * H/2 + h/2: one row of low, two rows of high and y.
    at::parallel_for(0, low.numel() / W2, cpu::grain_rows(2 * W), [&](int64_t begin, int64_t end) {
      const Lerp<acc_t> lerp(static_cast<acc_t>(alpha));
      for (int64_t row = begin; row < end; ++row) {
        const scalar_t* lr = lp + row * W2;
        const scalar_t* hr = hp + 2 * row * W;
        scalar_t* yr = yp + 2 * row * W;
        for (int64_t k = 0; k < 2 * W; k += W) {
          _Pragma("omp simd")
          for (int64_t w = 0; w < W2; ++w) {
            const acc_t l = acc_t(lr[w]);
            yr[k + 2 * w] = cpu::to_scalar<scalar_t>(lerp(l, acc_t(hr[k + 2 * w])));
            yr[k + 2 * w + 1] = cpu::to_scalar<scalar_t>(lerp(l, acc_t(hr[k + 2 * w + 1])));
          }
        }
      }
    });
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor> blend_up_bwd_cpu(const at::Tensor& grad_y,  // [N, C, H, W]
                                                    double alpha) {
  check_blend_full_args("blend_up_bwd", "grad_y", grad_y, alpha);
  const int64_t N = grad_y.size(0), C = grad_y.size(1), H2 = grad_y.size(2) / 2, W = grad_y.size(3), W2 = W / 2;
  auto grad_low = at::empty({N, C, H2, W2}, grad_y.options());
  auto grad_high = at::empty_like(grad_y);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_y.scalar_type(), "blend_up_bwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* gp = grad_y.const_data_ptr<scalar_t>();
    scalar_t* glp = grad_low.mutable_data_ptr<scalar_t>();
    scalar_t* ghp = grad_high.mutable_data_ptr<scalar_t>();
    // row = (n * C + c) * H/2 + h/2: one row of grad_low, two rows of grad_y and grad_high.
    at::parallel_for(0, N * C * H2, cpu::grain_rows(2 * W), [&](int64_t begin, int64_t end) {
      const acc_t a = acc_t(alpha), b = acc_t(1) - acc_t(alpha);
      for (int64_t row = begin; row < end; ++row) {
        const scalar_t* g0 = gp + 2 * row * W;
        const scalar_t* g1 = g0 + W;
        scalar_t* gh = ghp + 2 * row * W;
        _Pragma("omp simd")
        for (int64_t w = 0; w < 2 * W; ++w) gh[w] = cpu::to_scalar<scalar_t>(a * acc_t(g0[w]));
        scalar_t* gl = glp + row * W2;
        _Pragma("omp simd")
        for (int64_t w = 0; w < W2; ++w) {
          const acc_t s = acc_t(g0[2 * w]) + acc_t(g0[2 * w + 1]) + acc_t(g1[2 * w]) + acc_t(g1[2 * w + 1]);
          gl[w] = cpu::to_scalar<scalar_t>(b * s);
        }
      }
    });
  });
  return {grad_low, grad_high};
}

at::Tensor blend_real_fwd_cpu(const at::Tensor& x,  // [N, C, H, W]
                              double alpha) {
  check_blend_full_args("blend_real_fwd", "x", x, alpha);
  const int64_t W = x.size(3), W2 = W / 2;
  auto y = at::empty_like(x);
  if (y.numel() == 0) return y;  // the row count below divides by W
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "blend_real_fwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    // row = (n * C + c) * H/2 + h/2: a pair of rows of x and y.
    at::parallel_for(0, x.numel() / (2 * W), cpu::grain_rows(2 * W), [&](int64_t begin, int64_t end) {
      const acc_t a = acc_t(alpha), b = acc_t(1) - acc_t(alpha);
      for (int64_t row = begin; row < end; ++row) {
        const scalar_t* x0 = xp + 2 * row * W;
        const scalar_t* x1 = x0 + W;
        scalar_t* y0 = yp + 2 * row * W;
        scalar_t* y1 = y0 + W;
        _Pragma("omp simd")
        for (int64_t w = 0; w < W2; ++w) {
          const int64_t l = 2 * w, r = 2 * w + 1;
          const acc_t mean = (acc_t(x0[l]) + acc_t(x0[r]) + acc_t(x1[l]) + acc_t(x1[r])) * acc_t(0.25);
          y0[l] = cpu::to_scalar<scalar_t>(a * acc_t(x0[l]) + b * mean);
          y0[r] = cpu::to_scalar<scalar_t>(a * acc_t(x0[r]) + b * mean);
          y1[l] = cpu::to_scalar<scalar_t>(a * acc_t(x1[l]) + b * mean);
          y1[r] = cpu::to_scalar<scalar_t>(a * acc_t(x1[r]) + b * mean);
        }
      }
    });
  });
  return y;
}

// The 1x1 convolution of the pooled image that blend_down blends: per (n, h/2) row, pool then convolve.
template <typename scalar_t, typename acc_t>
struct DownConv {
  const scalar_t* img;   // [N, K, H, W]
  const acc_t* weight;   // [C, K]
  const acc_t* bias;     // [C]
  int64_t K, H, W, C;

  DownConv(const at::Tensor& img_, const at::Tensor& weight_, const at::Tensor& bias_)
      : img(img_.const_data_ptr<scalar_t>()), weight(weight_.const_data_ptr<acc_t>()),
        bias(bias_.const_data_ptr<acc_t>()), K(img_.size(1)), H(img_.size(2)), W(img_.size(3)),
        C(weight_.size(0)) {}

  // p [K, W/2] = avgpool2(img)[n, :, h2, :].
  void pool_row(int64_t n, int64_t h2, acc_t* p) const {
    const int64_t W2 = W / 2;
    for (int64_t k = 0; k < K; ++k) {
      const scalar_t* r0 = img + ((n * K + k) * H + 2 * h2) * W;
      const scalar_t* r1 = r0 + W;
      acc_t* pk = p + k * W2;
      _Pragma("omp simd")
      for (int64_t w = 0; w < W2; ++w) {
        pk[w] = (acc_t(r0[2 * w]) + acc_t(r0[2 * w + 1]) + acc_t(r1[2 * w]) + acc_t(r1[2 * w + 1])) * acc_t(0.25);
      }
    }
  }

  // pre [W/2] = bias[c] + sum_k weight[c, k] * p[k, :] for output channel c; p [K, W/2].
  void conv_row(int64_t c, const acc_t* p, acc_t* pre) const {
    const int64_t W2 = W / 2;
    const acc_t bias_c = bias[c];
    _Pragma("omp simd")
    for (int64_t w = 0; w < W2; ++w) pre[w] = bias_c;
    for (int64_t k = 0; k < K; ++k) {
      const acc_t wk = weight[c * K + k];
      const acc_t* pk = p + k * W2;
      _Pragma("omp simd")
      for (int64_t w = 0; w < W2; ++w) pre[w] += wk * pk[w];
    }
  }
};

at::Tensor blend_down_fwd_cpu(const at::Tensor& img,     // [N, K, H, W]
                              const at::Tensor& weight,  // [C, K] acc
                              const at::Tensor& bias,    // [C] acc
                              const at::Tensor& new_,    // [N, C, H/2, W/2]
                              double alpha, double slope) {
  check_blend_down_args("blend_down_fwd", img, weight, bias, "new", new_, alpha, slope);
  auto y = at::empty_like(new_);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, img.scalar_type(), "blend_down_fwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const DownConv<scalar_t, acc_t> conv(img, weight, bias);
    const int64_t N = img.size(0), K = conv.K, C = conv.C, H2 = conv.H / 2, W2 = conv.W / 2;
    const scalar_t* np = new_.const_data_ptr<scalar_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    // row = n * H/2 + h2: every channel of one output row.
    at::parallel_for(0, N * H2, cpu::grain_rows((K + C) * W2), [&](int64_t begin, int64_t end) {
      const acc_t s = acc_t(slope);
      const Lerp<acc_t> lerp(static_cast<acc_t>(alpha));
      // p [K, W/2]: the pooled image row; pre [W/2]: one channel's pre-activation.
      auto buf = cpu::scratch<acc_t>((K + 1) * W2);
      acc_t *p = buf.get(), *pre = p + K * W2;
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / H2, h2 = row % H2;
        conv.pool_row(n, h2, p);
        for (int64_t c = 0; c < C; ++c) {
          conv.conv_row(c, p, pre);
          const scalar_t* nr = np + ((n * C + c) * H2 + h2) * W2;
          scalar_t* yr = yp + ((n * C + c) * H2 + h2) * W2;
          _Pragma("omp simd")
          for (int64_t w = 0; w < W2; ++w) {
            yr[w] = cpu::to_scalar<scalar_t>(lerp(cpu::leaky_v(pre[w], s), acc_t(nr[w])));
          }
        }
      }
    });
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> blend_down_bwd_cpu(
    const at::Tensor& grad_y,  // [N, C, H/2, W/2]
    const at::Tensor& img,     // [N, K, H, W]
    const at::Tensor& weight,  // [C, K] acc
    const at::Tensor& bias,    // [C] acc
    double alpha, double slope) {
  check_blend_down_args("blend_down_bwd", img, weight, bias, "grad_y", grad_y, alpha, slope);
  auto grad_img = at::empty_like(img);
  auto grad_new = at::empty_like(grad_y);
  auto grad_weight = at::zeros_like(weight);
  auto grad_bias = at::zeros_like(bias);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, img.scalar_type(), "blend_down_bwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const DownConv<scalar_t, acc_t> conv(img, weight, bias);
    const int64_t N = img.size(0), K = conv.K, C = conv.C, H = conv.H, W = conv.W, H2 = H / 2, W2 = W / 2;
    const scalar_t* gp = grad_y.const_data_ptr<scalar_t>();
    const acc_t* wp = conv.weight;
    scalar_t* gip = grad_img.mutable_data_ptr<scalar_t>();
    scalar_t* gnp = grad_new.mutable_data_ptr<scalar_t>();
    // Per-(n, h2) partial sums in double, added afterwards in a fixed pairwise order: deterministic, no
    // atomics, and as accurate as their terms even where they cancel.
    auto partial_w = cpu::scratch<cpu::sum_t>(N * H2 * C * K);
    auto partial_b = cpu::scratch<cpu::sum_t>(N * H2 * C);
    cpu::sum_t *pwp = partial_w.get(), *pbp = partial_b.get();
    // row = n * H/2 + h2: every channel of one row of grad_y, two rows of grad_img.
    at::parallel_for(0, N * H2, cpu::grain_rows((K + C) * W2), [&](int64_t begin, int64_t end) {
      const acc_t a = acc_t(alpha), b = acc_t(1) - acc_t(alpha), s = acc_t(slope);
      // p, dp [K, W/2]: the pooled image row and its gradient; pre, dpre [W/2]: one channel's.
      auto buf = cpu::scratch<acc_t>((2 * K + 2) * W2);
      acc_t *p = buf.get(), *dp = p + K * W2, *pre = dp + K * W2, *dpre = pre + W2;
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / H2, h2 = row % H2;
        conv.pool_row(n, h2, p);
        std::fill(dp, dp + K * W2, acc_t(0));
        cpu::sum_t* gw = pwp + row * C * K;
        cpu::sum_t* gb = pbp + row * C;
        for (int64_t c = 0; c < C; ++c) {
          conv.conv_row(c, p, pre);
          const int64_t off = ((n * C + c) * H2 + h2) * W2;
          cpu::sum_t sum_dpre = 0;
          _Pragma("omp simd reduction(+ : sum_dpre)")
          for (int64_t w = 0; w < W2; ++w) {
            const acc_t g = acc_t(gp[off + w]);
            gnp[off + w] = cpu::to_scalar<scalar_t>(a * g);
            dpre[w] = b * g * cpu::leaky_grad_v(pre[w], s);
            sum_dpre += dpre[w];
          }
          gb[c] = sum_dpre;
          for (int64_t k = 0; k < K; ++k) {
            const acc_t wck = wp[c * K + k];
            const acc_t* pk = p + k * W2;
            acc_t* dpk = dp + k * W2;
            cpu::sum_t sum_w = 0;
            _Pragma("omp simd reduction(+ : sum_w)")
            for (int64_t w = 0; w < W2; ++w) {
              sum_w += cpu::sum_t(dpre[w]) * pk[w];
              dpk[w] += wck * dpre[w];
            }
            gw[c * K + k] = sum_w;
          }
        }
        // grad_img = nearest_up2(dp) / 4.
        for (int64_t k = 0; k < K; ++k) {
          const acc_t* dpk = dp + k * W2;
          scalar_t* r0 = gip + ((n * K + k) * H + 2 * h2) * W;
          scalar_t* r1 = r0 + W;
          _Pragma("omp simd")
          for (int64_t w = 0; w < W2; ++w) {
            const scalar_t v = cpu::to_scalar<scalar_t>(dpk[w] * acc_t(0.25));
            r0[2 * w] = r0[2 * w + 1] = r1[2 * w] = r1[2 * w + 1] = v;
          }
        }
      }
    });
    if (N * H2 == 0) return;
    acc_t* gwp = grad_weight.mutable_data_ptr<acc_t>();
    acc_t* gbp = grad_bias.mutable_data_ptr<acc_t>();
    for (int64_t i = 0; i < C * K; ++i) gwp[i] = acc_t(cpu::tree_sum(pwp + i, N * H2, C * K));
    for (int64_t c = 0; c < C; ++c) gbp[c] = acc_t(cpu::tree_sum(pbp + c, N * H2, C));
  });
  return {grad_img, grad_weight, grad_bias, grad_new};
}

}  // namespace

ALAE_FAST_REGISTER_KERNELS(ALAE_FAST_BLEND_KERNELS, CPU, cpu)

}  // namespace alae_fast
