// C++ tests of the CPU kernels through the dispatcher, against ATen composites.
#include <torch/torch.h>

#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace {

int failures = 0;

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
      const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&)>();
  auto [y, stats] = fwd.call(x, noise, wn, b, style);
  auto t = torch::leaky_relu(x + wn.view({1, C, 1, 1}) * noise + b.view({1, C, 1, 1}), 0.2);
  auto mean = t.mean({2, 3}, true);
  auto var = (t - mean).square().mean({2, 3}, true);
  auto want = (t - mean) * torch::rsqrt(var + 1e-8) * (1 + style.slice(1, 0, C).view({N, C, 1, 1})) +
              style.slice(1, C).view({N, C, 1, 1});
  expect_close(y, want, 1e-10, "adain_fwd fp64");
  expect_close(stats.slice(1, 0, C), mean.view({N, C}), 1e-12, "adain_fwd mean");
}

}  // namespace

int main() {
  torch::manual_seed(0);
  test_adain();
  std::printf("%d failure(s)\n", failures);
  return failures == 0 ? 0 : 1;
}
