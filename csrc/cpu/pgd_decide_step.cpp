// CPU kernel of gaave_fast::pgd_decide_step_: per-sample count and decision, then
// one in-place PGD step. The decision arithmetic is gaave_fast::record_decision
// (csrc/pgd_step.h) and the move is the one of pgd_step_, both shared with CUDA.
#include <ATen/ATen.h>
#include <ATen/Dispatch_v2.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../checks.h"
#include "../pgd_step.h"
#include "kernels.h"

namespace gaave_fast {
namespace {

void decide_rows_cpu(const at::Tensor& logits, const at::Tensor& labels, at::Tensor& k,
                     at::Tensor& first_miss, at::Tensor& step, at::Tensor& decided,
                     int32_t steps, int32_t tau) {
  const int64_t n = logits.size(0);
  if (n == 0) return;
  const at::Tensor rows = logits.contiguous();
  const at::Tensor targets = labels.contiguous();
  const int64_t num_classes = rows.size(1);
  AT_DISPATCH_V2(rows.scalar_type(), "pgd_decide_step_cpu", AT_WRAP([&] {
    const scalar_t* l = rows.const_data_ptr<scalar_t>();
    const int64_t* y = targets.const_data_ptr<int64_t>();
    int32_t* counts = k.data_ptr<int32_t>();
    int32_t* miss = first_miss.data_ptr<int32_t>();
    int32_t* at_step = step.data_ptr<int32_t>();
    bool* done = decided.data_ptr<bool>();
    at::parallel_for(0, n, 1024, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        if (done[i]) continue;  // frozen: skip the argmax too
        const bool match = predicts_label(l + i * num_classes, num_classes, 1, y[i]);
        record_decision(match, steps, tau, counts + i, miss + i, at_step + i, done + i);
      }
    });
  }), at::kFloat, at::kHalf, at::kBFloat16);
}

void pgd_decide_step_cpu(at::Tensor x, const at::Tensor& x0, const at::Tensor& grad,
                         const at::Tensor& logits, const at::Tensor& labels, at::Tensor k,
                         at::Tensor first_miss, at::Tensor step, at::Tensor decided,
                         int64_t steps, int64_t tau, const at::Tensor& eps,
                         const at::Tensor& alpha, const at::Tensor& lo, const at::Tensor& hi) {
  check_step(x, x0, grad, logits, labels, k, first_miss, eps, alpha, lo, hi, "pgd_decide_step_");
  check_decide(logits, step, decided, steps, tau);
  TORCH_CHECK(x.device().is_cpu(), "pgd_decide_step_: x must be on the CPU for this kernel");
  // Count and decide at the current points before moving them: logits were computed there.
  decide_rows_cpu(logits, labels, k, first_miss, step, decided, static_cast<int32_t>(steps),
                  static_cast<int32_t>(tau));
  // Decided samples move too: their x is never looked at again, and a per-row
  // test would cost the element loop its vectorisation.
  pgd_move_cpu_kernel(x, x0, grad, eps, alpha, lo, hi);
}

}  // namespace

TORCH_LIBRARY_IMPL(gaave_fast, CPU, m) {
  m.impl("pgd_decide_step_", &pgd_decide_step_cpu);
}

}  // namespace gaave_fast
