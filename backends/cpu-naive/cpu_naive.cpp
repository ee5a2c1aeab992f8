/// \file cpu_naive.cpp
/// \brief cpu-naive: attention in fp32, three passes over each query row, one thread, written to
/// be read. It is the suite's second opinion: the masks are implemented here from the text of
/// problem.h (a per-key predicate), independently of the reference's code and of cpu-flash's
/// interval logic, so a shared misreading is unlikely.
///
/// Per row:  pass 1  s_j = fl32(fl32(q·k_j) · scale), soft-capped, bias added; m = max s_j
///           pass 2  p_j = exp(s_j − m), l = Σ p_j                  (fp32, sequential)
///           pass 3  O = (Σ p_j v_j) / l                             (fp32, sequential)
/// Only allowed keys take part in any pass, so NaN/Inf stored at masked keys never reach O.
/// The backward pass (ABI 2.2) recomputes P from the forward's lse, one row at a time, with the
/// same per-key predicate; see attention_backward.
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "attncheck/backend_impl.h"

namespace attncheck::cpu_naive {
namespace {

using impl::check_cpu_tensor;
using impl::TensorArg;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

/// Everything one attention call reads and writes, checked.
struct Call {
  attncheck_problem p{};
  TensorArg q, k, v, mask, out, lse;
  std::vector<std::int64_t> key_lengths;  // empty unless has_key_lengths
};

Call check_attention(const attncheck_problem& p, const DLTensor* q, const DLTensor* k, const DLTensor* v,
                     const DLTensor* mask, const DLTensor* key_lengths, DLTensor* out, DLTensor* lse) {
  impl::check_problem(p);
  Call c;
  c.p = p;
  c.q = check_cpu_tensor(q, "q", {p.batch, p.q_heads, p.q_len, p.qk_dim}, {"batch", "query heads", "query length", "head dim"}, {impl::kF32});
  c.k = check_cpu_tensor(k, "k", {p.batch, p.kv_heads, p.k_len, p.qk_dim}, {"batch", "kv heads", "key length", "head dim"}, {impl::kF32});
  c.v = check_cpu_tensor(v, "v", {p.batch, p.kv_heads, p.k_len, p.v_dim}, {"batch", "kv heads", "key length", "value dim"}, {impl::kF32});
  c.out = check_cpu_tensor(out, "out", {p.batch, p.q_heads, p.q_len, p.v_dim}, {"batch", "query heads", "query length", "value dim"}, {impl::kF32});
  if (lse != nullptr)
    c.lse = check_cpu_tensor(lse, "lse", {p.batch, p.q_heads, p.q_len}, {"batch", "query heads", "query length"}, {impl::kF32});
  if (p.mask_kind != kAttncheckMaskNone) {
    const std::initializer_list<std::string_view> dims{"batch", "heads", "query length", "key length"};
    const std::initializer_list<std::int64_t> shape{p.mask_shape[0], p.mask_shape[1], p.mask_shape[2], p.mask_shape[3]};
    c.mask = p.mask_kind == kAttncheckMaskBoolean ? check_cpu_tensor(mask, "mask", shape, dims, {impl::kU8})
                                                  : check_cpu_tensor(mask, "mask", shape, dims, {impl::kF32});
  } else if (mask != nullptr) {
    impl::invalid("mask: given, but problem.mask_kind is none");
  }
  c.key_lengths = impl::checked_key_lengths(p, key_lengths);
  return c;
}

/// Whether query row i (batch b, query head h) may attend to key j, clause by clause from
/// problem.h. `bias` is the additive mask value at (b, h, i, j), 0 without one.
bool key_allowed(const Call& c, std::int64_t b, std::int64_t h, std::int64_t i, std::int64_t j, float* bias) {
  const attncheck_problem& p = c.p;
  *bias = 0.0f;
  if (p.has_key_lengths && j >= c.key_lengths[b]) return false;  // padding / varlen
  if (p.mask_kind != kAttncheckMaskNone) {
    if (j >= p.mask_shape[3]) return false;  // a short mask masks the keys it does not reach
    const std::int64_t mb = p.mask_shape[0] == 1 ? 0 : b;
    const std::int64_t mh = p.mask_shape[1] == 1 ? 0 : h;
    const std::int64_t mi = p.mask_shape[2] == 1 ? 0 : i;
    if (p.mask_kind == kAttncheckMaskBoolean) {
      if (*c.mask.at<std::uint8_t>(mb, mh, mi, j) == 0) return false;
    } else {
      *bias = *c.mask.at<float>(mb, mh, mi, j);
      if (*bias == kNegInf) return false;  // a -inf bias masks its key exactly
    }
  }
  // The diagonal of row i: p = i + offset, with the offset the alignment names.
  std::int64_t offset = 0;
  if (p.alignment == kAttncheckAlignBottomRight) offset = p.k_len - p.q_len;
  if (p.alignment == kAttncheckAlignOffset) offset = p.diagonal_offset;
  if (p.alignment == kAttncheckAlignKeyLengths) offset = c.key_lengths[b] - p.q_len;
  const std::int64_t diagonal = i + offset;
  if (p.causal && j > diagonal) return false;
  if (p.window_left >= 0 && j < diagonal - p.window_left) return false;
  if (p.window_right >= 0 && j > diagonal + p.window_right) return false;
  return true;
}

/// σ·q·k of query row i (batch b, query head h) and key j of kv head g, summed in fp32 in order.
float raw_score(const Call& c, std::int64_t b, std::int64_t h, std::int64_t g, std::int64_t i, std::int64_t j) {
  float dot = 0.0f;
  for (std::int64_t d = 0; d < c.p.qk_dim; ++d) dot += *c.q.at<float>(b, h, i, d) * *c.k.at<float>(b, g, j, d);
  return dot * static_cast<float>(c.p.scale);
}

/// The score after softcap c·tanh(r/c) (c = 0: off); the bias is added after it.
float capped_score(float raw, float cap) { return cap > 0.0f ? cap * std::tanh(raw / cap) : raw; }

void attention(const Call& c) {
  const attncheck_problem& p = c.p;
  const std::int64_t group = p.q_heads / p.kv_heads;
  const float cap = static_cast<float>(p.softcap);
  std::vector<float> score(static_cast<size_t>(p.k_len));
  std::vector<char> allowed(static_cast<size_t>(p.k_len));
  std::vector<float> acc(static_cast<size_t>(p.v_dim));

  for (std::int64_t b = 0; b < p.batch; ++b) {
    for (std::int64_t h = 0; h < p.q_heads; ++h) {
      const std::int64_t g = h / group;  // the kv head this query head reads
      for (std::int64_t i = 0; i < p.q_len; ++i) {
        // Pass 1: scores of the allowed keys and their maximum.
        float m = kNegInf;
        bool any = false;
        for (std::int64_t j = 0; j < p.k_len; ++j) {
          float bias = 0.0f;
          allowed[j] = key_allowed(c, b, h, i, j, &bias);
          if (!allowed[j]) continue;
          const float s = capped_score(raw_score(c, b, h, g, i, j), cap) + bias;
          score[j] = s;
          m = any ? std::fmax(m, s) : s;
          any = true;
        }
        if (!any) {  // no allowed key: O = 0, LSE = -inf (the declared convention)
          for (std::int64_t d = 0; d < p.v_dim; ++d) *c.out.mut<float>(b, h, i, d) = 0.0f;
          if (c.lse.present()) *c.lse.mut<float>(b, h, i) = kNegInf;
          continue;
        }
        // Pass 2: unnormalized weights and their sum.
        float l = 0.0f;
        for (std::int64_t j = 0; j < p.k_len; ++j) {
          if (!allowed[j]) continue;
          score[j] = std::exp(score[j] - m);
          l += score[j];
        }
        // Pass 3: the weighted sum of V, divided once at the end.
        for (std::int64_t d = 0; d < p.v_dim; ++d) acc[d] = 0.0f;
        for (std::int64_t j = 0; j < p.k_len; ++j) {
          if (!allowed[j]) continue;
          for (std::int64_t d = 0; d < p.v_dim; ++d) acc[d] += score[j] * *c.v.at<float>(b, g, j, d);
        }
        for (std::int64_t d = 0; d < p.v_dim; ++d) *c.out.mut<float>(b, h, i, d) = acc[d] / l;
        if (c.lse.present()) *c.lse.mut<float>(b, h, i) = m + std::log(l);
      }
    }
  }
}

/// Everything one backward call reads and writes, checked: the forward's call plus its O and
/// lse, the output gradients and the input gradients.
struct BackwardCall {
  Call forward;
  TensorArg dout, dlse, dq, dk, dv, dbias;
};

BackwardCall check_backward(const attncheck_problem& p, const attncheck_backward_tensors& t) {
  BackwardCall c;
  // out and lse are inputs here, checked with the forward's rules (const only in intent).
  c.forward = check_attention(p, t.q, t.k, t.v, t.mask, t.key_lengths, const_cast<DLTensor*>(t.out), nullptr);
  c.forward.lse = check_cpu_tensor(t.lse, "lse", {p.batch, p.q_heads, p.q_len}, {"batch", "query heads", "query length"}, {impl::kF32});
  const std::initializer_list<std::string_view> rows{"batch", "query heads", "query length"};
  c.dout = check_cpu_tensor(t.dout, "dout", {p.batch, p.q_heads, p.q_len, p.v_dim}, {"batch", "query heads", "query length", "value dim"}, {impl::kF32});
  if (t.dlse != nullptr) c.dlse = check_cpu_tensor(t.dlse, "dlse", {p.batch, p.q_heads, p.q_len}, rows, {impl::kF32});
  c.dq = check_cpu_tensor(t.dq, "dq", {p.batch, p.q_heads, p.q_len, p.qk_dim}, {"batch", "query heads", "query length", "head dim"}, {impl::kF32});
  c.dk = check_cpu_tensor(t.dk, "dk", {p.batch, p.kv_heads, p.k_len, p.qk_dim}, {"batch", "kv heads", "key length", "head dim"}, {impl::kF32});
  c.dv = check_cpu_tensor(t.dv, "dv", {p.batch, p.kv_heads, p.k_len, p.v_dim}, {"batch", "kv heads", "key length", "value dim"}, {impl::kF32});
  if (t.dbias != nullptr) {
    if (p.mask_kind != kAttncheckMaskAdditive) impl::invalid("dbias: given, but the problem has no additive mask");
    c.dbias = check_cpu_tensor(t.dbias, "dbias", {p.mask_shape[0], p.mask_shape[1], p.mask_shape[2], p.mask_shape[3]},
                               {"batch", "heads", "query length", "key length"}, {impl::kF32});
  }
  return c;
}

/// The gradients of O = softmax(S) V row by row, from the forward's lse (backend.h, the backward
/// profile): P_j = exp(s_j − lse), dV_j += P_j dO, dP_j = dO·V_j, D = dO·O,
/// dS_j = P_j (dP_j − D + dlse), through softcap c·tanh(r/c) as dR_j = dS_j (1 − tanh²(r_j/c)),
/// dQ = σ Σ_j dR_j K_j, dK_j += σ dR_j Q. The additive bias is added after the cap, so its
/// gradient is dS itself, summed over the mask's broadcast axes. Every sum is one fp32 running
/// sum in loop order (b, h, i, j); dK and dV of a GQA group gather its query heads in that sum.
void attention_backward(const BackwardCall& bc) {
  const Call& c = bc.forward;
  const attncheck_problem& p = c.p;
  const std::int64_t group = p.q_heads / p.kv_heads;
  const float scale = static_cast<float>(p.scale);
  const float cap = static_cast<float>(p.softcap);
  auto zero = [](const TensorArg& t, std::int64_t n0, std::int64_t n1, std::int64_t n2, std::int64_t n3) {
    for (std::int64_t a = 0; a < n0; ++a)
      for (std::int64_t b = 0; b < n1; ++b)
        for (std::int64_t i = 0; i < n2; ++i)
          for (std::int64_t d = 0; d < n3; ++d) *t.mut<float>(a, b, i, d) = 0.0f;
  };
  zero(bc.dq, p.batch, p.q_heads, p.q_len, p.qk_dim);
  zero(bc.dk, p.batch, p.kv_heads, p.k_len, p.qk_dim);
  zero(bc.dv, p.batch, p.kv_heads, p.k_len, p.v_dim);
  if (bc.dbias.present()) zero(bc.dbias, p.mask_shape[0], p.mask_shape[1], p.mask_shape[2], p.mask_shape[3]);

  std::vector<float> raw(static_cast<size_t>(p.k_len)), prob(static_cast<size_t>(p.k_len));
  std::vector<char> allowed(static_cast<size_t>(p.k_len));
  for (std::int64_t b = 0; b < p.batch; ++b) {
    for (std::int64_t h = 0; h < p.q_heads; ++h) {
      const std::int64_t g = h / group;
      for (std::int64_t i = 0; i < p.q_len; ++i) {
        const float lse = *c.lse.at<float>(b, h, i);
        if (lse == kNegInf) continue;  // no allowed key: O does not depend on anything, dQ stays 0
        float delta = 0.0f;  // D = dO·O
        for (std::int64_t d = 0; d < p.v_dim; ++d) delta += *bc.dout.at<float>(b, h, i, d) * *c.out.at<float>(b, h, i, d);
        const float dlse = bc.dlse.present() ? *bc.dlse.at<float>(b, h, i) : 0.0f;
        for (std::int64_t j = 0; j < p.k_len; ++j) {
          float bias = 0.0f;
          allowed[j] = key_allowed(c, b, h, i, j, &bias);
          if (!allowed[j]) continue;
          raw[j] = raw_score(c, b, h, g, i, j);
          prob[j] = std::exp(capped_score(raw[j], cap) + bias - lse);
        }
        for (std::int64_t j = 0; j < p.k_len; ++j) {
          if (!allowed[j]) continue;
          float dp = 0.0f;
          for (std::int64_t d = 0; d < p.v_dim; ++d) {
            const float dout = *bc.dout.at<float>(b, h, i, d);
            dp += dout * *c.v.at<float>(b, g, j, d);
            *bc.dv.mut<float>(b, g, j, d) += prob[j] * dout;
          }
          const float ds = prob[j] * (dp - delta + dlse);
          if (bc.dbias.present()) {
            const std::int64_t mb = p.mask_shape[0] == 1 ? 0 : b, mh = p.mask_shape[1] == 1 ? 0 : h;
            const std::int64_t mi = p.mask_shape[2] == 1 ? 0 : i;
            *bc.dbias.mut<float>(mb, mh, mi, j) += ds;
          }
          float dr = ds;
          if (cap > 0.0f) {
            const float t = std::tanh(raw[j] / cap);
            dr = ds * (1.0f - t * t);
          }
          for (std::int64_t d = 0; d < p.qk_dim; ++d) {
            *bc.dq.mut<float>(b, h, i, d) += scale * dr * *c.k.at<float>(b, g, j, d);
            *bc.dk.mut<float>(b, g, j, d) += scale * dr * *c.q.at<float>(b, h, i, d);
          }
        }
      }
    }
  }
}

/// A compact fp32 DLTensor over `storage`.
struct Owned {
  std::vector<float> storage;
  std::vector<std::int64_t> shape;
  DLTensor tensor{};
  Owned(std::initializer_list<std::int64_t> dims) : shape(dims) {
    std::int64_t n = 1;
    for (std::int64_t d : dims) n *= d;
    storage.assign(static_cast<size_t>(n), 0.0f);
    tensor.data = storage.data();
    tensor.device = {kDLCPU, 0};
    tensor.ndim = static_cast<std::int32_t>(shape.size());
    tensor.dtype = impl::kF32;
    tensor.shape = shape.data();
  }
  Owned(const Owned&) = delete;
  Owned& operator=(const Owned&) = delete;
};

void layer(const attncheck_layer_problem& lp, const attncheck_layer_tensors& t) {
  const attncheck_problem p = attncheck_layer_core(&lp);
  impl::check_problem(p);
  if (lp.model_dim < 1) impl::invalid("layer.model_dim is " + std::to_string(lp.model_dim) + ", but must be >= 1");
  if (lp.self_attention && p.k_len != p.q_len)
    impl::invalid("layer: self-attention needs Lk = Lq, but Lk = " + std::to_string(p.k_len) + " and Lq = " + std::to_string(p.q_len));
  const std::int64_t B = p.batch, Hq = p.q_heads, Hkv = p.kv_heads, Lq = p.q_len, Lk = p.k_len;
  const std::int64_t Dk = p.qk_dim, Dv = p.v_dim, dm = lp.model_dim;
  const TensorArg x = check_cpu_tensor(t.x, "x", {B, Lq, dm}, {"batch", "query length", "model dim"}, {impl::kF32});
  const TensorArg xkv = lp.self_attention ? x : check_cpu_tensor(t.x_kv, "x_kv", {B, Lk, dm}, {"batch", "key length", "model dim"}, {impl::kF32});
  const TensorArg wq = check_cpu_tensor(t.w_q, "w_q", {Hq, dm, Dk}, {"query heads", "model dim", "head dim"}, {impl::kF32});
  const TensorArg wk = check_cpu_tensor(t.w_k, "w_k", {Hkv, dm, Dk}, {"kv heads", "model dim", "head dim"}, {impl::kF32});
  const TensorArg wv = check_cpu_tensor(t.w_v, "w_v", {Hkv, dm, Dv}, {"kv heads", "model dim", "value dim"}, {impl::kF32});
  const TensorArg wo = check_cpu_tensor(t.w_o, "w_o", {Hq * Dv, dm}, {"heads x value dim", "model dim"}, {impl::kF32});
  TensorArg bq, bk, bv, bo;
  if (lp.has_qkv_bias) {
    bq = check_cpu_tensor(t.b_q, "b_q", {Hq, Dk}, {"query heads", "head dim"}, {impl::kF32});
    bk = check_cpu_tensor(t.b_k, "b_k", {Hkv, Dk}, {"kv heads", "head dim"}, {impl::kF32});
    bv = check_cpu_tensor(t.b_v, "b_v", {Hkv, Dv}, {"kv heads", "value dim"}, {impl::kF32});
  }
  if (lp.has_out_bias) bo = check_cpu_tensor(t.b_o, "b_o", {dm}, {"model dim"}, {impl::kF32});
  const TensorArg out = check_cpu_tensor(t.out, "out", {B, Lq, dm}, {"batch", "query length", "model dim"}, {impl::kF32});

  // Projections, one head at a time: proj[b, h, i, e] = Σ_m src[b, i, m] · w[h, m, e] (+ bias[h, e]).
  auto project = [&](const TensorArg& src, const TensorArg& w, const TensorArg& bias, std::int64_t heads,
                     std::int64_t len, std::int64_t dim, Owned& dst) {
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t h = 0; h < heads; ++h)
        for (std::int64_t i = 0; i < len; ++i)
          for (std::int64_t e = 0; e < dim; ++e) {
            float sum = 0.0f;
            for (std::int64_t m = 0; m < dm; ++m) sum += *src.at<float>(b, i, m) * *w.at<float>(h, m, e);
            if (bias.present()) sum += *bias.at<float>(h, e);
            dst.storage[static_cast<size_t>(((b * heads + h) * len + i) * dim + e)] = sum;
          }
  };
  Owned q{B, Hq, Lq, Dk}, k{B, Hkv, Lk, Dk}, v{B, Hkv, Lk, Dv}, o{B, Hq, Lq, Dv};
  project(x, wq, bq, Hq, Lq, Dk, q);
  project(xkv, wk, bk, Hkv, Lk, Dk, k);
  project(xkv, wv, bv, Hkv, Lk, Dv, v);
  attention(check_attention(p, &q.tensor, &k.tensor, &v.tensor, t.mask, t.key_lengths, &o.tensor, nullptr));

