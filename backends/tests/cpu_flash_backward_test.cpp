// cpu-flash's backward pass (ABI 2.2) against the double reference's gradients
// (reference_attention_backward) over a grid of problems that covers every option its forward
// takes — masks boolean and additive with every broadcast, causal alignments, windows, softcap,
// key lengths, GQA/MQA, both layouts and padded rows, tile edges — for f32, f16 and bf16 inputs
// and every kernel path this CPU runs, each call through run_backend_backward (guards, NaN
// pre-fill, input fingerprints) and judged by compare_gradients with τ from gradient_tolerance;
// and the properties that need no tolerance: keys no query may see get dK = dV = 0 exactly and
// rows with no allowed key dQ = 0 exactly (with NaN and huge values stored at unreachable keys),
// and the bits do not depend on the thread count.
#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "attncheck/backend_handle.h"
#include "attncheck/backward.h"
#include "attncheck/case.h"
#include "attncheck/check.h"
#include "attncheck/execute.h"
#include "attncheck/gradient_tolerance.h"
#include "attncheck/reference.h"
#include "flash_kernel.h"
#include "grid_builders.h"

namespace attncheck {
namespace {

using namespace grid_builders;  // NOLINT(google-build-using-namespace): the grid's vocabulary

/// Whether some query row of some head of kv head g's group (batch b) may attend key j: the
/// structural range of problem.h, then the elementwise mask (boolean 0 and additive −inf forbid).
bool key_reachable(const Problem& p, const AttentionInputs& in, std::int64_t b, std::int64_t g, std::int64_t j) {
  const std::int64_t length = p.has_key_lengths ? in.key_lengths[static_cast<std::size_t>(b)] : p.k_len;
  for (std::int64_t h = g * p.group_size(); h < (g + 1) * p.group_size(); ++h)
    for (std::int64_t i = 0; i < p.q_len; ++i) {
      const Problem::KeyRange range = p.structural_key_range(i, length);
      if (j < range.first || j >= range.last) continue;
      if (p.mask == MaskKind::None) return true;
      const double m = in.mask(p.mask_batch == 1 ? 0 : b, p.mask_heads == 1 ? 0 : h, p.mask_q_len == 1 ? 0 : i, j);
      if (p.mask == MaskKind::Boolean ? m != 0.0 : m != -std::numeric_limits<double>::infinity()) return true;
    }
  return false;
}

struct BackwardCase {
  GridCase grid;
  bool d_lse = false;
};

// cpu-flash's backward tiles are 64 query rows × 64 keys (flash_kernel.h): the "Tile" cases sit
// on and beside those edges. Every other case passes dLSE; keys no query may see are poisoned
// with NaN and huge values wherever the problem has any.
std::vector<BackwardCase> make_grid() {
  std::vector<BackwardCase> grid;
  auto add = [&](std::string name, const Problem& p, Layout layout = Layout::Compact) -> BackwardCase& {
    BackwardCase b;
    b.grid = layout_case(std::move(name), p, layout, 5000 + grid.size());
    b.grid.c.poison_masked = p.has_key_lengths || (p.mask != MaskKind::None && p.mask_k_len < p.k_len);
    b.d_lse = grid.size() % 2 == 0;
    grid.push_back(std::move(b));
    return grid.back();
  };

  add("Mha", mha(2, 4, 17, 33, 32));
  add("Mqa", grouped(4, 1, 9, 70, 64));
  add("GqaRatio3", grouped(6, 2, 20, 20, 16));
  add("HeadDim128Causal", with_causal(mha(1, 2, 100, 300, 128), Alignment::BottomRight));
  add("HeadDim1", mha(1, 2, 6, 9, 1));
  add("DkNotDv", Problem::of_shape(1, 2, 2, 21, 50, 48, 80));
  add("DkNotDvWiderKeys", Problem::of_shape(1, 2, 2, 21, 50, 80, 24));
  add("CausalTopLeft", with_causal(mha(1, 2, 40, 70, 32), Alignment::TopLeft));
  add("CausalBottomRight", with_causal(mha(1, 2, 40, 70, 32), Alignment::BottomRight));
  add("CausalBottomRightLqAboveLk", with_causal(mha(1, 2, 70, 40, 32), Alignment::BottomRight));
  add("CausalOffset", with_causal(mha(1, 2, 16, 80, 32), Alignment::Offset, 64));
  add("CausalKeyLengths", with_causal(with_key_lengths(mha(3, 2, 12, 80, 32)), Alignment::KeyLengths)).grid.c.key_lengths =
      {50, 0, 80};
  add("WindowBothSides", with_window(mha(1, 2, 64, 64, 16), 5, 3));
  add("WindowLeftCausal", with_window(with_causal(mha(1, 2, 130, 200, 32), Alignment::BottomRight), 16, -1));
  add("WindowRightOnly", with_window(mha(1, 1, 30, 50, 16), -1, 0));
  add("WindowBottomRightNoCausal", with_window(with_alignment(mha(1, 2, 20, 90, 32), Alignment::BottomRight), 20, 20));
  {
    Problem p = mha(1, 2, 24, 40, 16);
    p.softcap = 5, p.scale = 1.0;  // scores of spread sqrt(Dk) = 4: the cap bends them
    add("Softcap", p);
    add("SoftcapCausalAdditive", with_mask(with_causal(p, Alignment::BottomRight), MaskKind::Additive, 1, 1, 24, 40));
    // NaN at unreachable keys passes through the cap's tanh: its slope must not bring it back.
    add("SoftcapKeyLengthsPoisoned", with_key_lengths(p)).grid.c.key_lengths = {29};
    add("SoftcapShortMaskPoisoned", with_mask(p, MaskKind::Additive, 1, 2, 1, 33));
  }
  add("BoolMaskFull", with_mask(mha(2, 2, 18, 40, 16), MaskKind::Boolean, 2, 2, 18, 40));
  add("BoolMaskBroadcast", with_mask(mha(2, 3, 18, 40, 16), MaskKind::Boolean, 1, 3, 1, 40));
  add("BoolMaskShort", with_mask(mha(2, 2, 18, 77, 16), MaskKind::Boolean, 2, 1, 18, 50));
  add("BoolMaskEmptyRows", with_mask(mha(1, 2, 21, 40, 16), MaskKind::Boolean, 1, 2, 21, 40)).grid.adjust = empty_rows_every(4);
  add("AdditiveMaskFull", with_mask(mha(2, 2, 18, 40, 16), MaskKind::Additive, 2, 2, 18, 40));
  // dBias summed over the batch and over heads of different kv heads (partials added in order).
  add("AdditiveBroadcastShort", with_mask(grouped(4, 2, 18, 64, 16), MaskKind::Additive, 1, 1, 18, 40));
  {
    Problem p = with_mask(grouped(4, 2, 9, 70, 16), MaskKind::Additive, 1, 4, 1, 70);
    p.batch = 2;
    add("AdditivePerHeadBroadcastBatchRows", p);
  }
  add("AdditiveEmptyRows", with_mask(mha(1, 1, 21, 40, 16), MaskKind::Additive, 1, 1, 21, 40)).grid.adjust = empty_rows_every(5);
  // Live rows whose middle (or leading) key tiles are entirely masked.
  add("MaskedTilesInsideLiveRows", with_mask(mha(1, 2, 8, 256, 16), MaskKind::Boolean, 1, 1, 1, 256)).grid.adjust =
      masked_keys(64, 192);
  add("MaskedLeadingTiles", with_mask(mha(1, 1, 8, 200, 16), MaskKind::Additive, 1, 1, 8, 200)).grid.adjust = masked_keys(0, 130);
  add("KeyLengths", with_key_lengths(mha(4, 2, 10, 64, 32))).grid.c.key_lengths = {0, 7, 64, 33};
  {
    Problem p = with_mask(with_causal(grouped(12, 4, 33, 100, 32), Alignment::BottomRight), MaskKind::Additive, 2, 12, 1, 90);
    p.batch = 2;
    add("EverythingAtOnce", with_window(with_key_lengths(p), 40, -1), Layout::SequenceMajor).grid.c.key_lengths = {95, 61};
  }
  add("SequenceMajorCausal", with_causal(mha(2, 4, 100, 130, 64), Alignment::BottomRight), Layout::SequenceMajor);
  add("PaddedRowsLayout", with_mask(mha(2, 2, 15, 66, 24), MaskKind::Boolean, 2, 1, 15, 66), Layout::PaddedRows);
  add("DecodeOneQuery", with_causal(grouped(8, 2, 1, 300, 64), Alignment::BottomRight));
  add("OneQueryOneKey", mha(1, 1, 1, 1, 16));
  add("TileRowsBelowKeysBelow", mha(1, 1, 63, 63, 32));
  add("TileRowsAboveKeysAbove", mha(1, 1, 65, 65, 32));
  add("TileRowsExactKeysExact", with_causal(mha(1, 1, 128, 128, 32), Alignment::TopLeft));
  add("TileRowsAboveTwo", with_causal(mha(1, 1, 129, 193, 32), Alignment::BottomRight));
  add("LongerSequence", with_causal(grouped(4, 2, 300, 700, 64), Alignment::BottomRight));
  return grid;
}

const std::vector<BackwardCase>& grid() {
  static const std::vector<BackwardCase> cases = make_grid();
  return cases;
}

struct Target {
  DType dtype;
  std::string isa;  ///< "" = the widest this CPU runs
};

Backend open_flash(const std::string& isa, int threads = 0) {
  return Backend(cpu_flash::make_cpu_flash(threads, isa.empty() ? nullptr : isa.c_str()),
                 "cpu-flash" + (isa.empty() ? std::string() : "@" + isa));
}

using Param = std::tuple<Target, std::size_t>;
class CpuFlashBackward : public testing::TestWithParam<Param> {};

/// One backward call of case `bc` in `dtype` on `backend`, through run_backend_backward, with
/// everything the judgement needs: the inputs, the reference's forward, the data handed over.
struct BackwardCall {
  GridCase g;
  CaseData data;
  AttentionInputs inputs;
  NumericsProfile profile;
  BackwardProfile backward_profile;
  bool want_d_bias = false;
  AttentionResult forward;
  BackwardData handed;
  BackwardRun run;
};

BackwardCall call_backward(Backend& backend, const BackwardCase& bc, DType dtype) {
  BackwardCall call{bc.grid.in(dtype), {}, {}, {}, {}, false, {}, {}, {}};
  const Problem& p = call.g.c.problem;
  call.profile = *backend.profile(p, dtype);
  call.backward_profile = *backend.backward_profile(p, dtype);
  call.want_d_bias = p.mask == MaskKind::Additive && call.backward_profile.writes_dbias;
  call.data = call.g.data();
  round_additive_mask(p, call.data, call.profile.additive_mask_dtype());
  call.inputs = call.data.inputs(p);
  call.forward = reference_attention(p, call.inputs);
  call.handed = make_backward_data(call.g.c, call.forward, call.profile.output, bc.d_lse);
  call.run = run_backend_backward(backend, p, call.profile, call.backward_profile, call.inputs, call.handed,
                                  call.want_d_bias, call.g.options);
  return call;
}

TEST_P(CpuFlashBackward, MatchesReference) {
  const auto& [target, index] = GetParam();
  if (!target.isa.empty() && !cpu_flash::cpu_flash_isa_available(target.isa.c_str()))
    GTEST_SKIP() << "this CPU does not run cpu-flash's " << target.isa << " kernels";
  Backend backend = open_flash(target.isa);
  const BackwardCall call = call_backward(backend, grid()[index], target.dtype);
  const Problem& p = call.g.c.problem;
  const AttentionGradients& actual = call.run.gradients;
  const std::string where = call.g.name + " [" + call.g.c.describe() + "]";
  EXPECT_TRUE(call.run.memory_findings.empty()) << where << ": " << call.run.memory_findings.front();

  // Exact, whatever the rounding: nothing flows to a key no query may see (its K and V may hold
  // NaN), and a row with no allowed key (LSE = −inf) has a zero dQ.
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t kv = 0; kv < p.kv_heads; ++kv)
      for (std::int64_t j = 0; j < p.k_len; ++j) {
        if (key_reachable(p, call.inputs, b, kv, j)) continue;
        for (std::int64_t d = 0; d < p.qk_dim; ++d)
          ASSERT_EQ(actual.d_k(b, kv, j, d), 0.0) << where << ": dK[" << b << ", " << kv << ", " << j << ", " << d << "]";
        for (std::int64_t d = 0; d < p.v_dim; ++d)
          ASSERT_EQ(actual.d_v(b, kv, j, d), 0.0) << where << ": dV[" << b << ", " << kv << ", " << j << ", " << d << "]";
      }
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t h = 0; h < p.q_heads; ++h)
      for (std::int64_t i = 0; i < p.q_len; ++i) {
        if (call.forward.lse(0, b, h, i) != -std::numeric_limits<double>::infinity()) continue;
        for (std::int64_t d = 0; d < p.qk_dim; ++d)
          ASSERT_EQ(actual.d_q(b, h, i, d), 0.0) << where << ": dQ[" << b << ", " << h << ", " << i << ", " << d << "]";
      }

