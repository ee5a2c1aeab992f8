#include "mutant_kernel.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <cstdio>
#include <vector>

#include "attncheck/backend_impl.h"

namespace attncheck::mutants {
namespace {

using impl::TensorArg;

// x rounded to the nearest binary16 value (ties to even), kept in a float: the quantum of the
// binade holding x is 2^(e − 10), or 2^-24 among the subnormals; values past 65520 overflow.
float round_to_half(float x) {
  if (!std::isfinite(x) || x == 0.0f) return x;
  if (std::fabs(x) >= 65520.0f) return std::copysign(std::numeric_limits<float>::infinity(), x);
  const int exponent = std::max(std::ilogb(x), -14);
  const float quantum = std::ldexp(1.0f, exponent - 10);
  return std::nearbyint(x / quantum) * quantum;
}

// A compact float32 [a, b, c, d] view of `data` (the mutants' own buffers: a layer's projections,
// a gathered cache, an unpacked batch).
TensorArg compact_f32(const std::vector<float>& data, std::int64_t a, std::int64_t b, std::int64_t c, std::int64_t d) {
  TensorArg arg;
  arg.data = reinterpret_cast<const char*>(data.data());
  arg.dtype = impl::kF32;
  arg.ndim = 4;
  arg.shape = {a, b, c, d};
  arg.strides = {b * c * d, c * d, d, 1};
  return arg;
}

class MutantBackend final : public impl::BackendImpl {
 public:
  explicit MutantBackend(Mutation mutation) : mutation_(mutation) {}

  /// float32, and for the fp8 mutants e4m3fn and e5m2 too.
  void check_input_dtype(DLDataType input) const {
    if (impl::same_dtype(input, impl::kF32)) return;
    if (is_fp8_mutation(mutation_) && impl::is_fp8(input)) return;
    impl::unsupported("mutants compute in float32 only");
  }

  DLDevice device() const override { return {memory(), 0}; }

  attncheck_numerics_profile profile(DLDataType input) const override {
    check_input_dtype(input);
    attncheck_numerics_profile p{};
    p.input_dtype = p.score_dtype = p.probability_dtype = p.accumulator_dtype = p.output_dtype = impl::kF32;
    p.input_dtype = input;  // fp8 mutants: dequantized into float32, then as float32
    p.accumulation_rounding = kAttncheckRoundNearest;
    p.products_per_rounding = 1;
    p.softmax_block = 0;
    p.deterministic = 1;
    p.empty_row = kAttncheckEmptyRowZeros;
    p.accepts_strides = 1;
    p.writes_lse = writes_lse() ? 1 : 0;
    return p;
  }

  std::uint32_t options() const override {
    return (is_inference_mutation(mutation_) ? impl::kOptionAlibi | impl::kOptionSinks : 0u) |
           (is_paged_mutation(mutation_) ? impl::kOptionPagedKv : 0u) |
           (is_varlen_mutation(mutation_) ? impl::kOptionVarlen : 0u) | (is_fp8_mutation(mutation_) ? impl::kOptionFp8 : 0u);
  }
  std::uint32_t backward_options() const override { return 0u; }

  void check_supported(const attncheck_problem& problem, DLDataType input, DLDeviceType device) const override {
    impl::check_problem(problem);
    check_input_dtype(input);
    if (impl::is_fp8(input) && (problem.mask_kind == kAttncheckMaskAdditive || impl::is_paged(problem) || impl::is_varlen(problem)))
      impl::unsupported("fp8 inputs come contiguous and padded, without an additive mask");
    if (device != memory()) impl::unsupported("this mutant reads " + impl::device_string(memory()) + " memory only");
  }

  void forward(const attncheck_problem& p, const attncheck_attention_tensors& t) override {
    impl::check_problem(p);
    if (t.q != nullptr && impl::is_fp8(t.q->dtype)) {
      // The bug of Fp8DescaleTwice: v's factor applied twice while dequantizing.
      const impl::DequantizedF32 dequantized(p, t, memory(), 2);
      return forward(impl::without_descales(p), impl::without_descales(t, dequantized));
    }
    if (impl::is_varlen(p)) return forward_packed(p, t);
    const TensorArg q = check(t.q, "q", {p.batch, p.q_heads, p.q_len, p.qk_dim}, {"batch", "heads", "length", "dim"}, {impl::kF32});
    TensorArg k, v;
    if (!impl::is_paged(p)) {
      k = check(t.k, "k", {p.batch, p.kv_heads, p.k_len, p.qk_dim}, {"batch", "heads", "length", "dim"}, {impl::kF32});
      v = check(t.v, "v", {p.batch, p.kv_heads, p.k_len, p.v_dim}, {"batch", "heads", "length", "dim"}, {impl::kF32});
    }
    const TensorArg o = check(t.out, "out", {p.batch, p.q_heads, p.q_len, p.v_dim}, {"batch", "heads", "length", "dim"}, {impl::kF32});
    TensorArg mask, lengths;
    if (p.mask_kind != kAttncheckMaskNone)
      mask = check(t.mask, "mask", {p.mask_shape[0], p.mask_shape[1], p.mask_shape[2], p.mask_shape[3]},
                                    {"batch", "heads", "query length", "key length"},
                                    {p.mask_kind == kAttncheckMaskBoolean ? impl::kU8 : impl::kF32});
    if (p.has_key_lengths) lengths = check(t.key_lengths, "key_lengths", {p.batch}, {"batch"}, {impl::kI64});
    if (t.lse != nullptr && writes_lse())
      lse_ = check(t.lse, "lse", {p.batch, p.q_heads, p.q_len}, {"batch", "heads", "length"}, {impl::kF32});
    else
      lse_ = TensorArg{};
    slopes_ = impl::checked_alibi_slopes(p, impl::alibi_slopes_of(t), memory());
    sinks_ = impl::checked_sinks(p, impl::sinks_of(t), memory());
    pending_rows_.clear();  // what an earlier call deferred targeted memory that is gone
    if (mutation_ == Mutation::StickyDeviceError && (faulted_ || p.k_len >= 2)) {
      // A CUDA context that faulted stays faulted: every later call of this instance fails too,
      // which is why the suite gives each isolated call a fresh instance and a fresh domain.
      faulted_ = true;
      record_fault(t.stream, "an illegal memory access was encountered (simulated: K read past its allocation)");
    }
    if (impl::is_paged(p)) gather_pages(p, t, k, v, lengths);
    compute(p, q, k, v, mask, lengths, o);
  }

  bool has_layer() const override { return true; }

  // Only the backward mutants have a backward pass: the forward mutants keep the table they were
  // caught with, and a backend with a backward pass must write the lse in forward.
  bool has_backward() const override { return is_backward_mutation(mutation_); }

  attncheck_backward_profile backward_profile(const attncheck_problem& problem, DLDataType input) const override {
    check_supported(problem, input, memory());
    attncheck_backward_profile pr{};
    pr.gradient_dtype = pr.probability_dtype = pr.dp_dtype = pr.ds_dtype = pr.accumulator_dtype = pr.group_sum_dtype =
        impl::kF32;
    pr.query_block = 0;               // dK, dV: one running sum per element, in loop order (b, h, i)
    pr.key_block = kBackwardKeyTile;  // dQ: one partial sum per key tile, the partials added in tile order
    pr.recomputes_from_lse = 1;
    pr.dq_atomic = 0;
    pr.deterministic = 1;  // what BwdDqRandomOrder declares too: the lie is its bug
    pr.accepts_dlse = 1;
    pr.writes_dbias = 0;
    return pr;
  }

