// Every built-in CPU backend, for every input dtype it takes, against the reference over a fixed
// grid of named harness cases, each run through run_backend (guards, NaN pre-fill, input
// fingerprints) and judged by compare_attention. Adding a case: one more entry in make_grid();
// adding a backend: one more name in cpu_backends().
#include <gtest/gtest.h>

#include <cctype>
#include <string>
#include <tuple>
#include <vector>

#include "attncheck/backend_handle.h"
#include "attncheck/check.h"
#include "attncheck/compare.h"
#include "attncheck/execute.h"
#include "flash_kernel.h"
#include "grid_builders.h"

namespace attncheck {
namespace {

using namespace grid_builders;  // NOLINT(google-build-using-namespace): the grid's vocabulary

// cpu-flash tiles keys by 64 and queries by 96 (cpu-flash/flash_kernel.h): the "Tile" cases sit
// one below and one above those boundaries. The dtype is the target's (Conformance below).
std::vector<GridCase> make_grid() {
  std::vector<GridCase> grid;
  auto add = [&](std::string name, const Problem& p, Layout layout = Layout::Compact) -> GridCase& {
    grid.push_back(layout_case(std::move(name), p, layout, 1000 + grid.size()));
    return grid.back();
  };

  add("Mha", mha(2, 4, 17, 33, 32));
  add("Mqa", grouped(4, 1, 9, 70, 64));
  add("GqaRatio3", grouped(6, 2, 20, 20, 16));
  add("GqaRatio12", grouped(12, 1, 5, 130, 8));
  add("HeadDim128", with_causal(mha(1, 2, 100, 300, 128), Alignment::BottomRight));
  add("HeadDim256", mha(1, 1, 19, 45, 256));
  add("HeadDim1", mha(1, 2, 6, 9, 1));
  add("DkNotDv", Problem::of_shape(1, 2, 2, 21, 50, 48, 80));
  add("DkNotDvWiderKeys", Problem::of_shape(1, 2, 2, 21, 50, 80, 24));
  add("CausalTopLeft", with_causal(mha(1, 2, 40, 70, 32), Alignment::TopLeft));
  add("CausalBottomRight", with_causal(mha(1, 2, 40, 70, 32), Alignment::BottomRight));
  // Lq > Lk bottom-right: rows i < Lq − Lk see no key at all (fully masked rows).
  add("CausalBottomRightLqAboveLk", with_causal(mha(1, 2, 70, 40, 32), Alignment::BottomRight));
  add("CausalOffset", with_causal(mha(1, 2, 16, 80, 32), Alignment::Offset, 64));
  // Batch 1 has no key; batch 2 all of them.
  add("CausalKeyLengths", with_causal(with_key_lengths(mha(3, 2, 12, 80, 32)), Alignment::KeyLengths)).c.key_lengths =
      {50, 0, 80};
  add("WindowBothSides", with_window(mha(1, 2, 64, 64, 16), 5, 3));
  add("WindowLeftCausal", with_window(with_causal(mha(1, 2, 130, 200, 32), Alignment::BottomRight), 16, -1));
  add("WindowRightOnly", with_window(mha(1, 1, 30, 50, 16), -1, 0));
  add("WindowBottomRightWide", with_window(grouped(6, 2, 33, 150, 32), 70, 10));
  add("WindowBottomRightNoCausal", with_window(with_alignment(mha(1, 2, 20, 90, 32), Alignment::BottomRight), 20, 20));
  {
    Problem p = mha(1, 2, 24, 40, 16);
    p.softcap = 5, p.scale = 1.0;  // scores of spread sqrt(Dk) = 4: the cap bends them
    add("Softcap", p);
    add("SoftcapCausalAdditive", with_mask(with_causal(p, Alignment::BottomRight), MaskKind::Additive, 1, 1, 24, 40));
  }
  add("BoolMaskFull", with_mask(mha(2, 2, 18, 40, 16), MaskKind::Boolean, 2, 2, 18, 40));
  add("BoolMaskBroadcast", with_mask(mha(2, 3, 18, 40, 16), MaskKind::Boolean, 1, 3, 1, 40));
  add("BoolMaskShort", with_mask(mha(2, 2, 18, 77, 16), MaskKind::Boolean, 2, 1, 18, 50));
  add("BoolMaskEmptyRows", with_mask(mha(1, 2, 21, 40, 16), MaskKind::Boolean, 1, 2, 21, 40)).adjust = empty_rows_every(4);
  add("AdditiveMaskFull", with_mask(mha(2, 2, 18, 40, 16), MaskKind::Additive, 2, 2, 18, 40));
  add("AdditiveBroadcastShort", with_mask(grouped(4, 2, 18, 64, 16), MaskKind::Additive, 1, 1, 18, 40));
  add("AdditiveEmptyRows", with_mask(mha(1, 1, 21, 40, 16), MaskKind::Additive, 1, 1, 21, 40)).adjust = empty_rows_every(5);
  // A live row whose middle key tiles are entirely masked: the online softmax must never form
  // (−inf) − (−inf). Keys 64..191 are cpu-flash's second and third key tiles.
  add("MaskedTilesInsideLiveRows", with_mask(mha(1, 2, 8, 256, 16), MaskKind::Boolean, 1, 1, 1, 256)).adjust =
      masked_keys(64, 192);
  add("MaskedLeadingTiles", with_mask(mha(1, 1, 8, 200, 16), MaskKind::Additive, 1, 1, 8, 200)).adjust = masked_keys(0, 130);
  add("KeyLengths", with_key_lengths(mha(4, 2, 10, 64, 32))).c.key_lengths = {0, 7, 64, 33};
  {
    Problem p = with_mask(with_causal(grouped(12, 4, 33, 100, 32), Alignment::BottomRight), MaskKind::Additive, 2, 12, 1, 90);
    p.batch = 2;
    add("EverythingAtOnce", with_window(with_key_lengths(p), 40, -1), Layout::SequenceMajor).c.key_lengths = {95, 61};
  }
  add("SequenceMajorLayout", grouped(6, 3, 20, 50, 32), Layout::SequenceMajor);
  add("SequenceMajorCausal", with_causal(mha(2, 4, 100, 130, 64), Alignment::BottomRight), Layout::SequenceMajor);
  add("PaddedRowsLayout", with_mask(mha(2, 2, 15, 66, 24), MaskKind::Boolean, 2, 1, 15, 66), Layout::PaddedRows);
  add("DecodeOneQuery", with_causal(grouped(8, 2, 1, 300, 64), Alignment::BottomRight));
  add("DecodeOneQueryOneKey", mha(1, 1, 1, 1, 16));
  add("TileQueryBelowKeyBelow", mha(1, 1, 95, 63, 32));
  add("TileQueryAboveKeyAbove", mha(1, 1, 97, 65, 32));
  add("TileQueryExactKeyExact", with_causal(mha(1, 1, 96, 128, 32), Alignment::BottomRight));
  add("TileKeysAboveTwo", with_causal(mha(1, 1, 193, 129, 32), Alignment::TopLeft));
  add("TileKeysBelowTwo", with_window(mha(1, 1, 97, 127, 32), 63, 64));
  add("LongerSequence", with_causal(grouped(4, 2, 300, 700, 64), Alignment::BottomRight));
  return grid;
}

const std::vector<GridCase>& grid() {
  static const std::vector<GridCase> cases = make_grid();
  return cases;
}

struct Target {
  std::string backend;
  DType dtype;
  std::string isa;     ///< cpu-flash only: force the kernels of this instruction set ("" = the widest)
  std::string plugin;  ///< a plug-in's path: loaded through load_backend_library instead
};

/// The backend a target names: the registry's, a plug-in, or cpu-flash with forced kernels.
Backend open_target(const Target& t) {
  if (!t.plugin.empty()) return load_backend_library(t.plugin);
  if (t.isa.empty()) return open_backend(t.backend);
  return Backend(cpu_flash::make_cpu_flash(0, t.isa.c_str()), "cpu-flash@" + t.isa);
}

// The CPU backends of this folder. The CUDA backends have their own grid (backends/cuda/tests)
// and the mutants are the mutation test's business: a mutant must fail.
const std::vector<std::string>& cpu_backends() {
  static const std::vector<std::string> names{"cpu-naive", "cpu-flash"};
  return names;
}

std::vector<Target> targets() {
  std::vector<Target> t;
  for (const std::string& name : cpu_backends())
    for (DType d : {DType::F32, DType::F16, DType::BF16}) t.push_back({name, d, "", ""});
  // cpu-flash's narrower kernel paths, which the registry's instance never picks on a wide CPU.
  for (const char* isa : {"avx2", "generic"})
    for (DType d : {DType::F32, DType::F16, DType::BF16}) t.push_back({"cpu-flash", d, isa, ""});
  // cpu-naive built as a separate MODULE and loaded by path: a plug-in is checked like a built-in.
  t.push_back({"plugin-cpu-naive", DType::F32, "", ATTNCHECK_PLUGIN_CPU_NAIVE});
  return t;
}

using Param = std::tuple<Target, std::size_t>;

class Conformance : public testing::TestWithParam<Param> {};

TEST_P(Conformance, MatchesReference) {
  const auto& [target, index] = GetParam();
  if (!target.isa.empty() && !cpu_flash::cpu_flash_isa_available(target.isa.c_str()))
    GTEST_SKIP() << "this CPU does not run cpu-flash's " << target.isa << " kernels";
  Backend backend = open_target(target);
  const GridCase g = grid()[index].in(target.dtype);
  const CaseCheck check = check_case(backend, g);
  if (check.declined) GTEST_SKIP() << *check.declined;
  EXPECT_TRUE(check.passed()) << g.name << " [" << g.c.describe() << "]: " << check.report();
  RecordProperty("verdict", check.report());
}

std::string param_name(const testing::TestParamInfo<Param>& info) {
  const auto& [target, index] = info.param;
  std::string backend;
  bool upper = true;
  for (char ch : target.backend) {  // "cpu-flash" → "CpuFlash"
    if (ch == '-') {
      upper = true;
      continue;
    }
    backend += upper ? static_cast<char>(std::toupper(static_cast<unsigned char>(ch))) : ch;
    upper = false;
  }
  if (!target.isa.empty()) backend += capitalized(target.isa);
  return backend + capitalized(std::string(dtype_name(target.dtype))) + grid()[index].name;
}

std::vector<std::size_t> case_indices() {
  std::vector<std::size_t> v(grid().size());
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = i;
  return v;
}

INSTANTIATE_TEST_SUITE_P(Grid, Conformance, testing::Combine(testing::ValuesIn(targets()), testing::ValuesIn(case_indices())),
                         param_name);

// Two runs of one case that must agree bit for bit: compare_exact's bitwise mode on O, and on
// the LSE when the backend writes it. The two runs share nothing but the case.
void expect_bitwise_equal(Backend& a, Backend& b, const GridCase& g) {
  const NumericsProfile profile = *a.profile(g.c.dtype);
  const CaseData data = g.data();
  RunOptions options = g.options;
  options.sequence_major = g.c.sequence_major;
  const BackendRun first = run_backend(a, g.c.problem, profile, data.inputs(g.c.problem), options);
  const BackendRun second = run_backend(b, g.c.problem, profile, data.inputs(g.c.problem), options);
  EXPECT_TRUE(first.memory_findings.empty() && second.memory_findings.empty()) << "memory probe findings";
  const Verdict out = compare_exact(first.out, second.out, profile.output, ExactMode::Bitwise);
  EXPECT_TRUE(out.passed) << a.name() << " vs " << b.name() << ", O: " << out.failure;
  ASSERT_EQ(first.lse.has_value(), second.lse.has_value());
  if (first.lse) {
    const Verdict lse = compare_exact(*first.lse, *second.lse, DType::F32, ExactMode::Bitwise);
    EXPECT_TRUE(lse.passed) << a.name() << " vs " << b.name() << ", LSE: " << lse.failure;
  }
}

TEST(Determinism, RepeatedCallsAreBitwiseEqualWhenDeclared) {
  for (const std::string& name : cpu_backends()) {
    Backend backend = open_backend(name);
    const auto profile = backend.profile(DType::F32);
    ASSERT_TRUE(profile.has_value());
    if (!profile->deterministic) continue;
    SCOPED_TRACE(name + " declares determinism");
    expect_bitwise_equal(backend, backend, grid()[0].in(DType::F32));
  }
}

TEST(Determinism, CpuFlashIsBitwiseEqualWhateverTheThreadCount) {
  // Each row has a fixed tile order and one thread computes it: the thread count cannot matter.
  GridCase g = grid()[0].in(DType::F32);
  g.c.problem = with_fp32_parameters(with_causal(grouped(8, 2, 300, 400, 64), Alignment::BottomRight));
  Backend one(cpu_flash::make_cpu_flash(1, nullptr), "cpu-flash@1"), three(cpu_flash::make_cpu_flash(3, nullptr), "cpu-flash@3");
  expect_bitwise_equal(one, three, g);
}

TEST(Errors, WrongShapeIsAnInvalidProblemNamingTheTensor) {
  const GridCase& g = grid()[0];  // Mha: Lk = 33
  const CaseData data = g.data();
  Problem wrong = g.c.problem;
  wrong.k_len += 1;  // K, V and the problem now disagree
  for (const std::string& name : cpu_backends()) {
    Backend backend = open_backend(name);
    const auto error = forward_with_problem(backend, g.c.problem, wrong, *backend.profile(DType::F32),
                                            data.inputs(g.c.problem), g.options);
    ASSERT_TRUE(error.has_value()) << name << " accepted a K of the wrong length";
    EXPECT_EQ(error->status(), kAttncheckInvalidProblem) << error->what();
    EXPECT_NE(std::string(error->what()).find("k: dim 2 (key length) is 33, expected 34"), std::string::npos) << error->what();
  }
}

}  // namespace
}  // namespace attncheck
