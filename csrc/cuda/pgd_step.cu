// CUDA kernel of gaave_fast::pgd_step_.
//
// One launch per PGD step: the same grid both counts, per sample, whether the
// logits still predict the label (threads 0..N-1 of the grid) and moves every
// element of the batch (all threads, grid-stride, 16-byte vector loads when the
// pointers allow). The arithmetic is csrc/pgd_step.h, shared with the CPU kernel.
#include <ATen/ATen.h>
#include <ATen/Dispatch_v2.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>

#include "../checks.h"
#include "../pgd_step.h"
#include "count_rows.cuh"

namespace gaave_fast {
namespace {

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

struct Params {
  const float* eps;
  const float* alpha;
  const float* lo;
  const float* hi;
};

// Channel of element `e`: row-major layouts have `inner` elements per channel
// plane; channels_last has the channel innermost (inner == 1 marks it, via
// channels_last == true).
template <bool kChannelsLast, typename I>
__device__ __forceinline__ I channel_of(I e, I channels, I inner) {
  return kChannelsLast ? e % channels : (e / inner) % channels;
}

template <typename T, typename L, int kVec, bool kChannelsLast, typename I>
__global__ void pgd_step_kernel(T* __restrict__ x, const T* __restrict__ x0,
                                const T* __restrict__ g, I numel, I channels, I inner,
                                Params p, const L* __restrict__ logits,
                                const int64_t* __restrict__ labels, int32_t* k,
                                int32_t* first_miss, int64_t n, int64_t num_classes,
                                int32_t step) {
  const I tid = blockIdx.x * static_cast<I>(blockDim.x) + threadIdx.x;
  const I stride = static_cast<I>(gridDim.x) * blockDim.x;
  count_rows(logits, labels, k, first_miss, n, num_classes, step, tid, stride);

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

bool aligned(const void* ptr, int bytes) {
  return reinterpret_cast<uintptr_t>(ptr) % bytes == 0;
}

template <typename T, typename L, int kVec, bool kChannelsLast, typename I>
void launch(T* x, const T* x0, const T* g, int64_t numel, int64_t channels, int64_t inner,
            Params p, const L* logits, const int64_t* labels, int32_t* k,
            int32_t* first_miss, int64_t n, int64_t num_classes, int32_t step) {
  const int blocks = blocks_for(std::max<int64_t>(numel / kVec, n));
  pgd_step_kernel<T, L, kVec, kChannelsLast, I>
      <<<blocks, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
          x, x0, g, static_cast<I>(numel), static_cast<I>(channels), static_cast<I>(inner), p,
          logits, labels, k, first_miss, n, num_classes, step);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename T, typename L, bool kChannelsLast>
void launch_indexed(T* x, const T* x0, const T* g, int64_t numel, int64_t channels,
                    int64_t inner, Params p, const L* logits, const int64_t* labels,
                    int32_t* k, int32_t* first_miss, int64_t n, int64_t num_classes,
                    int32_t step) {
  constexpr int kVec = 16 / sizeof(T);
  const bool vec_ok = aligned(x, 16) && aligned(x0, 16) && aligned(g, 16);
  // 32-bit indices are markedly cheaper for the per-element channel division.
  const bool small = numel < (int64_t{1} << 31) - kThreads * 65536LL;
  if (vec_ok && small) {
    launch<T, L, kVec, kChannelsLast, int32_t>(x, x0, g, numel, channels, inner, p, logits,
                                               labels, k, first_miss, n, num_classes, step);
  } else if (vec_ok) {
    launch<T, L, kVec, kChannelsLast, int64_t>(x, x0, g, numel, channels, inner, p, logits,
                                               labels, k, first_miss, n, num_classes, step);
  } else if (small) {
    launch<T, L, 1, kChannelsLast, int32_t>(x, x0, g, numel, channels, inner, p, logits, labels,
                                            k, first_miss, n, num_classes, step);
  } else {
    launch<T, L, 1, kChannelsLast, int64_t>(x, x0, g, numel, channels, inner, p, logits, labels,
                                            k, first_miss, n, num_classes, step);
  }
}

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
  const Layout layout = layout_of(x);
  const at::Tensor x0_l = in_layout_of(x0, layout);
  const at::Tensor grad_l = in_layout_of(grad, layout);
  const at::Tensor rows = logits.contiguous();
  const at::Tensor targets = labels.contiguous();
  const at::Tensor eps_c = eps.contiguous(), alpha_c = alpha.contiguous(), lo_c = lo.contiguous(),
                   hi_c = hi.contiguous();
  const Params p{eps_c.const_data_ptr<float>(), alpha_c.const_data_ptr<float>(),
                 lo_c.const_data_ptr<float>(), hi_c.const_data_ptr<float>()};
  const int64_t channels = x.size(1);
  const int64_t numel = x.numel();
  const int64_t inner = numel / (n * channels);
  const auto step32 = static_cast<int32_t>(step);

  AT_DISPATCH_V2(x.scalar_type(), "pgd_step_cuda", AT_WRAP([&] {
    using T = scalar_t;
    T* xp = x.data_ptr<T>();
    const T* x0p = x0_l.const_data_ptr<T>();
    const T* gp = grad_l.const_data_ptr<T>();
    AT_DISPATCH_V2(rows.scalar_type(), "pgd_step_cuda_logits", AT_WRAP([&] {
      const scalar_t* lp = rows.const_data_ptr<scalar_t>();
      const int64_t* yp = targets.const_data_ptr<int64_t>();
      if (layout == Layout::Contiguous) {
        launch_indexed<T, scalar_t, false>(xp, x0p, gp, numel, channels, inner, p, lp, yp,
                                           k.data_ptr<int32_t>(),
                                           first_miss.data_ptr<int32_t>(), n, rows.size(1),
                                           step32);
      } else {
        launch_indexed<T, scalar_t, true>(xp, x0p, gp, numel, channels, inner, p, lp, yp,
                                          k.data_ptr<int32_t>(),
                                          first_miss.data_ptr<int32_t>(), n, rows.size(1),
                                          step32);
      }
    }), at::kFloat, at::kHalf, at::kBFloat16);
  }), at::kFloat, at::kHalf, at::kBFloat16);
}

}  // namespace

TORCH_LIBRARY_IMPL(gaave_fast, CUDA, m) {
  m.impl("pgd_step_", &pgd_step_cuda);
}

}  // namespace gaave_fast
