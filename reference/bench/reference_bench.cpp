// Throughput (GF/s) and peak resident memory of reference_attention on the shapes that bound a
// suite run: B1 H8 D64 at L = 2048 and 8192, and one head of L = 32768, D = 128, where the row
// block must keep the score scratch at O(block × Lk) rather than O(Lq × Lk). The backward pass
// (reference_attention_backward) beside the forward at L = 512 and 2048.
//
// peak_RSS_MiB is the process's high-water mark (getrusage ru_maxrss), so it covers every case run
// before; run one case at a time (--benchmark_filter) for a per-case figure.
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <cstdint>
#include <random>

#include "attncheck/backward.h"
#include "attncheck/reference.h"

namespace attncheck {
namespace {

HostTensor random_tensor(const Shape4& shape, std::uint64_t seed) {
  HostTensor t(shape);
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  for (double& x : t.values) x = normal(rng);
  return t;
}

double peak_rss_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // Linux reports KiB
}

// The problem of a benchmark's args (heads, sequence length Lq = Lk, head dim Dk = Dv, causal)
// and its random Q, K, V.
struct BenchCase {
  Problem problem;
  HostTensor q, k, v;
  AttentionInputs inputs() const { return {q.view(), k.view(), v.view(), {}, {}}; }
};

BenchCase bench_case(const benchmark::State& state) {
  BenchCase c;
  Problem& problem = c.problem;
  problem.q_heads = problem.kv_heads = state.range(0);
  problem.q_len = problem.k_len = state.range(1);
  problem.qk_dim = problem.v_dim = state.range(2);
  problem.causal = state.range(3) != 0;
  c.q = random_tensor({1, problem.q_heads, problem.q_len, problem.qk_dim}, 1);
  c.k = random_tensor({1, problem.kv_heads, problem.k_len, problem.qk_dim}, 2);
  c.v = random_tensor({1, problem.kv_heads, problem.k_len, problem.v_dim}, 3);
  return c;
}

// Args: heads, sequence length (Lq = Lk), head dim (Dk = Dv), causal.
void BM_ReferenceAttention(benchmark::State& state) {
  const BenchCase c = bench_case(state);
  const Problem& problem = c.problem;
  const AttentionInputs inputs = c.inputs();

  for (auto _ : state) {
    AttentionResult result = reference_attention(problem, inputs);
    benchmark::DoNotOptimize(result.out.values.data());
  }
  // Q·Kᵀ and P·V: 2·Lq·Lk·Dk + 2·Lq·Lk·Dv flop per head, counted in full even when causal.
  const double flop = 4.0 * static_cast<double>(problem.batch * problem.q_heads * problem.q_len) *
                      static_cast<double>(problem.k_len * problem.qk_dim);
  state.counters["GF/s"] = benchmark::Counter(flop * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["peak_RSS_MiB"] = peak_rss_mib();
}

// Args as BM_ReferenceAttention: the gradients of Q, K and V for a random dO, the forward done
// once outside the timing.
void BM_ReferenceBackward(benchmark::State& state) {
  const BenchCase c = bench_case(state);
  const Problem& problem = c.problem;
  const HostTensor d_out = random_tensor({1, problem.q_heads, problem.q_len, problem.v_dim}, 4);
  const AttentionInputs inputs = c.inputs();
  const AttentionResult forward = reference_attention(problem, inputs);
  const BackwardInputs backward = backward_inputs(forward, d_out.view());

  for (auto _ : state) {
    AttentionGradients gradients = reference_attention_backward(problem, inputs, backward);
    benchmark::DoNotOptimize(gradients.d_q.values.data());
  }
  // Q·Kᵀ, dO·Vᵀ, dS·K, dSᵀ·Q and Pᵀ·dO: 10·Lq·Lk·D flop per head, counted in full even when causal.
  const double flop = 10.0 * static_cast<double>(problem.batch * problem.q_heads * problem.q_len) *
                      static_cast<double>(problem.k_len * problem.qk_dim);
  state.counters["GF/s"] = benchmark::Counter(flop * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["peak_RSS_MiB"] = peak_rss_mib();
}

BENCHMARK(BM_ReferenceAttention)
    ->ArgNames({"H", "L", "D", "causal"})
    ->Args({8, 512, 64, 0})
    ->Args({8, 2048, 64, 0})
    ->Args({8, 2048, 64, 1})
    ->Args({8, 8192, 64, 0})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_ReferenceAttention)
    ->ArgNames({"H", "L", "D", "causal"})
    ->Args({1, 32768, 128, 0})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->Iterations(1);
BENCHMARK(BM_ReferenceBackward)
    ->ArgNames({"H", "L", "D", "causal"})
    ->Args({8, 512, 64, 0})
    ->Args({8, 2048, 64, 0})
    ->Args({8, 2048, 64, 1})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
}  // namespace attncheck

BENCHMARK_MAIN();
