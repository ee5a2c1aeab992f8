// The candidate profiles of `attncheck characterize`, tightest first (numerics/README.md §2.13).
#include "attncheck/profile_ladder.h"

#include <cmath>

namespace attncheck {

namespace {

// Every rung starts from the declaration's conventions and the strictest stages: what varies
// between rungs is only where the kernel rounds.
NumericsProfile strict_stages(const NumericsProfile& declared) {
  NumericsProfile p = declared;
  p.score = DType::F32;
  p.score_accumulator.reset();
  p.probability = DType::F32;
  p.accumulator = DType::F32;
  p.row_sum_accumulator.reset();
  p.query_rounding.reset();
  p.key_rounding.reset();
  p.value_rounding.reset();
  p.accumulation_rounding = Rounding::Nearest;
  p.products_per_rounding = 1;
  p.keys_per_partial_sum = 0;
  p.kv_splits = 0;
  // A one-pass online softmax over tiles: each tile's rescale adds a rounding (§2.3, R), so an
  // online kernel is never judged as if it were three-pass; 64 keys is the common tile.
  p.softmax_block = 64;
  p.exp_relative_error = std::ldexp(1.0, -22);
  p.tanh_relative_error = 0;
  p.flushes_subnormals = declared.flushes_subnormals;
  return p;
}

}  // namespace

std::vector<ProfileRung> profile_ladder(const NumericsProfile& declared) {
  const NumericsProfile base = strict_stages(declared);
  std::vector<ProfileRung> rungs;
  // 1. fp32 everywhere with a libm-quality exp (2^-22, the model's default for fp32 kernels).
  rungs.push_back({"fp32 scores, P and sums", base});
  // 2. The same with a fast exp: vectorised exp approximations in CPU kernels are accurate to
  //    about 2^-13 relative (PyTorch's reduced-precision path measured exp(0) = 0.99994659).
  {
    NumericsProfile p = base;
    p.exp_relative_error = std::ldexp(1.0, -13);
    rungs.push_back({"fp32 sums, fast exp (u_E = 2^-13)", p});
  }
  // 3. P rounded to fp16 before P·V, fp32 accumulation: tensor-core style kernels.
  {
    NumericsProfile p = rungs.back().profile;
    p.probability = DType::F16;
    rungs.push_back({"fp16 P, fp32 sums", p});
  }
  // 4. P in bf16 (u = 2^-8 against fp16's 2^-11).
  {
    NumericsProfile p = rungs.back().profile;
    p.probability = DType::BF16;
    rungs.push_back({"bf16 P, fp32 sums", p});
  }
  // 5. Q, K, V and P in fp16 and P·V summed in fp16, the row sum in fp32: ggml's F16 K/V path.
  {
    NumericsProfile p = rungs.back().profile;
    p.query_rounding = p.key_rounding = p.value_rounding = DType::F16;
    p.probability = DType::F16;
    p.accumulator = DType::F16;
    p.row_sum_accumulator = DType::F32;
    rungs.push_back({"fp16 operands, fp16 P·V sums, fp32 row sum", p});
  }
  // 6. Everything in fp16 (scores too).
  {
    NumericsProfile p = rungs.back().profile;
    p.score = DType::F16;
    p.accumulator = DType::F16;
    p.row_sum_accumulator = DType::F16;
    rungs.push_back({"fp16 scores, P and sums", p});
  }
  // 7. Everything in bf16: the loosest stage this ladder names.
  {
    NumericsProfile p = rungs.back().profile;
    p.query_rounding = p.key_rounding = p.value_rounding = DType::BF16;
    p.score = p.probability = p.accumulator = DType::BF16;
    p.row_sum_accumulator = DType::BF16;
    rungs.push_back({"bf16 scores, P and sums", p});
  }
  return rungs;
}

}  // namespace attncheck
