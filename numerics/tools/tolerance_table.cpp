// tolerance_table: the bound ratios of healthy and defective emulated kernels (numerics/README.md
// §5.2) for fp32 / fp16 / bf16 at n = 512, 4096, 8192. Each cell is "max r / aggregate ratio" over
// the rows of a few seeds; a defect is caught when either exceeds 1.
// Usage: tolerance_table [rows=64] [seeds=2]
#include <cstdio>
#include <cstdlib>
#include <fmt/format.h>
#include <string>
#include <vector>

#include "sim_kernels.h"

using namespace attncheck;
using namespace attncheck::sim;

namespace {

// The healthy kernel of each input dtype: fp32 three-pass; fp16/bf16 flash-like (online softmax
// with 128-key blocks, P re-rounded to the input dtype, fp32 accumulation, output in the input).
KernelSpec healthy(DType in) {
  KernelSpec k;
  k.input = in;
  if (in != DType::F32) {
    k.probability = in;
    k.output = in;
    k.block = 128;
  }
  k.narrow = in == DType::F32 ? DType::F16 : in;
  return k;
}

}  // namespace

int main(int argc, char** argv) {
  const std::int64_t rows = argc > 1 ? std::atoll(argv[1]) : 64;
  const int seeds = argc > 2 ? std::atoi(argv[2]) : 2;
  const Defect defects[] = {Defect::None, Defect::PvAccumulatedNarrow, Defect::QkAccumulatedNarrow,
                            Defect::DroppedKey, Defect::LogitsStoredNarrow, Defect::ScaleOff};
  fmt::print("rows={} seeds={} d=128; cell = max r / aggregate ratio; logit std 1 "
             "(4 for logits-narrow)\n",
             rows, seeds);
  fmt::print("| kernel | n |");
  for (Defect d : defects) fmt::print(" {} |", defect_name(d));
  fmt::print("\n|---|---|");
  for (std::size_t x = 0; x < std::size(defects); ++x) fmt::print("---|");
  fmt::print("\n");
  for (DType in : {DType::F32, DType::F16, DType::BF16}) {
    for (std::int64_t n : {512, 4096, 8192}) {
      const std::int64_t d = 128;
      fmt::print("| {} | {} |", in == DType::F32 ? "f32 3-pass" : fmt::format("{} flash", dtype_name(in)), n);
      for (Defect defect : defects) {
        const double logit_std = defect == Defect::LogitsStoredNarrow ? 4.0 : 1.0;
        double worst = 0, worst_agg = 0;
        for (int seed = 1; seed <= seeds; ++seed) {
          const Case c = make_case(in, n, d, rows, static_cast<std::uint64_t>(seed) * 1000 + static_cast<std::uint64_t>(n), logit_std);
          const AttentionResult ref = reference_of(c);
          KernelSpec k = healthy(in);
          k.defect = defect;
          const Verdict v = judge(k, c, ref);
          worst = std::max(worst, v.max_ratio);
          worst_agg = std::max(worst_agg, v.aggregate_ratio);
        }
        fmt::print(" {:.3g} / {:.3g} |", worst, worst_agg);
        std::fflush(stdout);
      }
      fmt::print("\n");
    }
  }
  return 0;
}