  void backward(const attncheck_problem& p, const attncheck_backward_tensors& t) override {
    impl::check_problem(p);
    BackwardTensors bt;
    const std::initializer_list<std::string_view> qdims{"batch", "query heads", "query length", "head dim"},
        kdims{"batch", "kv heads", "key length", "head dim"}, vdims{"batch", "kv heads", "key length", "value dim"},
        odims{"batch", "query heads", "query length", "value dim"}, rows{"batch", "query heads", "query length"};
    bt.q = check(t.q, "q", {p.batch, p.q_heads, p.q_len, p.qk_dim}, qdims, {impl::kF32});
    bt.k = check(t.k, "k", {p.batch, p.kv_heads, p.k_len, p.qk_dim}, kdims, {impl::kF32});
    bt.v = check(t.v, "v", {p.batch, p.kv_heads, p.k_len, p.v_dim}, vdims, {impl::kF32});
    bt.out = check(t.out, "out", {p.batch, p.q_heads, p.q_len, p.v_dim}, odims, {impl::kF32});
    bt.lse = check(t.lse, "lse", {p.batch, p.q_heads, p.q_len}, rows, {impl::kF32});
    bt.dout = check(t.dout, "dout", {p.batch, p.q_heads, p.q_len, p.v_dim}, odims, {impl::kF32});
    if (t.dlse != nullptr) bt.dlse = check(t.dlse, "dlse", {p.batch, p.q_heads, p.q_len}, rows, {impl::kF32});
    bt.dq = check(t.dq, "dq", {p.batch, p.q_heads, p.q_len, p.qk_dim}, qdims, {impl::kF32});
    bt.dk = check(t.dk, "dk", {p.batch, p.kv_heads, p.k_len, p.qk_dim}, kdims, {impl::kF32});
    bt.dv = check(t.dv, "dv", {p.batch, p.kv_heads, p.k_len, p.v_dim}, vdims, {impl::kF32});
    if (p.mask_kind != kAttncheckMaskNone)
      bt.mask = check(t.mask, "mask", {p.mask_shape[0], p.mask_shape[1], p.mask_shape[2], p.mask_shape[3]},
                      {"batch", "heads", "query length", "key length"},
                      {p.mask_kind == kAttncheckMaskBoolean ? impl::kU8 : impl::kF32});
    if (p.has_key_lengths) bt.lengths = check(t.key_lengths, "key_lengths", {p.batch}, {"batch"}, {impl::kI64});
    if (t.dbias != nullptr) impl::invalid("dbias: given, but this backend's backward profile has writes_dbias = 0");
    compute_backward(p, bt);
  }

  // The layer: project per head with plain loops, run the core, project the concatenation.
  void forward_layer(const attncheck_layer_problem& lp, const attncheck_layer_tensors& t) override {
    const attncheck_problem p = attncheck_layer_core(&lp);
    impl::check_problem(p);
    const std::int64_t dm = lp.model_dim, lq = p.q_len, lk = p.k_len, dk = p.qk_dim, dv = p.v_dim;
    const TensorArg x = check(t.x, "x", {p.batch, lq, dm}, {"batch", "length", "model dim"}, {impl::kF32});
    const TensorArg xkv = lp.self_attention ? x : check(t.x_kv, "x_kv", {p.batch, lk, dm}, {"batch", "length", "model dim"}, {impl::kF32});
    const TensorArg wq = check(t.w_q, "w_q", {p.q_heads, dm, dk}, {"heads", "model dim", "dim"}, {impl::kF32});
    const TensorArg wk = check(t.w_k, "w_k", {p.kv_heads, dm, dk}, {"heads", "model dim", "dim"}, {impl::kF32});
    const TensorArg wv = check(t.w_v, "w_v", {p.kv_heads, dm, dv}, {"heads", "model dim", "dim"}, {impl::kF32});
    const TensorArg wo = check(t.w_o, "w_o", {p.q_heads * dv, dm}, {"heads x dim", "model dim"}, {impl::kF32});
    TensorArg bq, bk, bv, bo, mask, lengths;
    if (lp.has_qkv_bias) {
      bq = check(t.b_q, "b_q", {p.q_heads, dk}, {"heads", "dim"}, {impl::kF32});
      bk = check(t.b_k, "b_k", {p.kv_heads, dk}, {"heads", "dim"}, {impl::kF32});
      bv = check(t.b_v, "b_v", {p.kv_heads, dv}, {"heads", "dim"}, {impl::kF32});
    }
    if (lp.has_out_bias) bo = check(t.b_o, "b_o", {dm}, {"model dim"}, {impl::kF32});
    const TensorArg out = check(t.out, "out", {p.batch, lq, dm}, {"batch", "length", "model dim"}, {impl::kF32});
    if (p.mask_kind != kAttncheckMaskNone)
      mask = check(t.mask, "mask", {p.mask_shape[0], p.mask_shape[1], p.mask_shape[2], p.mask_shape[3]},
                                    {"batch", "heads", "query length", "key length"},
                                    {p.mask_kind == kAttncheckMaskBoolean ? impl::kU8 : impl::kF32});
    if (p.has_key_lengths) lengths = check(t.key_lengths, "key_lengths", {p.batch}, {"batch"}, {impl::kI64});

    auto project = [&](const TensorArg& in, std::int64_t len, const TensorArg& w, const TensorArg& bias, std::int64_t heads,
                       std::int64_t dim) {
      std::vector<float> result(static_cast<size_t>(p.batch * heads * len * dim));
      for (std::int64_t b = 0; b < p.batch; ++b)
        for (std::int64_t h = 0; h < heads; ++h) {
          const std::int64_t wh = mutation_ == Mutation::SharedProjection ? 0 : h;
          for (std::int64_t i = 0; i < len; ++i)
            for (std::int64_t d = 0; d < dim; ++d) {
              float acc = bias.present() ? *bias.at<float>(wh, d) : 0.0f;
              for (std::int64_t m = 0; m < dm; ++m) acc += *in.at<float>(b, i, m) * *w.at<float>(wh, m, d);
              result[static_cast<size_t>(((b * heads + h) * len + i) * dim + d)] = acc;
            }
        }
      return result;
    };
    std::vector<float> qs = project(x, lq, wq, bq, p.q_heads, dk), ks = project(xkv, lk, wk, bk, p.kv_heads, dk),
                       vs = project(xkv, lk, wv, bv, p.kv_heads, dv), heads(static_cast<size_t>(p.batch * p.q_heads * lq * dv));
    compute(p, compact_f32(qs, p.batch, p.q_heads, lq, dk), compact_f32(ks, p.batch, p.kv_heads, lk, dk),
            compact_f32(vs, p.batch, p.kv_heads, lk, dv), mask, lengths, compact_f32(heads, p.batch, p.q_heads, lq, dv));
    for (std::int64_t b = 0; b < p.batch; ++b)
      for (std::int64_t i = 0; i < lq; ++i)
        for (std::int64_t m = 0; m < dm; ++m) {
          float acc = bo.present() ? *bo.at<float>(m) : 0.0f;
          for (std::int64_t h = 0; h < p.q_heads; ++h)
            for (std::int64_t d = 0; d < dv; ++d)
              acc += heads[static_cast<size_t>(((b * p.q_heads + h) * lq + i) * dv + d)] * *wo.at<float>(h * dv + d, m);
          *out.mut<float>(b, i, m) = acc;
        }
  }

