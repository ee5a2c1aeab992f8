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

RandomCase make_random_case(std::mt19937_64& rng);

}  // namespace attncheck::testing