  BackwardOptions options;
  options.bias_gradient = call.want_d_bias;
  const BackwardInputs exact = call.handed.exact_inputs(call.forward);
  const AttentionGradients reference = reference_attention_backward(p, call.inputs, exact, options);
  const GradientBounds tau = gradient_tolerance(p, call.profile, call.backward_profile, call.inputs, exact, reference);
  const GradientVerdict verdict = compare_gradients(reference, tau, actual);
  EXPECT_TRUE(verdict.passed) << where << ": " << verdict.summary();
  RecordProperty("verdict", verdict.summary());
}

std::vector<Target> targets() {
  std::vector<Target> t;
  for (const char* isa : {"", "avx2", "generic"})
    for (DType d : {DType::F32, DType::F16, DType::BF16}) t.push_back({d, isa});
  return t;
}

std::vector<std::size_t> case_indices() {
  std::vector<std::size_t> v(grid().size());
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = i;
  return v;
}

std::string param_name(const testing::TestParamInfo<Param>& info) {
  const auto& [target, index] = info.param;
  const std::string isa = target.isa.empty() ? "Widest" : capitalized(target.isa);
  return isa + capitalized(std::string(dtype_name(target.dtype))) + grid()[index].grid.name;
}

INSTANTIATE_TEST_SUITE_P(Grid, CpuFlashBackward, testing::Combine(testing::ValuesIn(targets()), testing::ValuesIn(case_indices())),
                         param_name);