 private:
  // Plain three-pass softmax per row: scores, max, exp and sum, weighted sum of V.
  void compute(const attncheck_problem& p, TensorArg q, TensorArg k, TensorArg v, const TensorArg& mask,
               const TensorArg& lengths, TensorArg o) const {
    if (mutation_ == Mutation::TransposedAxes) {
      // The bug: compact [B, L, H, D] strides assumed whatever the caller passed.
      for (TensorArg* t : {&q, &k, &v, &o}) {
        const auto& s = t->shape;  // logical [B, H, L, D]
        t->strides = {s[2] * s[1] * s[3], s[3], s[1] * s[3], 1};
      }
    }
    if (mutation_ == Mutation::IgnoresStrides) {
      // The bug: the strides of the head-major layout assumed, right whenever the caller's tensors
      // happen to be compact [B, H, L, D], and wrong for [B, L, H, D] or padded rows.
      for (TensorArg* t : {&q, &k, &v, &o}) {
        const auto& s = t->shape;
        t->strides = {s[1] * s[2] * s[3], s[2] * s[3], s[3], 1};
      }
    }
    if (mutation_ == Mutation::CrashOnSingleKey && p.k_len == 1) {
      volatile float* nowhere = nullptr;
      *nowhere = 1.0f;  // the bug: a null dereference on a single key
    }
    if (mutation_ == Mutation::HangOnSingleHead && p.q_heads == 1 && p.kv_heads == 1) {
      for (volatile bool forever = true; forever;) {
      }
    }
    if (mutation_ == Mutation::ModifiesQ) {
      for (std::int64_t b = 0; b < p.batch; ++b)
        for (std::int64_t h = 0; h < p.q_heads; ++h)
          for (std::int64_t i = 0; i < p.q_len; ++i)
            for (std::int64_t d = 0; d < p.qk_dim; ++d) *q.mut<float>(b, h, i, d) *= static_cast<float>(p.scale);
    }
    // A mutant that scales Q in place then uses scale 1 computes the right answer, so only the
    // probe on its inputs can tell.
    const double scale = mutation_ == Mutation::ScaleOneOverD ? 1.0 / static_cast<double>(p.qk_dim)
                         : mutation_ == Mutation::ModifiesQ   ? 1.0
                                                              : p.scale;
    std::vector<std::int64_t> key_order(static_cast<size_t>(p.k_len));
    std::iota(key_order.begin(), key_order.end(), 0);
    if (mutation_ == Mutation::Nondeterministic) {
      std::random_device entropy;  // a fresh order on every call
      std::mt19937 shuffle(entropy());
      std::shuffle(key_order.begin(), key_order.end(), shuffle);
    }
    std::vector<float> column_sums;
    const std::int64_t group = p.q_heads / p.kv_heads;
    const float neg_inf = -std::numeric_limits<float>::infinity();
    std::vector<float> s(static_cast<size_t>(p.k_len)), raw(static_cast<size_t>(p.k_len));
    std::vector<char> allowed(static_cast<size_t>(p.k_len));
    for (std::int64_t b = 0; b < p.batch; ++b) {
      const std::int64_t key_length = lengths.present() ? *lengths.at<std::int64_t>(b) : p.k_len;
      const std::int64_t offset = mutation_ == Mutation::IgnoresAlignment ? 0 : impl::diagonal_offset(p, key_length);
      const std::int64_t kb = mutation_ == Mutation::IgnoresKBatchStride ? 0 : b;
      for (std::int64_t h = 0; h < p.q_heads; ++h) {
        const std::int64_t g = mutation_ == Mutation::GqaModulo ? h % p.kv_heads : h / group;
        for (std::int64_t i = 0; i < p.q_len; ++i) {
          float row_max = row_scores(p, q, k, mask, {b, kb, h, g, i}, key_length, offset, scale, s, raw, allowed);
          // A sink σ: one more key of value 0 (backend.h); its weight e^{σ − max} joins the sum.
          const float sink = sinks_.empty() ? neg_inf : sinks_[static_cast<size_t>(h)];
          if (sink > row_max) row_max = sink;
          const float sink_weight = sink == neg_inf ? 0.0f : std::exp(sink - row_max);
          if (mutation_ == Mutation::NoMaxSubtraction) row_max = 0;
          if (mutation_ == Mutation::LastRowUnwritten && i == p.q_len - 1) continue;
          const bool deferred = mutation_ == Mutation::DeferredWrite && i >= p.q_len / 2;
          float sum = 0;
          for (std::int64_t j : key_order)
            if (allowed[static_cast<size_t>(j)] || mutation_ == Mutation::NanLeak) sum += std::exp(s[static_cast<size_t>(j)] - row_max);
          sum += sink_weight;
          if (mutation_ == Mutation::SoftmaxOverQueries) sum = query_axis_sum(p, q, k, b, h, g, kb, scale, i);
          if (lse_.present()) {
            const float natural = row_max + std::log(sum);
            // The bug of LseLog2AndWindowExclusive: log2 Σ e^s instead of ln Σ e^s, a base mixed
            // up between exp2 and exp kernels.
            const float written = mutation_ == Mutation::LseLog2AndWindowExclusive
                                      ? static_cast<float>((row_max + std::log(sum)) / std::log(2.0))
                                      : natural;
            *lse_.mut<float>(b, h, i) = sum > 0 ? written : neg_inf;
          }
          for (std::int64_t d = 0; d < p.v_dim; ++d) {
            // The bug of SinkInNumerator: the sink's weight in the numerator, as if its value were 1.
            float acc = mutation_ == Mutation::SinkInNumerator ? sink_weight : 0.0f;
            for (std::int64_t j : key_order)
              if (allowed[static_cast<size_t>(j)] || mutation_ == Mutation::NanLeak) {
                const float term = std::exp(s[static_cast<size_t>(j)] - row_max) * *v.at<float>(b, g, j, d);
                acc = mutation_ == Mutation::PvInHalf ? round_to_half(acc + term) : acc + term;
              }
            // A row with no allowed key has sum 0: write the declared zeros (or, mutated, NaN).
            const float empty = mutation_ == Mutation::EmptyRowNaN ? std::numeric_limits<float>::quiet_NaN() : 0.0f;
            const float result = sum > 0 ? acc / sum : empty;
            if (deferred)
              pending_rows_.push_back(result);  // lands "later": after the call, on nobody's stream
            else
              *o.mut<float>(b, h, i, d) = result;
          }
        }
      }
    }
    if (mutation_ == Mutation::WritesPastOutput || mutation_ == Mutation::DeviceWritesPastOutput) {
      const auto& sh = o.shape;
      float* last = o.mut<float>(sh[0] - 1, sh[1] - 1, sh[2] - 1, sh[3] - 1);
      last[o.strides[3]] = 0.0f;  // one element past the last one
    }
  }

  struct BackwardTensors {
    TensorArg q, k, v, out, lse, dout, dlse, dq, dk, dv, mask, lengths;
  };

