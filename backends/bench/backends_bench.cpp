// GF/s of cpu-flash (D = 64 and 128, L = 512 … 8192, f32/f16/bf16) and of cpu-naive for
// comparison (small L only). flop = 4·B·Hq·Lq·Lk·D: Q·Kᵀ and P·V, two flops per multiply-add;
// the softmax is not counted, so GF/s compares with an SGEMM roof.
//
// The backward pass (cpu-flash and cpu-naive, "backward/…"): flop = 10·B·Hq·Lq·Lk·D, its five
// products (S = Q·Kᵀ recomputed, dP = dO·Vᵀ, dV = Pᵀ·dO, dQ = dS·K, dK = dSᵀ·Q), so its time over
// the forward's at the same size is the ratio FlashAttention-2 reports (2.5 for equal GF/s).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "attncheck/backend_handle.h"
#include "attncheck/dtype.h"
#include "flash_kernel.h"

namespace {

using namespace attncheck;

/// Compact [B, H, L, D] storage of one dtype with its DLTensor.
struct Buffer {
  std::vector<std::uint8_t> bytes;
  std::vector<std::int64_t> shape;
  DLTensor t{};
  Buffer(std::vector<std::int64_t> s, DType dtype, std::uint64_t seed) : shape(std::move(s)) {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    bytes.resize(static_cast<std::size_t>(n * dtype_bytes(dtype)));
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    for (std::int64_t i = 0; i < n; ++i) {
      const double x = normal(rng);
      if (dtype == DType::F32) {
        const float f = static_cast<float>(x);
        std::memcpy(&bytes[i * 4], &f, 4);
      } else {
        const std::uint16_t b = dtype == DType::F16 ? to_f16_bits(x) : to_bf16_bits(x);
        std::memcpy(&bytes[i * 2], &b, 2);
      }
    }
    t.data = bytes.data();
    t.device = {kDLCPU, 0};
    t.ndim = static_cast<std::int32_t>(shape.size());
    t.dtype = to_dlpack(dtype);
    t.shape = shape.data();
  }
};

// cpu-flash runs on ATTNCHECK_BENCH_THREADS threads (default 2, the size the performance target
// is stated for); cpu-naive is single-threaded by design.
Backend open(const std::string& name) {
  if (name != "cpu-flash") return open_backend(name);
  const char* env = std::getenv("ATTNCHECK_BENCH_THREADS");
  const int threads = env != nullptr ? std::atoi(env) : 2;
  return Backend(cpu_flash::make_cpu_flash(threads, nullptr), "cpu-flash@" + std::to_string(threads) + "threads");
}

void run(benchmark::State& state, const std::string& backend_name, DType dtype) {
  const std::int64_t L = state.range(0), D = state.range(1), H = 8;
  Backend backend = open(backend_name);
  Problem p;
  p.batch = 1, p.q_heads = H, p.kv_heads = H, p.q_len = L, p.k_len = L, p.qk_dim = D, p.v_dim = D;
  if (auto why = backend.unsupported_reason(p, dtype, kDLCPU)) {
    state.SkipWithError(why->c_str());
    return;
  }
  Buffer q({1, H, L, D}, dtype, 1), k({1, H, L, D}, dtype, 2), v({1, H, L, D}, dtype, 3), out({1, H, L, D}, dtype, 4);
  attncheck_attention_tensors t{sizeof(attncheck_attention_tensors), nullptr, &q.t, &k.t, &v.t, nullptr, nullptr, &out.t, nullptr};
  for (auto _ : state) {
    backend.forward(p, t);
    benchmark::DoNotOptimize(out.bytes.data());
  }
  const double flop = 4.0 * H * L * L * D;
  state.counters["GF/s"] = benchmark::Counter(flop * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// The backward's inputs as a training step has them: O and lse from the backend's own forward,
// dO ~ N(0, 1) in the input dtype; dlse and the mask are absent.
void run_backward(benchmark::State& state, const std::string& backend_name, DType dtype) {
  const std::int64_t L = state.range(0), D = state.range(1), H = 8;
  Backend backend = open(backend_name);
  Problem p;
  p.batch = 1, p.q_heads = H, p.kv_heads = H, p.q_len = L, p.k_len = L, p.qk_dim = D, p.v_dim = D;
  if (auto why = backend.unsupported_reason(p, dtype, kDLCPU)) {
    state.SkipWithError(why->c_str());
    return;
  }
  if (!backend.backward_profile(p, dtype)) {
    state.SkipWithError("no backward pass for this problem");
    return;
  }
  Buffer q({1, H, L, D}, dtype, 1), k({1, H, L, D}, dtype, 2), v({1, H, L, D}, dtype, 3), out({1, H, L, D}, dtype, 4);
  Buffer lse({1, H, L}, DType::F32, 5), dout({1, H, L, D}, dtype, 6);
  Buffer dq({1, H, L, D}, dtype, 7), dk({1, H, L, D}, dtype, 8), dv({1, H, L, D}, dtype, 9);
  attncheck_attention_tensors f{sizeof(attncheck_attention_tensors), nullptr, &q.t, &k.t, &v.t, nullptr, nullptr, &out.t, &lse.t};
  backend.forward(p, f);
  attncheck_backward_tensors t{};
  t.struct_size = sizeof t;
  t.q = &q.t, t.k = &k.t, t.v = &v.t, t.out = &out.t, t.lse = &lse.t, t.dout = &dout.t;
  t.dq = &dq.t, t.dk = &dk.t, t.dv = &dv.t;
  for (auto _ : state) {
    backend.backward(p, t);
    benchmark::DoNotOptimize(dq.bytes.data());
  }
  const double flop = 10.0 * H * L * L * D;
  state.counters["GF/s"] = benchmark::Counter(flop * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void backward_sizes(benchmark::internal::Benchmark* b) {
  for (std::int64_t l : {512, 2048}) b->Args({l, 64});
  b->ArgNames({"L", "D"})->Unit(benchmark::kMillisecond)->UseRealTime();
}

void flash_sizes(benchmark::internal::Benchmark* b) {
  for (std::int64_t d : {64, 128})
    for (std::int64_t l = 512; l <= 8192; l *= 2) b->Args({l, d});
  b->ArgNames({"L", "D"})->Unit(benchmark::kMillisecond)->UseRealTime();
}

void naive_sizes(benchmark::internal::Benchmark* b) {
  for (std::int64_t l : {256, 512}) b->Args({l, 64});
  b->ArgNames({"L", "D"})->Unit(benchmark::kMillisecond)->UseRealTime();
}

BENCHMARK_CAPTURE(run, cpu-flash/f32, std::string("cpu-flash"), DType::F32)->Apply(flash_sizes);
BENCHMARK_CAPTURE(run, cpu-flash/f16, std::string("cpu-flash"), DType::F16)->Apply(flash_sizes);
BENCHMARK_CAPTURE(run, cpu-flash/bf16, std::string("cpu-flash"), DType::BF16)->Apply(flash_sizes);
BENCHMARK_CAPTURE(run, cpu-naive/f32, std::string("cpu-naive"), DType::F32)->Apply(naive_sizes);
BENCHMARK_CAPTURE(run_backward, backward/cpu-flash/f32, std::string("cpu-flash"), DType::F32)->Apply(backward_sizes);
BENCHMARK_CAPTURE(run_backward, backward/cpu-flash/bf16, std::string("cpu-flash"), DType::BF16)->Apply(backward_sizes);
BENCHMARK_CAPTURE(run_backward, backward/cpu-naive/f32, std::string("cpu-naive"), DType::F32)->Apply(naive_sizes);

}  // namespace

BENCHMARK_MAIN();
