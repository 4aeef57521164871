// CPU kernel of gaave_fast::count_k_: per-sample argmax == label counting.
#include <ATen/ATen.h>
#include <ATen/Dispatch_v2.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../checks.h"
#include "../pgd_step.h"
#include "kernels.h"

namespace gaave_fast {

void count_k_cpu_kernel(const at::Tensor& logits, const at::Tensor& labels, at::Tensor& k,
                           at::Tensor& first_miss, int64_t step) {
  const int64_t n = logits.size(0);
  if (n == 0) return;
  const at::Tensor rows = logits.contiguous();
  const at::Tensor targets = labels.contiguous();
  const int64_t num_classes = rows.size(1);
  const auto step32 = static_cast<int32_t>(step);
  AT_DISPATCH_V2(rows.scalar_type(), "count_k_cpu", AT_WRAP([&] {
    const scalar_t* l = rows.const_data_ptr<scalar_t>();
    const int64_t* y = targets.const_data_ptr<int64_t>();
    int32_t* counts = k.data_ptr<int32_t>();
    int32_t* miss = first_miss.data_ptr<int32_t>();
    at::parallel_for(0, n, 1024, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const bool match = predicts_label(l + i * num_classes, num_classes, 1, y[i]);
        record_match(match, step32, counts + i, miss + i);
      }
    });
  }), at::kFloat, at::kHalf, at::kBFloat16);
}

void count_k_cpu(const at::Tensor& logits, const at::Tensor& labels, at::Tensor k,
                    at::Tensor first_miss, int64_t step) {
  check_per_sample(logits, labels, k, first_miss, "count_k_");
  TORCH_CHECK(logits.device().is_cpu(), "count_k_: logits must be on the CPU for this kernel");
  count_k_cpu_kernel(logits, labels, k, first_miss, step);
}

TORCH_LIBRARY_IMPL(gaave_fast, CPU, m) {
  m.impl("count_k_", &count_k_cpu);
}

}  // namespace gaave_fast
