// CPU kernel of gaave_fast::pgd_step_: count k, then one in-place PGD step.
//
// The element arithmetic is gaave_fast::pgd_update (csrc/pgd_step.h), shared with
// the CUDA kernel. Loops are written over contiguous spans with loop-invariant or
// tiled per-channel parameters so that the compiler vectorizes them.
#include <ATen/ATen.h>
#include <ATen/Dispatch_v2.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../checks.h"
#include "../pgd_step.h"
#include "kernels.h"

namespace gaave_fast {
namespace {

// Elements per parallel task: large enough to amortise scheduling, small
// enough to split a 256x3x112x112 batch across cores.
constexpr int64_t kGrain = 1 << 15;
// Pixels per parameter tile in channels_last: C * kTilePixels floats per array.
constexpr int64_t kTilePixels = 64;

struct ChannelParams {
  const float* eps;
  const float* alpha;
  const float* lo;
  const float* hi;
};

// The two inner loops are compiled twice: for the baseline ISA and, on x86-64,
// for AVX2 (chosen at run time). The bodies are always inlined into both, so the
// compiler vectorizes each for its target; AVX2 halves the time of bf16 spans.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define GAAVE_HAVE_AVX2 1
#define GAAVE_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define GAAVE_HAVE_AVX2 0
#endif

// A span whose elements all belong to one channel (row-major layout).
template <typename T>
[[gnu::always_inline]] inline void span_body(T* __restrict__ x, const T* __restrict__ x0,
                                             const T* __restrict__ g, int64_t len, float alpha,
                                             float eps, float lo, float hi) {
  for (int64_t i = 0; i < len; ++i) {
    x[i] = static_cast<T>(pgd_update(static_cast<float>(x[i]), static_cast<float>(x0[i]),
                                     static_cast<float>(g[i]), alpha, eps, lo, hi));
  }
}

// A span of whole pixels in channels_last: parameters repeat every C elements,
// so they are laid out once as tiles of kTilePixels pixels and read alongside.
template <typename T>
[[gnu::always_inline]] inline void tiled_body(T* __restrict__ x, const T* __restrict__ x0,
                                              const T* __restrict__ g, int64_t len,
                                              const float* __restrict__ alpha,
                                              const float* __restrict__ eps,
                                              const float* __restrict__ lo,
                                              const float* __restrict__ hi, int64_t tile_len) {
  for (int64_t off = 0; off < len; off += tile_len) {
    const int64_t n = std::min(tile_len, len - off);
    T* xs = x + off;
    const T* x0s = x0 + off;
    const T* gs = g + off;
    for (int64_t i = 0; i < n; ++i) {
      xs[i] = static_cast<T>(pgd_update(static_cast<float>(xs[i]), static_cast<float>(x0s[i]),
                                        static_cast<float>(gs[i]), alpha[i], eps[i], lo[i],
                                        hi[i]));
    }
  }
}

template <typename T>
void span_default(T* x, const T* x0, const T* g, int64_t len, float a, float e, float l, float h) {
  span_body(x, x0, g, len, a, e, l, h);
}

template <typename T>
void tiled_default(T* x, const T* x0, const T* g, int64_t len, const float* a, const float* e,
                   const float* l, const float* h, int64_t tile_len) {
  tiled_body(x, x0, g, len, a, e, l, h, tile_len);
}

#if GAAVE_HAVE_AVX2
template <typename T>
GAAVE_TARGET_AVX2 void span_avx2(T* x, const T* x0, const T* g, int64_t len, float a, float e,
                                 float l, float h) {
  span_body(x, x0, g, len, a, e, l, h);
}

template <typename T>
GAAVE_TARGET_AVX2 void tiled_avx2(T* x, const T* x0, const T* g, int64_t len, const float* a,
                                  const float* e, const float* l, const float* h,
                                  int64_t tile_len) {
  tiled_body(x, x0, g, len, a, e, l, h, tile_len);
}
#endif

bool cpu_has_avx2() {
#if GAAVE_HAVE_AVX2
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
#else
  return false;
#endif
}

template <typename T>
void update_span(T* x, const T* x0, const T* g, int64_t len, float a, float e, float l, float h) {
#if GAAVE_HAVE_AVX2
  if (cpu_has_avx2()) return span_avx2(x, x0, g, len, a, e, l, h);
#endif
  span_default(x, x0, g, len, a, e, l, h);
}

template <typename T>
void update_span_tiled(T* x, const T* x0, const T* g, int64_t len, const float* a, const float* e,
                       const float* l, const float* h, int64_t tile_len) {
#if GAAVE_HAVE_AVX2
  if (cpu_has_avx2()) return tiled_avx2(x, x0, g, len, a, e, l, h, tile_len);
#endif
  tiled_default(x, x0, g, len, a, e, l, h, tile_len);
}

template <typename T>
void step_contiguous(T* x, const T* x0, const T* g, int64_t numel, int64_t channels,
                     int64_t inner, ChannelParams p) {
  at::parallel_for(0, numel, kGrain, [&](int64_t begin, int64_t end) {
    int64_t off = begin;
    while (off < end) {
      const int64_t plane = off / inner;
      const int64_t c = plane % channels;
      const int64_t stop = std::min(end, (plane + 1) * inner);
      update_span(x + off, x0 + off, g + off, stop - off, p.alpha[c], p.eps[c], p.lo[c],
                  p.hi[c]);
      off = stop;
    }
  });
}

template <typename T>
void step_channels_last(T* x, const T* x0, const T* g, int64_t numel, int64_t channels,
                        ChannelParams p) {
  const int64_t tile_len = channels * kTilePixels;
  std::vector<float> tiles(4 * tile_len);
  float* a = tiles.data();
  float* e = a + tile_len;
  float* l = e + tile_len;
  float* h = l + tile_len;
  for (int64_t i = 0; i < tile_len; ++i) {
    const int64_t c = i % channels;
    a[i] = p.alpha[c];
    e[i] = p.eps[c];
    l[i] = p.lo[c];
    h[i] = p.hi[c];
  }
  const int64_t pixels = numel / channels;
  const int64_t grain = std::max<int64_t>(1, kGrain / channels);
  at::parallel_for(0, pixels, grain, [&](int64_t begin, int64_t end) {
    const int64_t off = begin * channels;
    update_span_tiled(x + off, x0 + off, g + off, (end - begin) * channels, a, e, l, h, tile_len);
  });
}

void pgd_step_cpu(at::Tensor x, const at::Tensor& x0, const at::Tensor& grad,
                  const at::Tensor& logits, const at::Tensor& labels, at::Tensor k,
                  at::Tensor first_miss, int64_t step, const at::Tensor& eps,
                  const at::Tensor& alpha, const at::Tensor& lo, const at::Tensor& hi) {
  check_step(x, x0, grad, logits, labels, k, first_miss, eps, alpha, lo, hi);
  TORCH_CHECK(x.device().is_cpu(), "pgd_step_: x must be on the CPU for this kernel");
  // Count at the current point before moving it: logits were computed at x(s).
  count_k_cpu_kernel(logits, labels, k, first_miss, step);
  pgd_move_cpu_kernel(x, x0, grad, eps, alpha, lo, hi);
}

}  // namespace

void pgd_move_cpu_kernel(at::Tensor& x, const at::Tensor& x0, const at::Tensor& grad,
                         const at::Tensor& eps, const at::Tensor& alpha, const at::Tensor& lo,
                         const at::Tensor& hi) {
  if (x.numel() == 0) return;
  const Layout layout = layout_of(x);
  const at::Tensor x0_l = in_layout_of(x0, layout);
  const at::Tensor grad_l = in_layout_of(grad, layout);
  const at::Tensor params = at::stack({eps, alpha, lo, hi}).contiguous();
  const float* pp = params.const_data_ptr<float>();
  const int64_t channels = x.size(1);
  const ChannelParams p{pp, pp + channels, pp + 2 * channels, pp + 3 * channels};
  const int64_t numel = x.numel();
  const int64_t inner = numel / (x.size(0) * channels);

  AT_DISPATCH_V2(x.scalar_type(), "pgd_step_cpu", AT_WRAP([&] {
    scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* x0p = x0_l.const_data_ptr<scalar_t>();
    const scalar_t* gp = grad_l.const_data_ptr<scalar_t>();
    if (layout == Layout::Contiguous) {
      step_contiguous(xp, x0p, gp, numel, channels, inner, p);
    } else {
      step_channels_last(xp, x0p, gp, numel, channels, p);
    }
  }), at::kFloat, at::kHalf, at::kBFloat16);
}

TORCH_LIBRARY_IMPL(gaave_fast, CPU, m) {
  m.impl("pgd_step_", &pgd_step_cpu);
}

}  // namespace gaave_fast
