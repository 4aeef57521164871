// CUDA kernel of gaave_fast::count_k_: per-sample argmax == label counting.
#include <ATen/ATen.h>
#include <ATen/Dispatch_v2.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../checks.h"
#include "count_rows.cuh"

namespace gaave_fast {
namespace {

template <typename L>
__global__ void count_k_kernel(const L* __restrict__ logits,
                                  const int64_t* __restrict__ labels, int32_t* k,
                                  int32_t* first_miss, int64_t n, int64_t num_classes,
                                  int32_t step) {
  const int64_t tid = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  count_rows(logits, labels, k, first_miss, n, num_classes, step, tid,
             static_cast<int64_t>(gridDim.x) * blockDim.x);
}

void count_k_cuda(const at::Tensor& logits, const at::Tensor& labels, at::Tensor k,
                     at::Tensor first_miss, int64_t step) {
  check_per_sample(logits, labels, k, first_miss, "count_k_");
  TORCH_CHECK(logits.is_cuda(), "count_k_: logits must be a CUDA tensor for this kernel");
  if (logits.size(0) == 0) return;
  const c10::cuda::CUDAGuard guard(logits.device());
  count_k_cuda_launch(logits, labels, k, first_miss, step);
}

}  // namespace

void count_k_cuda_launch(const at::Tensor& logits, const at::Tensor& labels, at::Tensor& k,
                            at::Tensor& first_miss, int64_t step) {
  const int64_t n = logits.size(0);
  const at::Tensor rows = logits.contiguous();
  const at::Tensor targets = labels.contiguous();
  AT_DISPATCH_V2(rows.scalar_type(), "count_k_cuda", AT_WRAP([&] {
    count_k_kernel<scalar_t><<<blocks_for(n), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        rows.const_data_ptr<scalar_t>(), targets.const_data_ptr<int64_t>(),
        k.data_ptr<int32_t>(), first_miss.data_ptr<int32_t>(), n, rows.size(1),
        static_cast<int32_t>(step));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }), at::kFloat, at::kHalf, at::kBFloat16);
}

TORCH_LIBRARY_IMPL(gaave_fast, CUDA, m) {
  m.impl("count_k_", &count_k_cuda);
}

}  // namespace gaave_fast
