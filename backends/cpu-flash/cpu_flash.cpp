/// \file cpu_flash.cpp
/// \brief cpu-flash: FlashAttention-2-style attention on the CPU. Online softmax over key tiles of
/// 64 with a running max and a rescaled fp32 accumulator, query tiles of 96 rows, threads over
/// (batch, head, query tile), AVX-512 / AVX2 / portable kernels picked at run time. Inputs f32,
/// f16 or bf16 (tiles converted to fp32 as they are packed), output in the input dtype with
/// round-to-nearest, LSE in fp32. See flash_tile.inl for the kernel itself.
///
/// The backward pass (ABI 2.2) is FlashAttention-2's: P recomputed from the saved lse, tiles of 64
/// query rows × 64 keys, threads over (batch, kv head), dK and dV of a key tile summed in fp32
/// over its group's query heads and query tiles, dQ summed in an fp32 scratch one key tile at a
/// time; see flash_backward.inl.
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "attncheck/backend_impl.h"
#include "flash_kernel.h"

namespace attncheck::cpu_flash {

namespace {
std::int64_t round64(std::int64_t floats) { return (floats + 15) / 16 * 16; }  // 16 floats = 64 bytes

/// Hands out consecutive pieces of one workspace, each rounded up to 64 bytes (round64) so that
/// every piece starts as aligned as the first. The *_workspace_floats formulas add up the same
/// rounded pieces.
struct WorkspaceCarver {
  float* next;
  float* take(std::int64_t floats) {
    float* const at = next;
    next += round64(floats);
    return at;
  }
};
}  // namespace

std::int64_t workspace_floats(std::int64_t qk_dim, std::int64_t dv_pad) {
  return round64(kBlockRows * qk_dim) + 2 * round64(kBlockRows * kBlockKeys) + round64(kBlockRows * dv_pad) +
         3 * round64(kBlockRows);
}

Workspace carve_workspace(float* base, std::int64_t qk_dim, std::int64_t dv_pad) {
  Workspace ws{};
  WorkspaceCarver carve{base};
  ws.q = carve.take(kBlockRows * qk_dim);
  ws.s = carve.take(kBlockRows * kBlockKeys);
  ws.bias = carve.take(kBlockRows * kBlockKeys);
  ws.o = carve.take(kBlockRows * dv_pad);
  ws.m = carve.take(kBlockRows);
  ws.l = carve.take(kBlockRows);
  ws.alpha = carve.take(kBlockRows);
  return ws;
}

std::int64_t backward_workspace_floats(std::int64_t qk_dim, std::int64_t dk_pad, std::int64_t v_dim, std::int64_t dv_pad) {
  return round64(qk_dim * kBlockKeys) + 2 * round64(kBlockKeys * dk_pad) + round64(v_dim * kBlockKeys) +
         round64(kBlockKeys * dv_pad) + 4 * round64(kBackwardRows * kBlockKeys) + round64(dk_pad);
}

BackwardWorkspace carve_backward_workspace(float* base, std::int64_t qk_dim, std::int64_t dk_pad, std::int64_t v_dim,
                                           std::int64_t dv_pad) {
  BackwardWorkspace ws{};
  WorkspaceCarver carve{base};
  ws.kt = carve.take(qk_dim * kBlockKeys);
  ws.kr = carve.take(kBlockKeys * dk_pad);
  ws.vt = carve.take(v_dim * kBlockKeys);
  ws.dk_sum = carve.take(kBlockKeys * dk_pad);
  ws.dv_sum = carve.take(kBlockKeys * dv_pad);
  ws.p = carve.take(kBackwardRows * kBlockKeys);
  ws.ds = carve.take(kBackwardRows * kBlockKeys);
  ws.tanh = carve.take(kBackwardRows * kBlockKeys);
  ws.bias = carve.take(kBackwardRows * kBlockKeys);
  ws.dq_row = carve.take(dk_pad);
  return ws;
}

namespace {

using TileFn = void (*)(const FlashParams&, std::int64_t, std::int64_t, std::int64_t, const Workspace&);
using PackFn = void (*)(const FlashParams&, std::int64_t, std::int64_t, std::int64_t, std::int64_t, float*, float*, unsigned char*);

using BackwardRowsFn = void (*)(const BackwardParams&, std::int64_t, std::int64_t);
using BackwardKeysFn = void (*)(const BackwardParams&, std::int64_t, std::int64_t, const BackwardWorkspace&);
using BackwardDbiasFn = void (*)(const BackwardParams&, std::int64_t);

struct Kernels {
  TileFn tile;
  PackFn pack;
  BackwardRowsFn backward_rows;
  BackwardKeysFn backward_keys;
  BackwardDbiasFn backward_dbias;
  const char* isa;
};

// F16C from cpuid: clang 14's __builtin_cpu_supports does not know the "f16c" feature string.
bool has_f16c() {
#if defined(__x86_64__) || defined(__i386__)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C) != 0;
#else
  return false;
#endif
}

bool has_avx512() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma") && has_f16c();
#else
  return false;
#endif
}

bool has_avx2() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c();
#else
  return false;
#endif
}

/// The kernels of `isa`, or the widest this CPU runs when `isa` is empty. x86 only: elsewhere the
/// portable ones.
Kernels pick_kernels(std::string_view isa) {
  if ((isa.empty() && has_avx512()) || isa == "avx512")
    return {&flash_tile_avx512, &pack_kv_avx512, &backward_rows_avx512, &backward_keys_avx512, &backward_dbias_avx512, "avx512"};
  if ((isa.empty() && has_avx2()) || isa == "avx2")
    return {&flash_tile_avx2, &pack_kv_avx2, &backward_rows_avx2, &backward_keys_avx2, &backward_dbias_avx2, "avx2"};
  return {&flash_tile_generic, &pack_kv_generic, &backward_rows_generic, &backward_keys_generic, &backward_dbias_generic,
          "generic"};
}

