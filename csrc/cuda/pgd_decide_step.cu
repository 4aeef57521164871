// CUDA kernel of gaave_fast::pgd_decide_step_: in one launch, per sample, count
// whether the logits still predict the label and decide whether the verdict
// k <= tau is certain (threads 0..N-1, csrc/pgd_step.h record_decision), and move
// every element of the batch one PGD step (csrc/cuda/pgd_move.cuh). The decision
// stays on the device: the scan reads it only when it refills the batch.
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

template <typename L>
struct DecideRows {
  const L* logits;
  const int64_t* labels;
  int32_t* k;
  int32_t* first_miss;
  int32_t* step;
  bool* decided;
  int64_t n;
  int64_t num_classes;
  int32_t steps;
  int32_t tau;
  __device__ __forceinline__ void operator()(int64_t tid, int64_t stride) const {
    for (int64_t i = tid; i < n; i += stride) {
      if (decided[i]) continue;  // frozen: skip the argmax too
      const bool match = predicts_label(logits + i * num_classes, num_classes, 1, labels[i]);
      record_decision(match, steps, tau, k + i, first_miss + i, step + i, decided + i);
    }
  }
};

// x with no elements: only the per-sample half.
template <typename L>
__global__ void decide_rows_kernel(DecideRows<L> rows) {
  rows(blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x,
       static_cast<int64_t>(gridDim.x) * blockDim.x);
}

void pgd_decide_step_cuda(at::Tensor x, const at::Tensor& x0, const at::Tensor& grad,
                          const at::Tensor& logits, const at::Tensor& labels, at::Tensor k,
                          at::Tensor first_miss, at::Tensor step, at::Tensor decided,
                          int64_t steps, int64_t tau, const at::Tensor& eps,
                          const at::Tensor& alpha, const at::Tensor& lo, const at::Tensor& hi) {
  check_step(x, x0, grad, logits, labels, k, first_miss, eps, alpha, lo, hi, "pgd_decide_step_");
  check_decide(logits, step, decided, steps, tau);
  TORCH_CHECK(x.is_cuda(), "pgd_decide_step_: x must be a CUDA tensor for this kernel");
  const int64_t n = logits.size(0);
  if (n == 0) return;
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor rows = logits.contiguous();
  const at::Tensor targets = labels.contiguous();

  AT_DISPATCH_V2(rows.scalar_type(), "pgd_decide_step_cuda_logits", AT_WRAP([&] {
    using L = scalar_t;
    const DecideRows<L> decide{rows.const_data_ptr<L>(),  targets.const_data_ptr<int64_t>(),
                               k.data_ptr<int32_t>(),     first_miss.data_ptr<int32_t>(),
                               step.data_ptr<int32_t>(),  decided.data_ptr<bool>(),
                               n,                         rows.size(1),
                               static_cast<int32_t>(steps), static_cast<int32_t>(tau)};
    if (x.numel() == 0) {
      decide_rows_kernel<L><<<blocks_for(n), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
          decide);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      return;
    }
    const MoveInputs in = move_inputs(x, x0, grad, eps, alpha, lo, hi);
    AT_DISPATCH_V2(x.scalar_type(), "pgd_decide_step_cuda", AT_WRAP([&] {
      launch_fused_step<DecideRows<L>, scalar_t>(x, in, decide);
    }), at::kFloat, at::kHalf, at::kBFloat16);
  }), at::kFloat, at::kHalf, at::kBFloat16);
}

}  // namespace

TORCH_LIBRARY_IMPL(gaave_fast, CUDA, m) {
  m.impl("pgd_decide_step_", &pgd_decide_step_cuda);
}

}  // namespace gaave_fast
