// The backward pass of ABI 2.2: the table's optional entry points under backend.h's struct_size
// rules, the backward profile's conversion, and the backward of every built-in CPU backend
// (cpu-naive, cpu-flash) on hand-derived cases.
//
// The hand-derived cases are exact in fp32: every allowed key's weight is P = exp(s − lse) with
// the lse given equal to the score, so P = exp(0) = 1, and every other value is a small integer
// or half. They check each term of the backward pass (backend.h, attncheck_backward_profile) —
// dV = Pᵀ dO, D = dO·O, dS = P (dP − D + dlse), dQ = σ dS K, dK = σ dSᵀ Q, the GQA group sum, the
// bias gradient and its broadcast sum — with == and no tolerance.
#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "attncheck/backend.h"
#include "attncheck/backend_handle.h"
#include "attncheck/backend_impl.h"

extern "C" attncheck_backend* attncheck_c_mock_entry(void);

namespace attncheck {
namespace {

// A compact host tensor of float32 (or uint8 for a boolean mask) values.
struct HostTensor4 {
  std::vector<float> values;
  std::vector<std::uint8_t> bytes;
  std::vector<std::int64_t> shape;
  DLTensor tensor{};

  HostTensor4(std::vector<std::int64_t> dims, std::vector<float> data) : values(std::move(data)), shape(std::move(dims)) {
    point(values.data(), DLDataType{kDLFloat, 32, 1});
  }
  HostTensor4(std::vector<std::int64_t> dims, std::vector<std::uint8_t> data) : bytes(std::move(data)), shape(std::move(dims)) {
    point(bytes.data(), DLDataType{kDLUInt, 8, 1});
  }
  static HostTensor4 zeros(std::vector<std::int64_t> dims) {
    std::size_t n = 1;
    for (std::int64_t d : dims) n *= static_cast<std::size_t>(d);
    return HostTensor4(std::move(dims), std::vector<float>(n, -7.0f));  // not 0: backward must write every element
  }
  HostTensor4(HostTensor4&& other) noexcept
      : values(std::move(other.values)), bytes(std::move(other.bytes)), shape(std::move(other.shape)) {
    point(values.empty() ? static_cast<void*>(bytes.data()) : values.data(), other.tensor.dtype);
  }

