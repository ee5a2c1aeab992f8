// Every built-in backend, for every input dtype it takes, against the reference over a fixed grid
// of problems. Adding a case: one more entry in make_cases(); adding a backend: nothing (the
// registry lists it).
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "attncheck/backend_handle.h"
#include "attncheck/reference.h"
#include "flash_kernel.h"
#include "harness.h"

namespace attncheck::test {
namespace {

Problem mha(std::int64_t b, std::int64_t h, std::int64_t lq, std::int64_t lk, std::int64_t d) {
  Problem p;
  p.batch = b, p.q_heads = h, p.kv_heads = h, p.q_len = lq, p.k_len = lk, p.qk_dim = d, p.v_dim = d;
  return p;
}

Problem grouped(std::int64_t hq, std::int64_t hkv, std::int64_t lq, std::int64_t lk, std::int64_t d) {
  Problem p = mha(1, hq, lq, lk, d);
  p.kv_heads = hkv;
  return p;
}

Problem masked(Problem p, MaskKind kind, std::int64_t bm, std::int64_t hm, std::int64_t lqm, std::int64_t lkm) {
  p.mask = kind, p.mask_batch = bm, p.mask_heads = hm, p.mask_q_len = lqm, p.mask_k_len = lkm;
  return p;
}

Problem causal(Problem p, Alignment a, std::int64_t offset = 0) {
  p.causal = true, p.alignment = a, p.diagonal_offset = offset;
  return p;
}

Problem windowed(Problem p, std::int64_t left, std::int64_t right) {
  p.window_left = left, p.window_right = right;
  return p;
}

// cpu-flash tiles keys by 64 and queries by 96 (cpu-flash/flash_kernel.h): the "Tile" cases sit
// one below and one above those boundaries.
std::vector<Case> make_cases() {
  std::vector<Case> cases;
  auto add = [&](std::string name, Problem p, Layout layout = Layout::Compact) -> Case& {
    Case c;
    c.name = std::move(name), c.problem = p, c.layout = layout, c.seed = 1000 + cases.size();
    cases.push_back(c);
    return cases.back();
  };
  add("Mha", mha(2, 4, 17, 33, 32));
  add("Mqa", grouped(4, 1, 9, 70, 64));
  add("GqaRatio3", grouped(6, 2, 20, 20, 16));
  add("GqaRatio12", grouped(12, 1, 5, 130, 8));
  add("HeadDim128", causal(mha(1, 2, 100, 300, 128), Alignment::BottomRight));
  add("HeadDim256", mha(1, 1, 19, 45, 256));
  add("HeadDim1", mha(1, 2, 6, 9, 1));
  {
    Problem p = mha(1, 2, 21, 50, 48);
    p.v_dim = 80;  // Dk ≠ Dv
    add("DkNotDv", p);
    p.qk_dim = 80, p.v_dim = 24;
    add("DkNotDvWiderKeys", p);
  }
  add("CausalTopLeft", causal(mha(1, 2, 40, 70, 32), Alignment::TopLeft));
  add("CausalBottomRight", causal(mha(1, 2, 40, 70, 32), Alignment::BottomRight));
  // Lq > Lk bottom-right: rows i < Lq − Lk see no key at all (fully masked rows).
  add("CausalBottomRightLqAboveLk", causal(mha(1, 2, 70, 40, 32), Alignment::BottomRight));
  add("CausalOffset", causal(mha(1, 2, 16, 80, 32), Alignment::Offset, 64));
  {
    Problem p = causal(mha(3, 2, 12, 80, 32), Alignment::KeyLengths);
    p.has_key_lengths = true;
    add("CausalKeyLengths", p).key_lengths = {50, 0, 80};  // batch 1 is empty
  }
  add("WindowBothSides", windowed(mha(1, 2, 64, 64, 16), 5, 3));
  add("WindowLeftCausal", windowed(causal(mha(1, 2, 130, 200, 32), Alignment::BottomRight), 16, -1));
  add("WindowRightOnly", windowed(mha(1, 1, 30, 50, 16), -1, 0));
  add("WindowBottomRightWide", windowed(grouped(6, 2, 33, 150, 32), 70, 10));
  {
    Problem p = mha(1, 2, 20, 90, 32);
    p.alignment = Alignment::BottomRight;
    p = windowed(p, 20, 20);
    add("WindowBottomRightNoCausal", p);
  }
  {
    Problem p = mha(1, 2, 24, 40, 16);
    p.softcap = 5, p.scale = 1.0;  // scores of size ~4: the cap bends them
    add("Softcap", p);
    p = masked(causal(p, Alignment::BottomRight), MaskKind::Additive, 1, 1, 24, 40);
    add("SoftcapCausalAdditive", p);
  }
  add("BoolMaskFull", masked(mha(2, 2, 18, 40, 16), MaskKind::Boolean, 2, 2, 18, 40));
  add("BoolMaskBroadcast", masked(mha(2, 3, 18, 40, 16), MaskKind::Boolean, 1, 3, 1, 40));
  add("BoolMaskShort", masked(mha(2, 2, 18, 77, 16), MaskKind::Boolean, 2, 1, 18, 50));
  add("BoolMaskEmptyRows", masked(mha(1, 2, 21, 40, 16), MaskKind::Boolean, 1, 2, 21, 40)).empty_mask_row_every = 4;
  add("AdditiveMaskFull", masked(mha(2, 2, 18, 40, 16), MaskKind::Additive, 2, 2, 18, 40));
  add("AdditiveBroadcastShort", masked(grouped(4, 2, 18, 64, 16), MaskKind::Additive, 1, 1, 18, 40));
  add("AdditiveEmptyRows", masked(mha(1, 1, 21, 40, 16), MaskKind::Additive, 1, 1, 21, 40)).empty_mask_row_every = 5;
  {
    // A live row whose middle key tiles are entirely masked: the online softmax must never form
    // (−inf) − (−inf).
    Case& c = add("MaskedTilesInsideLiveRows", masked(mha(1, 2, 8, 256, 16), MaskKind::Boolean, 1, 1, 1, 256));
    c.masked_keys_begin = 64, c.masked_keys_end = 192;
    Case& d = add("MaskedLeadingTiles", masked(mha(1, 1, 8, 200, 16), MaskKind::Additive, 1, 1, 8, 200));
    d.masked_keys_begin = 0, d.masked_keys_end = 130;
  }
  {
    Problem p = mha(4, 2, 10, 64, 32);
    p.has_key_lengths = true;
    add("KeyLengths", p).key_lengths = {0, 7, 64, 33};
  }
  {
    Problem p = masked(causal(grouped(12, 4, 33, 100, 32), Alignment::BottomRight), MaskKind::Additive, 1, 12, 1, 90);
    p.batch = 2, p.has_key_lengths = true, p.mask_batch = 2;
    p = windowed(p, 40, -1);
    add("EverythingAtOnce", p, Layout::SequenceMajor).key_lengths = {95, 61};
  }
  add("SequenceMajorLayout", grouped(6, 3, 20, 50, 32), Layout::SequenceMajor);
  add("SequenceMajorCausal", causal(mha(2, 4, 100, 130, 64), Alignment::BottomRight), Layout::SequenceMajor);
  add("PaddedRowsLayout", masked(mha(2, 2, 15, 66, 24), MaskKind::Boolean, 2, 1, 15, 66), Layout::PaddedRows);
  add("DecodeOneQuery", causal(grouped(8, 2, 1, 300, 64), Alignment::BottomRight));
  add("DecodeOneQueryOneKey", mha(1, 1, 1, 1, 16));
  add("TileQueryBelowKeyBelow", mha(1, 1, 95, 63, 32));
  add("TileQueryAboveKeyAbove", mha(1, 1, 97, 65, 32));
  add("TileQueryExactKeyExact", causal(mha(1, 1, 96, 128, 32), Alignment::BottomRight));
  add("TileKeysAboveTwo", causal(mha(1, 1, 193, 129, 32), Alignment::TopLeft));
  add("TileKeysBelowTwo", windowed(mha(1, 1, 97, 127, 32), 63, 64));
  add("LongerSequence", causal(grouped(4, 2, 300, 700, 64), Alignment::BottomRight));
  return cases;
}

const std::vector<Case>& all_cases() {
  static const std::vector<Case> cases = make_cases();
  return cases;
}

struct Target {
  std::string backend;
  DType dtype;
  std::string isa;  ///< cpu-flash only: force the kernels of this instruction set ("" = the widest)
  std::string plugin;  ///< a plug-in's path: loaded through load_backend_library instead
};

/// The backend a target names: the registry's, or cpu-flash with forced kernels.
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
  const Case& c = all_cases()[index];
  if (!target.isa.empty() && !cpu_flash::cpu_flash_isa_available(target.isa.c_str()))
    GTEST_SKIP() << "this CPU does not run cpu-flash's " << target.isa << " kernels";
  Backend backend = open_target(target);
  const auto profile = backend.profile(target.dtype);
  if (!profile) GTEST_SKIP() << target.backend << " does not take " << dtype_name(target.dtype) << " inputs";
  Prepared pr = prepare(c, target.dtype, profile->output);
  if (auto why = backend.unsupported_reason(pr.problem, target.dtype, kDLCPU)) GTEST_SKIP() << *why;

