// Every validation error of problem.cpp, reference.cpp, layer.cpp and kv_cache.cpp, triggered and
// its message checked word for word: the message is the interface (it names the tensor, the
// dimension, what was expected and what was given). Also parse_problem(describe()) round trips.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>

#include "attncheck/kv_cache.h"
#include "attncheck/layer.h"

namespace attncheck {
namespace {

using ::testing::HasSubstr;

std::string error_of(const std::function<void()>& call) {
  try {
    call();
  } catch (const ProblemError& e) {
    return e.what();
  }
  return "(no error)";
}

Problem base() {
  Problem p;
  p.batch = 2;
  p.q_heads = 8;
  p.kv_heads = 2;
  p.q_len = 4;
  p.k_len = 8;
  p.qk_dim = 3;
  p.v_dim = 5;
  return p;
}

std::string problem_error(const std::function<void(Problem&)>& change) {
  Problem p = base();
  change(p);
  return error_of([&] { p.validate(); });
}

TEST(Validation, ProblemErrors) {
  EXPECT_EQ(problem_error([](Problem&) {}), "(no error)");
  EXPECT_EQ(problem_error([](Problem& p) { p.batch = 0; }), "Q: dim 0 (batch) is 0, but must be at least 1");
  EXPECT_EQ(problem_error([](Problem& p) { p.q_heads = -1; }), "Q: dim 1 (query heads) is -1, but must be at least 1");
  EXPECT_EQ(problem_error([](Problem& p) { p.kv_heads = 0; }), "K: dim 1 (kv heads) is 0, but must be at least 1");
  EXPECT_EQ(problem_error([](Problem& p) { p.q_len = 0; }), "Q: dim 2 (query length) is 0, but must be at least 1");
  EXPECT_EQ(problem_error([](Problem& p) { p.k_len = 0; }), "K: dim 2 (key length) is 0, but must be at least 1");
  EXPECT_EQ(problem_error([](Problem& p) { p.qk_dim = 0; }), "Q: dim 3 (head dim) is 0, but must be at least 1");
  EXPECT_EQ(problem_error([](Problem& p) { p.v_dim = 0; }), "V: dim 3 (value dim) is 0, but must be at least 1");
  EXPECT_EQ(problem_error([](Problem& p) { p.kv_heads = 3; }),
            "K: dim 1 (kv heads) is 3, but Hq = 8 is not a multiple of it");
  EXPECT_EQ(problem_error([](Problem& p) { p.scale = std::numeric_limits<double>::infinity(); }),
            "scale: is inf, but must be finite");
  EXPECT_EQ(problem_error([](Problem& p) { p.softcap = -1; }),
            "softcap: is -1, but must be finite and >= 0 (0 = off)");
  EXPECT_EQ(problem_error([](Problem& p) { p.softcap = std::nan(""); }),
            "softcap: is nan, but must be finite and >= 0 (0 = off)");
  EXPECT_EQ(problem_error([](Problem& p) { p.window_left = -2; }),
            "window: is (-2, -1), but each side must be >= 0 or -1 (unbounded)");
  EXPECT_EQ(problem_error([](Problem& p) { p.alignment = Alignment::KeyLengths; }),
            "alignment: is key-lengths, but no key_lengths tensor is given");
  EXPECT_EQ(problem_error([](Problem& p) { p.diagonal_offset = 3; }),
            "diagonal_offset: is 3, but alignment is top-left (only 'offset' uses it)");
  EXPECT_EQ(problem_error([](Problem& p) { p.alignment = Alignment::Offset, p.diagonal_offset = 9; }),
            "diagonal_offset: is 9, but a cache of P past tokens needs 0 <= P <= Lk = 8");
  const auto with_mask = [](std::function<void(Problem&)> change) {
    return problem_error([&](Problem& p) {
      p.mask = MaskKind::Boolean;
      change(p);
    });
  };
  EXPECT_EQ(with_mask([](Problem& p) { p.mask_batch = 3; }), "mask: dim 0 (batch) is 3, but must be 1 or B = 2");
  EXPECT_EQ(with_mask([](Problem& p) { p.mask_heads = 2; }), "mask: dim 1 (heads) is 2, but must be 1 or Hq = 8");
  EXPECT_EQ(with_mask([](Problem& p) { p.mask_q_len = 2; }),
            "mask: dim 2 (query length) is 2, but must be 1 or Lq = 4");
  EXPECT_EQ(with_mask([](Problem& p) { p.mask_k_len = 9; }),
            "mask: dim 3 (key length) is 9, but must be in [1, Lk = 8]");
}

TEST(Validation, ParseProblemErrors) {
  const auto parse_error = [](std::string_view text) { return error_of([&] { (void)parse_problem(text); }); };
  EXPECT_EQ(parse_error("B=x"), "problem text: B=x is not an integer");
  EXPECT_EQ(parse_error("Lq=3.5"), "problem text: Lq=3.5 is not an integer");
  EXPECT_EQ(parse_error("scale=abc"), "problem text: scale=abc is not a number");
  EXPECT_EQ(parse_error("softcap="), "problem text: softcap= is not a number");
  EXPECT_EQ(parse_error("B=1 causal"), "problem text: 'causal' is not key=value");
  EXPECT_EQ(parse_error("align=diagonal"),
            "problem text: align=diagonal is not top-left, bottom-right, offset or key-lengths");
  EXPECT_EQ(parse_error("window=3"), "problem text: window=3 is not LEFT,RIGHT");
  EXPECT_EQ(parse_error("mask=bool:1x1"), "problem text: mask=bool:1x1 is not bool|bias:BxHxLqxLk");
  EXPECT_EQ(parse_error("mask=soft:1x1x1x1"), "problem text: mask=soft:1x1x1x1 is not bool|bias:BxHxLqxLk");
  EXPECT_EQ(parse_error("Z=1"), "problem text: unknown key 'Z'");
}

TEST(Validation, DescribeRoundTrips) {
  Problem p = base();
  p.scale = 0.125;
  p.softcap = 50;
  p.causal = true;
  p.alignment = Alignment::Offset;
  p.diagonal_offset = 4;
  p.window_left = 3;
  p.mask = MaskKind::Additive;
  p.mask_heads = 8;
  p.mask_k_len = 6;
  p.has_key_lengths = true;
  EXPECT_EQ(p.describe(),
            "B=2 Hq=8 Hkv=2 Lq=4 Lk=8 Dk=3 Dv=5 scale=0.125 softcap=50 causal=1 align=offset offset=4 window=3,-1 "
            "mask=bias:1x8x1x6 keylens=1");
  EXPECT_EQ(parse_problem(p.describe()), p);
  EXPECT_EQ(parse_problem(base().describe()), base());
  Problem odd;  // a scale that needs all 17 digits must survive the text
  odd.scale = 1.0 / 3.0;
  odd.alignment = Alignment::BottomRight;
  odd.mask = MaskKind::Boolean;
  EXPECT_EQ(parse_problem(odd.describe()), odd);
}

// Inputs of the right shapes for base(): views into one buffer (only shapes are read by the
// checks that fail first).
struct Shapes {
  std::vector<double> buffer = std::vector<double>(4096, 0.0);
  View4<const double> of(const Shape4& s) const { return {buffer.data(), s, compact_strides(s)}; }
};

std::string input_error(const std::function<void(Problem&, AttentionInputs&, ReferenceOptions&)>& change) {
  static const Shapes shapes;
  Problem p = base();
  AttentionInputs in{shapes.of({2, 8, 4, 3}), shapes.of({2, 2, 8, 3}), shapes.of({2, 2, 8, 5}), {}, {}};
  ReferenceOptions options;
  change(p, in, options);
  return error_of([&] { (void)reference_attention(p, in, options); });
}

TEST(Validation, AttentionInputErrors) {
  static const std::vector<std::int64_t> two_lengths{8, 9}, one_length{8};
  static const Shapes shapes;
  EXPECT_EQ(input_error([](Problem&, AttentionInputs&, ReferenceOptions&) {}), "(no error)");
  EXPECT_EQ(input_error([](Problem& p, AttentionInputs&, ReferenceOptions&) { p.q_heads = 3; }),
            "K: dim 1 (kv heads) is 2, but Hq = 3 is not a multiple of it");
  EXPECT_EQ(input_error([](Problem&, AttentionInputs& in, ReferenceOptions&) { in.q = {}; }),
            "Q: is missing (no data)");
  EXPECT_EQ(input_error([](Problem&, AttentionInputs& in, ReferenceOptions&) { in.k = shapes.of({2, 2, 7, 3}); }),
            "K: dim 2 (key length) is 7, but the problem expects 8 (shape [2, 2, 7, 3] vs [2, 2, 8, 3])");
  EXPECT_EQ(input_error([](Problem&, AttentionInputs& in, ReferenceOptions&) { in.v = shapes.of({2, 2, 8, 3}); }),
            "V: dim 3 (value dim) is 3, but the problem expects 5 (shape [2, 2, 8, 3] vs [2, 2, 8, 5])");
  EXPECT_EQ(input_error([](Problem& p, AttentionInputs& in, ReferenceOptions&) {
              p.mask = MaskKind::Boolean;
              p.mask_q_len = 4;
              in.mask = shapes.of({1, 1, 1, 1});
            }),
            "mask: dim 2 (query length) is 1, but the problem expects 4 (shape [1, 1, 1, 1] vs [1, 1, 4, 1])");
  EXPECT_EQ(input_error([](Problem& p, AttentionInputs&, ReferenceOptions&) { p.mask = MaskKind::Additive; }),
            "mask: is missing (no data)");
  EXPECT_EQ(input_error([](Problem&, AttentionInputs& in, ReferenceOptions&) { in.mask = shapes.of({1, 1, 1, 1}); }),
            "mask: a mask tensor is given, but the problem's mask kind is none");
  EXPECT_EQ(input_error([](Problem& p, AttentionInputs& in, ReferenceOptions&) {
              p.has_key_lengths = true;
              in.key_lengths = one_length;
            }),
            "key_lengths: dim 0 (batch) is 1, but the problem expects B = 2");
  EXPECT_EQ(input_error([](Problem& p, AttentionInputs& in, ReferenceOptions&) {
              p.has_key_lengths = true;
              in.key_lengths = two_lengths;
            }),
            "key_lengths: element 1 is 9, but must be in [0, Lk = 8]");
  EXPECT_EQ(input_error([](Problem&, AttentionInputs& in, ReferenceOptions&) { in.key_lengths = one_length; }),
            "key_lengths: a key_lengths tensor is given, but the problem does not use key lengths");
  EXPECT_EQ(input_error([](Problem&, AttentionInputs&, ReferenceOptions& o) { o.row_block = 0; }),
            "row_block: is 0, but must be at least 1");
}

// A valid cross-attention layer with biases: B = 2, Hq = 8, Hkv = 2, Lq = 4, Lk = 8, Dk = 3, Dv = 5,
// d_model = 6.
struct LayerSetup {
  LayerProblem layer;
  Shapes shapes;
  LayerInputs in;
  LayerSetup() {
    layer.attention = base();
    layer.model_dim = 6;
    layer.self_attention = false;
    layer.has_qkv_bias = layer.has_out_bias = true;
    in.x = shapes.of({1, 2, 4, 6});
    in.x_kv = shapes.of({1, 2, 8, 6});
    in.w_q = shapes.of({1, 8, 6, 3});
    in.w_k = shapes.of({1, 2, 6, 3});
    in.w_v = shapes.of({1, 2, 6, 5});
    in.b_q = shapes.of({1, 1, 8, 3});
    in.b_k = shapes.of({1, 1, 2, 3});
    in.b_v = shapes.of({1, 1, 2, 5});
    in.w_o = shapes.of({1, 1, 40, 6});
    in.b_o = shapes.of({1, 1, 1, 6});
  }
  std::string error() const { return error_of([&] { (void)reference_layer(layer, in); }); }
};

TEST(Validation, LayerErrors) {
  {
    LayerSetup s;
    EXPECT_EQ(s.error(), "(no error)");
    s.layer.model_dim = 0;
    EXPECT_EQ(s.error(), "X: dim 3 (model dim) is 0, but must be at least 1");
  }
  {
    LayerSetup s;
    s.layer.self_attention = true;
    EXPECT_EQ(s.error(), "X_kv: self-attention projects keys from X, so Lk must equal Lq = 4, but Lk = 8");
    s.layer.attention.k_len = 4;
    EXPECT_EQ(s.error(), "X_kv: is given, but the problem is self-attention (keys and values come from X)");
  }
  {
    LayerSetup s;
    s.layer.attention.softcap = -2;  // the attention problem's own check comes first
    EXPECT_EQ(s.error(), "softcap: is -2, but must be finite and >= 0 (0 = off)");
  }
  {
    LayerSetup s;
    s.in.x = {};
    EXPECT_EQ(s.error(), "X: is missing (no data)");
  }
  {
    LayerSetup s;
    s.in.x_kv = s.shapes.of({1, 2, 7, 6});
    EXPECT_EQ(s.error(), "X_kv: dim 2 (key length) is 7, but the layer expects 8 (shape [1, 2, 7, 6] vs [1, 2, 8, 6])");
  }
  {
    LayerSetup s;
    s.in.w_q = s.shapes.of({1, 4, 6, 3});
    EXPECT_EQ(s.error(), "W_Q: dim 1 (query heads) is 4, but the layer expects 8 (shape [1, 4, 6, 3] vs [1, 8, 6, 3])");
  }
  {
    LayerSetup s;
    s.in.w_k = s.shapes.of({1, 2, 5, 3});
    EXPECT_EQ(s.error(), "W_K: dim 2 (model dim) is 5, but the layer expects 6 (shape [1, 2, 5, 3] vs [1, 2, 6, 3])");
  }
  {
    LayerSetup s;
    s.in.w_v = s.shapes.of({1, 2, 6, 3});
    EXPECT_EQ(s.error(), "W_V: dim 3 (value dim) is 3, but the layer expects 5 (shape [1, 2, 6, 3] vs [1, 2, 6, 5])");
  }
  {
    LayerSetup s;
    s.in.b_q = {};
    EXPECT_EQ(s.error(), "b_Q: is missing (no data)");
    s.in.b_q = s.shapes.of({1, 1, 8, 3});
    s.in.b_k = s.shapes.of({1, 1, 1, 3});
    EXPECT_EQ(s.error(), "b_K: dim 2 (kv heads) is 1, but the layer expects 2 (shape [1, 1, 1, 3] vs [1, 1, 2, 3])");
    s.in.b_k = s.shapes.of({1, 1, 2, 3});
    s.in.b_v = s.shapes.of({1, 1, 2, 6});
    EXPECT_EQ(s.error(), "b_V: dim 3 (value dim) is 6, but the layer expects 5 (shape [1, 1, 2, 6] vs [1, 1, 2, 5])");
  }
  {
    LayerSetup s;
    s.layer.has_qkv_bias = false;
    EXPECT_EQ(s.error(), "b_Q: is given, but the problem has no Q/K/V biases");
    s.in.b_q = {};
    EXPECT_EQ(s.error(), "b_K: is given, but the problem has no Q/K/V biases");
    s.in.b_k = {};
    EXPECT_EQ(s.error(), "b_V: is given, but the problem has no Q/K/V biases");
  }
  {
    LayerSetup s;
    s.in.w_o = s.shapes.of({1, 1, 24, 6});
    EXPECT_EQ(s.error(),
              "W_O: dim 2 (heads x value dim) is 24, but the layer expects 40 (shape [1, 1, 24, 6] vs [1, 1, 40, 6])");
    s.in.w_o = s.shapes.of({1, 1, 40, 6});
    s.in.b_o = s.shapes.of({1, 1, 1, 5});
    EXPECT_EQ(s.error(), "b_O: dim 3 (model dim) is 5, but the layer expects 6 (shape [1, 1, 1, 5] vs [1, 1, 1, 6])");
    s.layer.has_out_bias = false;
    EXPECT_EQ(s.error(), "b_O: is given, but the problem has no output bias");
  }
  {
    LayerSetup s;  // the mask and key lengths are checked as the core attention's
    s.layer.attention.mask = MaskKind::Boolean;
    s.in.mask = s.shapes.of({1, 1, 1, 2});
    EXPECT_EQ(s.error(), "mask: dim 3 (key length) is 2, but the problem expects 1 (shape [1, 1, 1, 2] vs [1, 1, 1, 1])");
    s.layer.attention.mask = MaskKind::None;
    s.in.mask = {};
    static const std::vector<std::int64_t> lengths{1, 2};
    s.in.key_lengths = lengths;
    EXPECT_EQ(s.error(), "key_lengths: a key_lengths tensor is given, but the problem does not use key lengths");
  }
  const auto parse_error = [](std::string_view text) { return error_of([&] { (void)parse_layer_problem(text); }); };
  EXPECT_EQ(parse_error("B=1 dmodel=x"), "problem text: dmodel=x is not an integer");
  EXPECT_EQ(parse_error("B=1 dmodel=4 cross=2"), "problem text: cross=2 is not 0 or 1");
  EXPECT_EQ(parse_error("B=1 dmodel=4 qkvbias=yes"), "problem text: qkvbias=yes is not 0 or 1");
  EXPECT_EQ(parse_error("B=1 dmodel=4 outbias="), "problem text: outbias= is not 0 or 1");
  EXPECT_EQ(parse_error("B=1 dmodel=4 Q=1"), "problem text: unknown key 'Q'");
}

// A valid step: base() shapes, P = 5 past tokens, 3 new keys, 4 new queries.
struct DecodeSetup {
  Problem step = base();
  Shapes shapes;
  DecodeInputs in;
  DecodeSetup() {
    step.alignment = Alignment::Offset;
    step.diagonal_offset = 5;
    step.causal = true;
    in.q = shapes.of({2, 8, 4, 3});
    in.past_k = shapes.of({2, 2, 5, 3});
    in.past_v = shapes.of({2, 2, 5, 5});
    in.k_new = shapes.of({2, 2, 3, 3});
    in.v_new = shapes.of({2, 2, 3, 5});
  }
  std::string error() const { return error_of([&] { (void)reference_decode_step(step, in); }); }
};

TEST(Validation, DecodeErrors) {
  {
    DecodeSetup s;
    EXPECT_EQ(s.error(), "(no error)");
    s.step.alignment = Alignment::BottomRight;
    s.step.diagonal_offset = 0;
    EXPECT_EQ(s.error(),
              "alignment: is bottom-right, but a decode step measures its diagonal from the past length (offset, "
              "with diagonal_offset = P)");
  }
  {
    DecodeSetup s;
    s.step.diagonal_offset = 9;  // the Problem's own check
    EXPECT_EQ(s.error(), "diagonal_offset: is 9, but a cache of P past tokens needs 0 <= P <= Lk = 8");
  }
  {
    DecodeSetup s;
    s.in.past_k = {};
    EXPECT_EQ(s.error(), "past_k: is missing (no data), but the step expects shape [2, 2, 5, 3]");
    s.in.past_k = s.shapes.of({2, 2, 4, 3});
    EXPECT_EQ(s.error(), "past_k: dim 2 (length) is 4, but the step expects 5 (shape [2, 2, 4, 3] vs [2, 2, 5, 3])");
  }
  {
    DecodeSetup s;
    s.in.past_v = s.shapes.of({2, 1, 5, 5});
    EXPECT_EQ(s.error(), "past_v: dim 1 (kv heads) is 1, but the step expects 2 (shape [2, 1, 5, 5] vs [2, 2, 5, 5])");
  }
  {
    DecodeSetup s;
    s.in.k_new = s.shapes.of({2, 2, 3, 4});
    EXPECT_EQ(s.error(), "k_new: dim 3 (head dim) is 4, but the step expects 3 (shape [2, 2, 3, 4] vs [2, 2, 3, 3])");
  }
  {
    DecodeSetup s;
    s.in.v_new = s.shapes.of({1, 2, 3, 5});
    EXPECT_EQ(s.error(), "v_new: dim 0 (batch) is 1, but the step expects 2 (shape [1, 2, 3, 5] vs [2, 2, 3, 5])");
  }
  {
    DecodeSetup s;  // P = 0: the past may be absent; P = Lk: nothing new may be absent
    s.step.diagonal_offset = 0;
    s.in.past_k = s.in.past_v = {};
    s.in.k_new = s.shapes.of({2, 2, 8, 3});
    s.in.v_new = s.shapes.of({2, 2, 8, 5});
    EXPECT_EQ(s.error(), "(no error)");
    s.step.diagonal_offset = 8;
    s.in.past_k = s.shapes.of({2, 2, 8, 3});
    s.in.past_v = s.shapes.of({2, 2, 8, 5});
    s.in.k_new = s.in.v_new = {};
    EXPECT_EQ(s.error(), "(no error)");
  }
  {
    DecodeSetup s;
    s.in.q = s.shapes.of({2, 8, 3, 3});
    EXPECT_EQ(s.error(), "Q: dim 2 (query length) is 3, but the problem expects 4 (shape [2, 8, 3, 3] vs [2, 8, 4, 3])");
  }
  Problem model = base();
  EXPECT_EQ(error_of([&] { (void)decode_step_problem(model, -1, 1); }), "past_k: dim 2 (length) is -1, but must be >= 0");
  EXPECT_EQ(error_of([&] { (void)decode_step_problem(model, 3, 0); }),
            "Q: dim 2 (new tokens) is 0, but must be at least 1");
  model.mask = MaskKind::Boolean;
  EXPECT_THAT(error_of([&] { (void)decode_step_problem(model, 3, 1); }),
              HasSubstr("mask: the model problem has a mask, but a step's mask shape depends on the step"));
}

}  // namespace
}  // namespace attncheck
