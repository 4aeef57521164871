// Argument checks shared by the CPU and CUDA kernels. Every message names the
// argument, so a caller sees which tensor is wrong and why.
#pragma once

#include <ATen/ATen.h>

namespace gaave_fast {

// The memory layout the kernels walk: plain row-major (channels second) or
// channels_last (channels innermost).
enum class Layout { Contiguous, ChannelsLast };

inline Layout layout_of(const at::Tensor& x) {
  if (x.is_contiguous()) return Layout::Contiguous;
  if (x.dim() == 4 && x.is_contiguous(at::MemoryFormat::ChannelsLast)) return Layout::ChannelsLast;
  TORCH_CHECK(false, "pgd_step_: x must be contiguous or channels_last (4-D), got strides ",
              x.strides(), " for shape ", x.sizes());
}

// x0 and grad must be walked in x's order; copy them into it when they differ
// (autograd returns gradients in the input's layout, so this is rare).
inline at::Tensor in_layout_of(const at::Tensor& t, Layout layout) {
  return layout == Layout::Contiguous ? t.contiguous()
                                      : t.contiguous(at::MemoryFormat::ChannelsLast);
}

inline void check_per_sample(const at::Tensor& logits, const at::Tensor& labels,
                             const at::Tensor& k, const at::Tensor& first_miss,
                             const char* op) {
  TORCH_CHECK(logits.dim() == 2, op, ": logits must be 2-D [N, K], got shape ", logits.sizes());
  const int64_t n = logits.size(0);
  TORCH_CHECK(logits.size(1) >= 2, op, ": logits needs at least 2 classes (K >= 2), got K = ",
              logits.size(1));
  TORCH_CHECK(logits.scalar_type() == at::kFloat || logits.scalar_type() == at::kBFloat16 ||
                  logits.scalar_type() == at::kHalf,
              op, ": logits must be float32, bfloat16 or float16, got ", logits.scalar_type());
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == n, op, ": labels must have shape [", n,
              "] to match logits, got ", labels.sizes());
  TORCH_CHECK(labels.scalar_type() == at::kLong, op, ": labels must be int64, got ",
              labels.scalar_type());
  TORCH_CHECK(k.dim() == 1 && k.size(0) == n, op, ": k must have shape [", n,
              "] to match logits, got ", k.sizes());
  TORCH_CHECK(k.scalar_type() == at::kInt, op, ": k must be int32, got ", k.scalar_type());
  TORCH_CHECK(k.is_contiguous(), op, ": k must be contiguous (it is written in place)");
  TORCH_CHECK(first_miss.dim() == 1 && first_miss.size(0) == n, op,
              ": first_miss must have shape [", n, "] to match logits, got ", first_miss.sizes());
  TORCH_CHECK(first_miss.scalar_type() == at::kInt, op, ": first_miss must be int32, got ",
              first_miss.scalar_type());
  TORCH_CHECK(first_miss.is_contiguous(), op,
              ": first_miss must be contiguous (it is written in place)");
  const auto device = logits.device();
  TORCH_CHECK(labels.device() == device, op, ": labels is on ", labels.device(),
              " but logits is on ", device);
  TORCH_CHECK(k.device() == device, op, ": k is on ", k.device(), " but logits is on ",
              device);
  TORCH_CHECK(first_miss.device() == device, op, ": first_miss is on ", first_miss.device(),
              " but logits is on ", device);
}