  // The gradients of O = softmax(S) V and of the lse (backend.h, attncheck_backward_profile),
  // plain fp32, per (batch, query head): first P_ij = exp(s_ij − lse_i) for every row (the
  // untransposed dV reads P across rows), then per live row i, with D_i = dO_i·O_i:
  //   dV_j += P_ij dO_i,  dP_ij = dO_i·V_j,  dS_ij = P_ij (dP_ij − D_i + dlse_i),
  //   dR_ij = dS_ij (1 − tanh²(r_ij / c)) through softcap c·tanh(r/c) (dR = dS without one),
  //   dK_j += σ dR_ij Q_i,  dQ_i = Σ_tiles (Σ_{j in tile} σ dR_ij K_j).
  // A row with lse = −inf has no allowed key and contributes nothing; an excluded key has
  // dS = 0, so a key no query may see keeps dK = dV = 0. Each mutation changes one term.
  void compute_backward(const attncheck_problem& p, const BackwardTensors& t) const {
    const float neg_inf = -std::numeric_limits<float>::infinity();
    auto zero = [](const TensorArg& g, std::int64_t heads, std::int64_t len, std::int64_t dim, std::int64_t batch) {
      for (std::int64_t b = 0; b < batch; ++b)
        for (std::int64_t h = 0; h < heads; ++h)
          for (std::int64_t i = 0; i < len; ++i)
            for (std::int64_t d = 0; d < dim; ++d) *g.mut<float>(b, h, i, d) = 0.0f;
    };
    zero(t.dq, p.q_heads, p.q_len, p.qk_dim, p.batch);
    zero(t.dk, p.kv_heads, p.k_len, p.qk_dim, p.batch);
    zero(t.dv, p.kv_heads, p.k_len, p.v_dim, p.batch);

    const std::int64_t group = p.q_heads / p.kv_heads, lq = p.q_len, lk = p.k_len;
    const float scale = static_cast<float>(p.scale);
    const std::int64_t tiles = (lk + kBackwardKeyTile - 1) / kBackwardKeyTile;
    std::vector<std::int64_t> tile_order(static_cast<size_t>(tiles));
    std::iota(tile_order.begin(), tile_order.end(), 0);
    if (mutation_ == Mutation::BwdDqRandomOrder) {
      // Atomics add in whatever order the tiles finish: a fresh order on every call. The seed
      // comes from std::random_device, as the forward's Nondeterministic mutant's does: a counter
      // would repeat in every isolated call, each a fresh fork of the same process.
      std::random_device entropy;
      std::mt19937 shuffle(entropy());
      std::shuffle(tile_order.begin(), tile_order.end(), shuffle);
    }
    // The lost update: the last tile's partial sum is overwritten before it lands, whenever
    // another tile's lands too.
    if (mutation_ == Mutation::BwdDqLostUpdate && tiles > 1) tile_order.pop_back();

    std::vector<float> s(static_cast<size_t>(lk)), raw_row(static_cast<size_t>(lk));
    std::vector<char> allowed_row(static_cast<size_t>(lk));
    // One head's rows at a time: P, the raw scores and the allowed keys of every row.
    std::vector<float> prob(static_cast<size_t>(lq * lk)), raw(static_cast<size_t>(lq * lk));
    std::vector<char> allowed(static_cast<size_t>(lq * lk)), live(static_cast<size_t>(lq));
    std::vector<float> partial(static_cast<size_t>(tiles * p.qk_dim));
    auto cell = [lk](std::int64_t i, std::int64_t j) { return static_cast<size_t>(i * lk + j); };  // (i, j) of P
    for (std::int64_t b = 0; b < p.batch; ++b) {
      const std::int64_t key_length = t.lengths.present() ? *t.lengths.at<std::int64_t>(b) : p.k_len;
      const std::int64_t offset = impl::diagonal_offset(p, key_length);
      for (std::int64_t h = 0; h < p.q_heads; ++h) {
        const std::int64_t g = h / group;
        // The bug of BwdGqaOneHead: only the group's first query head reaches dK and dV.
        const bool reaches_dk_dv = mutation_ != Mutation::BwdGqaOneHead || h % group == 0;
        for (std::int64_t i = 0; i < lq; ++i) {
          row_scores(p, t.q, t.k, t.mask, {b, b, h, g, i}, key_length, offset, p.scale, s, raw_row, allowed_row);
          const float lse = *t.lse.at<float>(b, h, i);
          live[static_cast<size_t>(i)] = lse != neg_inf;
          for (std::int64_t j = 0; j < lk; ++j) {
            const bool ok = allowed_row[static_cast<size_t>(j)] != 0 && lse != neg_inf;
            allowed[cell(i, j)] = ok;
            raw[cell(i, j)] = raw_row[static_cast<size_t>(j)];
            const float sj = s[static_cast<size_t>(j)];
            // The bug of BwdUnshiftedExp: e^s and e^lse overflow (or vanish) on their own where
            // e^(s − lse) ≤ 1 does not.
            prob[cell(i, j)] = !ok ? 0.0f : mutation_ == Mutation::BwdUnshiftedExp ? std::exp(sj) / std::exp(lse)
                                                                                  : std::exp(sj - lse);
          }
        }
        for (std::int64_t i = 0; i < lq; ++i) {
          if (!live[static_cast<size_t>(i)]) continue;  // no allowed key: dQ stays 0, nothing flows to the keys
          float delta = 0.0f;  // D_i = dO_i·O_i
          for (std::int64_t d = 0; d < p.v_dim; ++d) delta += *t.dout.at<float>(b, h, i, d) * *t.out.at<float>(b, h, i, d);
          if (mutation_ == Mutation::BwdNoDTerm) delta = 0.0f;
          const float dlse = t.dlse.present() ? *t.dlse.at<float>(b, h, i) : 0.0f;
          std::fill(partial.begin(), partial.end(), 0.0f);
          for (std::int64_t j = 0; j < lk; ++j) {
            const bool ok = allowed[cell(i, j)] != 0;
            if (!ok && mutation_ != Mutation::BwdMaskedKeysGetDk) continue;
            float dp = 0.0f;  // dP_ij = dO_i·V_j
            for (std::int64_t d = 0; d < p.v_dim; ++d) dp += *t.dout.at<float>(b, h, i, d) * *t.v.at<float>(b, g, j, d);
            if (!ok) {
              // The bug of BwdMaskedKeysGetDk: an excluded key weighted by a floor of 10^-3 in
              // dK's dS (dQ and dV see the true weight 0).
              const float ds_floor = 1e-3f * (dp - delta + dlse);
              if (reaches_dk_dv)
                for (std::int64_t d = 0; d < p.qk_dim; ++d) *t.dk.mut<float>(b, g, j, d) += scale * ds_floor * *t.q.at<float>(b, h, i, d);
              continue;
            }
            const float pij = prob[cell(i, j)];
            if (reaches_dk_dv) {
              // The bug of BwdDvUntransposed: P_ji where P_ij belongs, its indices clamped into
              // P's Lq × Lk so that they stay in bounds when Lq ≠ Lk.
              const float p_dv = mutation_ == Mutation::BwdDvUntransposed ? prob[cell(std::min(j, lq - 1), std::min(i, lk - 1))] : pij;
              for (std::int64_t d = 0; d < p.v_dim; ++d) *t.dv.mut<float>(b, g, j, d) += p_dv * *t.dout.at<float>(b, h, i, d);
            }
            const float ds = pij * (dp - delta + dlse);
            float dr = ds;
            if (p.softcap > 0 && mutation_ != Mutation::BwdNoSoftcapDerivative) {
              const double th = std::tanh(raw[cell(i, j)] / p.softcap);
              dr = static_cast<float>(ds * (1.0 - th * th));
            }
            float* tile_sum = partial.data() + (j / kBackwardKeyTile) * p.qk_dim;
            for (std::int64_t d = 0; d < p.qk_dim; ++d) tile_sum[d] += scale * dr * *t.k.at<float>(b, g, j, d);
            if (reaches_dk_dv) {
              const float dk_scale = mutation_ == Mutation::BwdDkWithoutScale ? 1.0f : scale;  // the bug: σ left out
              for (std::int64_t d = 0; d < p.qk_dim; ++d) *t.dk.mut<float>(b, g, j, d) += dk_scale * dr * *t.q.at<float>(b, h, i, d);
            }
          }
          for (std::int64_t tile : tile_order)
            for (std::int64_t d = 0; d < p.qk_dim; ++d) *t.dq.mut<float>(b, h, i, d) += partial[static_cast<size_t>(tile * p.qk_dim + d)];
        }
      }
    }
  }