/// A fixed set of workers for fork-join loops; the calling thread works too. Owned by one
/// backend instance (no global pool), and used by one call at a time (backend.h's threading rule).
class ThreadPool {
 public:
  explicit ThreadPool(int threads) {
    for (int w = 1; w < threads; ++w)
      workers_.emplace_back([this, w](std::stop_token stop) { work(stop, w); });
  }
  ~ThreadPool() {
    for (auto& t : workers_) t.request_stop();
    wake_.notify_all();
  }
  int size() const { return static_cast<int>(workers_.size()) + 1; }

  /// Calls task(worker, item) for item in [0, items), spread over the threads; rethrows the first
  /// exception a task threw once every thread is done.
  void run(std::int64_t items, const std::function<void(int, std::int64_t)>& task) {
    {
      std::lock_guard lock(mutex_);
      task_ = &task;
      items_ = items;
      next_.store(0);
      busy_ = static_cast<int>(workers_.size());
      error_ = nullptr;
      ++generation_;
    }
    wake_.notify_all();
    drain(0);
    std::unique_lock lock(mutex_);
    done_.wait(lock, [&] { return busy_ == 0; });
    task_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void drain(int worker) {
    try {
      for (std::int64_t i = next_.fetch_add(1); i < items_; i = next_.fetch_add(1)) (*task_)(worker, i);
    } catch (...) {
      std::lock_guard lock(mutex_);
      if (!error_) error_ = std::current_exception();
      next_.store(items_);  // the others stop taking items
    }
  }

  void work(std::stop_token stop, int worker) {
    std::uint64_t seen = 0;
    while (true) {
      {
        std::unique_lock lock(mutex_);
        if (!wake_.wait(lock, stop, [&] { return generation_ != seen; })) return;
        seen = generation_;
      }
      drain(worker);
      std::lock_guard lock(mutex_);
      if (--busy_ == 0) done_.notify_one();
    }
  }

  std::mutex mutex_;
  std::condition_variable_any wake_;
  std::condition_variable done_;
  const std::function<void(int, std::int64_t)>* task_ = nullptr;
  std::int64_t items_ = 0;
  std::atomic<std::int64_t> next_{0};
  int busy_ = 0;
  std::uint64_t generation_ = 0;
  std::exception_ptr error_;
  std::vector<std::jthread> workers_;  // last: joined before the state above is destroyed
};

struct AlignedFree {
  void operator()(float* p) const { std::free(p); }
};

Elem elem_of(DLDataType d) {
  if (impl::same_dtype(d, impl::kF16)) return Elem::F16;
  if (impl::same_dtype(d, impl::kBF16)) return Elem::BF16;
  if (impl::same_dtype(d, impl::kU8)) return Elem::U8;
  return Elem::F32;
}

Strided strided(const impl::TensorArg& t) {
  Strided s;
  s.data = t.data;
  s.type = elem_of(t.dtype);
  for (int d = 0; d < 4; ++d) s.stride[d] = d < t.ndim ? t.strides[d] : 0;
  return s;
}

bool is_input_dtype(DLDataType d) {
  return impl::same_dtype(d, impl::kF32) || impl::same_dtype(d, impl::kF16) || impl::same_dtype(d, impl::kBF16);
}

class CpuFlash final : public impl::BackendImpl {
 public:
  CpuFlash(int threads, std::string_view isa) : pool_(threads), kernels_(pick_kernels(isa)) {}

  attncheck_numerics_profile profile(DLDataType input) const override {
    if (!is_input_dtype(input) && !impl::is_fp8(input))
      impl::unsupported("cpu-flash takes float32, float16, bfloat16 or fp8 inputs, not " + impl::dtype_string(input));
    attncheck_numerics_profile p{};
    p.input_dtype = input;
    p.score_dtype = impl::kF32;        // Q·Kᵀ accumulated in fp32 (f16/bf16 products are exact there)
    p.probability_dtype = impl::kF32;  // P stays fp32 for P·V
    p.accumulator_dtype = impl::kF32;
    // O rounded once, to nearest, into the input dtype; fp8 inputs are dequantized into float32
    // (code · descale, one rounding each) and run as float32, O written in float32.
    p.output_dtype = impl::is_fp8(input) ? impl::kF32 : input;
    p.accumulation_rounding = kAttncheckRoundNearest;
    p.products_per_rounding = 1;       // FMA chains: every product is added with one rounding
    p.softmax_block = static_cast<std::int32_t>(kBlockKeys);
    p.deterministic = 1;               // each row has a fixed tile order, whatever the thread count
    p.empty_row = kAttncheckEmptyRowZeros;
    p.flushes_subnormals = 0;          // no FTZ/DAZ; exp rounds subnormal results (flash_tile.inl)
    p.accepts_strides = 1;
    p.writes_lse = 1;
    // The vector exp (Cephes polynomial, flash_tile.inl) and the C library's expf: measured below
    // 2^-22 relative by backends/tests/flash_kernel_test.cpp for every kernel the machine runs.
    p.exp_relative_error = 0x1p-22;
    p.tanh_relative_error = 0x1p-22;   // glibc tanhf, 2 ulp
    return p;
  }

  std::uint32_t options() const override {
    return impl::kOptionAlibi | impl::kOptionSinks | impl::kOptionPagedKv | impl::kOptionVarlen | impl::kOptionFp8;
  }
  // The backward ABI takes contiguous K and V and padded batches only (backend.h, ABI 2.4, 2.5).
  std::uint32_t backward_options() const override { return impl::kOptionAlibi | impl::kOptionSinks; }

