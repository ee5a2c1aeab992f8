// GF/s of cpu-flash (D = 64 and 128, L = 512 … 8192, f32/f16/bf16) and of cpu-naive for
// comparison (small L only). flop = 4·B·Hq·Lq·Lk·D: Q·Kᵀ and P·V, two flops per multiply-add;
// the softmax is not counted, so GF/s compares with an SGEMM roof.
//
// The backward pass (cpu-flash and cpu-naive, "backward/…"): flop = 10·B·Hq·Lq·Lk·D, its five
// products (S = Q·Kᵀ recomputed, dP = dO·Vᵀ, dV = Pᵀ·dO, dQ = dS·K, dK = dSᵀ·Q), so its time over
// the forward's at the same size is the ratio FlashAttention-2 reports (2.5 for equal GF/s).
//
// Decoding from a paged cache ("decode/…", ABI 2.4): one query per sequence, B = 16, Hq = 32,
// Hkv = 8, Lk = 4096, D = 128, bf16, every sequence full; "contiguous" hands K and V as
// [B, Hkv, Lk, D], "paged" as a pool of pages of 16 tokens [pages, 16, Hkv, D] in a shuffled order
// with a block table. The same keys, the same kernel: the target is paged within 1.2× of
// contiguous, measured in one run (--benchmark_filter=decode).
//
// Prefill of a packed batch ("varlen/…", ABI 2.5): eight sequences of 1024, 64, 512, 1, 256, 768,
// 128 and 2048 tokens (4801 in all), Hq = 16, Hkv = 4, D = 128, bf16, causal per sequence;
// "packed" hands them as [4801, H, D] with cu_seqlens, "padded" as [8, H, 2048, D] with key lengths
// and the queries on the last rows (the same diagonals). GF/s counts the useful work of both,
// Σ_b 2·Hq·L_b²·D (causal: half of 4·Hq·L_b²·D), so the ratio is what packing saves.
#include <algorithm>
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

