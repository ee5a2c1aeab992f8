// run_backend_backward: a backward pass through the C ABI with the forward's probes.
//
// Where the gradients' values are checked, the case makes every intermediate value of the
// backward pass exact in fp32: every allowed key of a row has the same score s, and the row is
// handed lse = s, so P = exp(s − lse) = exp(0) = 1 exactly; every other value is a small integer
// or half, so D = dO·O, dP = dO·V, dS = P (dP − D + dLSE) and the sums of dQ, dK, dV and dBias are
// exact in any order. cpu-naive (fp32) and the double reference then compute the same numbers,
// and they are compared with ==. The lse handed over is not the forward's own (that would be
// s + ln(keys)), but the backward pass is a function of the lse it is given (backend.h: P is
// recomputed from it), and the reference is given the same one.
//
// Elsewhere gradients are compared with themselves, bit for bit: cpu-naive's arithmetic does not
// depend on strides, memory domain or process, so a layout option, the simulated device or an
// isolated child that changed a bit would be the harness's error. Judging drawn gradients against
// the reference is the gradient tolerance's work (numerics/README.md §10), not this file's.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "attncheck/backend_impl.h"
#include "attncheck/case.h"
#include "attncheck/check.h"
#include "attncheck/execute.h"
#include "broken_backward.h"

namespace attncheck {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

HostTensor tensor(const Shape4& shape, std::vector<double> values) {
  HostTensor t(shape);
  t.values = std::move(values);
  return t;
}

// The inputs of one backward call and the exact forward outputs the reference is given.
struct BackwardCase {
  Problem problem;
  CaseData data;
  AttentionResult forward;
  BackwardData backward;

