// Blended 2x2 resampling on CPU: one task per output row (blend_down: per (n, h/2) row, all channels).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/sum.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../blend.h"

namespace alae_fast {
namespace {

at::Tensor blend_up_fwd_cpu(const at::Tensor& low,   // [N, C, H/2, W/2]
                            const at::Tensor& high,  // [N, C, H, W]
                            double alpha) {
  check_blend_up_args("blend_up_fwd", low, high, alpha);
  const int64_t H = high.size(2), W = high.size(3), W2 = W / 2;
  auto y = at::empty_like(high);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, high.scalar_type(), "blend_up_fwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* lp = low.const_data_ptr<scalar_t>();
    const scalar_t* hp = high.const_data_ptr<scalar_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    const acc_t a = acc_t(alpha);
    // row = (n * C + c) * H + h
    at::parallel_for(0, high.size(0) * high.size(1) * H, 1, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const scalar_t* lr = lp + (row / H * (H / 2) + row % H / 2) * W2;
        const scalar_t* hr = hp + row * W;
        scalar_t* yr = yp + row * W;
        for (int64_t w = 0; w < W; ++w) yr[w] = scalar_t(blend_lerp(acc_t(lr[w / 2]), acc_t(hr[w]), a));
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
    const acc_t a = acc_t(alpha), b = acc_t(1) - acc_t(alpha);
    // row = (n * C + c) * H/2 + h/2: one row of grad_low, two rows of grad_y and grad_high.
    at::parallel_for(0, N * C * H2, 1, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const scalar_t* g0 = gp + 2 * row * W;
        const scalar_t* g1 = g0 + W;
        scalar_t* gh = ghp + 2 * row * W;
        for (int64_t w = 0; w < 2 * W; ++w) gh[w] = scalar_t(a * acc_t(g0[w]));
        scalar_t* gl = glp + row * W2;
        for (int64_t w = 0; w < W2; ++w) {
          const acc_t s = acc_t(g0[2 * w]) + acc_t(g0[2 * w + 1]) + acc_t(g1[2 * w]) + acc_t(g1[2 * w + 1]);
          gl[w] = scalar_t(b * s);
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
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "blend_real_fwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    const acc_t a = acc_t(alpha), b = acc_t(1) - acc_t(alpha);
    // row = (n * C + c) * H/2 + h/2: a pair of rows of x and y.
    at::parallel_for(0, x.numel() / (2 * W), 1, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const scalar_t* x0 = xp + 2 * row * W;
        const scalar_t* x1 = x0 + W;
        scalar_t* y0 = yp + 2 * row * W;
        scalar_t* y1 = y0 + W;
        for (int64_t w = 0; w < W2; ++w) {
          const int64_t l = 2 * w, r = 2 * w + 1;
          const acc_t mean = (acc_t(x0[l]) + acc_t(x0[r]) + acc_t(x1[l]) + acc_t(x1[r])) * acc_t(0.25);
          y0[l] = scalar_t(a * acc_t(x0[l]) + b * mean);
          y0[r] = scalar_t(a * acc_t(x0[r]) + b * mean);
          y1[l] = scalar_t(a * acc_t(x1[l]) + b * mean);
          y1[r] = scalar_t(a * acc_t(x1[r]) + b * mean);
        }
      }
    });
  });
  return y;
}

// p[k][w] = avgpool2(img)[n, k, h2, w] for one (n, h2) row; img points at img[n, 0, 0, 0].
template <typename scalar_t, typename acc_t>
void pool_row(const scalar_t* img, int64_t K, int64_t H, int64_t W, int64_t h2, acc_t* p) {
  const int64_t W2 = W / 2;
  for (int64_t k = 0; k < K; ++k) {
    const scalar_t* r0 = img + (k * H + 2 * h2) * W;
    const scalar_t* r1 = r0 + W;
    for (int64_t w = 0; w < W2; ++w) {
      p[k * W2 + w] =
          (acc_t(r0[2 * w]) + acc_t(r0[2 * w + 1]) + acc_t(r1[2 * w]) + acc_t(r1[2 * w + 1])) * acc_t(0.25);
    }
  }
}

at::Tensor blend_down_fwd_cpu(const at::Tensor& img,     // [N, K, H, W]
                              const at::Tensor& weight,  // [C, K] acc
                              const at::Tensor& bias,    // [C] acc
                              const at::Tensor& new_,    // [N, C, H/2, W/2]
                              double alpha, double slope) {
  check_blend_down_args("blend_down_fwd", img, weight, bias, "new", new_, alpha);
  const int64_t N = img.size(0), K = img.size(1), H = img.size(2), W = img.size(3);
  const int64_t C = new_.size(1), H2 = H / 2, W2 = W / 2;
  auto y = at::empty_like(new_);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, img.scalar_type(), "blend_down_fwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* ip = img.const_data_ptr<scalar_t>();
    const acc_t* wp = weight.const_data_ptr<acc_t>();
    const acc_t* bp = bias.const_data_ptr<acc_t>();
    const scalar_t* np = new_.const_data_ptr<scalar_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    const acc_t a = acc_t(alpha), s = acc_t(slope);
    // row = n * H/2 + h2: every channel of one output row.
    at::parallel_for(0, N * H2, 1, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> p(K * W2);
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / H2, h2 = row % H2;
        pool_row(ip + n * K * H * W, K, H, W, h2, p.data());
        for (int64_t c = 0; c < C; ++c) {
          const int64_t off = ((n * C + c) * H2 + h2) * W2;
          for (int64_t w = 0; w < W2; ++w) {
            acc_t pre = bp[c];
            for (int64_t k = 0; k < K; ++k) pre += wp[c * K + k] * p[k * W2 + w];
            yp[off + w] = scalar_t(blend_lerp(leaky(pre, s), acc_t(np[off + w]), a));
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
  check_blend_down_args("blend_down_bwd", img, weight, bias, "grad_y", grad_y, alpha);
  const int64_t N = img.size(0), K = img.size(1), H = img.size(2), W = img.size(3);
  const int64_t C = grad_y.size(1), H2 = H / 2, W2 = W / 2;
  auto grad_img = at::empty_like(img);
  auto grad_new = at::empty_like(grad_y);
  // Per-(n, h2) partial sums, reduced afterwards: deterministic, no atomics.
  auto partial_w = at::empty({N * H2, C, K}, weight.options());
  auto partial_b = at::empty({N * H2, C}, weight.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, img.scalar_type(), "blend_down_bwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* gp = grad_y.const_data_ptr<scalar_t>();
    const scalar_t* ip = img.const_data_ptr<scalar_t>();
    const acc_t* wp = weight.const_data_ptr<acc_t>();
    const acc_t* bp = bias.const_data_ptr<acc_t>();
    scalar_t* gip = grad_img.mutable_data_ptr<scalar_t>();
    scalar_t* gnp = grad_new.mutable_data_ptr<scalar_t>();
    acc_t* pwp = partial_w.mutable_data_ptr<acc_t>();
    acc_t* pbp = partial_b.mutable_data_ptr<acc_t>();
    const acc_t a = acc_t(alpha), b = acc_t(1) - acc_t(alpha), s = acc_t(slope);
    // row = n * H/2 + h2: every channel of one row of grad_y, two rows of grad_img.
    at::parallel_for(0, N * H2, 1, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> p(K * W2), dp(K * W2);
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / H2, h2 = row % H2;
        pool_row(ip + n * K * H * W, K, H, W, h2, p.data());
        std::fill(dp.begin(), dp.end(), acc_t(0));
        acc_t* gw = pwp + row * C * K;
        acc_t* gb = pbp + row * C;
        for (int64_t c = 0; c < C; ++c) {
          const int64_t off = ((n * C + c) * H2 + h2) * W2;
          for (int64_t k = 0; k < K; ++k) gw[c * K + k] = 0;
          gb[c] = 0;
          for (int64_t w = 0; w < W2; ++w) {
            acc_t pre = bp[c];
            for (int64_t k = 0; k < K; ++k) pre += wp[c * K + k] * p[k * W2 + w];
            const acc_t g = acc_t(gp[off + w]);
            gnp[off + w] = scalar_t(a * g);
            const acc_t dpre = b * g * leaky_grad(pre, s);
            gb[c] += dpre;
            for (int64_t k = 0; k < K; ++k) {
              gw[c * K + k] += dpre * p[k * W2 + w];
              dp[k * W2 + w] += wp[c * K + k] * dpre;
            }
          }
        }
        // grad_img = nearest_up2(dp) / 4.
        for (int64_t k = 0; k < K; ++k) {
          scalar_t* r0 = gip + ((n * K + k) * H + 2 * h2) * W;
          scalar_t* r1 = r0 + W;
          for (int64_t w = 0; w < W; ++w) r0[w] = r1[w] = scalar_t(dp[k * W2 + w / 2] * acc_t(0.25));
        }
      }
    });
  });
  return {grad_img, partial_w.sum(0), partial_b.sum(0), grad_new};
}

}  // namespace

TORCH_LIBRARY_IMPL(alae_fast_C, CPU, m) {
  m.impl("blend_up_fwd", &blend_up_fwd_cpu);
  m.impl("blend_up_bwd", &blend_up_bwd_cpu);
  m.impl("blend_real_fwd", &blend_real_fwd_cpu);
  m.impl("blend_down_fwd", &blend_down_fwd_cpu);
  m.impl("blend_down_bwd", &blend_down_bwd_cpu);
}

}  // namespace alae_fast
