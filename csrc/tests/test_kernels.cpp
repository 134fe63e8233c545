// C++ tests of the CPU kernels through the dispatcher, against ATen composites.
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "../cpu_vec.h"

namespace {

int failures = 0;

void expect(bool ok, const std::string& what) {
  std::printf("%s %-40s\n", ok ? "PASS" : "FAIL", what.c_str());
  if (!ok) ++failures;
}

void expect_close(const at::Tensor& got, const at::Tensor& want, double tol, const std::string& what) {
  const double err = (got.to(at::kDouble) - want.to(at::kDouble)).abs().max().item<double>();
  const bool ok = err <= tol;
  std::printf("%s %-40s max abs err %.3e (tol %.0e)\n", ok ? "PASS" : "FAIL", what.c_str(), err, tol);
  if (!ok) ++failures;
}

c10::OperatorHandle op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "");
}

void test_adain() {
  const int64_t N = 2, C = 3, H = 5, W = 7;
  auto opts = torch::dtype(torch::kDouble);
  auto x = torch::randn({N, C, H, W}, opts), noise = torch::randn({N, 1, H, W}, opts);
  auto wn = torch::randn({C}, opts), b = torch::randn({C}, opts), style = torch::randn({N, 2 * C}, opts);
  auto fwd = op("alae_fast_C::adain_fwd").typed<std::tuple<at::Tensor, at::Tensor>(
      const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, double, double)>();
  auto [y, stats] = fwd.call(x, noise, wn, b, style, 1e-8, 0.2);
  auto t = torch::leaky_relu(x + wn.view({1, C, 1, 1}) * noise + b.view({1, C, 1, 1}), 0.2);
  auto mean = t.mean({2, 3}, true);
  auto var = (t - mean).square().mean({2, 3}, true);
  auto want = (t - mean) * torch::rsqrt(var + 1e-8) * (1 + style.slice(1, 0, C).view({N, C, 1, 1})) +
              style.slice(1, C).view({N, C, 1, 1});
  expect_close(y, want, 1e-10, "adain_fwd fp64");
  expect_close(stats.slice(1, 0, C), mean.view({N, C}), 1e-12, "adain_fwd mean");
}

// The shared row-norm backward (cpu_common/row_norm.h) on rows of several chunks: adain_bwd against
// autograd of the fp64 composite.
void test_adain_bwd() {
  const int64_t N = 2, C = 3, H = 20, W = 30;  // 600 values a row: 3 chunks
  auto opts = torch::dtype(torch::kDouble);
  auto x = torch::randn({N, C, H, W}, opts).requires_grad_(), noise = torch::randn({N, 1, H, W}, opts);
  auto wn = torch::randn({C}, opts).requires_grad_(), b = torch::randn({C}, opts).requires_grad_();
  auto style = torch::randn({N, 2 * C}, opts).requires_grad_();
  auto t = torch::leaky_relu(x + wn.view({1, C, 1, 1}) * noise + b.view({1, C, 1, 1}), 0.2);
  auto mean = t.mean({2, 3}, true);
  auto var = (t - mean).square().mean({2, 3}, true);
  auto y = (t - mean) * torch::rsqrt(var + 1e-8) * (1 + style.slice(1, 0, C).view({N, C, 1, 1})) +
           style.slice(1, C).view({N, C, 1, 1});
  auto grad_y = torch::randn_like(y);
  auto want = torch::autograd::grad({y}, {x, wn, b, style}, {grad_y});
  auto fwd = op("alae_fast_C::adain_fwd").typed<std::tuple<at::Tensor, at::Tensor>(
      const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, double, double)>();
  auto bwd = op("alae_fast_C::adain_bwd").typed<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
      const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
      const at::Tensor&, double, double)>();
  torch::NoGradGuard no_grad;
  auto [y_got, stats] = fwd.call(x, noise, wn, b, style, 1e-8, 0.2);
  auto [grad_x, grad_wn, grad_b, grad_style] = bwd.call(grad_y, x, noise, wn, b, style, stats, 1e-8, 0.2);
  expect_close(grad_x, want[0], 1e-10, "adain_bwd grad_x fp64, 3 chunks a row");
  expect_close(grad_wn, want[1], 1e-9, "adain_bwd grad_noise_weight");
  expect_close(grad_b, want[2], 1e-9, "adain_bwd grad_bias");
  expect_close(grad_style, want[3], 1e-9, "adain_bwd grad_style");
}

at::Tensor up2(const at::Tensor& t) { return t.repeat_interleave(2, 2).repeat_interleave(2, 3); }