  void check_supported(const attncheck_problem& problem, DLDataType input, DLDeviceType device) const override {
    impl::check_problem(problem);
    if (!is_input_dtype(input) && !impl::is_fp8(input))
      impl::unsupported("cpu-flash takes float32, float16, bfloat16 or fp8 inputs, not " + impl::dtype_string(input));
    if (impl::is_fp8(input) && (problem.mask_kind == kAttncheckMaskAdditive || impl::is_paged(problem) || impl::is_varlen(problem)))
      impl::unsupported("cpu-flash takes fp8 inputs contiguous and padded, without an additive mask (backend.h, ABI 2.6)");
    if (device != kDLCPU) impl::unsupported("cpu-flash reads host memory only (device type " + std::to_string(device) + ")");
    // The query-tile loop keeps per-row state on the stack and offsets in int: far beyond any test.
    if (problem.k_len > (std::int64_t{1} << 30) || problem.q_len > (std::int64_t{1} << 40))
      impl::unsupported("cpu-flash handles Lk up to 2^30 keys");
  }

  void forward(const attncheck_problem& p, const attncheck_attention_tensors& t) override {
    impl::check_problem(p);
    if (t.q != nullptr && impl::is_fp8(t.q->dtype)) {
      // ABI 2.6: dequantized once into float32, then the float32 kernel (whose profile is this one's).
      const impl::DequantizedF32 dequantized(p, t, kDLCPU);
      return forward(impl::without_descales(p), impl::without_descales(t, dequantized));
    }
    if (impl::descale_of(p) != kAttncheckDescaleNone) impl::invalid("problem.descale is set, but q is not fp8 (e4m3fn or e5m2)");
    if (impl::is_varlen(p)) return forward_packed(p, t);
    CallArrays arrays;
    FlashParams fp = checked_params(p, t.q, t.k, t.v, t.mask, t.key_lengths, arrays, impl::block_table_of(t));
    set_inference_options(p, impl::alibi_slopes_of(t), impl::sinks_of(t), fp, arrays);
    const DLDataType dt = t.q->dtype;
    fp.out = strided(impl::check_cpu_tensor(t.out, "out", {p.batch, p.q_heads, p.q_len, p.v_dim},
                                            {"batch", "query heads", "query length", "value dim"}, {dt}));
    if (t.lse != nullptr) {
      const auto lse = impl::check_cpu_tensor(t.lse, "lse", {p.batch, p.q_heads, p.q_len}, {"batch", "query heads", "query length"}, {impl::kF32});
      fp.lse = reinterpret_cast<float*>(const_cast<char*>(lse.data));
      for (int d = 0; d < 3; ++d) fp.lse_stride[d] = lse.strides[d];
    }
    run(fp);
  }

  /// ABI 2.5, a packed batch (backend.h): each sequence is its own problem of one batch row, run
  /// as one with pointers at its first token. A sequence of 0 keys runs with one masked key slot
  /// (key limit 0), which reads nothing and writes empty rows; one of 0 queries writes nothing.
  void forward_packed(const attncheck_problem& p, const attncheck_attention_tensors& t) {
    using impl::check_cpu_tensor;
    if (t.mask != nullptr) impl::invalid("mask: given, but a packed batch takes none (problem.mask_kind is none)");
    if (t.key_lengths != nullptr) impl::invalid("key_lengths: given, but a packed batch's key counts are cu_seqlens_k's");
    if (impl::block_table_of(t) != nullptr) impl::invalid("block_table: given, but a packed batch's K and V are contiguous");
    const impl::VarlenArgs va = impl::check_varlen(p, t, kDLCPU);
    const DLDataType dt = t.q->dtype;
    if (!is_input_dtype(dt)) impl::invalid("q: dtype is " + impl::dtype_string(dt) + ", expected float32, float16 or bfloat16");
    const auto q = check_cpu_tensor(t.q, "q", {va.total_q, p.q_heads, p.qk_dim}, {"query tokens", "query heads", "head dim"}, {dt});
    const auto k = check_cpu_tensor(t.k, "k", {va.total_k, p.kv_heads, p.qk_dim}, {"key tokens", "kv heads", "head dim"}, {dt});
    const auto v = check_cpu_tensor(t.v, "v", {va.total_k, p.kv_heads, p.v_dim}, {"key tokens", "kv heads", "value dim"}, {dt});
    const auto out = check_cpu_tensor(t.out, "out", {va.total_q, p.q_heads, p.v_dim}, {"query tokens", "query heads", "value dim"}, {dt});
    impl::TensorArg lse;
    if (t.lse != nullptr) lse = check_cpu_tensor(t.lse, "lse", {p.q_heads, va.total_q}, {"query heads", "query tokens"}, {impl::kF32});
    const std::vector<std::int64_t> cu_q = impl::checked_cu_seqlens(p, va.cu_q, "cu_seqlens_q", p.q_len, va.total_q);
    const std::vector<std::int64_t> cu_k = impl::checked_cu_seqlens(p, va.cu_k, "cu_seqlens_k", p.k_len, va.total_k);

    CallArrays arrays;
    FlashParams base = problem_params(p);
    base.batch = 1;
    set_inference_options(p, impl::alibi_slopes_of(t), impl::sinks_of(t), base, arrays);
    // Token t of a packed [T, H, D] tensor as row t of batch 0: strides (batch, head, row, dim).
    const auto sequence = [](const impl::TensorArg& x, std::int64_t first_token) {
      Strided s = strided(x);
      s.stride[0] = 0, s.stride[1] = x.strides[1], s.stride[2] = x.strides[0], s.stride[3] = x.strides[2];
      s.data = x.data + first_token * x.strides[0] * (x.dtype.bits / 8);
      return s;
    };
    for (std::int64_t b = 0; b < p.batch; ++b) {
      const std::int64_t q0 = cu_q[static_cast<size_t>(b)], k0 = cu_k[static_cast<size_t>(b)];
      const std::int64_t queries = cu_q[static_cast<size_t>(b + 1)] - q0, keys = cu_k[static_cast<size_t>(b + 1)] - k0;
      if (queries == 0) continue;
      FlashParams fp = base;
      fp.q_len = queries;
      fp.k_len = std::max<std::int64_t>(keys, 1);
      const std::int64_t offset = impl::varlen_diagonal_offset(p, queries, keys);
      fp.offset = &offset;
      fp.key_limit = &keys;
      if (fp.alibi_slopes != nullptr) fp.alibi_slopes += b * fp.alibi_batch_stride;
      fp.alibi_batch_stride = 0;
      fp.q = sequence(q, q0), fp.k = sequence(k, k0), fp.v = sequence(v, k0), fp.out = sequence(out, q0);
      if (lse.present()) {
        fp.lse = reinterpret_cast<float*>(const_cast<char*>(lse.data)) + q0 * lse.strides[1];
        fp.lse_stride[0] = 0, fp.lse_stride[1] = lse.strides[0], fp.lse_stride[2] = lse.strides[1];
      }
      run(fp);
    }
  }

