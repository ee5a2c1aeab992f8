// gradient_table: the bound ratios of healthy and defective emulated backward kernels
// (numerics/README.md §10.3): each cell is the max of |actual − reference| / τ over dQ, dK and dV
// and a few seeds; a defect is caught when it exceeds 1.
// Usage: gradient_table [seeds=2]
#include <cstdlib>
#include <fmt/format.h>
#include <string>
#include <vector>

#include "backward_sim.h"

using namespace attncheck;
using namespace attncheck::backward_sim;

int main(int argc, char** argv) {
  const int seeds = argc > 1 ? std::atoi(argv[1]) : 2;
  struct Row {
    const char* name;
    KernelSpec spec;
    std::int64_t q_heads, kv_heads;
    bool causal;
    double softcap;
  };
  const auto spec = [](DType in, DType p, DType ds, DType grad) {
    KernelSpec k;
    k.input = in;
    k.probability = p;
    k.ds = ds;
    k.gradient = grad;
    k.narrow = in == DType::F32 ? DType::BF16 : in;
    return k;
  };
  const std::vector<Row> rows = {
      {"f32", spec(DType::F32, DType::F32, DType::F32, DType::F32), 1, 1, false, 0},
      {"f32 GQA 4:1 causal softcap 20", spec(DType::F32, DType::F32, DType::F32, DType::F32), 4, 1, true, 20},
      {"f16 (P, dS f16; grads f32)", spec(DType::F16, DType::F16, DType::F16, DType::F32), 1, 1, false, 0},
      {"bf16 (P, dS bf16; grads f32)", spec(DType::BF16, DType::BF16, DType::BF16, DType::F32), 1, 1, false, 0},
      {"bf16 (P, dS bf16; grads bf16)", spec(DType::BF16, DType::BF16, DType::BF16, DType::BF16), 1, 1, false, 0},
      {"bf16 GQA 4:1 causal (grads bf16)", spec(DType::BF16, DType::BF16, DType::BF16, DType::BF16), 4, 1, true, 0},
  };
  const Defect defects[] = {Defect::None, Defect::NoDTerm, Defect::KvAccNarrow, Defect::DsStoredNarrow,
                            Defect::ScaleOffInDk, Defect::DroppedKeyInDv};
  fmt::print("d=64 seeds={}; cell = max r over dQ, dK, dV (defects: narrow = bf16, or the input dtype)\n\n", seeds);
  fmt::print("| kernel | n |");
  for (Defect d : defects) fmt::print(" {} |", defect_name(d));
  fmt::print("\n|---|---|");
  for (size_t i = 0; i < std::size(defects); ++i) fmt::print("---|");
  fmt::print("\n");
  for (const Row& row : rows)
    for (std::int64_t n : {64, 512, 2048}) {
      fmt::print("| {} | {} |", row.name, n);
      for (Defect d : defects) {
        double worst = 0;
        for (int seed = 1; seed <= seeds; ++seed) {
          const Case c = make_case(row.spec.input, n, 64, 1000 * static_cast<std::uint64_t>(seed) + static_cast<std::uint64_t>(n),
                                   row.q_heads, row.kv_heads, row.causal, row.softcap);
          KernelSpec k = row.spec;
          k.defect = d;
          worst = std::max(worst, judge(k, c).max_ratio);
        }
        fmt::print(" {:.3g} |", worst);
      }
      fmt::print("\n");
      std::fflush(stdout);
    }
}
