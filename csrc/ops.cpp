// Op schemas, declared once. Kernels live in csrc/cpu and csrc/cuda and register
// themselves with TORCH_LIBRARY_IMPL; the fake (meta) kernels are registered from
// Python in gaave_fast/ops.py.
#include <torch/library.h>

#include <string>

namespace gaave_fast {

// Which kernels this build holds, e.g. "cpu" or "cpu,cuda 13.0".
std::string build_info() {
#ifdef GAAVE_FAST_WITH_CUDA
  return std::string("cpu,cuda ") + GAAVE_FAST_CUDA_VERSION;
#else
  return "cpu";
#endif
}

TORCH_LIBRARY(gaave_fast, m) {
  // One PGD step over a batch, in place: first counts, per sample, whether the
  // model's logits at x still predict the label, then moves x by alpha*sign(grad),
  // projects onto the eps-ball around x0 and clamps to [lo, hi] (all per channel).
  m.def(
      "pgd_step_(Tensor(a!) x, Tensor x0, Tensor grad, Tensor logits, Tensor labels, "
      "Tensor(b!) k, Tensor(c!) first_miss, int step, Tensor eps, Tensor alpha, "
      "Tensor lo, Tensor hi) -> ()");
  // The counting half alone, for the last point x(S), which is not moved again.
  m.def(
      "count_k_(Tensor logits, Tensor labels, Tensor(a!) k, Tensor(b!) first_miss, "
      "int step) -> ()");
  // pgd_step_ for the early-exit scan: every sample has its own current step
  // (int32 [N], advanced in place) and a decided flag (bool [N]) set once the
  // verdict k <= tau is certain (csrc/pgd_step.h, verdict_certain). Decided
  // samples are frozen: their k, first_miss and step no longer change.
  m.def(
      "pgd_decide_step_(Tensor(a!) x, Tensor x0, Tensor grad, Tensor logits, Tensor labels, "
      "Tensor(b!) k, Tensor(c!) first_miss, Tensor(d!) step, Tensor(e!) decided, int steps, "
      "int tau, Tensor eps, Tensor alpha, Tensor lo, Tensor hi) -> ()");
  m.def("build_info() -> str", &build_info);
}

}  // namespace gaave_fast
