// Per-sample counting shared by the CUDA kernels of pgd_step_ and count_k_.
#pragma once

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>

#include <algorithm>

#include "../pgd_step.h"

namespace gaave_fast {

constexpr int kThreads = 256;

// Grid size for `work` independent items: enough blocks to fill the GPU, capped
// so that grid-stride loops keep each thread busy over several items.
inline int blocks_for(int64_t work) {
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int64_t wanted = (work + kThreads - 1) / kThreads;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(wanted, sms * 16)));
}

// Rows tid, tid + stride, ... of the logits: k[i] += argmax == label.
template <typename L>
__device__ __forceinline__ void count_rows(const L* logits, const int64_t* labels,
                                           int32_t* k, int32_t* first_miss, int64_t n,
                                           int64_t num_classes, int32_t step, int64_t tid,
                                           int64_t stride) {
  for (int64_t i = tid; i < n; i += stride) {
    const bool match = predicts_label(logits + i * num_classes, num_classes, 1, labels[i]);
    record_match(match, step, k + i, first_miss + i);
  }
}

// Launches the counting alone on the current stream. Arguments already checked.
void count_k_cuda_launch(const at::Tensor& logits, const at::Tensor& labels, at::Tensor& k,
                            at::Tensor& first_miss, int64_t step);

}  // namespace gaave_fast
