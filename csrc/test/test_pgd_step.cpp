// C++ test of the kernels, run with ctest: the shared arithmetic in closed-form
// cases, and the registered CPU ops (called through the dispatcher, as Python does)
// against the same step written with ATen ops.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cmath>
#include <cstdio>
#include <limits>

#include "../pgd_step.h"

namespace {

int failures = 0;

void expect(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "FAILED: %s\n", what);
    ++failures;
  }
}

void test_arithmetic() {
  using gaave_fast::pgd_update;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  // A step inside the ball and the range.
  expect(pgd_update(0.5f, 0.5f, 2.f, 0.01f, 0.1f, 0.f, 1.f) == 0.5f + 0.01f, "step up");
  expect(pgd_update(0.5f, 0.5f, -3.f, 0.01f, 0.1f, 0.f, 1.f) == 0.5f - 0.01f, "step down");
  // The ball binds: x0 + eps.
  expect(pgd_update(0.59f, 0.5f, 1.f, 0.05f, 0.1f, 0.f, 1.f) == 0.5f + 0.1f, "ball binds");
  // The range binds after the ball.
  expect(pgd_update(0.98f, 0.98f, 1.f, 0.05f, 0.1f, 0.f, 1.f) == 1.f, "range binds");
  // NaN and zero gradients move nothing.
  expect(pgd_update(0.3f, 0.3f, nan, 0.05f, 0.1f, 0.f, 1.f) == 0.3f, "nan grad");
  expect(pgd_update(0.3f, 0.3f, 0.f, 0.05f, 0.1f, 0.f, 1.f) == 0.3f, "zero grad");

  const float ties[] = {1.f, 3.f, 3.f, 0.f};
  expect(gaave_fast::predicts_label(ties, 4, 1, 1), "tie goes to the first index");
  expect(!gaave_fast::predicts_label(ties, 4, 1, 2), "tie: later index does not match");
  const float with_nan[] = {nan, 1.f, 0.f};
  expect(!gaave_fast::predicts_label(with_nan, 3, 1, 0), "nan row never matches");
  // Strided rows (column stride 2).
  const float strided[] = {0.f, 9.f, 5.f, 9.f, 1.f, 9.f};
  expect(gaave_fast::predicts_label(strided, 3, 2, 1), "strided row");

  int32_t k = 0, first_miss = -1;
  gaave_fast::record_match(true, 0, &k, &first_miss);
  gaave_fast::record_match(false, 1, &k, &first_miss);
  gaave_fast::record_match(false, 2, &k, &first_miss);
  gaave_fast::record_match(true, 3, &k, &first_miss);
  expect(k == 2 && first_miss == 1, "record_match keeps the first miss");
}

void test_registered_op(bool channels_last) {
  at::manual_seed(7);
  const int64_t n = 6, c = 3, h = 9, w = 11, classes = 5;
  at::Tensor x0 = at::rand({n, c, h, w});
  at::Tensor x = x0 + 0.02 * at::randn({n, c, h, w});
  at::Tensor grad = at::randn({n, c, h, w});
  if (channels_last) {
    x = x.contiguous(at::MemoryFormat::ChannelsLast);
    x0 = x0.contiguous(at::MemoryFormat::ChannelsLast);
    grad = grad.contiguous(at::MemoryFormat::ChannelsLast);
  }
  const at::Tensor logits = at::randn({n, classes});
  const at::Tensor labels = at::randint(0, classes, {n}, at::kLong);
  at::Tensor k = at::zeros({n}, at::kInt);
  at::Tensor first_miss = at::full({n}, -1, at::kInt);
  const at::Tensor eps = at::tensor({0.01f, 0.02f, 0.03f});
  const at::Tensor alpha = at::tensor({0.004f, 0.004f, 0.01f});
  const at::Tensor lo = at::tensor({0.f, 0.1f, 0.f});
  const at::Tensor hi = at::tensor({1.f, 0.9f, 0.8f});

  // Reference with ATen ops.
  const auto view = [&](const at::Tensor& t) { return t.view({1, c, 1, 1}); };
  at::Tensor y = x + view(alpha) * at::sign(grad);
  y = at::where(y < x0 - view(eps), x0 - view(eps), y);
  y = at::where(y > x0 + view(eps), x0 + view(eps), y);
  y = at::where(y < view(lo), view(lo), y);
  y = at::where(y > view(hi), view(hi), y);
  const at::Tensor match = logits.argmax(1).eq(labels);
  const at::Tensor ref_k = match.to(at::kInt);
  const at::Tensor ref_miss = at::where(match, at::full({n}, -1, at::kInt), at::full({n}, 3, at::kInt));

  auto op = c10::Dispatcher::singleton()
                .findSchemaOrThrow("gaave_fast::pgd_step_", "")
                .typed<void(at::Tensor, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                            const at::Tensor&, at::Tensor, at::Tensor, int64_t, const at::Tensor&,
                            const at::Tensor&, const at::Tensor&, const at::Tensor&)>();
  op.call(x, x0, grad, logits, labels, k, first_miss, 3, eps, alpha, lo, hi);
  expect(at::equal(x, y), channels_last ? "op == ATen reference (channels_last)" : "op == ATen reference");
  expect(at::equal(k, ref_k), "k == reference");
  expect(at::equal(first_miss, ref_miss), "first_miss == reference");
}

void test_bad_argument() {
  auto op = c10::Dispatcher::singleton()
                .findSchemaOrThrow("gaave_fast::count_k_", "")
                .typed<void(const at::Tensor&, const at::Tensor&, at::Tensor, at::Tensor, int64_t)>();
  bool threw = false;
  try {
    op.call(at::zeros({2, 3}), at::zeros({2}, at::kLong), at::zeros({2}, at::kLong),
            at::zeros({2}, at::kInt), 0);
  } catch (const c10::Error& e) {
    threw = std::string(e.what()).find("k must be int32") != std::string::npos;
  }
  expect(threw, "bad k dtype raises a message naming k");
}

}  // namespace

int main() {
  test_arithmetic();
  test_registered_op(false);
  test_registered_op(true);
  test_bad_argument();
  if (failures == 0) std::printf("test_pgd_step: all checks passed\n");
  return failures == 0 ? 0 : 1;
}
