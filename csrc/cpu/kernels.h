// CPU kernels that other CPU kernels reuse.
#pragma once

#include <ATen/ATen.h>

namespace gaave_fast {

// Adds 1 to k[i] where argmax(logits[i]) == labels[i]; sets first_miss[i] = step
// where it does not and first_miss[i] < 0. Arguments already checked.
void count_k_cpu_kernel(const at::Tensor& logits, const at::Tensor& labels, at::Tensor& k,
                           at::Tensor& first_miss, int64_t step);

}  // namespace gaave_fast