  // Output projection of the concatenated heads: out[b, i, :] = Σ_{h,e} O[b, h, i, e] · W_O[h·Dv + e, :] + b_O.
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t i = 0; i < Lq; ++i)
      for (std::int64_t n = 0; n < dm; ++n) {
        float sum = 0.0f;
        for (std::int64_t h = 0; h < Hq; ++h)
          for (std::int64_t e = 0; e < Dv; ++e)
            sum += o.storage[static_cast<size_t>(((b * Hq + h) * Lq + i) * Dv + e)] * *wo.at<float>(h * Dv + e, n);
        if (bo.present()) sum += *bo.at<float>(n);
        *out.mut<float>(b, i, n) = sum;
      }
}

class CpuNaive final : public impl::BackendImpl {
 public:
  attncheck_numerics_profile profile(DLDataType input) const override {
    if (!impl::same_dtype(input, impl::kF32))
      impl::unsupported("cpu-naive computes in fp32 and takes float32 inputs only, not " + impl::dtype_string(input));
    attncheck_numerics_profile pr{};
    pr.input_dtype = impl::kF32;
    pr.score_dtype = impl::kF32;        // q·k accumulated and kept in fp32
    pr.probability_dtype = impl::kF32;  // P never leaves fp32
    pr.accumulator_dtype = impl::kF32;
    pr.output_dtype = impl::kF32;
    pr.accumulation_rounding = kAttncheckRoundNearest;
    pr.products_per_rounding = 1;  // every product is rounded into a sequential sum
    pr.softmax_block = 0;          // three-pass: the max is known before any exp
    pr.deterministic = 1;          // one thread, fixed order
    pr.empty_row = kAttncheckEmptyRowZeros;
    pr.flushes_subnormals = 0;
    pr.accepts_strides = 1;
    pr.writes_lse = 1;
    // glibc's expf and tanhf are within 1 and 2 ulp: relative errors below 2^-23 and 2^-22.
    pr.exp_relative_error = 0x1p-23;
    pr.tanh_relative_error = 0x1p-22;
    return pr;
  }