  /// Runs a call whose FlashParams are complete but for the packed K and V: packs them, then every
  /// (batch, head, query tile).
  void run(FlashParams& fp) {
    // One workspace per thread, reused across calls while the dims allow.
    const std::int64_t floats = workspace_floats(fp.qk_dim, fp.dv_pad);
    if (floats > workspace_floats_) {
      scratch_.clear();
      for (int w = 0; w < pool_.size(); ++w) {
        float* mem = static_cast<float*>(std::aligned_alloc(64, static_cast<std::size_t>(floats) * sizeof(float)));
        if (mem == nullptr) throw std::bad_alloc();
        scratch_.emplace_back(mem);
      }
      workspace_floats_ = floats;
    }
    std::vector<Workspace> ws;
    for (auto& s : scratch_) ws.push_back(carve_workspace(s.get(), fp.qk_dim, fp.dv_pad));

    // Phase 1: K and V in fp32, packed once for every query tile and every head of a group.
    fp.key_tiles = (fp.k_len + kBlockKeys - 1) / kBlockKeys;
    const std::int64_t kv_tiles = fp.batch * fp.kv_heads * fp.key_tiles;
    const auto grow = [](auto& buffer, std::int64_t n) {
      if (static_cast<std::int64_t>(buffer.size()) < n) buffer.resize(static_cast<std::size_t>(n));
    };
    grow(packed_k_, kv_tiles * fp.qk_dim * kBlockKeys);
    grow(packed_v_, kv_tiles * kBlockKeys * fp.dv_pad);
    grow(v_finite_, kv_tiles);
    fp.packed_k = packed_k_.data(), fp.packed_v = packed_v_.data(), fp.v_finite = v_finite_.data();
    const PackFn pack = kernels_.pack;
    // Heads adjacent in memory (a token-major page [page, Hkv, D], the [B, L, H, D] layout, a
    // packed batch): one task packs every head of a key tile, key by key, reading K and V in
    // order; otherwise one task per (batch, kv head, key tile).
    const bool heads_adjacent = fp.k.stride[1] < fp.k.stride[2];
    if (heads_adjacent) {
      pool_.run(fp.batch * fp.key_tiles, [&](int, std::int64_t item) {
        pack(fp, item / fp.key_tiles, 0, fp.kv_heads, item % fp.key_tiles, packed_k_.data(), packed_v_.data(), v_finite_.data());
      });
    } else {
      pool_.run(kv_tiles, [&](int, std::int64_t item) {
        const std::int64_t key_tile = item % fp.key_tiles, bg = item / fp.key_tiles;
        pack(fp, bg / fp.kv_heads, bg % fp.kv_heads, 1, key_tile, packed_k_.data(), packed_v_.data(), v_finite_.data());
      });
    }

    // Phase 2: every (batch, head, query tile), dynamically scheduled (causal tiles differ in cost).
    const std::int64_t tiles = (fp.q_len + kBlockRows - 1) / kBlockRows;
    const TileFn kernel = kernels_.tile;
    pool_.run(fp.batch * fp.q_heads * tiles, [&](int worker, std::int64_t item) {
      const std::int64_t tile = item % tiles, bh = item / tiles;
      kernel(fp, bh / fp.q_heads, bh % fp.q_heads, tile * kBlockRows, ws[static_cast<std::size_t>(worker)]);
    });
  }

  bool has_layer() const override { return true; }
  void forward_layer(const attncheck_layer_problem& lp, const attncheck_layer_tensors& t) override;

  bool has_backward() const override { return true; }

  attncheck_backward_profile backward_profile(const attncheck_problem& problem, DLDataType input) const override {
    check_supported(problem, input, kDLCPU);
    if (impl::is_fp8(input)) impl::unsupported("cpu-flash has no fp8 backward pass (fp8 inputs are forward-only, as FlashAttention 3's)");
    attncheck_backward_profile pr{};
    pr.gradient_dtype = input;          // dQ, dK, dV (and dbias) rounded once, to nearest, from fp32
    pr.probability_dtype = impl::kF32;  // P = exp(s − lse) in fp32, never re-rounded
    pr.dp_dtype = impl::kF32;           // dP = dO·Vᵀ: fp32 FMA chains over Dv
    pr.ds_dtype = impl::kF32;
    pr.accumulator_dtype = impl::kF32;  // the workspace's dK, dV tiles and the dQ scratch
    pr.group_sum_dtype = impl::kF32;    // a group's query heads add their tile sums into the same fp32 dK, dV
    pr.query_block = static_cast<std::int32_t>(kBackwardRows);  // dK, dV: one tile sum per query tile (and head)
    pr.key_block = static_cast<std::int32_t>(kBlockKeys);       // dQ: one tile sum per key tile
    pr.recomputes_from_lse = 1;
    pr.dq_atomic = 0;                   // dQ rows belong to one (batch, kv head) task
    pr.deterministic = 1;               // each task's order is fixed, whatever the thread count
    pr.accepts_dlse = 1;
    pr.writes_dbias = 1;
    return pr;
  }