  // Inputs are read-only (backend.h): keep their bytes to compare after the call.
  const auto q_before = pr.sq.bytes, k_before = pr.sk.bytes, v_before = pr.sv.bytes, m_before = pr.smask.bytes;
  attncheck_attention_tensors tensors = pr.abi_tensors();
  backend.forward(pr.problem, tensors);
  EXPECT_TRUE(q_before == pr.sq.bytes && k_before == pr.sk.bytes && v_before == pr.sv.bytes && m_before == pr.smask.bytes)
      << "the backend wrote one of its inputs";

  ReferenceOptions options;
  options.row_statistics = true;
  const AttentionInputs inputs = pr.reference_inputs();
  const AttentionResult ref = reference_attention(pr.problem, inputs, options);
  const HostTensor out = pr.out(), lse = pr.lse();
  const Judgement j = judge(pr.problem, *profile, inputs, ref, out, profile->writes_lse ? &lse : nullptr);
  EXPECT_TRUE(j.passed) << c.name << " [" << pr.problem.describe() << "] " << dtype_name(target.dtype) << ": " << j.message;
  RecordProperty("verdict", j.message);
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
  if (!target.isa.empty()) {
    backend += static_cast<char>(std::toupper(static_cast<unsigned char>(target.isa[0])));
    backend += target.isa.substr(1);
  }
  std::string dtype(dtype_name(target.dtype));
  dtype[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(dtype[0])));
  return backend + dtype + all_cases()[index].name;
}