void test_style() {
  const int64_t N = 2, C = 3, H = 5, W = 7;
  auto opts = torch::dtype(torch::kDouble);
  auto x = torch::randn({N, C, H, W}, opts), b = torch::randn({C}, opts);
  auto fwd = op("alae_fast_C::style_fwd").typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                                     double, double)>();
  auto [y, stats] = fwd.call(x, b, 1e-5, 0.2);
  auto t = torch::leaky_relu(x + b.view({1, C, 1, 1}), 0.2);
  auto mean = t.mean({2, 3}, true);
  auto var = (t - mean).square().mean({2, 3}, true);
  expect_close(y, (t - mean) * torch::rsqrt(var + 1e-5), 1e-10, "style_fwd fp64");
  expect_close(stats, torch::cat({mean.view({N, C}), var.sqrt().view({N, C})}, 1), 1e-12, "style_fwd stats");
}

void test_noise() {
  const int64_t N = 2, C = 3, H = 5, W = 7;
  auto opts = torch::dtype(torch::kDouble);
  auto x = torch::randn({N, C, H, W}, opts), noise = torch::randn({N, 1, H, W}, opts);
  auto wn = torch::randn({C}, opts), b = torch::randn({C}, opts);
  auto fwd = op("alae_fast_C::noise_fwd").typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                           const std::optional<at::Tensor>&, bool, double)>();
  auto pre = x + wn.view({1, C, 1, 1}) * noise;
  expect_close(fwd.call(x, noise, wn, b, true, 0.2), torch::leaky_relu(pre + b.view({1, C, 1, 1}), 0.2), 1e-12,
               "noise_fwd fp64 bias act");
  expect_close(fwd.call(x, noise, wn, std::nullopt, false, 0.2), pre, 1e-12, "noise_fwd fp64 no bias");
}

// The vectorized bfloat16 paths: rounding as c10 does it, NaN kept; a constant row has std 0 exactly.
void test_bf16_rows() {
  const int64_t N = 2, C = 3, H = 4, W = 9;
  auto x = torch::randn({N, C, H, W}).to(torch::kBFloat16), noise = torch::randn({N, 1, H, W}).to(torch::kBFloat16);
  x.index_put_({0, 1, 2, 3}, std::numeric_limits<float>::quiet_NaN());
  auto wn = torch::randn({C}), b = torch::randn({C});
  auto fwd = op("alae_fast_C::noise_fwd").typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                           const std::optional<at::Tensor>&, bool, double)>();
  auto want = torch::leaky_relu(x.to(torch::kFloat) + wn.view({1, C, 1, 1}) * noise.to(torch::kFloat) +
                                b.view({1, C, 1, 1}), 0.2).to(torch::kBFloat16);
  const bool same = torch::equal(torch::nan_to_num(fwd.call(x, noise, wn, b, true, 0.2), 1e9), torch::nan_to_num(want, 1e9));
  std::printf("%s %-40s\n", same ? "PASS" : "FAIL", "noise_fwd bf16 bitwise, NaN kept");
  if (!same) ++failures;

  auto style = op("alae_fast_C::style_fwd").typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                                       double, double)>();
  auto [y, stats] = style.call(torch::full({N, C, H, W}, 0.7).to(torch::kBFloat16), b, 1e-5, 0.2);
  expect_close(stats.slice(1, C), torch::zeros({N, C}), 0.0, "style_fwd bf16 constant rows: std == 0");
}

// The row statistics helpers: chunk moments combined in a fixed tree, non-finite values, the clamp.
void test_moments() {
  using alae_fast::cpu::Moments;
  namespace cpu = alae_fast::cpu;
  const int64_t n = 1000;
  auto v = (torch::randn({n}, torch::kDouble) * 3 + 5).to(torch::kFloat);
  const float* p = v.const_data_ptr<float>();
  std::vector<Moments> chunks;
  for (int64_t b = 0; b < n; b += 96) chunks.push_back(cpu::chunk_moments(p + b, std::min<int64_t>(96, n - b)));
  const auto m = cpu::tree_moments(chunks.data(), int64_t(chunks.size()));
  const auto vd = v.to(torch::kDouble);
  const double mean = vd.mean().item<double>(), m2 = (vd - mean).square().sum().item<double>();
  expect(m.count == double(n) && std::abs(m.mean - mean) < 1e-12 && std::abs(m.m2 - m2) < 1e-12 * m2,
         "tree of chunk moments == fp64 two-pass");
  const float c[5] = {0.3f, 0.3f, 0.3f, 0.3f, 0.3f};
  const auto constant = cpu::chunk_moments(c, 5);
  expect(constant.mean == double(0.3f) && constant.m2 == 0.0, "constant run: exact mean, M2 == 0");
  const float inf = std::numeric_limits<float>::infinity();
  const float with_inf[3] = {1.0f, inf, 2.0f};
  const auto a = cpu::chunk_moments(with_inf, 3), b = cpu::chunk_moments(c, 5);
  const auto ab = cpu::combine(a, b), neg = cpu::combine(a, Moments{1.0, -inf, 0.0});
  expect(ab.mean == inf && std::isnan(ab.m2) && std::isnan(neg.mean), "inf + finite = inf, inf - inf = NaN");
  expect(std::isnan(cpu::clamp_min_zero(std::nanf(""))) && cpu::clamp_min_zero(-1e-9f) == 0.0f,
         "clamp_min_zero keeps NaN");
  // All on the positive side: Σ d·e is the exact total, whatever the rounding in the side sums.
  expect(cpu::leaky_weighted_sum(0.0, 3e-7, 0.0, 8.0, 8.0, 0.2) == 0.0 &&
             cpu::leaky_weighted_sum(0.0, 0.0, 3e-7, 0.0, 8.0, 0.2) == 0.0,
         "leaky_weighted_sum of a one-sided row");
}