  bool writes_lse() const { return mutation_ == Mutation::LseLog2AndWindowExclusive || is_backward_mutation(mutation_); }

  /// Where one query row's scores come from: batch b of Q, batch kb of K, query head h, the kv
  /// head g it reads, row i.
  struct RowIndex {
    std::int64_t b, kb, h, g, i;
  };

  // A paged call's K and V gathered into compact [B, Hkv, Lk, D] buffers through the block table
  // (backend.h, ABI 2.4), each paged mutation's bug applied on the way; `lengths` then points at
  // the lengths the gather used.
  void gather_pages(const attncheck_problem& p, const attncheck_attention_tensors& t, TensorArg& k, TensorArg& v,
                    TensorArg& lengths) {
    const impl::PagedKvArgs pages = impl::check_paged_kv(p, t.k, t.v, impl::block_table_of(t), {impl::kF32}, memory());
    const auto length_of = [&](std::int64_t b) { return *lengths.at<std::int64_t>(b); };
    impl::check_block_table_entries(p, pages, length_of);
    const bool head_major = impl::kv_storage_of(p) == kAttncheckKvPagedHeadMajor;
    gathered_lengths_.assign(static_cast<size_t>(p.batch), 0);
    const auto gather = [&](const TensorArg& pool, std::int64_t dim, std::vector<float>& out) {
      out.assign(static_cast<size_t>(p.batch * p.kv_heads * p.k_len * dim), 0.0f);
      for (std::int64_t b = 0; b < p.batch; ++b) {
        const std::int64_t used_keys = (length_of(b) + p.page_size - 1) / p.page_size * p.page_size;
        // The bug of PagedReadsPastLength: the whole last page counts as the sequence's.
        gathered_lengths_[static_cast<size_t>(b)] = mutation_ == Mutation::PagedReadsPastLength ? used_keys : length_of(b);
        // The bug of PagedTableBatchZero: batch 0's row of the table for every sequence.
        const std::int64_t row = mutation_ == Mutation::PagedTableBatchZero ? 0 : b;
        for (std::int64_t j = 0; j < used_keys; ++j) {
          std::int64_t page = *pages.table.at<std::int32_t>(row, j / p.page_size);
          // The bug of PagedPageOffByOne: the next page of the pool.
          if (mutation_ == Mutation::PagedPageOffByOne) page = (page + 1) % pages.num_pages;
          if (page < 0 || page >= pages.num_pages) continue;  // batch 0's row may end before this sequence
          for (std::int64_t g = 0; g < p.kv_heads; ++g)
            for (std::int64_t d = 0; d < dim; ++d) {
              const std::int64_t r = j % p.page_size;
              out[static_cast<size_t>(((b * p.kv_heads + g) * p.k_len + j) * dim + d)] =
                  head_major ? *pool.at<float>(page, g, r, d) : *pool.at<float>(page, r, g, d);
            }
        }
      }
    };
    gather(pages.k, p.qk_dim, gathered_k_);
    gather(pages.v, p.v_dim, gathered_v_);
    k = compact_f32(gathered_k_, p.batch, p.kv_heads, p.k_len, p.qk_dim);
    v = compact_f32(gathered_v_, p.batch, p.kv_heads, p.k_len, p.v_dim);
    lengths.data = reinterpret_cast<const char*>(gathered_lengths_.data());
    lengths.strides = {1, 0, 0, 0};
  }

