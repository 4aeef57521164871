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

  // verdict_certain with S = 8, tau = 2: k > 2 is certain once k = 3; k <= 2 once k + (8 - s) <= 2.
  using gaave_fast::verdict_certain;
  expect(verdict_certain(3, 2, 8, 2), "three matches decide k > tau");
  expect(!verdict_certain(2, 2, 8, 2), "two matches at step 2 decide nothing");
  expect(!verdict_certain(0, 5, 8, 2), "no match by step 5: three points still to come");
  expect(verdict_certain(0, 6, 8, 2), "no match by step 6: at most two more");
  expect(verdict_certain(2, 8, 8, 2), "the last point always decides");

  // record_decision: a sample matching every point is decided at step tau and then frozen.
  int32_t dk = 0, dmiss = -1, dstep = 0;
  bool decided = false;
  for (int s = 0; s < 6; ++s) gaave_fast::record_decision(true, 8, 2, &dk, &dmiss, &dstep, &decided);
  expect(decided && dk == 3 && dstep == 3 && dmiss == -1, "robust sample decided at step 2, frozen after");
  // A sample missing every point is decided at step S + 1 - (tau + 1) + tau = 6 with k = 0.
  dk = 0, dmiss = -1, dstep = 0, decided = false;
  for (int s = 0; s < 9; ++s) gaave_fast::record_decision(false, 8, 2, &dk, &dmiss, &dstep, &decided);
  expect(decided && dk == 0 && dstep == 7 && dmiss == 0, "fragile sample decided at step 6");
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

// The registered pgd_decide_step_ against record_decision on every row and pgd_step_'s move.
void test_decide_op() {
  at::manual_seed(11);
  const int64_t n = 40, c = 2, h = 4, w = 5, classes = 3, steps = 8, tau = 2;
  const at::Tensor x0 = at::rand({n, c, h, w});
  at::Tensor x = x0.clone();
  const at::Tensor grad = at::randn({n, c, h, w});
  const at::Tensor logits = at::randn({n, classes});
  const at::Tensor labels = at::randint(0, classes, {n}, at::kLong);
  at::Tensor step = at::randint(0, steps + 1, {n}, at::kInt);
  at::Tensor k = at::minimum(at::randint(0, 4, {n}, at::kInt), step);
  at::Tensor first_miss = at::full({n}, -1, at::kInt);
  at::Tensor decided = at::rand({n}) < 0.25;
  const at::Tensor eps = at::tensor({0.03f, 0.02f});
  const at::Tensor alpha = at::tensor({0.01f, 0.004f});
  const at::Tensor lo = at::tensor({0.f, 0.f});
  const at::Tensor hi = at::tensor({1.f, 1.f});

  // Expected per-sample state from the shared arithmetic, row by row.
  at::Tensor want_k = k.clone(), want_miss = first_miss.clone(), want_step = step.clone();
  at::Tensor want_decided = decided.clone();
  const at::Tensor match = logits.argmax(1).eq(labels);
  for (int64_t i = 0; i < n; ++i) {
    gaave_fast::record_decision(match[i].item<bool>(), steps, tau, want_k.data_ptr<int32_t>() + i,
                                want_miss.data_ptr<int32_t>() + i, want_step.data_ptr<int32_t>() + i,
                                want_decided.data_ptr<bool>() + i);
  }
  at::Tensor want_x = x.clone();
  auto step_op = c10::Dispatcher::singleton()
                     .findSchemaOrThrow("gaave_fast::pgd_step_", "")
                     .typed<void(at::Tensor, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                 const at::Tensor&, at::Tensor, at::Tensor, int64_t, const at::Tensor&,
                                 const at::Tensor&, const at::Tensor&, const at::Tensor&)>();
  step_op.call(want_x, x0, grad, logits, labels, k.clone(), first_miss.clone(), 0, eps, alpha, lo, hi);

  auto op = c10::Dispatcher::singleton()
                .findSchemaOrThrow("gaave_fast::pgd_decide_step_", "")
                .typed<void(at::Tensor, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                            const at::Tensor&, at::Tensor, at::Tensor, at::Tensor, at::Tensor, int64_t,
                            int64_t, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                            const at::Tensor&)>();
  op.call(x, x0, grad, logits, labels, k, first_miss, step, decided, steps, tau, eps, alpha, lo, hi);
  expect(at::equal(x, want_x), "decide op moves x as pgd_step_");
  expect(at::equal(k, want_k), "decide op k == record_decision");
  expect(at::equal(first_miss, want_miss), "decide op first_miss == record_decision");
  expect(at::equal(step, want_step), "decide op step == record_decision");
  expect(at::equal(decided, want_decided), "decide op decided == record_decision");
}

}  // namespace

int main() {
  test_arithmetic();
  test_registered_op(false);
  test_registered_op(true);
  test_bad_argument();
  test_decide_op();
  if (failures == 0) std::printf("test_pgd_step: all checks passed\n");
  return failures == 0 ? 0 : 1;
}