// A long fp32 row with |mean|/std = 1e6 (a shifted two-sweep per chunk, Chan's combine): mean within an
// ulp of the fp64 mean of the same values, std within 1e-5; the result is the same on 1 and 2 threads.
void test_ill_conditioned_row() {
  const int64_t H = 256, W = 256;
  auto x = (torch::randn({1, 1, H, W}, torch::kDouble) + 1e6).to(torch::kFloat);
  auto b = torch::zeros({1});
  auto style = op("alae_fast_C::style_fwd").typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                                       double, double)>();
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  auto [y1, stats1] = style.call(x, b, 1e-5, 0.2);
  at::set_num_threads(2);
  auto [y2, stats2] = style.call(x, b, 1e-5, 0.2);
  at::set_num_threads(threads);
  const auto xd = x.to(torch::kDouble);
  const double mean = xd.mean().item<double>(), sd = (xd - mean).square().mean().sqrt().item<double>();
  const double mean_err = std::abs(stats1[0][0].item<double>() - mean), sd_err = std::abs(stats1[0][1].item<double>() / sd - 1);
  std::printf("     ill-conditioned row: mean error %.3e (ulp 0.0625), std relative error %.3e\n", mean_err, sd_err);
  expect(mean_err <= 0.0625 && sd_err <= 1e-5, "style_fwd fp32 row of mean 1e6, std 1");
  expect(torch::equal(y1, y2) && torch::equal(stats1, stats2), "style_fwd split over 2 threads == 1 thread");
}

void test_blend() {
  const int64_t N = 2, C = 3, K = 3, H = 6, W = 8;
  const double alpha = 0.3, slope = 0.04;
  auto opts = torch::dtype(torch::kDouble);
  auto high = torch::randn({N, C, H, W}, opts), low = torch::randn({N, C, H / 2, W / 2}, opts);
  auto up_fwd = op("alae_fast_C::blend_up_fwd").typed<at::Tensor(const at::Tensor&, const at::Tensor&, double)>();
  expect_close(up_fwd.call(low, high, alpha), torch::lerp(up2(low), high, alpha), 1e-12, "blend_up_fwd fp64");

  auto real_fwd = op("alae_fast_C::blend_real_fwd").typed<at::Tensor(const at::Tensor&, double)>();
  expect_close(real_fwd.call(high, alpha), alpha * high + (1 - alpha) * up2(torch::avg_pool2d(high, 2)), 1e-12,
               "blend_real_fwd fp64");

  auto img = torch::randn({N, K, H, W}, opts), weight = torch::randn({C, K}, opts), b = torch::randn({C}, opts);
  auto down_fwd = op("alae_fast_C::blend_down_fwd").typed<at::Tensor(
      const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, double, double)>();
  auto pre = torch::conv2d(torch::avg_pool2d(img, 2), weight.view({C, K, 1, 1}), b);
  expect_close(down_fwd.call(img, weight, b, low, alpha, slope), torch::lerp(torch::leaky_relu(pre, slope), low, alpha),
               1e-12, "blend_down_fwd fp64");
}

}  // namespace

int main() {
  torch::manual_seed(0);
  test_adain();
  test_adain_bwd();
  test_style();
  test_noise();
  test_bf16_rows();
  test_moments();
  test_ill_conditioned_row();
  test_blend();
  std::printf("%d failure(s)\n", failures);
  return failures == 0 ? 0 : 1;
}
