// Random attention problems over every Problem option, with their inputs, for the tests that hold
// the reference against the plain loops. Deterministic: everything comes from the caller's
// std::mt19937_64.
#pragma once

#include <random>
#include <string>
#include <vector>

#include "plain_attention.h"

namespace attncheck::testing {

struct RandomCase {
  Problem problem;
  ReferenceOptions options;
  HostTensor q, k, v, mask;  // logical, compact
  std::vector<std::int64_t> key_lengths;
  StridedCopy q_laid, k_laid, v_laid, mask_laid;  // the layouts the reference is given
  std::string layout;                             // e.g. "q:BLHD k:gap2", for failure messages

  AttentionInputs inputs() const {
    return {q_laid.view, k_laid.view, v_laid.view, problem.mask == MaskKind::None ? View4<const double>{} : mask_laid.view,
            key_lengths};
  }
};

/// The ranges make_random_case draws sizes from. The defaults are the reference tests' problems;
/// narrower ones give smaller problems over the same options (the finite-difference tests,
/// which run the forward twice per input element).
struct RandomCaseSizes {
  std::int64_t max_batch = 3;
  std::int64_t max_kv_heads = 3;
  std::int64_t max_group = 3;  ///< Hq / Hkv
  std::int64_t max_short_len = 9;  ///< Lq and Lk: most draws are in [1, max_short_len] …
  std::int64_t min_long_len = 20;  ///< … one in five in [min_long_len, max_long_len]
  std::int64_t max_long_len = 40;
  std::int64_t max_dim = 9;  ///< Dk and Dv
  double large_q = 0.25;     ///< the probability of Q ten times larger (logits to about ±30)
};

RandomCase make_random_case(std::mt19937_64& rng, const RandomCaseSizes& sizes = {});

/// Random inputs for a given problem, drawn as make_random_case draws them (key lengths, mask
/// values, layouts); options at their defaults but one thread. `large_q`: as RandomCaseSizes.
RandomCase make_random_inputs(const Problem& problem, std::mt19937_64& rng, double large_q = 0.25);

/// `t` in one of four layouts drawn at random: [B, H, L, D], [B, L, H, D], either with a NaN gap
/// after every element. Appends e.g. "q:BLHD " to `layout`.
StridedCopy lay_out_randomly(const HostTensor& t, std::mt19937_64& rng, std::string_view name, std::string& layout);

}  // namespace attncheck::testing