  void backward(const attncheck_problem& p, const attncheck_backward_tensors& t) override;

  const char* isa() const { return kernels_.isa; }

 private:
  /// The per-call arrays FlashParams points into: per batch the diagonal offset and the key limit
  /// (Lk, its key length, the mask's length); the ALiBi slopes and the sinks (ABI 2.3).
  struct CallArrays {
    std::vector<std::int64_t> offset, limit;
    std::vector<float> slopes, sinks;
    std::vector<std::int32_t> block_table;  ///< a paged call's table, compact [B][Lk / page]
  };

  /// The problem's dims and score options as FlashParams; tensors, diagonals and key limits unset.
  static FlashParams problem_params(const attncheck_problem& p) {
    FlashParams fp;
    fp.batch = p.batch, fp.q_heads = p.q_heads, fp.kv_heads = p.kv_heads, fp.q_len = p.q_len, fp.k_len = p.k_len;
    fp.qk_dim = p.qk_dim, fp.v_dim = p.v_dim, fp.group = p.q_heads / p.kv_heads;
    fp.dv_pad = (p.v_dim + kPad - 1) / kPad * kPad;
    fp.scale = static_cast<float>(p.scale);
    fp.softcap = static_cast<float>(p.softcap);
    fp.causal = p.causal != 0;
    fp.window_left = p.window_left, fp.window_right = p.window_right;
    return fp;
  }

  /// ALiBi slopes and sinks, checked, into `fp` (pointing into `arrays`).
  static void set_inference_options(const attncheck_problem& p, const DLTensor* slopes, const DLTensor* sinks,
                                    FlashParams& fp, CallArrays& arrays) {
    arrays.slopes = impl::checked_alibi_slopes(p, slopes, kDLCPU);
    arrays.sinks = impl::checked_sinks(p, sinks, kDLCPU);
    if (!arrays.slopes.empty()) {
      fp.alibi_slopes = arrays.slopes.data();
      fp.alibi_batch_stride = impl::alibi_of(p) == kAttncheckAlibiPerBatchHead ? p.q_heads : 0;
    }
    if (!arrays.sinks.empty()) fp.sinks = arrays.sinks.data();
  }

  /// FlashParams of a call's problem, Q, K, V, mask and key lengths, every tensor checked; `out`
  /// and `lse` are the caller's. The pointers of `diagonals` go into the result.
  FlashParams checked_params(const attncheck_problem& p, const DLTensor* tq, const DLTensor* tk, const DLTensor* tv,
                             const DLTensor* tmask, const DLTensor* key_lengths, CallArrays& diagonals,
                             const DLTensor* block_table = nullptr) const {
    using impl::check_cpu_tensor;
    if (tq == nullptr) impl::invalid("q: is NULL, but the problem requires it");
    const DLDataType dt = tq->dtype;
    if (!is_input_dtype(dt)) impl::invalid("q: dtype is " + impl::dtype_string(dt) + ", expected float32, float16 or bfloat16");
    const auto q = check_cpu_tensor(tq, "q", {p.batch, p.q_heads, p.q_len, p.qk_dim}, {"batch", "query heads", "query length", "head dim"}, {dt});
    const bool paged = impl::is_paged(p);
    if (!paged && block_table != nullptr) impl::invalid("block_table: is given, but problem.kv_storage is contiguous");
    impl::PagedKvArgs pages;
    if (paged) pages = impl::check_paged_kv(p, tk, tv, block_table, {dt}, kDLCPU);
    const auto k = paged ? pages.k : check_cpu_tensor(tk, "k", {p.batch, p.kv_heads, p.k_len, p.qk_dim}, {"batch", "kv heads", "key length", "head dim"}, {dt});
    const auto v = paged ? pages.v : check_cpu_tensor(tv, "v", {p.batch, p.kv_heads, p.k_len, p.v_dim}, {"batch", "kv heads", "key length", "value dim"}, {dt});

    FlashParams fp = problem_params(p);
    fp.q = strided(q), fp.k = strided(k), fp.v = strided(v);
    fp.mask_kind = p.mask_kind;
    if (p.mask_kind != kAttncheckMaskNone) {
      const std::initializer_list<std::int64_t> shape{p.mask_shape[0], p.mask_shape[1], p.mask_shape[2], p.mask_shape[3]};
      const std::initializer_list<std::string_view> dims{"batch", "heads", "query length", "key length"};
      const auto m = p.mask_kind == kAttncheckMaskBoolean ? check_cpu_tensor(tmask, "mask", shape, dims, {impl::kU8})
                                                            // The input dtype, or wider: the layer hands its own fp32 projections with the caller's mask.
                                                          : check_cpu_tensor(tmask, "mask", shape, dims, {impl::kF32, impl::kF16, impl::kBF16});
      fp.mask = strided(m);
      for (int d = 0; d < 3; ++d)
        if (p.mask_shape[d] == 1) fp.mask.stride[d] = 0;  // broadcast: every b, h, i reads index 0
    } else if (tmask != nullptr) {
      impl::invalid("mask: given, but problem.mask_kind is none");
    }
    diagonals.offset.assign(static_cast<std::size_t>(p.batch), 0);
    diagonals.limit.assign(static_cast<std::size_t>(p.batch), 0);
    impl::TensorArg kl;
    if (p.has_key_lengths) kl = check_cpu_tensor(key_lengths, "key_lengths", {p.batch}, {"batch"}, {impl::kI64});
    for (std::int64_t b = 0; b < p.batch; ++b) {
      std::int64_t len = p.k_len;
      if (p.has_key_lengths) {
        len = *kl.at<std::int64_t>(b);
        if (len < 0 || len > p.k_len)
          impl::invalid("key_lengths[" + std::to_string(b) + "] is " + std::to_string(len) + ", expected 0..Lk = " + std::to_string(p.k_len));
      }
      diagonals.offset[b] = impl::diagonal_offset(p, len);
      diagonals.limit[b] = std::min(len, p.mask_kind != kAttncheckMaskNone ? p.mask_shape[3] : p.k_len);
    }
    fp.offset = diagonals.offset.data();
    fp.key_limit = diagonals.limit.data();
    if (paged) {
      impl::check_block_table_entries(p, pages, [&](std::int64_t b) { return *kl.at<std::int64_t>(b); });
      const std::int64_t slots = p.k_len / p.page_size;
      diagonals.block_table.resize(static_cast<std::size_t>(p.batch * slots));
      for (std::int64_t b = 0; b < p.batch; ++b)
        for (std::int64_t s = 0; s < slots; ++s)
          diagonals.block_table[static_cast<std::size_t>(b * slots + s)] = *pages.table.at<std::int32_t>(b, s);
      fp.block_table = diagonals.block_table.data();
      fp.table_stride = slots;
      fp.page_size = p.page_size;
      // FlashParams orders a pool's strides (page, kv head, row in page, dim): token-major pools
      // [pages, page_size, Hkv, D] swap the middle two.
      if (impl::kv_storage_of(p) == kAttncheckKvPagedTokenMajor)
        for (Strided* t : {&fp.k, &fp.v}) std::swap(t->stride[1], t->stride[2]);
    }
    return fp;
  }

