// The element half of the fused CUDA step kernels (pgd_step_, pgd_decide_step_),
// written once. A kernel launch runs a per-sample `Rows` functor on threads
// 0..N-1 of the grid (counting, or counting and deciding) and moves every element
// of the batch with all threads (grid-stride, 16-byte vector loads when the
// pointers allow). The arithmetic is csrc/pgd_step.h, shared with the CPU kernels.
#pragma once

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>

#include <algorithm>

#include "../checks.h"
#include "../pgd_step.h"
#include "count_rows.cuh"

namespace gaave_fast {

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

struct MoveParams {
  const float* eps;
  const float* alpha;
  const float* lo;
  const float* hi;
};

// x0, grad and the per-channel parameters in the form the kernel reads them;
// holds the tensors (copies where the layout differed) alive for the launch.
struct MoveInputs {
  Layout layout;
  at::Tensor x0, grad, eps, alpha, lo, hi;
  MoveParams params() const {
    return {eps.const_data_ptr<float>(), alpha.const_data_ptr<float>(),
            lo.const_data_ptr<float>(), hi.const_data_ptr<float>()};
  }
};

inline MoveInputs move_inputs(const at::Tensor& x, const at::Tensor& x0, const at::Tensor& grad,
                              const at::Tensor& eps, const at::Tensor& alpha,
                              const at::Tensor& lo, const at::Tensor& hi) {
  const Layout layout = layout_of(x);
  return {layout,          in_layout_of(x0, layout), in_layout_of(grad, layout),
          eps.contiguous(), alpha.contiguous(),      lo.contiguous(),
          hi.contiguous()};
}

// Channel of element `e`: row-major layouts have `inner` elements per channel
// plane; channels_last has the channel innermost.
template <bool kChannelsLast, typename I>
__device__ __forceinline__ I channel_of(I e, I channels, I inner) {
  return kChannelsLast ? e % channels : (e / inner) % channels;
}

template <typename Rows, typename T, int kVec, bool kChannelsLast, typename I>
__global__ void fused_step_kernel(T* __restrict__ x, const T* __restrict__ x0,
                                  const T* __restrict__ g, I numel, I channels, I inner,
                                  MoveParams p, Rows rows) {
  const I tid = blockIdx.x * static_cast<I>(blockDim.x) + threadIdx.x;
  const I stride = static_cast<I>(gridDim.x) * blockDim.x;
  rows(static_cast<int64_t>(tid), static_cast<int64_t>(stride));

  const I packs = numel / kVec;
  for (I v = tid; v < packs; v += stride) {
    const I e0 = v * kVec;
    Pack<T, kVec> xv = reinterpret_cast<const Pack<T, kVec>*>(x)[v];
    const Pack<T, kVec> x0v = reinterpret_cast<const Pack<T, kVec>*>(x0)[v];
    const Pack<T, kVec> gv = reinterpret_cast<const Pack<T, kVec>*>(g)[v];
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      const I c = channel_of<kChannelsLast>(e0 + j, channels, inner);
      xv.v[j] = static_cast<T>(pgd_update(static_cast<float>(xv.v[j]),
                                          static_cast<float>(x0v.v[j]),
                                          static_cast<float>(gv.v[j]), __ldg(p.alpha + c),
                                          __ldg(p.eps + c), __ldg(p.lo + c), __ldg(p.hi + c)));
    }
    reinterpret_cast<Pack<T, kVec>*>(x)[v] = xv;
  }
  // The tail that does not fill a whole pack.
  for (I e = packs * kVec + tid; e < numel; e += stride) {
    const I c = channel_of<kChannelsLast>(e, channels, inner);
    x[e] = static_cast<T>(pgd_update(static_cast<float>(x[e]), static_cast<float>(x0[e]),
                                     static_cast<float>(g[e]), p.alpha[c], p.eps[c], p.lo[c],
                                     p.hi[c]));
  }
}

inline bool aligned(const void* ptr, int bytes) {
  return reinterpret_cast<uintptr_t>(ptr) % bytes == 0;
}

template <typename Rows, typename T, int kVec, bool kChannelsLast, typename I>
void launch_fused(T* x, const T* x0, const T* g, int64_t numel, int64_t channels, int64_t inner,
                  MoveParams p, Rows rows, int64_t n) {
  const int blocks = blocks_for(std::max<int64_t>(numel / kVec, n));
  fused_step_kernel<Rows, T, kVec, kChannelsLast, I>
      <<<blocks, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
          x, x0, g, static_cast<I>(numel), static_cast<I>(channels), static_cast<I>(inner), p,
          rows);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename Rows, typename T, bool kChannelsLast>
void launch_fused_indexed(T* x, const T* x0, const T* g, int64_t numel, int64_t channels,
                          int64_t inner, MoveParams p, Rows rows, int64_t n) {
  constexpr int kVec = 16 / sizeof(T);
  const bool vec_ok = aligned(x, 16) && aligned(x0, 16) && aligned(g, 16);
  // 32-bit indices are markedly cheaper for the per-element channel division.
  const bool small = numel < (int64_t{1} << 31) - kThreads * 65536LL;
  if (vec_ok && small) {
    launch_fused<Rows, T, kVec, kChannelsLast, int32_t>(x, x0, g, numel, channels, inner, p, rows, n);
  } else if (vec_ok) {
    launch_fused<Rows, T, kVec, kChannelsLast, int64_t>(x, x0, g, numel, channels, inner, p, rows, n);
  } else if (small) {
    launch_fused<Rows, T, 1, kChannelsLast, int32_t>(x, x0, g, numel, channels, inner, p, rows, n);
  } else {
    launch_fused<Rows, T, 1, kChannelsLast, int64_t>(x, x0, g, numel, channels, inner, p, rows, n);
  }
}

// One launch over the batch x (N = x.size(0) > 0, x.numel() > 0): `rows` on the
// per-sample tensors, then the move. `T` is x's element type.
template <typename Rows, typename T>
void launch_fused_step(at::Tensor& x, const MoveInputs& in, Rows rows) {
  const int64_t n = x.size(0);
  const int64_t channels = x.size(1);
  const int64_t numel = x.numel();
  const int64_t inner = numel / (n * channels);
  T* xp = x.data_ptr<T>();
  const T* x0p = in.x0.const_data_ptr<T>();
  const T* gp = in.grad.const_data_ptr<T>();
  if (in.layout == Layout::Contiguous) {
    launch_fused_indexed<Rows, T, false>(xp, x0p, gp, numel, channels, inner, in.params(), rows, n);
  } else {
    launch_fused_indexed<Rows, T, true>(xp, x0p, gp, numel, channels, inner, in.params(), rows, n);
  }
}

}  // namespace gaave_fast
