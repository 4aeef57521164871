// The arithmetic of one GAAVE/PGD step, written once for both backends.
//
// Every function here is `__host__ __device__`: the CPU kernel (csrc/cpu) and the
// CUDA kernel (csrc/cuda) call the same code, so the CPU tests that run on every
// machine exercise the exact arithmetic the GPU runs. Only indexing and launch
// configuration differ between the backends.
#pragma once

#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define GAAVE_HD __host__ __device__ __forceinline__
#else
#define GAAVE_HD inline
#endif

namespace gaave_fast {

// Clamp to [lo, hi] written as two selects, so that the CPU compiler vectorizes
// it. A NaN in y stays NaN (both comparisons are false); the bounds are finite
// (the scan refuses non-finite images, and eps/lo/hi are checked finite).
GAAVE_HD float clamp_to(float y, float lo, float hi) {
  y = y < lo ? lo : y;
  return y > hi ? hi : y;
}

// sign(g) with sign(NaN) = 0, so that a NaN gradient moves nothing.
GAAVE_HD float sign_or_zero(float g) {
  return static_cast<float>(g > 0.f) - static_cast<float>(g < 0.f);
}

// One element of the step, in float32 whatever the storage type:
//   y = x + alpha * sign(g)
//   y = clamp(y, x0 - eps, x0 + eps)   (projection onto the L-inf ball around x0)
//   y = clamp(y, lo, hi)               (the valid pixel range, per channel)
// alpha * sign(g) is exact (sign is -1, 0 or 1), so fused multiply-add
// contraction cannot change the result between compilers.
GAAVE_HD float pgd_update(float x, float x0, float g, float alpha, float eps,
                          float lo, float hi) {
  const float y = x + alpha * sign_or_zero(g);
  return clamp_to(clamp_to(y, x0 - eps, x0 + eps), lo, hi);
}

// Does row i of the logits still predict its label? argmax takes the first
// index among ties (as torch.argmax), and a row holding any NaN never matches.
// `row` points at logits[i, 0]; consecutive classes are `stride` apart.
template <typename T>
GAAVE_HD bool predicts_label(const T* row, int64_t num_classes, int64_t stride,
                             int64_t label) {
  float best = static_cast<float>(row[0]);
  bool has_nan = best != best;
  int64_t best_j = 0;
  for (int64_t j = 1; j < num_classes; ++j) {
    const float v = static_cast<float>(row[j * stride]);
    has_nan |= v != v;
    if (v > best) {
      best = v;
      best_j = j;
    }
  }
  return !has_nan && best_j == label;
}

// Per-sample bookkeeping after evaluating the model at step `step`:
// k counts the steps whose prediction equals the label (k_i of the paper),
// first_miss keeps the first step whose prediction left it (-1 while none has).
GAAVE_HD void record_match(bool match, int32_t step, int32_t* k, int32_t* first_miss) {
  if (match) {
    *k += 1;
  } else if (*first_miss < 0) {
    *first_miss = step;
  }
}

// Is the verdict "k <= tau" certain once the points x(0)..x(step) of an S-step
// attack are counted and `k` of them matched? k never falls, so k > tau is
// certain once k > tau; and k <= tau is certain once matching at all S - step
// remaining points would still leave k <= tau. At step == S one of the two
// always holds, so every sample is decided by the end of its attack.
GAAVE_HD bool verdict_certain(int32_t k, int32_t step, int32_t steps, int32_t tau) {
  return k > tau || k + (steps - step) <= tau;
}

// The per-sample bookkeeping of the early-exit scan, where every sample has its
// own current step (samples join the batch at different times). A decided sample
// is frozen: k, first_miss and step keep their values at the decision, so the
// result does not depend on how long the sample stays in the batch afterwards.
// Otherwise: record the match at `*step`, decide, and advance to the next point.
GAAVE_HD void record_decision(bool match, int32_t steps, int32_t tau, int32_t* k,
                              int32_t* first_miss, int32_t* step, bool* decided) {
  if (*decided) return;
  record_match(match, *step, k, first_miss);
  *decided = verdict_certain(*k, *step, steps, tau);
  *step += 1;
}

}  // namespace gaave_fast