  AttentionInputs inputs() const { return data.inputs(problem); }
  AttentionGradients reference(bool bias) const {
    BackwardOptions options;
    options.bias_gradient = bias;
    return reference_attention_backward(problem, inputs(), backward.exact_inputs(forward), options);
  }
};

// One query, two keys, derived by hand (scale 1):
//   q = [1, 0], k_0 = [2, 5], k_1 = [2, −1]: s = 2, 2; lse = 2, so P = 1, 1;
//   v = [1], [3]; O = [2] (the mean of V: the forward's weights are 1/2, 1/2); dO = [1]; dLSE = 1/2.
//   D = dO·O = 2;  dP_j = dO·v_j = 1, 3;  dS_j = P_j (dP_j − D + dLSE) = −1/2, 3/2;
//   dV_j = P_j dO = [1], [1];  dQ = Σ_j dS_j k_j = [−1 + 3, −5/2 − 3/2] = [2, −4];
//   dK_j = dS_j q = [−1/2, 0], [3/2, 0].
BackwardCase two_keys() {
  BackwardCase c;
  c.problem = Problem::of_shape(1, 1, 1, 1, 2, 2, 1);
  c.problem.scale = 1.0;
  c.data.q = tensor({1, 1, 1, 2}, {1, 0});
  c.data.k = tensor({1, 1, 2, 2}, {2, 5, 2, -1});
  c.data.v = tensor({1, 1, 2, 1}, {1, 3});
  c.forward.out = tensor({1, 1, 1, 1}, {2});
  c.forward.lse = tensor({1, 1, 1, 1}, {2});
  c.backward.out = c.forward.out;
  c.backward.lse = c.forward.lse;
  c.backward.d_out = tensor({1, 1, 1, 1}, {1});
  c.backward.d_lse = tensor({1, 1, 1, 1}, {0.5});
  return c;
}

// The same construction over every dimension that moves an index: B = 2, a GQA group of 2,
// Lq = Lk = 3, Dk = 3, Dv = 2, and an additive mask [1, 1, 3, 3] (broadcast over batch and heads,
// so dBias sums over both) of 0 and −inf that forbids key 2 to row 0 and every key to row 2 (a
// row with no allowed key: O = 0, LSE = −inf, its dO must be ignored). Scores are equal along a
// row because k_j = [1, β_j, −β_j] and q_i = [α_i, γ_i, γ_i]: q_i·k_j = α_i for every j.
BackwardCase exact_grid() {
  BackwardCase c;
  c.problem = with_mask(Problem::of_shape(2, 2, 1, 3, 3, 3, 2), MaskKind::Additive, 1, 1, 3, 3);
  c.problem.scale = 1.0;
  const Problem& p = c.problem;
  auto alpha = [](std::int64_t b, std::int64_t h, std::int64_t i) { return static_cast<double>((b + 2 * h + i) % 3 - 1); };
  c.data.q = HostTensor({p.batch, p.q_heads, p.q_len, p.qk_dim});
  c.data.k = HostTensor({p.batch, p.kv_heads, p.k_len, p.qk_dim});
  c.data.v = HostTensor({p.batch, p.kv_heads, p.k_len, p.v_dim});
  c.data.mask = HostTensor({1, 1, 3, 3});
  c.forward.out = HostTensor({p.batch, p.q_heads, p.q_len, p.v_dim});
  c.forward.lse = HostTensor({1, p.batch, p.q_heads, p.q_len});
  c.backward.d_out = HostTensor({p.batch, p.q_heads, p.q_len, p.v_dim});
  c.backward.d_lse = HostTensor({1, p.batch, p.q_heads, p.q_len});
  for (std::int64_t i = 0; i < 3; ++i)
    for (std::int64_t j = 0; j < 3; ++j) c.data.mask(0, 0, i, j) = i == 2 || (i == 0 && j == 2) ? kNegInf : 0.0;
  for (std::int64_t b = 0; b < p.batch; ++b) {
    for (std::int64_t j = 0; j < p.k_len; ++j) {
      const double beta = static_cast<double>(j - 1 + b);
      c.data.k(b, 0, j, 0) = 1, c.data.k(b, 0, j, 1) = beta, c.data.k(b, 0, j, 2) = -beta;
      for (std::int64_t d = 0; d < p.v_dim; ++d) c.data.v(b, 0, j, d) = static_cast<double>((j + 2 * d + b) % 4 - 1);
    }
    for (std::int64_t h = 0; h < p.q_heads; ++h)
      for (std::int64_t i = 0; i < p.q_len; ++i) {
        const double gamma = static_cast<double>((5 * b + 3 * h + i) % 5 - 2);
        c.data.q(b, h, i, 0) = alpha(b, h, i), c.data.q(b, h, i, 1) = gamma, c.data.q(b, h, i, 2) = gamma;
        const bool empty = i == 2;
        c.forward.lse(0, b, h, i) = empty ? kNegInf : alpha(b, h, i);
        (*c.backward.d_lse)(0, b, h, i) = 0.5 * static_cast<double>((b + h + i) % 3 - 1);
        for (std::int64_t d = 0; d < p.v_dim; ++d) {
          c.forward.out(b, h, i, d) = empty ? 0.0 : static_cast<double>((i + d + h) % 3 - 1);
          c.backward.d_out(b, h, i, d) = static_cast<double>((b + h + 2 * i + d) % 5 - 2);
        }
      }
  }
  c.backward.out = c.forward.out;
  c.backward.lse = c.forward.lse;
  return c;
}

// Drawn values of every kind the harness hands over: GQA, key lengths with a batch of none (its
// rows empty) and keys no query sees (6..8 of batch 0), an additive mask broadcast over the batch.
BackwardCase drawn() {
  AttentionCase c;
  c.problem = with_mask(Problem::of_shape(2, 4, 2, 5, 9, 8, 6), MaskKind::Additive, 1, 4, 5, 9);
  c.problem.has_key_lengths = true;
  c.key_lengths = {6, 0};
  c.seed = 41;
  BackwardCase bc;
  bc.problem = c.problem;
  bc.data = make_case_data(c);
  bc.forward = reference_attention(c.problem, bc.data.inputs(c.problem));
  bc.backward = make_backward_data(c, bc.forward, DType::F32, true);
  return bc;
}

BackwardRun run(Backend& backend, const BackwardCase& c, bool bias, const RunOptions& options = {}) {
  const NumericsProfile profile = backend.profile(c.problem, DType::F32).value();
  const BackwardProfile backward_profile = backend.backward_profile(c.problem, DType::F32).value();
  return run_backend_backward(backend, c.problem, profile, backward_profile, c.inputs(), c.backward, bias, options);
}

void expect_equal(const AttentionGradients& got, const AttentionGradients& want) {
  EXPECT_EQ(got.d_q.shape, want.d_q.shape);
  EXPECT_EQ(got.d_q.values, want.d_q.values) << "dQ";
  EXPECT_EQ(got.d_k.shape, want.d_k.shape);
  EXPECT_EQ(got.d_k.values, want.d_k.values) << "dK";
  EXPECT_EQ(got.d_v.shape, want.d_v.shape);
  EXPECT_EQ(got.d_v.values, want.d_v.values) << "dV";
  ASSERT_EQ(got.d_bias.has_value(), want.d_bias.has_value());
  if (want.d_bias) {
    EXPECT_EQ(got.d_bias->shape, want.d_bias->shape);
    EXPECT_EQ(got.d_bias->values, want.d_bias->values) << "dBias";
  }
}

bool same_bits(const HostTensor& a, const HostTensor& b) {
  return a.shape == b.shape && std::memcmp(a.values.data(), b.values.data(), a.values.size() * sizeof(double)) == 0;
}

void expect_same_bits(const AttentionGradients& got, const AttentionGradients& want) {
  EXPECT_TRUE(same_bits(got.d_q, want.d_q)) << "dQ";
  EXPECT_TRUE(same_bits(got.d_k, want.d_k)) << "dK";
  EXPECT_TRUE(same_bits(got.d_v, want.d_v)) << "dV";
  ASSERT_EQ(got.d_bias.has_value(), want.d_bias.has_value());
  if (want.d_bias) {
    EXPECT_TRUE(same_bits(*got.d_bias, *want.d_bias)) << "dBias";
  }
}

// An in-process backend around cpu-naive's table with `defect` planted.
Backend broken_backend(const Backend& naive, broken::Defect defect, DLDevice device = {kDLCPU, 0},
                       std::function<void(const attncheck_backward_tensors&)> observe = {}) {
  attncheck_backend* table = impl::make_backend_table(
      std::make_unique<broken::BrokenBackward>(defect, naive.table(), device, std::move(observe)), "broken-backward",
      "cpu-naive's backward with a planted defect");
  return Backend(table, "in-process");
}

std::vector<std::int64_t> strides_of(const DLTensor* t) { return {t->strides, t->strides + t->ndim}; }

// A [B, H, L, D] tensor stored [B, L, H, D] with rows of D + padding (execute.h, RunOptions).
std::vector<std::int64_t> sequence_major_strides(const DLTensor* t, std::int64_t padding) {
  const std::int64_t h = t->shape[1], l = t->shape[2], row = t->shape[3] + padding;
  return {l * h * row, row, h * row, 1};
}

std::vector<std::string> no_findings;

TEST(BackwardExecution, TwoKeysGiveTheHandDerivedGradients) {
  Backend naive = open_backend("cpu-naive");
  const BackwardCase c = two_keys();
  const BackwardRun r = run(naive, c, false);
  EXPECT_EQ(r.memory_findings, no_findings);
  EXPECT_EQ(r.gradients.d_q.values, (std::vector<double>{2, -4}));
  EXPECT_EQ(r.gradients.d_k.values, (std::vector<double>{-0.5, 0, 1.5, 0}));
  EXPECT_EQ(r.gradients.d_v.values, (std::vector<double>{1, 1}));
  EXPECT_FALSE(r.gradients.d_bias.has_value());
  expect_equal(r.gradients, c.reference(false));
}

TEST(BackwardExecution, EveryIndexAgreesWithTheReferenceWhereEveryValueIsExact) {
  Backend naive = open_backend("cpu-naive");
  const BackwardCase c = exact_grid();
  const BackwardRun r = run(naive, c, true);
  EXPECT_EQ(r.memory_findings, no_findings);
  const AttentionGradients want = c.reference(true);
  expect_equal(r.gradients, want);
  // The empty row 2 ignores its dO and dLSE: its dQ is +0 (backward.h's convention).
  for (std::int64_t b = 0; b < 2; ++b)
    for (std::int64_t h = 0; h < 2; ++h)
      for (std::int64_t l = 0; l < 3; ++l) EXPECT_EQ(r.gradients.d_q(b, h, 2, l), 0.0);
  // Not a vacuous agreement: the exact case reaches nonzero gradients in every tensor.
  for (const HostTensor* t : {&want.d_q, &want.d_k, &want.d_v, &*want.d_bias})
    EXPECT_NE(std::count(t->values.begin(), t->values.end(), 0.0), static_cast<std::ptrdiff_t>(t->values.size()));
}

TEST(BackwardExecution, DrawnDataIsHandedOverWithoutAFindingAndKeysNoQuerySeesGetZero) {
  Backend naive = open_backend("cpu-naive");
  const BackwardCase c = drawn();
  const BackwardRun r = run(naive, c, true);
  EXPECT_EQ(r.memory_findings, no_findings);
  // backend.h: dk and dv are 0 at keys no query may see (batch 0's keys 6..8; all of batch 1), and
  // a row with no allowed key has dQ = +0 (every row of batch 1).
  auto unseen = [](std::int64_t b, std::int64_t j) { return b == 1 || j >= 6; };
  for (std::int64_t b = 0; b < 2; ++b)
    for (std::int64_t g = 0; g < 2; ++g)
      for (std::int64_t j = 0; j < 9; ++j) {
        if (!unseen(b, j)) continue;
        for (std::int64_t l = 0; l < 8; ++l) EXPECT_EQ(r.gradients.d_k(b, g, j, l), 0.0) << "dK at batch " << b << " key " << j;
        for (std::int64_t l = 0; l < 6; ++l) EXPECT_EQ(r.gradients.d_v(b, g, j, l), 0.0) << "dV at batch " << b << " key " << j;
      }
  for (std::int64_t h = 0; h < 4; ++h)
    for (std::int64_t i = 0; i < 5; ++i)
      for (std::int64_t l = 0; l < 8; ++l) {
        EXPECT_EQ(r.gradients.d_q(1, h, i, l), 0.0);
        EXPECT_FALSE(std::signbit(r.gradients.d_q(1, h, i, l)));
      }
  for (const double x : r.gradients.d_q.values) ASSERT_TRUE(std::isfinite(x));
}

struct LayoutVariant {
  const char* name;
  RunOptions options;
};

std::vector<LayoutVariant> layout_variants() {
  std::vector<LayoutVariant> v(6);
  v[0].name = "sequence major";
  v[0].options.sequence_major = true;
  v[1].name = "row padding";
  v[1].options.row_padding = 3;
  v[2].name = "byte offset";
  v[2].options.byte_offset = 64;
  v[3].name = "null strides";
  v[3].options.null_strides = true;
  v[4].name = "all of them";
  v[4].options.sequence_major = true, v[4].options.row_padding = 2, v[4].options.byte_offset = 24;
  v[4].options.null_strides = true;
  v[5].name = "isolated";
  v[5].options.isolate = true;
  return v;
}

TEST(BackwardExecution, LayoutsAndIsolationChangeNoBit) {
  Backend naive = open_backend("cpu-naive");
  for (const BackwardCase& c : {exact_grid(), drawn()}) {
    const BackwardRun plain = run(naive, c, true);
    for (const LayoutVariant& variant : layout_variants()) {
      SCOPED_TRACE(variant.name);
      const BackwardRun r = run(naive, c, true, variant.options);
      EXPECT_EQ(r.memory_findings, no_findings);
      expect_same_bits(r.gradients, plain.gradients);
    }
  }
}

TEST(BackwardExecution, TheLayoutOptionsReachQKVTheOutputsAndTheirGradientsOnly) {
  Backend naive = open_backend("cpu-naive");
  RunOptions options;
  options.sequence_major = true;
  options.row_padding = 3;
  options.byte_offset = 64;
  int calls = 0;
  Backend observed = broken_backend(naive, broken::Defect::None, {kDLCPU, 0}, [&](const attncheck_backward_tensors& t) {
    ++calls;
    for (const DLTensor* laid_out : {t.q, t.k, t.v, t.out, t.dout, static_cast<const DLTensor*>(t.dq),
                                     static_cast<const DLTensor*>(t.dk), static_cast<const DLTensor*>(t.dv)}) {
      EXPECT_EQ(strides_of(laid_out), sequence_major_strides(laid_out, 3));
      EXPECT_EQ(laid_out->byte_offset, 64u);
    }
    // [B, Hq, Lq] = [2, 2, 3] and the mask's [1, 1, 3, 3], compact, at their first byte.
    EXPECT_EQ(strides_of(t.lse), (std::vector<std::int64_t>{6, 3, 1}));
    EXPECT_EQ(strides_of(t.dlse), (std::vector<std::int64_t>{6, 3, 1}));
    EXPECT_EQ(strides_of(t.mask), (std::vector<std::int64_t>{9, 9, 3, 1}));
    EXPECT_EQ(strides_of(t.dbias), (std::vector<std::int64_t>{9, 9, 3, 1}));
    for (const DLTensor* compact : {t.lse, t.dlse, t.mask, static_cast<const DLTensor*>(t.dbias)})
      EXPECT_EQ(compact->byte_offset, 0u);
    EXPECT_EQ(t.lse->ndim, 3);
    EXPECT_EQ(t.dout->dtype.bits, 32);
  });
  const BackwardCase c = exact_grid();
  const BackwardRun r = run(observed, c, true, options);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(r.memory_findings, no_findings);
  expect_equal(r.gradients, c.reference(true));
}

TEST(BackwardExecution, NullStridesForEveryCompactTensorAndOnlyThose) {
  Backend naive = open_backend("cpu-naive");
  RunOptions options;
  options.null_strides = true;
  auto expect_null = [](const attncheck_backward_tensors& t, bool attention_layout_compact) {
    for (const DLTensor* laid_out : {t.q, t.out, t.dout, static_cast<const DLTensor*>(t.dq)})
      EXPECT_EQ(laid_out->strides == nullptr, attention_layout_compact);
    for (const DLTensor* compact : {t.lse, t.dlse, t.mask, static_cast<const DLTensor*>(t.dbias)})
      EXPECT_EQ(compact->strides, nullptr);
  };
  Backend compact = broken_backend(naive, broken::Defect::None, {kDLCPU, 0},
                                   [&](const attncheck_backward_tensors& t) { expect_null(t, true); });
  EXPECT_EQ(run(compact, exact_grid(), true, options).memory_findings, no_findings);
  options.sequence_major = true;
  Backend permuted = broken_backend(naive, broken::Defect::None, {kDLCPU, 0},
                                    [&](const attncheck_backward_tensors& t) { expect_null(t, false); });
  EXPECT_EQ(run(permuted, exact_grid(), true, options).memory_findings, no_findings);
}

TEST(BackwardExecution, TheSimulatedDeviceGivesTheSameGradients) {
  Backend naive = open_backend("cpu-naive");
  Backend device = broken_backend(naive, broken::Defect::None, {kAttncheckSimulatedDevice, 0});
  for (const BackwardCase& c : {exact_grid(), drawn()}) {
    const BackwardRun r = run(device, c, true);
    EXPECT_EQ(r.memory_findings, no_findings);
    expect_same_bits(r.gradients, run(naive, c, true).gradients);
  }
}

struct PlantedDefect {
  broken::Defect defect;
  DLDevice device;
  std::string finding;
};

TEST(BackwardExecution, EveryPlantedDefectIsFoundAndNamed) {
  Backend naive = open_backend("cpu-naive");
  const DLDevice host{kDLCPU, 0}, simulated{kAttncheckSimulatedDevice, 0};
  const std::vector<PlantedDefect> defects{
      // dq [2, 2, 3, 3]: its last element.
      {broken::Defect::LeavesLastDqElementUnwritten, host, "dq: 1 element(s) never written by the backend, first at [1, 1, 2, 2]"},
      {broken::Defect::LeavesLastDqElementUnwritten, simulated,
       "dq: 1 element(s) never written by the backend, first at [1, 1, 2, 2] (read back after the stream was synchronized)"},
      {broken::Defect::WritesPastDkEnd, host, "dk: out-of-bounds write after the end, first bad element at +0"},
      {broken::Defect::WritesPastDkEnd, simulated, "dk: out-of-bounds write after the end, first bad element at +0"},
      // dout[0, 0, 0, 1] is the second float32 of a compact dout: bytes 4..7.
      {broken::Defect::ModifiesDout, host, "dout: the backend wrote to this input (first changed byte at offset 4)"},
  };
  for (const PlantedDefect& planted : defects) {
    SCOPED_TRACE(planted.finding);
    Backend backend = broken_backend(naive, planted.defect, planted.device);
    EXPECT_EQ(run(backend, exact_grid(), true).memory_findings, std::vector<std::string>{planted.finding});
  }
}

TEST(BackwardExecution, ADeclineIsABackendErrorTheCallerSkips) {
  Backend naive = open_backend("cpu-naive");
  Backend declines = broken_backend(naive, broken::Defect::Declines);
  try {
    (void)run(declines, two_keys(), false);
    FAIL() << "a declined backward returned gradients";
  } catch (const BackendError& e) {
    EXPECT_EQ(e.status(), kAttncheckNotSupported);
    EXPECT_NE(std::string(e.what()).find("declines this backward call"), std::string::npos) << e.what();
  }
}

TEST(BackwardExecution, TheGradientsAreHandedOverInTheBackwardProfilesDtype) {
  Backend naive = open_backend("cpu-naive");
  const BackwardCase c = two_keys();
  BackwardProfile f64_gradients = naive.backward_profile(c.problem, DType::F32).value();
  f64_gradients.gradient = DType::F64;
  try {
    (void)run_backend_backward(naive, c.problem, naive.profile(DType::F32).value(), f64_gradients, c.inputs(), c.backward,
                               false);
    FAIL() << "cpu-naive took float64 gradients";
  } catch (const BackendError& e) {
    EXPECT_EQ(e.status(), kAttncheckInvalidProblem);
    EXPECT_NE(std::string(e.what()).find("dq: dtype is float64, expected float32"), std::string::npos) << e.what();
  }
}

TEST(BackwardExecution, InputsThatDoNotFitTheCallAreRefusedBeforeIt) {
  Backend naive = open_backend("cpu-naive");
  const NumericsProfile profile = naive.profile(DType::F32).value();
  BackwardCase c = two_keys();
  BackwardProfile backward_profile = naive.backward_profile(c.problem, DType::F32).value();
  auto refusal = [&](const BackwardCase& with, const BackwardProfile& bp, bool bias) -> std::string {
    try {
      (void)run_backend_backward(naive, with.problem, profile, bp, with.inputs(), with.backward, bias);
    } catch (const std::exception& e) {
      return e.what();
    }
    return "accepted";
  };
  EXPECT_NE(refusal(c, backward_profile, true).find("dbias: asked for, but the problem's mask kind is none"),
            std::string::npos);
  BackwardProfile without_dlse = backward_profile;
  without_dlse.accepts_dlse = false;
  EXPECT_NE(refusal(c, without_dlse, false).find("dlse: given, but the backward profile does not take it"),
            std::string::npos);
  BackwardCase unrounded = c;
  unrounded.backward.d_out.values[0] = 0.1;  // not a float32 value
  EXPECT_NE(refusal(unrounded, backward_profile, false).find("dout: element [0,0,0,0] is 0.10000000000000001"),
            std::string::npos);
  BackwardCase short_rows = c;
  short_rows.backward.d_out = HostTensor({1, 1, 1, 2});
  EXPECT_NE(refusal(short_rows, backward_profile, false).find("dO: dim 3 (value dim) is 2, but the problem expects 1"),
            std::string::npos);
}

// Isolation reopens the backend by path in its child, so the crashing and hanging backward
// passes are plug-ins (broken_backward_plugin.cpp).
TEST(BackwardExecution, AnIsolatedBackwardThatCrashesOrHangsIsABackendError) {
  RunOptions options;
  options.isolate = true;
  options.timeout_seconds = 0.5;
  // The signal's name is not asserted: under AddressSanitizer the child's SIGSEGV is caught and
  // turned into an abort (SIGABRT), which is the same finding, a crash.
  const struct {
    const char* plugin;
    const char* message;
  } cases[] = {{ATTNCHECK_BROKEN_BACKWARD_CRASHES_PLUGIN, "the backend crashed: SIG"},
               {ATTNCHECK_BROKEN_BACKWARD_HANGS_PLUGIN, "the backend did not return within 0.5 s"}};
  for (const auto& planted : cases) {
    SCOPED_TRACE(planted.plugin);
    Backend backend = load_backend_library(planted.plugin);
    try {
      (void)run(backend, two_keys(), false, options);
      ADD_FAILURE() << "the isolated call returned";
    } catch (const BackendError& e) {
      EXPECT_EQ(e.status(), kAttncheckInternalError);
      EXPECT_NE(std::string(e.what()).find(planted.message), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace attncheck
