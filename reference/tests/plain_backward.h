// An independent statement of the backward pass for the tests: the gradients of scaled
// dot-product attention as plain loops per query row and key, written from the chain rule
// (backward.cpp's equations (1)–(13)) and problem.h's rules alone. No Eigen, no blocking, no
// threads, libm's exp and tanh, every key of every row tested against every rule
// (plain_key_allowed), and dK, dV and dBias accumulated element by element in loop order.
#pragma once

#include "attncheck/backward.h"
#include "plain_attention.h"

namespace attncheck::testing {

struct PlainGradients {
  HostTensor d_q, d_k, d_v;
  HostTensor d_bias;  // [Bm, Hm, Lqm, Lkm] with an additive mask, else empty
  // The magnitudes the agreement bound is relative to (backward_test.cpp derives it), one per
  // element of the gradient of the same name: each is the gradient's own sum with every term
  // replaced by an upper bound of its size and its rounding.
  HostTensor d_q_scale, d_k_scale, d_v_scale, d_bias_scale;
};

/// The gradients of f = ⟨dO, O⟩ + ⟨dLSE, LSE⟩ at the given O and LSE, by plain loops.
PlainGradients plain_attention_backward(const Problem& p, const AttentionInputs& in, const BackwardInputs& bw);

}  // namespace attncheck::testing
