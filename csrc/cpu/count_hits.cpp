// CPU kernel of gaave_fast::count_hits_: per-sample argmax == label counting.
#include <ATen/ATen.h>
#include <ATen/Dispatch_v2.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../checks.h"
#include "../pgd_step.h"
#include "kernels.h"

namespace gaave_fast {

void count_hits_cpu_kernel(const at::Tensor& logits, const at::Tensor& labels, at::Tensor& hits,
                           at::Tensor& first_miss, int64_t step) {
  const int64_t n = logits.size(0);
  if (n == 0) return;
  const at::Tensor rows = logits.contiguous();
  const at::Tensor targets = labels.contiguous();
  const int64_t num_classes = rows.size(1);
  const auto step32 = static_cast<int32_t>(step);
  AT_DISPATCH_V2(rows.scalar_type(), "count_hits_cpu", AT_WRAP([&] {
    const scalar_t* l = rows.const_data_ptr<scalar_t>();
    const int64_t* y = targets.const_data_ptr<int64_t>();
    int32_t* k = hits.data_ptr<int32_t>();
    int32_t* miss = first_miss.data_ptr<int32_t>();
    at::parallel_for(0, n, 1024, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const bool hit = predicts_label(l + i * num_classes, num_classes, 1, y[i]);
        record_hit(hit, step32, k + i, miss + i);
      }
    });
  }), at::kFloat, at::kHalf, at::kBFloat16);
}

void count_hits_cpu(const at::Tensor& logits, const at::Tensor& labels, at::Tensor hits,
                    at::Tensor first_miss, int64_t step) {
  check_per_sample(logits, labels, hits, first_miss, "count_hits_");
  TORCH_CHECK(logits.device().is_cpu(), "count_hits_: logits must be on the CPU for this kernel");
  count_hits_cpu_kernel(logits, labels, hits, first_miss, step);
}

TORCH_LIBRARY_IMPL(gaave_fast, CPU, m) {
  m.impl("count_hits_", &count_hits_cpu);
}

}  // namespace gaave_fast
