// Schemas of the kernel-level ops. Each op's kernels live in csrc/<op>/cpu.cpp and csrc/<op>/cuda.cu,
// which register them with ALAE_FAST_REGISTER_KERNELS (common.h).
// The autograd-aware public ops (alae_fast::*) are defined in Python (alae_fast/ops).
#include <torch/library.h>

TORCH_LIBRARY(alae_fast_C, m) {
  m.def("adain_fwd(Tensor x, Tensor noise, Tensor noise_weight, Tensor bias, Tensor style, float eps, float slope) "
        "-> (Tensor, Tensor)");
  m.def("adain_bwd(Tensor grad_y, Tensor x, Tensor noise, Tensor noise_weight, Tensor bias, Tensor style, "
        "Tensor stats, float eps, float slope) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("style_fwd(Tensor x, Tensor bias, float eps, float slope) -> (Tensor, Tensor)");
  m.def("style_bwd(Tensor grad_y, Tensor grad_stats, Tensor x, Tensor bias, Tensor stats, float eps, float slope) "
        "-> (Tensor, Tensor)");
  m.def("style_bwd2(Tensor grad_y, Tensor grad_stats, Tensor x, Tensor bias, Tensor stats, Tensor? gg_x, "
        "Tensor? gg_bias, float eps, float slope) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("noise_fwd(Tensor x, Tensor noise, Tensor noise_weight, Tensor? bias, bool act, float slope) -> Tensor");
  m.def("noise_bwd(Tensor grad_y, Tensor x, Tensor noise, Tensor noise_weight, Tensor? bias, bool act, float slope) "
        "-> (Tensor, Tensor, Tensor)");
  m.def("blend_up_fwd(Tensor low, Tensor high, float alpha) -> Tensor");
  m.def("blend_up_bwd(Tensor grad_y, float alpha) -> (Tensor, Tensor)");
  m.def("blend_real_fwd(Tensor x, float alpha) -> Tensor");
  m.def("blend_down_fwd(Tensor img, Tensor weight, Tensor bias, Tensor new, float alpha, float slope) -> Tensor");
  m.def("blend_down_bwd(Tensor grad_y, Tensor img, Tensor weight, Tensor bias, float alpha, float slope) "
        "-> (Tensor, Tensor, Tensor, Tensor)");
}