  // A packed call (backend.h, ABI 2.5) unpacked into the padded problem problem.h defines it by
  // (sequence b's queries on the last rows under bottom-right alignment, with the key-lengths
  // diagonal), computed as a padded call, and its rows packed back. VarlenOffsetsAsLengths's bug
  // is in the unpacking: sequence b's key count is read as cu_seqlens_k[b + 1], an offset (clamped
  // to the tokens there are), so every sequence after the first attends to its successors' keys.
  void forward_packed(const attncheck_problem& p, const attncheck_attention_tensors& t) {
    const impl::VarlenArgs va = impl::check_varlen(p, t, memory());
    const TensorArg q = check(t.q, "q", {va.total_q, p.q_heads, p.qk_dim}, {"tokens", "heads", "dim"}, {impl::kF32});
    const TensorArg k = check(t.k, "k", {va.total_k, p.kv_heads, p.qk_dim}, {"tokens", "heads", "dim"}, {impl::kF32});
    const TensorArg v = check(t.v, "v", {va.total_k, p.kv_heads, p.v_dim}, {"tokens", "heads", "dim"}, {impl::kF32});
    const TensorArg o = check(t.out, "out", {va.total_q, p.q_heads, p.v_dim}, {"tokens", "heads", "dim"}, {impl::kF32});
    TensorArg packed_lse;
    if (t.lse != nullptr && writes_lse()) packed_lse = check(t.lse, "lse", {p.q_heads, va.total_q}, {"heads", "tokens"}, {impl::kF32});
    const std::vector<std::int64_t> cu_q = impl::checked_cu_seqlens(p, va.cu_q, "cu_seqlens_q", p.q_len, va.total_q);
    const std::vector<std::int64_t> cu_k = impl::checked_cu_seqlens(p, va.cu_k, "cu_seqlens_k", p.k_len, va.total_k);
    slopes_ = impl::checked_alibi_slopes(p, impl::alibi_slopes_of(t), memory());
    sinks_ = impl::checked_sinks(p, impl::sinks_of(t), memory());
    pending_rows_.clear();

    attncheck_problem padded = p;
    padded.varlen = 0;
    padded.has_key_lengths = 1;
    if (p.alignment == kAttncheckAlignBottomRight) padded.alignment = kAttncheckAlignKeyLengths;
    const auto buffer = [](std::vector<float>& data, std::int64_t b, std::int64_t h, std::int64_t l, std::int64_t d) {
      data.assign(static_cast<size_t>(b * h * l * d), 0.0f);
      return compact_f32(data, b, h, l, d);
    };
    const TensorArg pq = buffer(unpacked_q_, p.batch, p.q_heads, p.q_len, p.qk_dim);
    const TensorArg pk = buffer(gathered_k_, p.batch, p.kv_heads, p.k_len, p.qk_dim);
    const TensorArg pv = buffer(gathered_v_, p.batch, p.kv_heads, p.k_len, p.v_dim);
    const TensorArg po = buffer(unpacked_out_, p.batch, p.q_heads, p.q_len, p.v_dim);
    const TensorArg pl = buffer(unpacked_lse_, 1, p.batch, p.q_heads, p.q_len);
    gathered_lengths_.assign(static_cast<size_t>(p.batch), 0);
    std::vector<std::int64_t> first_row(static_cast<size_t>(p.batch));
    for (std::int64_t b = 0; b < p.batch; ++b) {
      const std::int64_t q0 = cu_q[static_cast<size_t>(b)], k0 = cu_k[static_cast<size_t>(b)];
      const std::int64_t queries = cu_q[static_cast<size_t>(b + 1)] - q0;
      std::int64_t keys = cu_k[static_cast<size_t>(b + 1)] - k0;
      if (mutation_ == Mutation::VarlenOffsetsAsLengths)
        keys = std::min({cu_k[static_cast<size_t>(b + 1)], p.k_len, va.total_k - k0});
      gathered_lengths_[static_cast<size_t>(b)] = keys;
      const std::int64_t first = p.alignment == kAttncheckAlignBottomRight ? p.q_len - queries : 0;
      first_row[static_cast<size_t>(b)] = first;
      for (std::int64_t h = 0; h < p.q_heads; ++h)
        for (std::int64_t r = 0; r < queries; ++r)
          for (std::int64_t d = 0; d < p.qk_dim; ++d) *pq.mut<float>(b, h, first + r, d) = *q.at<float>(q0 + r, h, d);
      for (std::int64_t g = 0; g < p.kv_heads; ++g)
        for (std::int64_t j = 0; j < keys; ++j) {
          for (std::int64_t d = 0; d < p.qk_dim; ++d) *pk.mut<float>(b, g, j, d) = *k.at<float>(k0 + j, g, d);
          for (std::int64_t d = 0; d < p.v_dim; ++d) *pv.mut<float>(b, g, j, d) = *v.at<float>(k0 + j, g, d);
        }
    }
    TensorArg lengths;
    lengths.data = reinterpret_cast<const char*>(gathered_lengths_.data());
    lengths.dtype = impl::kI64;
    lengths.ndim = 1;
    lengths.shape = {p.batch, 0, 0, 0};
    lengths.strides = {1, 0, 0, 0};
    TensorArg padded_lse = pl;
    padded_lse.ndim = 3;
    padded_lse.shape = {p.batch, p.q_heads, p.q_len, 0};
    padded_lse.strides = {p.q_heads * p.q_len, p.q_len, 1, 0};
    lse_ = packed_lse.present() ? padded_lse : TensorArg{};
    compute(padded, pq, pk, pv, TensorArg{}, lengths, po);
    for (std::int64_t b = 0; b < p.batch; ++b) {
      const std::int64_t q0 = cu_q[static_cast<size_t>(b)], first = first_row[static_cast<size_t>(b)];
      for (std::int64_t r = 0; r < cu_q[static_cast<size_t>(b + 1)] - q0; ++r)
        for (std::int64_t h = 0; h < p.q_heads; ++h) {
          for (std::int64_t d = 0; d < p.v_dim; ++d) *o.mut<float>(q0 + r, h, d) = *po.at<float>(b, h, first + r, d);
          if (packed_lse.present()) *packed_lse.mut<float>(h, q0 + r) = *padded_lse.at<float>(b, h, first + r);
        }
    }
  }

  // The scores of one query row against every key: s[j] the final score (softcap, then bias),
  // −inf where key j is not allowed (allowed[j] = 0), and raw[j] = σ q·k_j before the softcap,
  // whose derivative the backward pass needs. Returns the largest allowed score (−inf: none).
  float row_scores(const attncheck_problem& p, const TensorArg& q, const TensorArg& k, const TensorArg& mask,
                   const RowIndex& r, std::int64_t key_length, std::int64_t offset, double scale, std::vector<float>& s,
                   std::vector<float>& raw, std::vector<char>& allowed) const {
    const float neg_inf = -std::numeric_limits<float>::infinity();
    const std::int64_t diagonal = r.i + offset;
    std::int64_t visible_keys = p.k_len;
    if (mutation_ == Mutation::DropsLastPartialTile) visible_keys = p.k_len / 16 * 16 > 0 ? p.k_len / 16 * 16 : p.k_len;
    float row_max = neg_inf;
    for (std::int64_t j = 0; j < p.k_len; ++j) {
      bool ok = j < key_length && j < visible_keys;
      if (p.mask_kind != kAttncheckMaskNone && j >= p.mask_shape[3]) ok = false;
      if (p.causal) ok = ok && (mutation_ == Mutation::CausalOffByOne ? j < diagonal : j <= diagonal);
      const bool exclusive = mutation_ == Mutation::WindowExclusive || mutation_ == Mutation::LseLog2AndWindowExclusive;
      if (p.window_left >= 0) ok = ok && (exclusive ? j > diagonal - p.window_left : j >= diagonal - p.window_left);
      if (p.window_right >= 0) ok = ok && (exclusive ? j < diagonal + p.window_right : j <= diagonal + p.window_right);
      float score = 0;
      if (ok) {
        for (std::int64_t d = 0; d < p.qk_dim; ++d) score += *q.at<float>(r.b, r.h, r.i, d) * *k.at<float>(r.kb, r.g, j, d);
        score = static_cast<float>(score * scale);
        raw[static_cast<size_t>(j)] = score;
        if (p.softcap > 0) score = static_cast<float>(p.softcap * std::tanh(score / p.softcap));
        if (p.mask_kind != kAttncheckMaskNone) {
          const std::int64_t mb = p.mask_shape[0] == 1 ? 0 : r.b, mh = p.mask_shape[1] == 1 ? 0 : r.h,
                             mi = p.mask_shape[2] == 1 ? 0 : r.i;
          if (p.mask_kind == kAttncheckMaskBoolean) ok = *mask.at<std::uint8_t>(mb, mh, mi, j) != 0;
          else score += *mask.at<float>(mb, mh, mi, j);
        }
        if (!slopes_.empty()) {
          // The bug of AlibiReversedHeads: the slopes read in reversed head order.
          const std::int64_t head = mutation_ == Mutation::AlibiReversedHeads ? p.q_heads - 1 - r.h : r.h;
          const std::int64_t distance = j > diagonal ? j - diagonal : diagonal - j;
          score -= impl::alibi_slope_at(p, slopes_, r.b, head) * static_cast<float>(distance);
        }
      }
      allowed[static_cast<size_t>(j)] = ok && score != neg_inf;
      s[static_cast<size_t>(j)] = allowed[static_cast<size_t>(j)] ? score : neg_inf;
      if (allowed[static_cast<size_t>(j)]) row_max = std::max(row_max, score);
    }
    return row_max;
  }

