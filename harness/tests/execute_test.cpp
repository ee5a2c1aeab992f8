// The layouts RunOptions hands tensors over in (row padding, byte offsets, NULL strides), seen
// from inside the call, and the probes that come with them.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "attncheck/case.h"
#include "attncheck/execute.h"

namespace attncheck {
namespace {

// f32 everywhere and no LSE: the call below writes O itself.
NumericsProfile f32_profile() { return NumericsProfile{}; }

AttentionCase small_case() {
  AttentionCase c;
  c.problem = Problem::of_shape(2, 3, 3, 4, 5, 6, 7);
  c.problem.mask = MaskKind::Boolean;
  c.problem.mask_batch = 2, c.problem.mask_heads = 3, c.problem.mask_q_len = 4, c.problem.mask_k_len = 5;
  c.seed = 3;
  return c;
}

std::vector<std::int64_t> strides_of(const DLTensor* t) { return {t->strides, t->strides + t->ndim}; }

// Writes 1.0f to every logical element of O, and nothing else: a correct backend's footprint.
void write_every_output(const attncheck_attention_tensors& t) {
  const DLTensor* o = t.out;
  const float one = 1.0f;
  for (std::int64_t b = 0; b < o->shape[0]; ++b)
    for (std::int64_t h = 0; h < o->shape[1]; ++h)
      for (std::int64_t i = 0; i < o->shape[2]; ++i)
        for (std::int64_t j = 0; j < o->shape[3]; ++j) {
          const std::int64_t at = b * o->strides[0] + h * o->strides[1] + i * o->strides[2] + j * o->strides[3];
          std::memcpy(static_cast<char*>(o->data) + o->byte_offset + at * 4, &one, 4);
        }
}

struct Layouts : testing::Test {
  AttentionCase c = small_case();
  CaseData data = make_case_data(c);
  RunOptions options;

  // Runs `call` on the host with the tensors of `options`, then the probes.
  BackendRun run(const std::function<void(const attncheck_attention_tensors&)>& call) {
    options.want_lse = false;
    PreparedCall prepared(c.problem, f32_profile(), data.inputs(c.problem), options);
    prepared.execute({kDLCPU, 0}, [&](const attncheck_attention_tensors& t, DeviceCall&) { call(t); });
    return prepared.finish();
  }
};

TEST_F(Layouts, RowPaddingWidensTheStrideOutsideTheHeadDim) {
  options.row_padding = 5;
  const BackendRun r = run([](const attncheck_attention_tensors& t) {
    // Q [2, 3, 4, 6]: rows of 6 + 5; O [2, 3, 4, 7]: rows of 7 + 5.
    EXPECT_EQ(strides_of(t.q), (std::vector<std::int64_t>{3 * 4 * 11, 4 * 11, 11, 1}));
    EXPECT_EQ(strides_of(t.out), (std::vector<std::int64_t>{3 * 4 * 12, 4 * 12, 12, 1}));
    EXPECT_EQ(strides_of(t.mask), (std::vector<std::int64_t>{3 * 4 * 5, 4 * 5, 5, 1}));  // the mask stays compact
    write_every_output(t);
  });
  EXPECT_TRUE(r.memory_findings.empty()) << r.memory_findings.front();
  EXPECT_EQ(r.out(1, 2, 3, 6), 1.0);
}

TEST_F(Layouts, RowPaddingWithSequenceMajorPadsTheHeadRows) {
  options.row_padding = 2;
  options.sequence_major = true;
  run([](const attncheck_attention_tensors& t) {
    // K [2, 3, 5, 6] stored [B, L, H, D] with rows of 6 + 2: stride(H) = 8, stride(L) = 3·8.
    EXPECT_EQ(strides_of(t.k), (std::vector<std::int64_t>{5 * 3 * 8, 8, 3 * 8, 1}));
    write_every_output(t);
  });
}

TEST_F(Layouts, AWriteIntoAnOutputsPaddingIsAFinding) {
  options.row_padding = 3;
  const BackendRun r = run([](const attncheck_attention_tensors& t) {
    write_every_output(t);
    const float stray = 2.0f;  // just past the first row's 7 elements
    std::memcpy(static_cast<char*>(t.out->data) + t.out->byte_offset + 7 * 4, &stray, 4);
  });
  ASSERT_EQ(r.memory_findings.size(), 1u);
  EXPECT_EQ(r.memory_findings[0], "out: the backend wrote into the padding its strides skip, first at element offset 7");
}

TEST_F(Layouts, InputPaddingHoldsTheGuardPatternAndIsFingerprinted) {
  options.row_padding = 1;
  const BackendRun r = run([](const attncheck_attention_tensors& t) {
    const auto* q = static_cast<const unsigned char*>(t.q->data);
    EXPECT_EQ(q[6 * 4], 0xa5);  // the element after Q's first row of 6
    const_cast<unsigned char*>(q)[6 * 4] = 0;
    write_every_output(t);
  });
  ASSERT_EQ(r.memory_findings.size(), 1u);
  EXPECT_EQ(r.memory_findings[0], "Q: the backend wrote to this input (first changed byte at offset 24)");
}

TEST_F(Layouts, ByteOffsetMovesTheFirstElementAndGuardsTheBytesBeforeIt) {
  options.byte_offset = 64;
  const BackendRun r = run([&](const attncheck_attention_tensors& t) {
    EXPECT_EQ(t.q->byte_offset, 64u);
    EXPECT_EQ(t.out->byte_offset, 64u);
    EXPECT_EQ(t.mask->byte_offset, 0u);
    float first = 0;
    std::memcpy(&first, static_cast<const char*>(t.q->data) + 64, 4);
    EXPECT_EQ(first, static_cast<float>(data.q(0, 0, 0, 0)));
    write_every_output(t);
    // A backend that ignores the offset writes its first element 64 bytes = 16 floats early.
    const float stray = 3.0f;
    std::memcpy(t.out->data, &stray, 4);
  });
  ASSERT_EQ(r.memory_findings.size(), 1u);
  EXPECT_EQ(r.memory_findings[0], "out: out-of-bounds write before the start, first bad element at -16");
}

TEST_F(Layouts, NullStridesForEveryCompactTensor) {
  c.problem.has_key_lengths = true;
  data = make_case_data(c);
  options.null_strides = true;
  run([](const attncheck_attention_tensors& t) {
    EXPECT_EQ(t.q->strides, nullptr);
    EXPECT_EQ(t.mask->strides, nullptr);
    EXPECT_EQ(t.key_lengths->strides, nullptr);
    EXPECT_EQ(t.out->strides, nullptr);
    // Written through compact strides: what NULL means.
    const float one = 1.0f;
    for (std::int64_t n = 0; n < 2 * 3 * 4 * 7; ++n) std::memcpy(static_cast<char*>(t.out->data) + n * 4, &one, 4);
  });
}

TEST_F(Layouts, NullStridesKeepExplicitStridesWhereTheLayoutIsNotCompact) {
  options.null_strides = true;
  options.sequence_major = true;
  run([](const attncheck_attention_tensors& t) {
    ASSERT_NE(t.q->strides, nullptr);
    EXPECT_EQ(strides_of(t.q), (std::vector<std::int64_t>{4 * 3 * 6, 6, 3 * 6, 1}));
    EXPECT_EQ(t.mask->strides, nullptr);
    write_every_output(t);
  });
}

}  // namespace
}  // namespace attncheck