void run_decode(benchmark::State& state, bool paged) {
  constexpr std::int64_t B = 16, Hq = 32, Hkv = 8, Lk = 4096, D = 128, page = 16;
  constexpr DType dtype = DType::BF16;
  Backend backend = open("cpu-flash");
  Problem p = Problem::of_shape(B, Hq, Hkv, 1, Lk, D, D);
  p.has_key_lengths = true;
  p.causal = true;
  p.alignment = Alignment::KeyLengths;  // the query is the sequence's last token
  if (paged) {
    p.kv_storage = KvStorage::PagedTokenMajor;
    p.page_size = page;
  }
  if (auto why = backend.unsupported_reason(p, dtype, kDLCPU)) {
    state.SkipWithError(why->c_str());
    return;
  }
  const std::int64_t pages = B * Lk / page;
  const std::vector<std::int64_t> kv_shape = paged ? std::vector<std::int64_t>{pages, page, Hkv, D}
                                                   : std::vector<std::int64_t>{B, Hkv, Lk, D};
  Buffer q({B, Hq, 1, D}, dtype, 1), k(kv_shape, dtype, 2), v(kv_shape, dtype, 3), out({B, Hq, 1, D}, dtype, 4);
  Buffer lengths({B}, DType::F32, 5), table({B, Lk / page}, DType::F32, 6);
  lengths.t.dtype = {kDLInt, 64, 1};
  lengths.bytes.assign(static_cast<std::size_t>(B * 8), 0);
  for (std::int64_t b = 0; b < B; ++b) std::memcpy(&lengths.bytes[static_cast<std::size_t>(b * 8)], &Lk, 8);
  lengths.t.data = lengths.bytes.data();
  // A shuffled pool: consecutive slots of a sequence are pages scattered over the whole pool.
  std::vector<std::int32_t> order(static_cast<std::size_t>(pages));
  for (std::int64_t i = 0; i < pages; ++i) order[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(i);
  std::shuffle(order.begin(), order.end(), std::mt19937_64(7));
  table.t.dtype = {kDLInt, 32, 1};
  table.bytes.assign(order.size() * 4, 0);
  std::memcpy(table.bytes.data(), order.data(), order.size() * 4);
  table.t.data = table.bytes.data();
  attncheck_attention_tensors t{};
  t.struct_size = sizeof t;
  t.q = &q.t, t.k = &k.t, t.v = &v.t, t.key_lengths = &lengths.t, t.out = &out.t;
  if (paged) t.block_table = &table.t;
  backend.forward(p, t);  // a decode loop reuses cpu-flash's packed K/V buffers: grow them before timing
  for (auto _ : state) {
    backend.forward(p, t);
    benchmark::DoNotOptimize(out.bytes.data());
  }
  // Decoding is bound by reading K and V once: report that bandwidth.
  const double kv_bytes = 2.0 * B * Hkv * Lk * D * dtype_bytes(dtype);
  state.counters["KV GB/s"] = benchmark::Counter(kv_bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void run_varlen(benchmark::State& state, bool packed) {
  const std::vector<std::int64_t> lengths = {1024, 64, 512, 1, 256, 768, 128, 2048};
  constexpr std::int64_t Hq = 16, Hkv = 4, D = 128, L = 2048;
  constexpr DType dtype = DType::BF16;
  const auto B = static_cast<std::int64_t>(lengths.size());
  std::int64_t tokens = 0;
  double useful = 0;
  for (std::int64_t n : lengths) {
    tokens += n;
    useful += 2.0 * Hq * static_cast<double>(n) * static_cast<double>(n) * D;
  }
  Backend backend = open("cpu-flash");
  Problem p = Problem::of_shape(B, Hq, Hkv, L, L, D, D);
  p.has_key_lengths = true;
  p.causal = true;
  p.alignment = packed ? Alignment::BottomRight : Alignment::KeyLengths;
  p.varlen = packed;
  if (auto why = backend.unsupported_reason(p, dtype, kDLCPU)) {
    state.SkipWithError(why->c_str());
    return;
  }
  const std::vector<std::int64_t> q_shape = packed ? std::vector<std::int64_t>{tokens, Hq, D} : std::vector<std::int64_t>{B, Hq, L, D};
  const std::vector<std::int64_t> kv_shape = packed ? std::vector<std::int64_t>{tokens, Hkv, D} : std::vector<std::int64_t>{B, Hkv, L, D};
  Buffer q(q_shape, dtype, 1), k(kv_shape, dtype, 2), v(kv_shape, dtype, 3), out(q_shape, dtype, 4);
  Buffer key_lengths({B}, DType::F32, 5), cu({B + 1}, DType::F32, 6);
  key_lengths.t.dtype = {kDLInt, 64, 1};
  key_lengths.bytes.assign(static_cast<std::size_t>(B * 8), 0);
  std::memcpy(key_lengths.bytes.data(), lengths.data(), static_cast<std::size_t>(B * 8));
  key_lengths.t.data = key_lengths.bytes.data();
  std::vector<std::int32_t> offsets(static_cast<std::size_t>(B + 1), 0);
  for (std::int64_t b = 0; b < B; ++b)
    offsets[static_cast<std::size_t>(b + 1)] = offsets[static_cast<std::size_t>(b)] + static_cast<std::int32_t>(lengths[static_cast<std::size_t>(b)]);
  cu.t.dtype = {kDLInt, 32, 1};
  cu.bytes.assign(offsets.size() * 4, 0);
  std::memcpy(cu.bytes.data(), offsets.data(), offsets.size() * 4);
  cu.t.data = cu.bytes.data();
  attncheck_attention_tensors t{};
  t.struct_size = sizeof t;
  t.q = &q.t, t.k = &k.t, t.v = &v.t, t.out = &out.t;
  if (packed) t.cu_seqlens_q = t.cu_seqlens_k = &cu.t;  // prefill: as many keys as queries
  else t.key_lengths = &key_lengths.t;
  backend.forward(p, t);  // grow cpu-flash's packed K/V buffers before timing
  for (auto _ : state) {
    backend.forward(p, t);
    benchmark::DoNotOptimize(out.bytes.data());
  }
  state.counters["useful GF/s"] = benchmark::Counter(useful * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
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

BENCHMARK_CAPTURE(run_decode, decode/cpu-flash/contiguous, false)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(run_decode, decode/cpu-flash/paged, true)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(run_varlen, varlen/cpu-flash/padded, false)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(run_varlen, varlen/cpu-flash/packed, true)->Unit(benchmark::kMillisecond)->UseRealTime();

BENCHMARK_MAIN();