// All arguments of pgd_step_ (the per-sample ones through check_per_sample).
inline void check_step(const at::Tensor& x, const at::Tensor& x0, const at::Tensor& grad,
                       const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& k,
                       const at::Tensor& first_miss, const at::Tensor& eps,
                       const at::Tensor& alpha, const at::Tensor& lo, const at::Tensor& hi,
                       const char* op = "pgd_step_") {
  TORCH_CHECK(x.dim() >= 2, op, ": x must be [N, C, ...] (at least 2-D), got shape ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16 ||
                  x.scalar_type() == at::kHalf,
              op, ": x must be float32, bfloat16 or float16, got ", x.scalar_type());
  TORCH_CHECK(x0.sizes() == x.sizes(), op, ": x0 must have x's shape ", x.sizes(), ", got ",
              x0.sizes());
  TORCH_CHECK(grad.sizes() == x.sizes(), op, ": grad must have x's shape ", x.sizes(), ", got ",
              grad.sizes());
  TORCH_CHECK(x0.scalar_type() == x.scalar_type(), op, ": x0 must have x's dtype ",
              x.scalar_type(), ", got ", x0.scalar_type());
  TORCH_CHECK(grad.scalar_type() == x.scalar_type(), op, ": grad must have x's dtype ",
              x.scalar_type(), ", got ", grad.scalar_type());
  TORCH_CHECK(logits.dim() == 2 && logits.size(0) == x.size(0), op,
              ": logits must have shape [N, K] with N = ", x.size(0), " (x's batch), got ",
              logits.sizes());
  const auto device = x.device();
  const int64_t channels = x.size(1);
  const std::pair<const char*, const at::Tensor*> per_tensor[] = {
      {"x0", &x0}, {"grad", &grad}, {"logits", &logits}};
  for (const auto& [name, t] : per_tensor) {
    TORCH_CHECK(t->device() == device, op, ": ", name, " is on ", t->device(), " but x is on ",
                device);
  }
  const std::pair<const char*, const at::Tensor*> per_channel[] = {
      {"eps", &eps}, {"alpha", &alpha}, {"lo", &lo}, {"hi", &hi}};
  for (const auto& [name, t] : per_channel) {
    TORCH_CHECK(t->dim() == 1 && t->size(0) == channels, op, ": ", name,
                " must be a per-channel tensor of shape [", channels, "], got ", t->sizes());
    TORCH_CHECK(t->scalar_type() == at::kFloat, op, ": ", name, " must be float32, got ",
                t->scalar_type());
    TORCH_CHECK(t->device() == device, op, ": ", name, " is on ", t->device(), " but x is on ",
                device);
  }
  check_per_sample(logits, labels, k, first_miss, op);
}

// The extra arguments of pgd_decide_step_: per-sample step (int32) and decided
// (bool), both written in place, and the attack's S and tau.
inline void check_decide(const at::Tensor& logits, const at::Tensor& step,
                         const at::Tensor& decided, int64_t steps, int64_t tau) {
  const char* op = "pgd_decide_step_";
  const int64_t n = logits.size(0);
  TORCH_CHECK(step.dim() == 1 && step.size(0) == n, op, ": step must have shape [", n,
              "] to match logits, got ", step.sizes());
  TORCH_CHECK(step.scalar_type() == at::kInt, op, ": step must be int32, got ",
              step.scalar_type());
  TORCH_CHECK(step.is_contiguous(), op, ": step must be contiguous (it is written in place)");
  TORCH_CHECK(decided.dim() == 1 && decided.size(0) == n, op, ": decided must have shape [", n,
              "] to match logits, got ", decided.sizes());
  TORCH_CHECK(decided.scalar_type() == at::kBool, op, ": decided must be bool, got ",
              decided.scalar_type());
  TORCH_CHECK(decided.is_contiguous(), op,
              ": decided must be contiguous (it is written in place)");
  TORCH_CHECK(step.device() == logits.device(), op, ": step is on ", step.device(),
              " but logits is on ", logits.device());
  TORCH_CHECK(decided.device() == logits.device(), op, ": decided is on ", decided.device(),
              " but logits is on ", logits.device());
  TORCH_CHECK(steps >= 0 && steps < (int64_t{1} << 30), op,
              ": steps must be in [0, 2^30), got ", steps);
  TORCH_CHECK(tau >= -1 && tau <= steps + 1, op, ": tau must be in [-1, steps + 1] = [-1, ",
              steps + 1, "], got ", tau);
}

}  // namespace gaave_fast