std::vector<std::size_t> case_indices() {
  std::vector<std::size_t> v(all_cases().size());
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = i;
  return v;
}

INSTANTIATE_TEST_SUITE_P(Grid, Conformance, testing::Combine(testing::ValuesIn(targets()), testing::ValuesIn(case_indices())),
                         param_name);

TEST(Determinism, RepeatedCallsAreBitwiseEqualWhenDeclared) {
  const Case& c = all_cases()[0];
  for (const std::string& name : cpu_backends()) {
    Backend backend = open_backend(name);
    const auto profile = backend.profile(DType::F32);
    ASSERT_TRUE(profile.has_value());
    if (!profile->deterministic) continue;
    Prepared a = prepare(c, DType::F32, profile->output), b = prepare(c, DType::F32, profile->output);
    auto ta = a.abi_tensors(), tb = b.abi_tensors();
    backend.forward(a.problem, ta);
    backend.forward(b.problem, tb);
    EXPECT_TRUE(a.sout.bytes == b.sout.bytes) << name << " declares determinism";
  }
}

TEST(Determinism, CpuFlashIsBitwiseEqualWhateverTheThreadCount) {
  // Each row has a fixed tile order and one thread computes it: the thread count cannot matter.
  Case c = all_cases()[0];
  c.problem = causal(grouped(8, 2, 300, 400, 64), Alignment::BottomRight);
  Backend one(cpu_flash::make_cpu_flash(1, nullptr), "cpu-flash@1"), three(cpu_flash::make_cpu_flash(3, nullptr), "cpu-flash@3");
  Prepared a = prepare(c, DType::F32, DType::F32), b = prepare(c, DType::F32, DType::F32);
  auto ta = a.abi_tensors(), tb = b.abi_tensors();
  one.forward(a.problem, ta);
  three.forward(b.problem, tb);
  EXPECT_TRUE(a.sout.bytes == b.sout.bytes && a.slse.bytes == b.slse.bytes);
}

TEST(Errors, WrongShapeIsAnInvalidProblemNamingTheTensor) {
  for (const std::string& name : cpu_backends()) {
    Backend backend = open_backend(name);
    Prepared pr = prepare(all_cases()[0], DType::F32, DType::F32);
    attncheck_attention_tensors t = pr.abi_tensors();
    Problem wrong = pr.problem;
    wrong.k_len += 1;  // K, V and the problem now disagree
    try {
      backend.forward(wrong, t);
      ADD_FAILURE() << name << " accepted a K of the wrong length";
    } catch (const BackendError& e) {
      EXPECT_EQ(e.status(), kAttncheckInvalidProblem) << e.what();
      EXPECT_NE(std::string(e.what()).find("k: dim 2 (key length) is 33, expected 34"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace attncheck::test