  // The bug of SoftmaxOverQueries: the normalizer of row i taken down the query axis, Σ_i' e^{s_i'·}
  // over the same key positions, instead of along the keys. Summed over every key of the row.
  float query_axis_sum(const attncheck_problem& p, const TensorArg& q, const TensorArg& k, std::int64_t b,
                       std::int64_t h, std::int64_t g, std::int64_t kb, double scale, std::int64_t) const {
    float sum = 0;
    for (std::int64_t i2 = 0; i2 < p.q_len; ++i2)
      for (std::int64_t j = 0; j < p.k_len; ++j) {
        float score = 0;
        for (std::int64_t d = 0; d < p.qk_dim; ++d) score += *q.at<float>(b, h, i2, d) * *k.at<float>(kb, g, j, d);
        sum += std::exp(static_cast<float>(score * scale)) / static_cast<float>(p.k_len);
      }
    return sum;
  }

  DLDeviceType memory() const {
    switch (mutation_) {
      case Mutation::DeferredWrite:
      case Mutation::DeviceWritesPastOutput:
      case Mutation::StickyDeviceError: return static_cast<DLDeviceType>(kAttncheckSimulatedDevice);
      default: return kDLCPU;
    }
  }

  impl::TensorArg check(const DLTensor* tensor, std::string_view name, std::initializer_list<std::int64_t> shape,
                        std::initializer_list<std::string_view> dims, std::initializer_list<DLDataType> dtypes) const {
    return impl::check_tensor(tensor, name, shape, dims, dtypes, memory());
  }

  // What a faulting device kernel leaves behind: the fault is seen only when the caller
  // synchronizes the stream (backend.h, attncheck_simulated_stream).
  static void record_fault(void* stream, const char* message) {
    auto* s = static_cast<attncheck_simulated_stream*>(stream);
    if (s == nullptr || s->struct_size < sizeof(attncheck_simulated_stream) || s->error != 0) return;
    s->error = 1;
    std::snprintf(s->message, sizeof s->message, "%s", message);
  }

  Mutation mutation_;
  bool faulted_ = false;
  std::vector<float> slopes_, sinks_;  // this call's ALiBi slopes and sinks (ABI 2.3)
  std::vector<float> gathered_k_, gathered_v_;    // a paged call's K and V, gathered (ABI 2.4)
  std::vector<std::int64_t> gathered_lengths_;   // and the key lengths the gather used
  std::vector<float> unpacked_q_, unpacked_out_, unpacked_lse_;  // a packed call's, padded (ABI 2.5)
  TensorArg lse_;
  // DeferredWrite: the rows computed but not yet written when forward returned, as a kernel
  // enqueued on a stream the caller never synchronizes holds them. They are dropped at the next
  // call: the memory they were meant for was read back and freed long before.
  mutable std::vector<float> pending_rows_;
};

}  // namespace

attncheck_backend* make_mutant(Mutation mutation, const char* name, const char* description) {
  return impl::make_backend_table<MutantBackend>(name, description, mutation);
}

}  // namespace attncheck::mutants

