// CPU kernels that other CPU kernels reuse.
#pragma once

#include <ATen/ATen.h>

namespace gaave_fast {

// Adds 1 to k[i] where argmax(logits[i]) == labels[i]; sets first_miss[i] = step
// where it does not and first_miss[i] < 0. Arguments already checked.
void count_k_cpu_kernel(const at::Tensor& logits, const at::Tensor& labels, at::Tensor& k,
                           at::Tensor& first_miss, int64_t step);

// Moves x one PGD step in place: x = clamp(clamp(x + alpha*sign(grad), x0 -/+ eps), lo, hi),
// per channel (csrc/pgd_step.h, pgd_update). Arguments already checked.
void pgd_move_cpu_kernel(at::Tensor& x, const at::Tensor& x0, const at::Tensor& grad,
                         const at::Tensor& eps, const at::Tensor& alpha, const at::Tensor& lo,
                         const at::Tensor& hi);

}  // namespace gaave_fast