  void check_supported(const attncheck_problem& problem, DLDataType input, DLDeviceType device) const override {
    impl::check_problem(problem);
    if (!impl::same_dtype(input, impl::kF32))
      impl::unsupported("cpu-naive takes float32 inputs only, not " + impl::dtype_string(input));
    if (device != kDLCPU) impl::unsupported("cpu-naive reads host memory only (device type " + std::to_string(device) + ")");
  }

  void forward(const attncheck_problem& p, const attncheck_attention_tensors& t) override {
    attention(check_attention(p, t.q, t.k, t.v, t.mask, t.key_lengths, t.out, t.lse));
  }

  bool has_layer() const override { return true; }
  void forward_layer(const attncheck_layer_problem& p, const attncheck_layer_tensors& t) override { layer(p, t); }

  bool has_backward() const override { return true; }
  attncheck_backward_profile backward_profile(const attncheck_problem& problem, DLDataType input) const override {
    check_supported(problem, input, kDLCPU);
    attncheck_backward_profile pr{};
    pr.gradient_dtype = impl::kF32;
    pr.probability_dtype = impl::kF32;  // P recomputed in fp32 and never re-rounded
    pr.dp_dtype = impl::kF32;
    pr.ds_dtype = impl::kF32;
    pr.accumulator_dtype = impl::kF32;
    pr.group_sum_dtype = impl::kF32;  // a group's query heads add into the same fp32 running sums
    pr.query_block = 0;               // one running sum per gradient element, in loop order
    pr.key_block = 0;
    pr.recomputes_from_lse = 1;
    pr.dq_atomic = 0;
    pr.deterministic = 1;
    pr.accepts_dlse = 1;
    pr.writes_dbias = 1;
    return pr;
  }
  void backward(const attncheck_problem& p, const attncheck_backward_tensors& t) override {
    attention_backward(check_backward(p, t));
  }
};

}  // namespace
}  // namespace attncheck::cpu_naive

extern "C" attncheck_backend* attncheck_cpu_naive_entry(void) {
  return attncheck::impl::make_backend_table<attncheck::cpu_naive::CpuNaive>(
      "cpu-naive", "fp32, three-pass softmax, one thread: the readable second opinion");
}