extern "C" {
attncheck_backend* attncheck_mutant_transposed_axes_entry(void) {
  return attncheck::mutants::make_mutant(attncheck::mutants::Mutation::TransposedAxes, "mutant-transposed-axes",
                                         "indexes tensors as compact [B, L, H, D] whatever their strides");
}
attncheck_backend* attncheck_mutant_ignores_strides_entry(void) {
  return attncheck::mutants::make_mutant(attncheck::mutants::Mutation::IgnoresStrides, "mutant-ignores-strides",
                                         "indexes tensors as compact [B, H, L, D] whatever their strides");
}
attncheck_backend* attncheck_mutant_shared_projection_entry(void) {
  return attncheck::mutants::make_mutant(attncheck::mutants::Mutation::SharedProjection, "mutant-shared-projection",
                                         "the layer projects every head with head 0's weights");
}
attncheck_backend* attncheck_mutant_gqa_modulo_entry(void) {
  return attncheck::mutants::make_mutant(attncheck::mutants::Mutation::GqaModulo, "mutant-gqa-modulo",
                                         "query head h reads kv head h % Hkv");
}
attncheck_backend* attncheck_mutant_scale_one_over_d_entry(void) {
  return attncheck::mutants::make_mutant(attncheck::mutants::Mutation::ScaleOneOverD, "mutant-scale-one-over-d",
                                         "scale 1/D instead of the problem's scale");
}
attncheck_backend* attncheck_mutant_no_max_subtraction_entry(void) {
  return attncheck::mutants::make_mutant(attncheck::mutants::Mutation::NoMaxSubtraction, "mutant-no-max-subtraction",
                                         "softmax without subtracting the row max");
}
attncheck_backend* attncheck_mutant_causal_off_by_one_entry(void) {
  return attncheck::mutants::make_mutant(attncheck::mutants::Mutation::CausalOffByOne, "mutant-causal-off-by-one",
                                         "causal mask excludes the diagonal");
}
attncheck_backend* attncheck_mutant_drops_last_tile_entry(void) {
  return attncheck::mutants::make_mutant(attncheck::mutants::Mutation::DropsLastPartialTile, "mutant-drops-last-tile",
                                         "the last partial key tile of 16 is skipped");
}
attncheck_backend* attncheck_mutant_nan_leak_entry(void) {
  return attncheck::mutants::make_mutant(attncheck::mutants::Mutation::NanLeak, "mutant-nan-leak",
                                         "masked keys weighted by zero: 0·NaN leaks from padding");
}
attncheck_backend* attncheck_mutant_writes_past_output_entry(void) {
  return attncheck::mutants::make_mutant(attncheck::mutants::Mutation::WritesPastOutput, "mutant-writes-past-output",
                                         "writes one element past the end of the output");
}
attncheck_backend* attncheck_mutant_softmax_over_queries_entry(void) {
  return attncheck::mutants::make_mutant(attncheck::mutants::Mutation::SoftmaxOverQueries, "mutant-softmax-over-queries",
                                         "softmax normalized over the query axis");
}
attncheck_backend* attncheck_mutant_ignores_alignment_entry(void) {
  return attncheck::mutants::make_mutant(attncheck::mutants::Mutation::IgnoresAlignment, "mutant-ignores-alignment",
                                         "causal always top-left, whatever alignment is declared");
}
attncheck_backend* attncheck_mutant_window_exclusive_entry(void) {
  return attncheck::mutants::make_mutant(attncheck::mutants::Mutation::WindowExclusive, "mutant-window-exclusive",
                                         "window bounds exclusive instead of inclusive");
}
attncheck_backend* attncheck_mutant_empty_row_nan_entry(void) {
  return attncheck::mutants::make_mutant(attncheck::mutants::Mutation::EmptyRowNaN, "mutant-empty-row-nan",
                                         "rows with no allowed key give NaN while zeros are declared");
}
attncheck_backend* attncheck_mutant_pv_in_half_entry(void) {
  return attncheck::mutants::make_mutant(attncheck::mutants::Mutation::PvInHalf, "mutant-pv-in-half",
                                         "P·V accumulated in fp16 while fp32 is declared");
}
attncheck_backend* attncheck_mutant_modifies_q_entry(void) {
  return attncheck::mutants::make_mutant(attncheck::mutants::Mutation::ModifiesQ, "mutant-modifies-q",
                                         "scales Q in place");
}
attncheck_backend* attncheck_mutant_last_row_unwritten_entry(void) {
  return attncheck::mutants::make_mutant(attncheck::mutants::Mutation::LastRowUnwritten, "mutant-last-row-unwritten",
                                         "never writes the last query row");
}
attncheck_backend* attncheck_mutant_nondeterministic_entry(void) {
  return attncheck::mutants::make_mutant(attncheck::mutants::Mutation::Nondeterministic, "mutant-nondeterministic",
                                         "sums keys in a random order while determinism is declared");
}
attncheck_backend* attncheck_mutant_ignores_k_batch_stride_entry(void) {
  return attncheck::mutants::make_mutant(attncheck::mutants::Mutation::IgnoresKBatchStride, "mutant-ignores-k-batch-stride",
                                         "reads batch 0's K for every batch");
}
attncheck_backend* attncheck_mutant_crash_on_single_key_entry(void) {
  return attncheck::mutants::make_mutant(attncheck::mutants::Mutation::CrashOnSingleKey, "mutant-crash-on-single-key",
                                         "dereferences a null pointer when Lk = 1");
}
attncheck_backend* attncheck_mutant_hang_on_single_head_entry(void) {
  return attncheck::mutants::make_mutant(attncheck::mutants::Mutation::HangOnSingleHead, "mutant-hang-on-single-head",
                                         "loops forever when Hq = Hkv = 1");
}
attncheck_backend* attncheck_mutant_deferred_write_entry(void) {
  return attncheck::mutants::make_mutant(attncheck::mutants::Mutation::DeferredWrite, "mutant-deferred-write",
                                         "simulated device: returns before its last query rows land");
}
attncheck_backend* attncheck_mutant_device_writes_past_output_entry(void) {
  return attncheck::mutants::make_mutant(attncheck::mutants::Mutation::DeviceWritesPastOutput,
                                         "mutant-device-writes-past-output",
                                         "simulated device: writes one element past the end of the output");
}
attncheck_backend* attncheck_mutant_sticky_device_error_entry(void) {
  return attncheck::mutants::make_mutant(attncheck::mutants::Mutation::StickyDeviceError, "mutant-sticky-device-error",
                                         "simulated device: faults asynchronously for Lk >= 2 and stays faulted");
}
attncheck_backend* attncheck_mutant_lse_log2_window_exclusive_entry(void) {
  return attncheck::mutants::make_mutant(attncheck::mutants::Mutation::LseLog2AndWindowExclusive,
                                         "mutant-lse-log2-window-exclusive",
                                         "two bugs: writes the LSE in base 2, and takes window bounds exclusive");
}
attncheck_backend* attncheck_mutant_bwd_no_d_term_entry(void) {
  return attncheck::mutants::make_mutant(attncheck::mutants::Mutation::BwdNoDTerm, "mutant-bwd-no-d-term",
                                         "backward: D = rowsum(dO ∘ O) left out of dS");
}
attncheck_backend* attncheck_mutant_bwd_dv_untransposed_entry(void) {
  return attncheck::mutants::make_mutant(attncheck::mutants::Mutation::BwdDvUntransposed, "mutant-bwd-dv-untransposed",
                                         "backward: dV from P where Pᵀ belongs");
}
attncheck_backend* attncheck_mutant_bwd_gqa_one_head_entry(void) {
  return attncheck::mutants::make_mutant(attncheck::mutants::Mutation::BwdGqaOneHead, "mutant-bwd-gqa-one-head",
                                         "backward: dK, dV from one query head of each group, not the group's sum");
}
attncheck_backend* attncheck_mutant_bwd_no_softcap_derivative_entry(void) {
  return attncheck::mutants::make_mutant(attncheck::mutants::Mutation::BwdNoSoftcapDerivative, "mutant-bwd-no-softcap-derivative",
                                         "backward: the softcap's derivative 1 − tanh² left out");
}
attncheck_backend* attncheck_mutant_bwd_dk_without_scale_entry(void) {
  return attncheck::mutants::make_mutant(attncheck::mutants::Mutation::BwdDkWithoutScale, "mutant-bwd-dk-without-scale",
                                         "backward: dK without the scale");
}
attncheck_backend* attncheck_mutant_bwd_unshifted_exp_entry(void) {
  return attncheck::mutants::make_mutant(attncheck::mutants::Mutation::BwdUnshiftedExp, "mutant-bwd-unshifted-exp",
                                         "backward: P = exp(s) / exp(lse), overflowing on large logits");
}
attncheck_backend* attncheck_mutant_bwd_dq_random_order_entry(void) {
  return attncheck::mutants::make_mutant(attncheck::mutants::Mutation::BwdDqRandomOrder, "mutant-bwd-dq-random-order",
                                         "backward: dQ's key tiles added in a random order while determinism is declared");
}
attncheck_backend* attncheck_mutant_bwd_masked_keys_get_dk_entry(void) {
  return attncheck::mutants::make_mutant(attncheck::mutants::Mutation::BwdMaskedKeysGetDk, "mutant-bwd-masked-keys-get-dk",
                                         "backward: excluded keys weighted 1e-3 in dK: keys no query sees get dK != 0");
}
attncheck_backend* attncheck_mutant_bwd_dq_lost_update_entry(void) {
  return attncheck::mutants::make_mutant(attncheck::mutants::Mutation::BwdDqLostUpdate, "mutant-bwd-dq-lost-update",
                                         "backward: the last of several key tiles' dQ sums is lost");
}
attncheck_backend* attncheck_mutant_alibi_reversed_heads_entry(void) {
  return attncheck::mutants::make_mutant(attncheck::mutants::Mutation::AlibiReversedHeads, "mutant-alibi-reversed-heads",
                                         "ALiBi slopes read in reversed head order");
}
attncheck_backend* attncheck_mutant_sink_in_numerator_entry(void) {
  return attncheck::mutants::make_mutant(attncheck::mutants::Mutation::SinkInNumerator, "mutant-sink-in-numerator",
                                         "the sink added to the numerator as well as the denominator");
}
attncheck_backend* attncheck_mutant_paged_page_off_by_one_entry(void) {
  return attncheck::mutants::make_mutant(attncheck::mutants::Mutation::PagedPageOffByOne, "mutant-paged-page-off-by-one",
                                         "paged cache: the page after the one the block table names is read");
}
attncheck_backend* attncheck_mutant_paged_table_batch_zero_entry(void) {
  return attncheck::mutants::make_mutant(attncheck::mutants::Mutation::PagedTableBatchZero, "mutant-paged-table-batch-zero",
                                         "paged cache: every sequence reads batch 0's row of the block table");
}
attncheck_backend* attncheck_mutant_paged_reads_past_length_entry(void) {
  return attncheck::mutants::make_mutant(attncheck::mutants::Mutation::PagedReadsPastLength, "mutant-paged-reads-past-length",
                                         "paged cache: the last page read whole, past the sequence's length");
}
attncheck_backend* attncheck_mutant_varlen_offsets_as_lengths_entry(void) {
  return attncheck::mutants::make_mutant(attncheck::mutants::Mutation::VarlenOffsetsAsLengths,
                                         "mutant-varlen-offsets-as-lengths",
                                         "packed batch: cu_seqlens_k[b + 1], an offset, read as sequence b's key count");
}
attncheck_backend* attncheck_mutant_fp8_descale_twice_entry(void) {
  return attncheck::mutants::make_mutant(attncheck::mutants::Mutation::Fp8DescaleTwice, "mutant-fp8-descale-twice",
                                         "fp8 inputs: v's descale applied twice (V = v · dv²)");
}
}