  ThreadPool pool_;
  Kernels kernels_;
  std::vector<float> packed_k_, packed_v_;  // grown, never shrunk: reused across calls
  std::vector<unsigned char> v_finite_;
  std::vector<std::unique_ptr<float[], AlignedFree>> scratch_;
  std::int64_t workspace_floats_ = 0;
  // The backward's: per-thread workspaces, and the row buffers and dbias partials of BackwardParams.
  std::vector<std::unique_ptr<float[], AlignedFree>> backward_scratch_;
  std::int64_t backward_workspace_floats_ = 0;
  std::vector<float> q_rows_, dout_rows_, row_lse_, row_delta_, row_dlse_, dq_sum_, dbias_partial_;
};

// Phase 1 over (b, h), phase 2 over (b, kv head), phase 3 over dbias's rows (flash_backward.inl).
void CpuFlash::backward(const attncheck_problem& p, const attncheck_backward_tensors& t) {
  using impl::check_cpu_tensor;
  CallArrays arrays;
  BackwardParams bp;
  bp.f = checked_params(p, t.q, t.k, t.v, t.mask, t.key_lengths, arrays);
  set_inference_options(p, impl::alibi_slopes_of(t), impl::sinks_of(t), bp.f, arrays);
  const DLDataType dt = t.q->dtype;
  const std::initializer_list<std::string_view> rows{"batch", "query heads", "query length"};
  const std::initializer_list<std::string_view> q_dims{"batch", "query heads", "query length", "head dim"};
  const std::initializer_list<std::string_view> o_dims{"batch", "query heads", "query length", "value dim"};
  bp.f.out = strided(check_cpu_tensor(t.out, "out", {p.batch, p.q_heads, p.q_len, p.v_dim}, o_dims, {dt}));
  const auto lse = check_cpu_tensor(t.lse, "lse", {p.batch, p.q_heads, p.q_len}, rows, {impl::kF32});
  bp.f.lse = reinterpret_cast<float*>(const_cast<char*>(lse.data));
  for (int d = 0; d < 3; ++d) bp.f.lse_stride[d] = lse.strides[d];
  bp.dout = strided(check_cpu_tensor(t.dout, "dout", {p.batch, p.q_heads, p.q_len, p.v_dim}, o_dims, {dt}));
  if (t.dlse != nullptr) {
    const auto dlse = check_cpu_tensor(t.dlse, "dlse", {p.batch, p.q_heads, p.q_len}, rows, {impl::kF32});
    bp.dlse = reinterpret_cast<const float*>(dlse.data);
    for (int d = 0; d < 3; ++d) bp.dlse_stride[d] = dlse.strides[d];
  }
  bp.dq = strided(check_cpu_tensor(t.dq, "dq", {p.batch, p.q_heads, p.q_len, p.qk_dim}, q_dims, {dt}));
  bp.dk = strided(check_cpu_tensor(t.dk, "dk", {p.batch, p.kv_heads, p.k_len, p.qk_dim}, {"batch", "kv heads", "key length", "head dim"}, {dt}));
  bp.dv = strided(check_cpu_tensor(t.dv, "dv", {p.batch, p.kv_heads, p.k_len, p.v_dim}, {"batch", "kv heads", "key length", "value dim"}, {dt}));
  for (int d = 0; d < 4; ++d) bp.mask_shape[d] = p.mask_kind != kAttncheckMaskNone ? p.mask_shape[d] : 1;
  if (t.dbias != nullptr) {
    if (p.mask_kind != kAttncheckMaskAdditive) impl::invalid("dbias: given, but the problem has no additive mask");
    bp.dbias = strided(check_cpu_tensor(t.dbias, "dbias", {p.mask_shape[0], p.mask_shape[1], p.mask_shape[2], p.mask_shape[3]},
                                        {"batch", "heads", "query length", "key length"}, {dt}));
    bp.dbias_heads = p.mask_shape[1] == 1 ? 1 : bp.f.group;
  }
  bp.dk_pad = (p.qk_dim + kPad - 1) / kPad * kPad;
  bp.q_len_pad = (p.q_len + kBackwardMicroRows - 1) / kBackwardMicroRows * kBackwardMicroRows;

  const auto grow = [](std::vector<float>& buffer, std::int64_t n) {
    if (static_cast<std::int64_t>(buffer.size()) < n) buffer.resize(static_cast<std::size_t>(n));
    return buffer.data();
  };
  const std::int64_t row_count = p.batch * p.q_heads * bp.q_len_pad;
  bp.q_rows = grow(q_rows_, row_count * bp.dk_pad);
  bp.dout_rows = grow(dout_rows_, row_count * bp.f.dv_pad);
  bp.row_lse = grow(row_lse_, row_count);
  bp.row_delta = grow(row_delta_, row_count);
  bp.row_dlse = grow(row_dlse_, row_count);
  bp.dq_sum = grow(dq_sum_, row_count * bp.dk_pad);
  if (bp.dbias.data != nullptr)
    bp.dbias_partial = grow(dbias_partial_, p.batch * p.kv_heads * bp.dbias_heads * p.mask_shape[2] * p.mask_shape[3]);

  const std::int64_t floats = backward_workspace_floats(p.qk_dim, bp.dk_pad, p.v_dim, bp.f.dv_pad);
  if (floats > backward_workspace_floats_) {
    backward_scratch_.clear();
    for (int w = 0; w < pool_.size(); ++w) {
      float* mem = static_cast<float*>(std::aligned_alloc(64, static_cast<std::size_t>(floats) * sizeof(float)));
      if (mem == nullptr) throw std::bad_alloc();
      backward_scratch_.emplace_back(mem);
    }
    backward_workspace_floats_ = floats;
  }
  std::vector<BackwardWorkspace> ws;
  for (auto& s : backward_scratch_) ws.push_back(carve_backward_workspace(s.get(), p.qk_dim, bp.dk_pad, p.v_dim, bp.f.dv_pad));

  const Kernels k = kernels_;
  pool_.run(p.batch * p.q_heads, [&](int, std::int64_t bh) { k.backward_rows(bp, bh / p.q_heads, bh % p.q_heads); });
  pool_.run(p.batch * p.kv_heads, [&](int worker, std::int64_t bg) {
    k.backward_keys(bp, bg / p.kv_heads, bg % p.kv_heads, ws[static_cast<std::size_t>(worker)]);
  });
  if (bp.dbias_partial != nullptr)
    pool_.run(p.mask_shape[0] * p.mask_shape[1] * p.mask_shape[2], [&](int, std::int64_t row) { k.backward_dbias(bp, row); });
}

/// A compact fp32 DLTensor over owned storage.
struct Owned {
  std::vector<float> storage;
  std::vector<std::int64_t> shape;
  DLTensor tensor{};
  explicit Owned(std::initializer_list<std::int64_t> dims) : shape(dims) {
    std::int64_t n = 1;
    for (std::int64_t d : dims) n *= d;
    storage.assign(static_cast<std::size_t>(n), 0.0f);
    tensor.data = storage.data();
    tensor.device = {kDLCPU, 0};
    tensor.ndim = static_cast<std::int32_t>(shape.size());
    tensor.dtype = impl::kF32;
    tensor.shape = shape.data();
  }
};

float read_elem(const impl::TensorArg& t, std::int64_t i0, std::int64_t i1 = 0, std::int64_t i2 = 0) {
  const char* p = t.data;
  const std::int64_t off = i0 * t.strides[0] + (t.ndim > 1 ? i1 * t.strides[1] : 0) + (t.ndim > 2 ? i2 * t.strides[2] : 0);
  if (impl::same_dtype(t.dtype, impl::kF32)) return *(reinterpret_cast<const float*>(p) + off);
  std::uint16_t h;
  __builtin_memcpy(&h, p + off * 2, 2);
  if (impl::same_dtype(t.dtype, impl::kBF16)) {
    const std::uint32_t u = static_cast<std::uint32_t>(h) << 16;
    float f;
    __builtin_memcpy(&f, &u, 4);
    return f;
  }
  return half_to_float_exact(h);
}

// The layer: fp32 projections (this file's loops, fp32 accumulation), the fp32 core above on the
// projected heads (they are not re-rounded to the input dtype), fp32 output projection, and one
// round-to-nearest into the input dtype at the end.
void CpuFlash::forward_layer(const attncheck_layer_problem& lp, const attncheck_layer_tensors& t) {
  const attncheck_problem p = attncheck_layer_core(&lp);
  impl::check_problem(p);
  if (lp.model_dim < 1) impl::invalid("layer.model_dim is " + std::to_string(lp.model_dim) + ", but must be >= 1");
  if (lp.self_attention && p.k_len != p.q_len)
    impl::invalid("layer: self-attention needs Lk = Lq, but Lk = " + std::to_string(p.k_len) + " and Lq = " + std::to_string(p.q_len));
  if (t.x == nullptr) impl::invalid("x: is NULL, but the layer requires it");
  const DLDataType dt = t.x->dtype;
  if (!is_input_dtype(dt)) impl::invalid("x: dtype is " + impl::dtype_string(dt) + ", expected float32, float16 or bfloat16");
  using impl::check_cpu_tensor;
  const std::int64_t B = p.batch, Hq = p.q_heads, Hkv = p.kv_heads, Lq = p.q_len, Lk = p.k_len;
  const std::int64_t Dk = p.qk_dim, Dv = p.v_dim, dm = lp.model_dim;
  const auto x = check_cpu_tensor(t.x, "x", {B, Lq, dm}, {"batch", "query length", "model dim"}, {dt});
  const auto xkv = lp.self_attention ? x : check_cpu_tensor(t.x_kv, "x_kv", {B, Lk, dm}, {"batch", "key length", "model dim"}, {dt});
  const auto wq = check_cpu_tensor(t.w_q, "w_q", {Hq, dm, Dk}, {"query heads", "model dim", "head dim"}, {dt});
  const auto wk = check_cpu_tensor(t.w_k, "w_k", {Hkv, dm, Dk}, {"kv heads", "model dim", "head dim"}, {dt});
  const auto wv = check_cpu_tensor(t.w_v, "w_v", {Hkv, dm, Dv}, {"kv heads", "model dim", "value dim"}, {dt});
  const auto wo = check_cpu_tensor(t.w_o, "w_o", {Hq * Dv, dm}, {"heads x value dim", "model dim"}, {dt});
  impl::TensorArg bq, bk, bv, bo;
  if (lp.has_qkv_bias) {
    bq = check_cpu_tensor(t.b_q, "b_q", {Hq, Dk}, {"query heads", "head dim"}, {dt});
    bk = check_cpu_tensor(t.b_k, "b_k", {Hkv, Dk}, {"kv heads", "head dim"}, {dt});
    bv = check_cpu_tensor(t.b_v, "b_v", {Hkv, Dv}, {"kv heads", "value dim"}, {dt});
  }
  if (lp.has_out_bias) bo = check_cpu_tensor(t.b_o, "b_o", {dm}, {"model dim"}, {dt});
  const auto out = check_cpu_tensor(t.out, "out", {B, Lq, dm}, {"batch", "query length", "model dim"}, {dt});

  auto project = [&](const impl::TensorArg& src, const impl::TensorArg& w, const impl::TensorArg& bias, std::int64_t heads,
                     std::int64_t len, std::int64_t dim, Owned& dst) {
    pool_.run(B * heads, [&](int, std::int64_t bh) {
      const std::int64_t b = bh / heads, h = bh % heads;
      std::vector<float> row(static_cast<std::size_t>(dim));
      for (std::int64_t i = 0; i < len; ++i) {
        for (std::int64_t e = 0; e < dim; ++e) row[e] = bias.present() ? read_elem(bias, h, e) : 0.0f;
        for (std::int64_t m = 0; m < dm; ++m) {
          const float xv = read_elem(src, b, i, m);
          for (std::int64_t e = 0; e < dim; ++e) row[e] = __builtin_fmaf(xv, read_elem(w, h, m, e), row[e]);
        }
        std::copy(row.begin(), row.end(), dst.storage.begin() + ((b * heads + h) * len + i) * dim);
      }
    });
  };
  Owned q{B, Hq, Lq, Dk}, k{B, Hkv, Lk, Dk}, v{B, Hkv, Lk, Dv}, o{B, Hq, Lq, Dv};
  project(x, wq, bq, Hq, Lq, Dk, q);
  project(xkv, wk, bk, Hkv, Lk, Dk, k);
  project(xkv, wv, bv, Hkv, Lk, Dv, v);
  attncheck_attention_tensors core{sizeof(attncheck_attention_tensors), nullptr, &q.tensor, &k.tensor, &v.tensor, t.mask, t.key_lengths, &o.tensor, nullptr};
  if (t.mask != nullptr && p.mask_kind == kAttncheckMaskAdditive && !impl::same_dtype(t.mask->dtype, impl::kF32) &&
      !impl::same_dtype(t.mask->dtype, dt))
    impl::invalid("mask: dtype is " + impl::dtype_string(t.mask->dtype) + ", expected the input dtype or float32");
  forward(p, core);

  const Elem oe = elem_of(dt);
  pool_.run(B * Lq, [&](int, std::int64_t bi) {
    const std::int64_t b = bi / Lq, i = bi % Lq;
    std::vector<float> acc(static_cast<std::size_t>(dm));
    for (std::int64_t n = 0; n < dm; ++n) acc[n] = bo.present() ? read_elem(bo, n) : 0.0f;
    for (std::int64_t h = 0; h < Hq; ++h)
      for (std::int64_t e = 0; e < Dv; ++e) {
        const float ov = o.storage[static_cast<std::size_t>(((b * Hq + h) * Lq + i) * Dv + e)];
        for (std::int64_t n = 0; n < dm; ++n) acc[n] = __builtin_fmaf(ov, read_elem(wo, h * Dv + e, n), acc[n]);
      }
    for (std::int64_t n = 0; n < dm; ++n) {
      char* dst = const_cast<char*>(out.data) + (b * out.strides[0] + i * out.strides[1] + n * out.strides[2]) * (oe == Elem::F32 ? 4 : 2);
      if (oe == Elem::F32) {
        __builtin_memcpy(dst, &acc[n], 4);
      } else {
        // Round to nearest even, as the attention output is.
        std::uint32_t u;
        __builtin_memcpy(&u, &acc[n], 4);
        std::uint16_t hbits;
        if (oe == Elem::BF16) {
          hbits = (u & 0x7fffffffu) > 0x7f800000u ? static_cast<std::uint16_t>((u >> 16) | 0x40u)
                                                  : static_cast<std::uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
        } else {
          hbits = float_to_half_rn(acc[n]);
        }
        __builtin_memcpy(dst, &hbits, 2);
      }
    }
  });
}

}  // namespace

bool cpu_flash_isa_available(const char* isa) {
  const std::string_view name = isa != nullptr ? isa : "";
  return name.empty() || name == "generic" || (name == "avx2" && has_avx2()) || (name == "avx512" && has_avx512());
}

attncheck_backend* make_cpu_flash(int threads, const char* isa) {
  if (!cpu_flash_isa_available(isa)) return nullptr;
  if (threads <= 0) {
    const unsigned hw = std::thread::hardware_concurrency();
    threads = hw == 0 ? 1 : static_cast<int>(hw);
  }
  return impl::make_backend_table<CpuFlash>(
      "cpu-flash", "online softmax, tiled, threaded, AVX-512/AVX2: f32, f16, bf16 in, fp32 accumulation", threads,
      std::string_view(isa != nullptr ? isa : ""));
}

}  // namespace attncheck::cpu_flash

extern "C" attncheck_backend* attncheck_cpu_flash_entry(void) { return attncheck::cpu_flash::make_cpu_flash(0, nullptr); }