// The profile declares determinism: each (batch, kv head) is one task with a fixed order, so one
// thread and three give the same bits, and so does a repeated call, dBias included.
TEST(CpuFlashBackwardDeterminism, TheBitsDoNotDependOnTheThreadCount) {
  const BackwardCase* everything = nullptr;
  for (const BackwardCase& c : grid())
    if (c.grid.name == "EverythingAtOnce") everything = &c;
  ASSERT_NE(everything, nullptr);
  for (DType dtype : {DType::F32, DType::BF16}) {
    Backend one = open_flash("", 1), three = open_flash("", 3);
    ASSERT_TRUE(one.backward_profile(everything->grid.c.problem, dtype)->deterministic);
    const AttentionGradients a = call_backward(one, *everything, dtype).run.gradients;
    const AttentionGradients b = call_backward(three, *everything, dtype).run.gradients;
    const AttentionGradients again = call_backward(three, *everything, dtype).run.gradients;
    ASSERT_TRUE(a.d_bias.has_value());
    auto same_bits = [](const HostTensor& x, const HostTensor& y) {
      return x.values.size() == y.values.size() &&
             std::memcmp(x.values.data(), y.values.data(), x.values.size() * sizeof(double)) == 0;
    };
    for (const AttentionGradients* other : {&b, &again}) {
      EXPECT_TRUE(same_bits(a.d_q, other->d_q)) << dtype_name(dtype) << ": dQ";
      EXPECT_TRUE(same_bits(a.d_k, other->d_k)) << dtype_name(dtype) << ": dK";
      EXPECT_TRUE(same_bits(a.d_v, other->d_v)) << dtype_name(dtype) << ": dV";
      EXPECT_TRUE(same_bits(*a.d_bias, *other->d_bias)) << dtype_name(dtype) << ": dBias";
    }
  }
}

}  // namespace
}  // namespace attncheck