 private:
  void point(void* data, DLDataType dtype) {
    tensor = {};
    tensor.data = data;
    tensor.device = {kDLCPU, 0};
    tensor.ndim = static_cast<std::int32_t>(shape.size());
    tensor.dtype = dtype;
    tensor.shape = shape.data();
  }
};

struct BackwardResult {
  HostTensor4 dq, dk, dv;
};

BackwardResult run_backward(Backend& backend, const Problem& p, HostTensor4& q, HostTensor4& k, HostTensor4& v,
                            HostTensor4* mask, HostTensor4& out, HostTensor4& lse, HostTensor4& dout, HostTensor4* dlse,
                            HostTensor4* dbias) {
  BackwardResult r{HostTensor4::zeros({p.batch, p.q_heads, p.q_len, p.qk_dim}),
                   HostTensor4::zeros({p.batch, p.kv_heads, p.k_len, p.qk_dim}),
                   HostTensor4::zeros({p.batch, p.kv_heads, p.k_len, p.v_dim})};
  attncheck_backward_tensors t{};
  t.struct_size = sizeof t;
  t.q = &q.tensor, t.k = &k.tensor, t.v = &v.tensor;
  t.mask = mask != nullptr ? &mask->tensor : nullptr;
  t.out = &out.tensor, t.lse = &lse.tensor, t.dout = &dout.tensor;
  t.dlse = dlse != nullptr ? &dlse->tensor : nullptr;
  t.dq = &r.dq.tensor, t.dk = &r.dk.tensor, t.dv = &r.dv.tensor;
  t.dbias = dbias != nullptr ? &dbias->tensor : nullptr;
  backend.backward(p, t);
  return r;
}

// Rule 2 of backend.h: a table whose struct_size ends before get_backward_profile was built for
// ABI 2.1, and whatever lies past its end is not a backward pass.
TEST(BackwardAbi, ATableOfAnEarlierMinorHasNoBackwardWhateverLiesPastItsEnd) {
  Backend naive = open_backend("cpu-naive");
  ASSERT_TRUE(naive.has_backward());
  static attncheck_backend shortened;
  shortened = *attncheck_c_mock_entry();
  shortened.get_backward_profile = naive.table()->get_backward_profile;  // past the end of a 2.1 table
  shortened.backward = naive.table()->backward;
  shortened.struct_size = static_cast<std::uint32_t>(offsetof(attncheck_backend, get_backward_profile));
  Backend backend(&shortened, "c-mock-2.1-sized");
  EXPECT_FALSE(backend.has_backward());
  EXPECT_FALSE(backend.backward_profile(Problem{}, DType::F32).has_value());
  attncheck_backward_tensors t{};
  try {
    backend.backward(Problem{}, t);
    ADD_FAILURE() << "backward on a table without one must throw";
  } catch (const BackendError& e) {
    EXPECT_EQ(e.status(), kAttncheckNotSupported);
    EXPECT_NE(std::string(e.what()).find("has no backward pass"), std::string::npos) << e.what();
  }
}

TEST(BackwardAbi, TheProfileRoundTripsAndIsRefusedWhenItContradictsItself) {
  BackwardProfile p;
  p.gradient = DType::BF16;
  p.probability = DType::BF16;
  p.ds = DType::BF16;
  p.group_sum = DType::F32;
  p.query_block = 128;
  p.key_block = 64;
  p.recomputes_from_lse = true;
  p.dq_atomic = true;
  EXPECT_EQ(from_abi(to_abi(p)), p);
  EXPECT_EQ(p.describe(DType::F16), "grad=bf16 P=bf16 dP=f32 dS=bf16 acc=f32 group=f32 blocks=128x64 lse dq-atomic");

  attncheck_backward_profile a = to_abi(p);
  a.deterministic = 1;  // atomics add in no fixed order
  EXPECT_THROW(from_abi(a), BackendError);
  a = to_abi(p);
  a.key_block = -1;
  EXPECT_THROW(from_abi(a), BackendError);
  a = to_abi(p);
  a.struct_size = ATTNCHECK_BACKWARD_PROFILE_SIZE_2_2 - 1;
  EXPECT_THROW(from_abi(a), BackendError);
  // Zero dtypes mean float32 for the stages and the input dtype for the gradients (backend.h).
  attncheck_backward_profile zeros{};
  zeros.struct_size = sizeof zeros;
  const BackwardProfile defaults = from_abi(zeros);
  EXPECT_EQ(defaults, BackwardProfile{});
  EXPECT_EQ(defaults.gradient_dtype(DType::F16), DType::F16);
}

// The profile's size is negotiated: a buffer from a suite that knows fewer fields is not overrun.
TEST(BackwardAbi, WritingTheProfileStopsAtTheSuitesBuffer) {
  struct Guarded {
    attncheck_backward_profile profile;
    unsigned char after[16];
  } buffer;
  std::memset(&buffer, 0xAB, sizeof buffer);
  buffer.profile.struct_size = static_cast<std::uint32_t>(offsetof(attncheck_backward_profile, dp_dtype));
  attncheck_backward_profile full = to_abi(BackwardProfile{});
  full.writes_dbias = 1;
  attncheck_write_backward_profile(&buffer.profile, &full);
  EXPECT_EQ(buffer.profile.struct_size, offsetof(attncheck_backward_profile, dp_dtype));
  const auto* bytes = reinterpret_cast<const unsigned char*>(&buffer.profile);
  for (std::size_t i = offsetof(attncheck_backward_profile, dp_dtype); i < sizeof buffer.profile; ++i)
    ASSERT_EQ(bytes[i], 0xAB) << "byte " << i << " is past the suite's buffer";
}

// Every built-in CPU backend with a backward pass; each computes these cases exactly (for
// cpu-flash, exp(0) = 1 exactly on every kernel path: flash_kernel_test.cpp).
class HandDerivedBackward : public testing::TestWithParam<std::string> {};

// Hand derivation (one query, Dk = Dv = 1, σ = 1/2, key 1 masked by a boolean mask):
//   s_0 = σ q k_0 = 1/2 · 2 · 3 = 3, lse = 3 (given), P_0 = e^0 = 1, P_1 = 0 (masked).
//   dO = 2, O = v_0 = 4:  dV_0 = P_0 dO = 2, dV_1 = 0.
//   dP_0 = dO v_0 = 8, D = dO O = 8, dlse = 1/2:  dS_0 = P_0 (8 − 8 + 1/2) = 1/2.
//   dQ = σ dS_0 k_0 = 1/2 · 1/2 · 3 = 3/4;  dK_0 = σ dS_0 q = 1/2 · 1/2 · 2 = 1/2;  dK_1 = 0.
// The masked key's K and V are huge: they must not reach anything.
TEST_P(HandDerivedBackward, OneAllowedKeyGivesEveryTermExactly) {
  Backend backend = open_backend(GetParam());
  Problem p;
  p.batch = p.q_heads = p.kv_heads = p.q_len = 1;
  p.k_len = 2;
  p.qk_dim = p.v_dim = 1;
  p.scale = 0.5;
  p.mask = MaskKind::Boolean;
  p.mask_batch = p.mask_heads = p.mask_q_len = 1;
  p.mask_k_len = 2;
  HostTensor4 q({1, 1, 1, 1}, std::vector<float>{2}), k({1, 1, 2, 1}, std::vector<float>{3, 1e30f}),
      v({1, 1, 2, 1}, std::vector<float>{4, 1e30f}), mask({1, 1, 1, 2}, std::vector<std::uint8_t>{1, 0}),
      out({1, 1, 1, 1}, std::vector<float>{4}), lse({1, 1, 1}, std::vector<float>{3}),
      dout({1, 1, 1, 1}, std::vector<float>{2}), dlse({1, 1, 1}, std::vector<float>{0.5f});
  const BackwardResult r = run_backward(backend, p, q, k, v, &mask, out, lse, dout, &dlse, nullptr);
  EXPECT_EQ(r.dv.values, (std::vector<float>{2, 0}));
  EXPECT_EQ(r.dq.values, (std::vector<float>{0.75f}));
  EXPECT_EQ(r.dk.values, (std::vector<float>{0.5f, 0}));
}

// Hand derivation (GQA, two query heads reading one kv head, one key, σ = 1, an additive bias
// of 0 broadcast over heads):
//   s_h = q_h k = 1·3, 2·3 = 3, 6; lse_h = s_h (given), P = 1 for both heads.
//   dO_h = 1, O_h = v = 5:  D_h = 5, dP_h = 5, dlse = 1, 2:  dS_h = 1, 2.
//   dQ_h = dS_h k = 3, 6;  dK = Σ_h dS_h q_h = 1·1 + 2·2 = 5;  dV = Σ_h P dO_h = 2.
//   dbias (shape [1, 1, 1, 1]) = Σ_h dS_h = 3.
TEST_P(HandDerivedBackward, AGroupsQueryHeadsAreSummedIntoItsKeyAndValueGradients) {
  Backend backend = open_backend(GetParam());
  Problem p;
  p.batch = p.kv_heads = p.q_len = p.k_len = p.qk_dim = p.v_dim = 1;
  p.q_heads = 2;
  p.scale = 1.0;
  p.mask = MaskKind::Additive;
  p.mask_batch = p.mask_heads = p.mask_q_len = p.mask_k_len = 1;
  HostTensor4 q({1, 2, 1, 1}, std::vector<float>{1, 2}), k({1, 1, 1, 1}, std::vector<float>{3}),
      v({1, 1, 1, 1}, std::vector<float>{5}), bias({1, 1, 1, 1}, std::vector<float>{0}),
      out({1, 2, 1, 1}, std::vector<float>{5, 5}), lse({1, 2, 1}, std::vector<float>{3, 6}),
      dout({1, 2, 1, 1}, std::vector<float>{1, 1}), dlse({1, 2, 1}, std::vector<float>{1, 2});
  HostTensor4 dbias = HostTensor4::zeros({1, 1, 1, 1});
  const BackwardResult r = run_backward(backend, p, q, k, v, &bias, out, lse, dout, &dlse, &dbias);
  EXPECT_EQ(r.dq.values, (std::vector<float>{3, 6}));
  EXPECT_EQ(r.dk.values, (std::vector<float>{5}));
  EXPECT_EQ(r.dv.values, (std::vector<float>{2}));
  EXPECT_EQ(dbias.values, (std::vector<float>{3}));
}

// A row with no allowed key (key length 0: lse = −inf) contributes nothing: its dQ is 0 and
// the keys' gradients stay 0, whatever dO holds.
TEST_P(HandDerivedBackward, ARowWithNoAllowedKeyHasZeroGradients) {
  Backend backend = open_backend(GetParam());
  Problem p;
  p.batch = p.q_heads = p.kv_heads = p.q_len = p.k_len = p.qk_dim = p.v_dim = 1;
  p.scale = 1.0;
  p.has_key_lengths = true;
  HostTensor4 q({1, 1, 1, 1}, std::vector<float>{1}), k({1, 1, 1, 1}, std::vector<float>{1}),
      v({1, 1, 1, 1}, std::vector<float>{1}), out({1, 1, 1, 1}, std::vector<float>{0}),
      lse({1, 1, 1}, std::vector<float>{-std::numeric_limits<float>::infinity()}),
      dout({1, 1, 1, 1}, std::vector<float>{9});
  std::vector<std::int64_t> lengths = {0};
  std::vector<std::int64_t> length_shape = {1};
  DLTensor key_lengths{};
  key_lengths.data = lengths.data();
  key_lengths.device = {kDLCPU, 0};
  key_lengths.ndim = 1;
  key_lengths.dtype = DLDataType{kDLInt, 64, 1};
  key_lengths.shape = length_shape.data();
  BackwardResult r{HostTensor4::zeros({1, 1, 1, 1}), HostTensor4::zeros({1, 1, 1, 1}), HostTensor4::zeros({1, 1, 1, 1})};
  attncheck_backward_tensors t{};
  t.struct_size = sizeof t;
  t.q = &q.tensor, t.k = &k.tensor, t.v = &v.tensor, t.key_lengths = &key_lengths;
  t.out = &out.tensor, t.lse = &lse.tensor, t.dout = &dout.tensor;
  t.dq = &r.dq.tensor, t.dk = &r.dk.tensor, t.dv = &r.dv.tensor;
  backend.backward(p, t);
  EXPECT_EQ(r.dq.values, (std::vector<float>{0}));
  EXPECT_EQ(r.dk.values, (std::vector<float>{0}));
  EXPECT_EQ(r.dv.values, (std::vector<float>{0}));
}

// Bad calls are refused with the tensor and the dimension named, never computed on.
TEST_P(HandDerivedBackward, AMisshapenGradientIsRefusedByName) {
  Backend backend = open_backend(GetParam());
  Problem p;
  p.batch = p.q_heads = p.kv_heads = p.q_len = p.k_len = p.qk_dim = p.v_dim = 1;
  p.scale = 1.0;
  HostTensor4 q({1, 1, 1, 1}, std::vector<float>{1}), k({1, 1, 1, 1}, std::vector<float>{1}),
      v({1, 1, 1, 1}, std::vector<float>{1}), out({1, 1, 1, 1}, std::vector<float>{1}),
      lse({1, 1, 1}, std::vector<float>{1}), dout({1, 1, 1, 1}, std::vector<float>{1});
  HostTensor4 dq = HostTensor4::zeros({1, 1, 1, 2}), dk = HostTensor4::zeros({1, 1, 1, 1}), dv = HostTensor4::zeros({1, 1, 1, 1});
  attncheck_backward_tensors t{};
  t.struct_size = sizeof t;
  t.q = &q.tensor, t.k = &k.tensor, t.v = &v.tensor, t.out = &out.tensor, t.lse = &lse.tensor, t.dout = &dout.tensor;
  t.dq = &dq.tensor, t.dk = &dk.tensor, t.dv = &dv.tensor;
  try {
    backend.backward(p, t);
    ADD_FAILURE() << "a [1,1,1,2] dq for Dk = 1 must be refused";
  } catch (const BackendError& e) {
    EXPECT_EQ(e.status(), kAttncheckInvalidProblem);
    EXPECT_NE(std::string(e.what()).find("dq: dim 3 (head dim) is 2, expected 1"), std::string::npos) << e.what();
  }
  t.struct_size = ATTNCHECK_BACKWARD_TENSORS_SIZE_2_2 - 1;
  EXPECT_THROW(backend.backward(p, t), BackendError);
}

INSTANTIATE_TEST_SUITE_P(CpuBackends, HandDerivedBackward, testing::Values("cpu-naive", "cpu-flash"),
                         [](const testing::TestParamInfo<std::string>& backend) {
                           return backend.param == "cpu-naive" ? std::string("CpuNaive") : std::string("CpuFlash");
                         });

}  // namespace
}  // namespace attncheck
