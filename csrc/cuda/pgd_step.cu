// CUDA kernel of gaave_fast::pgd_step_.
//
// One launch per PGD step: the same grid both counts, per sample, whether the
// logits still predict the label (threads 0..N-1 of the grid) and moves every
// element of the batch (csrc/cuda/pgd_move.cuh). The arithmetic is
// csrc/pgd_step.h, shared with the CPU kernel.
#include <ATen/ATen.h>
#include <ATen/Dispatch_v2.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../checks.h"
#include "../pgd_step.h"
#include "count_rows.cuh"
#include "pgd_move.cuh"

namespace gaave_fast {
namespace {

// The per-sample half of pgd_step_: k[i] += argmax == label.
template <typename L>
struct CountRows {
  const L* logits;
  const int64_t* labels;
  int32_t* k;
  int32_t* first_miss;
  int64_t n;
  int64_t num_classes;
  int32_t step;
  __device__ __forceinline__ void operator()(int64_t tid, int64_t stride) const {
    count_rows(logits, labels, k, first_miss, n, num_classes, step, tid, stride);
  }
};

void pgd_step_cuda(at::Tensor x, const at::Tensor& x0, const at::Tensor& grad,
                   const at::Tensor& logits, const at::Tensor& labels, at::Tensor k,
                   at::Tensor first_miss, int64_t step, const at::Tensor& eps,
                   const at::Tensor& alpha, const at::Tensor& lo, const at::Tensor& hi) {
  check_step(x, x0, grad, logits, labels, k, first_miss, eps, alpha, lo, hi);
  TORCH_CHECK(x.is_cuda(), "pgd_step_: x must be a CUDA tensor for this kernel");
  const int64_t n = logits.size(0);
  if (n == 0) return;
  const c10::cuda::CUDAGuard guard(x.device());
  if (x.numel() == 0) {  // nothing to move; the count alone still applies
    count_k_cuda_launch(logits, labels, k, first_miss, step);
    return;
  }
  const MoveInputs in = move_inputs(x, x0, grad, eps, alpha, lo, hi);
  const at::Tensor rows = logits.contiguous();
  const at::Tensor targets = labels.contiguous();

  AT_DISPATCH_V2(x.scalar_type(), "pgd_step_cuda", AT_WRAP([&] {
    using T = scalar_t;
    AT_DISPATCH_V2(rows.scalar_type(), "pgd_step_cuda_logits", AT_WRAP([&] {
      const CountRows<scalar_t> count{rows.const_data_ptr<scalar_t>(),
                                      targets.const_data_ptr<int64_t>(),
                                      k.data_ptr<int32_t>(),
                                      first_miss.data_ptr<int32_t>(),
                                      n,
                                      rows.size(1),
                                      static_cast<int32_t>(step)};
      launch_fused_step<CountRows<scalar_t>, T>(x, in, count);
    }), at::kFloat, at::kHalf, at::kBFloat16);
  }), at::kFloat, at::kHalf, at::kBFloat16);
}

}  // namespace

TORCH_LIBRARY_IMPL(gaave_fast, CUDA, m) {
  m.impl("pgd_step_", &pgd_step_cuda);
}

}  // namespace gaave_fast
