#include "attncheck/reference.h"
#include "attncheck/paged.h"
#include "attncheck/varlen.h"

#include <Eigen/Dense>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <fmt/format.h>
#include <limits>
#include <thread>
#include <vector>

#include "kernels/elementary.h"
#include "kernels/fixed_order.h"
#include "row_block.h"

namespace attncheck {
namespace {

using detail::BlockKeys;
using detail::FixedOrderKernels;
using detail::KeyRange;
using detail::RowMap;
using detail::RowMatrix;
constexpr double kNegInf = -std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

struct Workspace {
  RowMatrix scores;   // [rows, keys]: scores, then unnormalized weights e^{s−m}, then P if wanted
  RowMatrix logits;   // final scores s_k, kept for the row statistics
  RowMatrix dot_abs;  // a_k = |σ|·Σ_l |q_l k_kl|, for the row statistics
  RowMatrix values;   // V block with non-finite entries zeroed (only when V has any)
  RowMatrix q_copy, k_copy, v_copy;  // gathers of views whose rows are not contiguous
  RowMatrix q_abs, k_abs;            // |Q|, |K| for a_k
  std::vector<double> weights;       // e^{s−m} of one row, for the row statistics
  std::vector<KeyRange> ranges;      // per row of the block, relative to the block's first key
  Eigen::VectorXd normalizer;        // Z per row
};

class Reference {
 public:
  Reference(const Problem& p, const AttentionInputs& in, const ReferenceOptions& opt, AttentionResult& out)
      : p_(p), in_(in), opt_(opt), out_(out), scale_(p.effective_scale()), kernels_(detail::fixed_order_kernels(opt.isa)) {}

  void run_block(std::int64_t b, std::int64_t h, std::int64_t i0, std::int64_t rows, Workspace& ws) const;

 private:
  void write_stage(HostTensor& stage, std::int64_t b, std::int64_t h, std::int64_t i0, std::int64_t key0,
                   const RowMatrix& scores) const;
  void write_statistics(std::int64_t b, std::int64_t h, std::int64_t i0, std::int64_t key0, const RowMap& v,
                        double sink, Workspace& ws) const;

  const Problem& p_;
  const AttentionInputs& in_;
  const ReferenceOptions& opt_;
  AttentionResult& out_;
  const double scale_;
  const FixedOrderKernels& kernels_;
};

// Rows [i0, i0 + rows) of a score stage, keys [key0, key0 + scores.cols()) (the block spans every
// key when stages are asked for).
void Reference::write_stage(HostTensor& stage, std::int64_t b, std::int64_t h, std::int64_t i0, std::int64_t key0,
                            const RowMatrix& scores) const {
  for (std::int64_t r = 0; r < scores.rows(); ++r)
    for (std::int64_t c = 0; c < scores.cols(); ++c) stage(b, h, i0 + r, key0 + c) = scores(r, c);
}

void Reference::run_block(std::int64_t b, std::int64_t h, std::int64_t i0, std::int64_t rows, Workspace& ws) const {
  const std::int64_t kv = p_.kv_head_of(h);
  const std::int64_t key_length = p_.has_key_lengths ? in_.key_lengths[static_cast<size_t>(b)] : p_.k_len;

  // Score stages need every key's score, so they widen the block to all keys; the extra keys
  // weigh +0 and change no bit of O or LSE (kernels/fixed_order.h).
  const BlockKeys span = detail::block_keys(p_, key_length, i0, rows, out_.scores.has_value(), ws.ranges);
  const std::int64_t key0 = span.first, keys = span.count;
  // The sink σ_h: one more key of value 0 (problem.h); −inf is no sink.
  const double sink = p_.sinks ? in_.sinks[static_cast<size_t>(h)] : kNegInf;
  auto lse = [&](std::int64_t r) -> double& { return out_.lse(0, b, h, i0 + r); };
  if (keys == 0) {  // no row of the block has an allowed key: O = 0, LSE = log e^σ = σ
    for (std::int64_t r = 0; r < rows; ++r) {
      lse(r) = sink;
      if (!opt_.row_statistics) continue;
      // The sink alone: n = 1, m = σ, M = |σ|; every weighted sum is 0, as V_sink = O = 0.
      out_.stats->max_score(0, b, h, i0 + r) = sink;
      if (sink != kNegInf) {
        out_.stats->allowed_keys(0, b, h, i0 + r) = 1;
        out_.stats->max_abs_score(0, b, h, i0 + r) = std::fabs(sink);
      }
    }
    return;  // out and the other statistics are zero-initialized
  }

  const RowMap q = detail::matrix_at(in_.q, b, h, i0, rows, ws.q_copy);
  const RowMap k = detail::matrix_at(in_.k, b, kv, key0, keys, ws.k_copy);
  const RowMap v = detail::matrix_at(in_.v, b, kv, key0, keys, ws.v_copy);

  // s = σ·(Q Kᵀ) (σ multiplies each finished dot product, as GEMM's alpha), then softcap
  // c·tanh(s/c), then masks and bias (ONNX order: cap before bias).
  ws.scores.resize(rows, keys);
  kernels_.scaled_product_transposed(rows, keys, q.cols(), scale_, q.data(), q.outerStride(), k.data(), k.outerStride(),
                                     ws.scores.data(), ws.scores.outerStride());
  if (out_.scores) write_stage(out_.scores->raw, b, h, i0, key0, ws.scores);
  if (p_.softcap > 0) detail::apply_softcap(p_.softcap, ws.scores, nullptr);
  if (out_.scores) write_stage(out_.scores->capped, b, h, i0, key0, ws.scores);
  detail::exclude_and_bias(p_, {in_.mask, detail::alibi_slope(p_, in_.alibi_slopes, b, h), key_length}, b, h, i0,
                           key0, ws.ranges, ws.scores);
  if (out_.scores) write_stage(out_.scores->biased, b, h, i0, key0, ws.scores);
  if (opt_.row_statistics) {
    ws.logits = ws.scores;
    ws.q_abs = q.cwiseAbs();
    ws.k_abs = k.cwiseAbs();
    ws.dot_abs.resize(rows, keys);
    kernels_.scaled_product_transposed(rows, keys, q.cols(), std::fabs(scale_), ws.q_abs.data(), ws.q_abs.outerStride(),
                                       ws.k_abs.data(), ws.k_abs.outerStride(), ws.dot_abs.data(),
                                       ws.dot_abs.outerStride());
  }

  // Softmax numerators e^{s−m} per row, over the row's key range only.
  ws.normalizer.resize(rows);
  for (std::int64_t r = 0; r < rows; ++r) {
    auto row = ws.scores.row(r).array();
    const KeyRange range = ws.ranges[static_cast<size_t>(r)];
    const std::int64_t count = range.last - range.first;
    double* live = ws.scores.row(r).data() + range.first;
    // A NaN score (an attended NaN in Q or K) makes the row NaN: e^{NaN−m} is NaN, and so are Z,
    // LSE, O and P. The maximum skips NaNs, so only a row whose other keys are all masked needs
    // the NaN put in by hand (it would otherwise look empty).
    double m = kernels_.max(live, count);
    if (m == kNegInf && std::any_of(live, live + count, [](double s) { return s != s; })) m = kNaN;
    row.head(range.first).setZero();
    row.tail(keys - range.last).setZero();
    if (m == kNegInf && sink == kNegInf) {  // no allowed key: O = 0, LSE = −inf, and P = 0
      lse(r) = kNegInf;
      std::fill_n(live, count, 0.0);
      continue;
    }
    // The sink takes part in the max (a NaN row stays NaN) and adds e^{σ−m} to Z after the keys.
    if (m == m) m = std::max(m, sink);
    // Max-subtraction: every exponent is ≤ 0, nothing overflows, and a fully masked stretch inside
    // a live row never forms −inf − (−inf). Masked keys weigh exactly +0 (detail::exp(−inf)).
    kernels_.exp_shifted(live, count, m);
    double z = kernels_.sum(live, count, key0 + range.first);  // partials by absolute key index
    if (sink != kNegInf) z += detail::exp(sink - m);
    ws.normalizer(r) = z;
    lse(r) = m + detail::log(z);
  }

  // O = (Σ_k e^{s_k−m} V_k) / Z: the division is done once per output, not once per weight.
  // Non-finite values of keys with weight 0 must not leak through 0·NaN, so such entries are
  // zeroed for the product and added back only where the weight is nonzero (the result is then
  // non-finite whatever the order).
  Eigen::Map<RowMatrix> o(&out_.out(b, h, i0, 0), rows, p_.v_dim);
  bool v_finite = true;  // row by row: V's rows are contiguous, and Eigen's allFinite walks columns
  for (std::int64_t c = 0; c < keys && v_finite; ++c) {
    const double* row = v.data() + c * v.outerStride();
    double zero_if_finite = 0;
    for (std::int64_t j = 0; j < p_.v_dim; ++j) zero_if_finite += row[j] - row[j];  // NaN for ±inf and NaN
    v_finite = zero_if_finite == 0;
  }
  if (!v_finite) ws.values = v.unaryExpr([](double x) { return std::isfinite(x) ? x : 0.0; });
  const double* v_data = v_finite ? v.data() : ws.values.data();
  const std::int64_t ldv = v_finite ? v.outerStride() : ws.values.outerStride();
  kernels_.product(rows, p_.v_dim, keys, ws.scores.data(), ws.scores.outerStride(), v_data, ldv, o.data(), p_.v_dim);
  if (!v_finite)
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t c = 0; c < keys; ++c)
        if (ws.scores(r, c) != 0.0)
          for (std::int64_t j = 0; j < p_.v_dim; ++j)
            if (!std::isfinite(v(c, j))) o(r, j) += ws.scores(r, c) * v(c, j);
  for (std::int64_t r = 0; r < rows; ++r) {
    if (lse(r) == kNegInf)
      o.row(r).setZero();
    else
      o.row(r) /= ws.normalizer(r);
  }
  detail::canonicalize_nan(o.data(), rows * p_.v_dim);
  for (std::int64_t r = 0; r < rows; ++r) detail::canonicalize_nan(&lse(r), 1);

  if (!out_.probabilities && !opt_.row_statistics) return;
  for (std::int64_t r = 0; r < rows; ++r)  // P = e^{s−m} / Z
    if (lse(r) != kNegInf) ws.scores.row(r) /= ws.normalizer(r);
  detail::canonicalize_nan(ws.scores.data(), rows * keys);
  if (out_.probabilities)
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t c = 0; c < keys; ++c) (*out_.probabilities)(b, h, i0 + r, key0 + c) = ws.scores(r, c);
  if (opt_.row_statistics) write_statistics(b, h, i0, key0, v, sink, ws);
}

// numerics/README.md §2.2's row data, from the final scores, the weights and the finished outputs.
// A sink (σ > −inf) is one more key of score σ, a_k = 0 and V = 0 (problem.h): it counts in n, m,
// M and Z, and in the sums over keys it adds p_σ·|O_j| to C_j, p_σ·|σ|·|O_j| to Cs_j and
// (p_σ·|O_j|)² to W_j², nothing to A_j, Ca_j, T_j or the reachable maximum of V.
void Reference::write_statistics(std::int64_t b, std::int64_t h, std::int64_t i0, std::int64_t key0, const RowMap& v,
                                 double sink, Workspace& ws) const {
  RowStatistics& st = *out_.stats;
  const double fp16_weight_normal = std::ldexp(1.0, -14);  // ν_P of fp16 (and of e5m2)
  const double e4m3_weight_normal = std::ldexp(1.0, -6);   // ν_P of e4m3
  for (std::int64_t r = 0; r < ws.scores.rows(); ++r) {
    const std::int64_t i = i0 + r;
    double n = 0, m = kNegInf, big_m = 0, max_dot = 0;
    for (std::int64_t c = 0; c < ws.logits.cols(); ++c) {
      const double s = ws.logits(r, c);
      if (s == kNegInf) continue;
      n += 1;
      m = std::max(m, s);
      max_dot = std::max(max_dot, ws.dot_abs(r, c));
    }
    if (sink != kNegInf) {
      n += 1;
      m = std::max(m, sink);
    }
    st.allowed_keys(0, b, h, i) = n;
    st.max_score(0, b, h, i) = m;
    st.max_dot_abs(0, b, h, i) = max_dot;
    if (p_.has_alibi()) {  // the largest distance over the row's allowed keys, times |slope|
      const std::int64_t key_length = p_.has_key_lengths ? in_.key_lengths[static_cast<size_t>(b)] : p_.k_len;
      const std::int64_t diagonal = p_.diagonal_key(i, key_length);
      double distance = 0;
      for (std::int64_t c = 0; c < ws.logits.cols(); ++c)
        if (ws.logits(r, c) != kNegInf)
          distance = std::max(distance, static_cast<double>(std::abs(key0 + c - diagonal)));
      st.max_abs_alibi(0, b, h, i) = std::fabs(detail::alibi_slope(p_, in_.alibi_slopes, b, h)) * distance;
    }
    if (n == 0) continue;
    // e^{s−m}·Z⁻¹ is the weight; keys below fp32's underflow do not constrain M.
    ws.weights.assign(ws.logits.row(r).begin(), ws.logits.row(r).end());
    kernels_.exp_shifted(ws.weights.data(), ws.logits.cols(), m);  // masked keys: e^{−inf} = +0
    double z = 0;
    for (std::int64_t c = 0; c < ws.logits.cols(); ++c) {
      const double s = ws.logits(r, c);
      if (s == kNegInf) continue;
      z += ws.weights[static_cast<size_t>(c)];
      if (s - m > -104.0) big_m = std::max(big_m, std::fabs(s));
    }
    double sink_weight = 0;  // e^{σ−m}, then p_σ
    if (sink != kNegInf) {
      sink_weight = detail::exp(sink - m);
      z += sink_weight;
      if (sink - m > -104.0) big_m = std::max(big_m, std::fabs(sink));
      sink_weight /= z;
    }
    st.max_abs_score(0, b, h, i) = big_m;
    for (std::int64_t j = 0; j < p_.v_dim; ++j) {
      const double oj = out_.out(b, h, i, j);
      double row_scale = 0, spread = 0, centered = 0, centered_dot = 0, centered_score = 0, tail = 0, tail8 = 0, max_v = 0;
      for (std::int64_t c = 0; c < ws.logits.cols(); ++c) {
        const double s = ws.logits(r, c);
        if (s == kNegInf) continue;
        const double pk = ws.scores(r, c), vkj = v(c, j), dev = std::fabs(vkj - oj);
        row_scale += pk * std::fabs(vkj);
        const double spread_term = pk * (std::fabs(vkj) + std::fabs(oj));
        spread += spread_term * spread_term;
        centered += pk * dev;
        centered_dot += pk * ws.dot_abs(r, c) * dev;
        centered_score += pk * std::fabs(s) * dev;
        if (ws.weights[static_cast<size_t>(c)] < fp16_weight_normal) tail += std::fabs(vkj);
        if (ws.weights[static_cast<size_t>(c)] < e4m3_weight_normal) tail8 += std::fabs(vkj);
        // A max does not depend on the order of the keys (reference/README.md, "Reproducibility").
        if (std::isfinite(vkj)) max_v = std::max(max_v, std::fabs(vkj));
      }
      if (sink_weight > 0) {
        const double sink_term = sink_weight * std::fabs(oj);
        spread += sink_term * sink_term;
        centered += sink_term;
        centered_score += sink_term * std::fabs(sink);
      }
      st.reachable_max_abs_value(b, h, i, j) = max_v;
      st.row_scale(b, h, i, j) = row_scale;
      st.spread(b, h, i, j) = std::sqrt(spread);
      st.centered(b, h, i, j) = centered;
      st.centered_dot(b, h, i, j) = centered_dot;
      st.centered_score(b, h, i, j) = centered_score;
      st.fp16_tail(b, h, i, j) = tail / z;
      st.e4m3_tail(b, h, i, j) = tail8 / z;
    }
  }
}

const char* const kQNames[4] = {"batch", "query heads", "query length", "head dim"};
const char* const kKNames[4] = {"batch", "kv heads", "key length", "head dim"};
const char* const kVNames[4] = {"batch", "kv heads", "key length", "value dim"};
const char* const kMaskNames[4] = {"batch", "heads", "query length", "key length"};

}  // namespace

namespace {

// A paged problem's K and V views are the gather of its pages (paged.h): at every key a query may
// reach (below its key length) they must hold exactly what the block table points to, so that
// the reference computes on the keys the kernel reads.
void require_gather_of_pages(const Problem& p, const AttentionInputs& in) {
  validate_paged_kv(p, in.paged, in.key_lengths);
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t g = 0; g < p.kv_heads; ++g)
      for (std::int64_t j = 0; j < in.key_lengths[static_cast<size_t>(b)]; ++j) {
        const auto at = paged_key_index(p, in.paged.block_table, b, g, j);
        const auto same = [](double x, double y) { return x == y || (std::isnan(x) && std::isnan(y)); };
        for (std::int64_t d = 0; d < p.qk_dim; ++d)
          if (!same(in.k(b, g, j, d), in.paged.k_pages(at[0], at[1], at[2], d)))
            throw ProblemError(fmt::format("K: key [{}, {}, {}] differs from the page the block table names for it "
                                           "(page {}): a paged problem's K must be the gather of its pages", b, g, j, at[0]));
        for (std::int64_t d = 0; d < p.v_dim; ++d)
          if (!same(in.v(b, g, j, d), in.paged.v_pages(at[0], at[1], at[2], d)))
            throw ProblemError(fmt::format("V: value [{}, {}, {}] differs from the page the block table names for it "
                                           "(page {}): a paged problem's V must be the gather of its pages", b, g, j, at[0]));
      }
}

}  // namespace

void validate_inputs(const Problem& p, const AttentionInputs& in) {
  p.validate();
  if (!p.is_paged() && !in.paged.empty())
    throw ProblemError("k_pages: pages are given, but the problem's K and V are contiguous");
  detail::check_view("Q", in.q, {p.batch, p.q_heads, p.q_len, p.qk_dim}, kQNames);
  detail::check_view("K", in.k, {p.batch, p.kv_heads, p.k_len, p.qk_dim}, kKNames);
  detail::check_view("V", in.v, {p.batch, p.kv_heads, p.k_len, p.v_dim}, kVNames);
  if (p.mask != MaskKind::None)
    detail::check_view("mask", in.mask, {p.mask_batch, p.mask_heads, p.mask_q_len, p.mask_k_len}, kMaskNames);
  else if (!in.mask.empty())
    throw ProblemError("mask: a mask tensor is given, but the problem's mask kind is none");
  if (p.has_key_lengths) {
    if (static_cast<std::int64_t>(in.key_lengths.size()) != p.batch)
      throw ProblemError(fmt::format("key_lengths: dim 0 (batch) is {}, but the problem expects B = {}",
                                     in.key_lengths.size(), p.batch));
    for (size_t b = 0; b < in.key_lengths.size(); ++b)
      if (in.key_lengths[b] < 0 || in.key_lengths[b] > p.k_len)
        throw ProblemError(fmt::format("key_lengths: element {} is {}, but must be in [0, Lk = {}]", b,
                                       in.key_lengths[b], p.k_len));
  } else if (!in.key_lengths.empty()) {
    throw ProblemError("key_lengths: a key_lengths tensor is given, but the problem does not use key lengths");
  }
  if (static_cast<std::int64_t>(in.alibi_slopes.size()) != p.alibi_slope_count())
    throw ProblemError(fmt::format("alibi_slopes: has {} elements, but the problem (alibi={}) expects {}",
                                   in.alibi_slopes.size(), alibi_slopes_name(p.alibi), p.alibi_slope_count()));
  for (size_t e = 0; e < in.alibi_slopes.size(); ++e)
    if (!std::isfinite(in.alibi_slopes[e]))
      throw ProblemError(fmt::format("alibi_slopes: element {} is {}, but slopes must be finite", e, in.alibi_slopes[e]));
  const std::int64_t sink_count = p.sinks ? p.q_heads : 0;
  if (static_cast<std::int64_t>(in.sinks.size()) != sink_count)
    throw ProblemError(fmt::format("sinks: has {} elements, but the problem expects {} ({})", in.sinks.size(),
                                   sink_count, p.sinks ? "one per query head" : "no sinks"));
  for (size_t h = 0; h < in.sinks.size(); ++h)
    if (std::isnan(in.sinks[h]) || in.sinks[h] == std::numeric_limits<double>::infinity())
      throw ProblemError(fmt::format("sinks: element {} is {}, but a sink logit must be finite or -inf (no sink)", h,
                                     in.sinks[h]));
  if (p.is_paged()) require_gather_of_pages(p, in);
  if (p.varlen) {
    if (static_cast<std::int64_t>(in.query_lengths.size()) != p.batch)
      throw ProblemError(fmt::format("query_lengths: dim 0 (batch) is {}, but the packed problem expects B = {}",
                                     in.query_lengths.size(), p.batch));
    for (size_t b = 0; b < in.query_lengths.size(); ++b)
      if (in.query_lengths[b] < 0 || in.query_lengths[b] > p.q_len)
        throw ProblemError(fmt::format("query_lengths: element {} is {}, but must be in [0, Lq = {}]", b,
                                       in.query_lengths[b], p.q_len));
  } else if (!in.query_lengths.empty()) {
    throw ProblemError("query_lengths: given, but the problem is not a packed batch (varlen)");
  }
  for (const auto& [factors, name] : {std::pair{in.q_descale, "q_descale"}, std::pair{in.k_descale, "k_descale"},
                                      std::pair{in.v_descale, "v_descale"}}) {
    if (static_cast<std::int64_t>(factors.size()) != p.descale_count())
      throw ProblemError(fmt::format("{}: has {} elements, but the problem (descale={}) expects {}", name, factors.size(),
                                     descale_name(p.descale), p.descale_count()));
    for (size_t e = 0; e < factors.size(); ++e)
      if (!(std::isfinite(factors[e]) && factors[e] > 0))
        throw ProblemError(fmt::format("{}: element {} is {}, but a descale must be finite and positive", name, e, factors[e]));
  }
}

DequantizedInputs dequantize(const Problem& p, const AttentionInputs& in) {
  validate_inputs(p, in);
  if (!p.has_descales()) throw ProblemError("dequantize: the problem has no descales");
  const auto factor = [&](std::span<const double> d, std::int64_t b, std::int64_t g) {
    return d.size() == 1 ? d[0] : d[static_cast<size_t>(b * p.kv_heads + g)];
  };
  DequantizedInputs out{HostTensor({p.batch, p.q_heads, p.q_len, p.qk_dim}), HostTensor({p.batch, p.kv_heads, p.k_len, p.qk_dim}),
                        HostTensor({p.batch, p.kv_heads, p.k_len, p.v_dim}), {}};
  // A stored value has at most 24 significant bits and a float32 factor 24: their product is exact
  // in double's 53, so the reference sees the dequantized value itself.
  for (std::int64_t b = 0; b < p.batch; ++b) {
    for (std::int64_t h = 0; h < p.q_heads; ++h)
      for (std::int64_t i = 0; i < p.q_len; ++i)
        for (std::int64_t d = 0; d < p.qk_dim; ++d) out.q(b, h, i, d) = in.q(b, h, i, d) * factor(in.q_descale, b, p.kv_head_of(h));
    for (std::int64_t g = 0; g < p.kv_heads; ++g)
      for (std::int64_t j = 0; j < p.k_len; ++j) {
        for (std::int64_t d = 0; d < p.qk_dim; ++d) out.k(b, g, j, d) = in.k(b, g, j, d) * factor(in.k_descale, b, g);
        for (std::int64_t d = 0; d < p.v_dim; ++d) out.v(b, g, j, d) = in.v(b, g, j, d) * factor(in.v_descale, b, g);
      }
  }
  out.problem = p;
  out.problem.descale = Descale::None;
  return out;
}

AttentionInputs DequantizedInputs::inputs(const AttentionInputs& original) const {
  AttentionInputs in = original;
  in.q = q.view();
  in.k = k.view();
  in.v = v.view();
  in.q_descale = {};
  in.k_descale = {};
  in.v_descale = {};
  return in;
}

namespace {

// A packed batch's padding rows do not exist (problem.h): whatever the blocked kernels computed
// for them from the logical Q is replaced by what an empty row holds, so that nothing downstream
// can read a value there as a result.
void clear_absent_rows(const Problem& p, std::span<const std::int64_t> query_lengths, AttentionResult& result) {
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t i = 0; i < p.q_len; ++i) {
      if (query_row_exists(p, query_lengths, b, i)) continue;
      for (std::int64_t h = 0; h < p.q_heads; ++h) {
        result.lse(0, b, h, i) = kNegInf;
        for (std::int64_t j = 0; j < p.v_dim; ++j) result.out(b, h, i, j) = 0;
        if (result.probabilities)
          for (std::int64_t k = 0; k < p.k_len; ++k) (*result.probabilities)(b, h, i, k) = 0;
        if (result.scores)
          for (HostTensor* stage : {&result.scores->raw, &result.scores->capped, &result.scores->biased})
            for (std::int64_t k = 0; k < p.k_len; ++k) (*stage)(b, h, i, k) = kNegInf;
        if (RowStatistics* st = result.stats ? &*result.stats : nullptr) {
          for (HostTensor* row : {&st->allowed_keys, &st->max_abs_score, &st->max_dot_abs, &st->max_abs_alibi})
            (*row)(0, b, h, i) = 0;
          st->max_score(0, b, h, i) = kNegInf;
          for (HostTensor* element : {&st->row_scale, &st->spread, &st->centered, &st->centered_dot, &st->centered_score,
                                      &st->fp16_tail, &st->e4m3_tail, &st->reachable_max_abs_value})
            for (std::int64_t j = 0; j < p.v_dim; ++j) (*element)(b, h, i, j) = 0;
        }
      }
    }
}

}  // namespace

bool key_allowed(const Problem& p, const AttentionInputs& in, std::int64_t b, std::int64_t h, std::int64_t i,
                 std::int64_t j) {
  if (!query_row_exists(p, in.query_lengths, b, i)) return false;
  const std::int64_t key_length = p.has_key_lengths ? in.key_lengths[static_cast<size_t>(b)] : p.k_len;
  const KeyRange range = p.structural_key_range(i, key_length);
  if (j < range.first || j >= range.last) return false;
  if (p.mask == MaskKind::None) return true;
  // structural_key_range already ends at a short mask's length (keys past it are masked).
  const double m = in.mask(p.mask_batch == 1 ? 0 : b, p.mask_heads == 1 ? 0 : h, p.mask_q_len == 1 ? 0 : i, j);
  return p.mask == MaskKind::Boolean ? m != 0.0 : m != -std::numeric_limits<double>::infinity();
}

AttentionResult reference_attention(const Problem& p, const AttentionInputs& in, const ReferenceOptions& opt) {
  if (p.has_descales()) {  // the attention of the dequantized inputs is the definition (problem.h)
    const DequantizedInputs dequantized = dequantize(p, in);
    return reference_attention(dequantized.problem, dequantized.inputs(in), opt);
  }
  if (p.is_paged() && in.k.empty() && in.v.empty()) {  // pages only: the gather is the definition (paged.h)
    p.validate();
    const GatheredKv kv = gather_paged_kv(p, in.paged, in.key_lengths);
    AttentionInputs gathered = in;
    gathered.k = kv.k.view();
    gathered.v = kv.v.view();
    return reference_attention(p, gathered, opt);
  }
  validate_inputs(p, in);
  if (opt.row_block < 1) throw ProblemError(fmt::format("row_block: is {}, but must be at least 1", opt.row_block));

  AttentionResult result;
  result.out = HostTensor({p.batch, p.q_heads, p.q_len, p.v_dim});
  result.lse = HostTensor({1, p.batch, p.q_heads, p.q_len});
  if (opt.probabilities) result.probabilities = HostTensor({p.batch, p.q_heads, p.q_len, p.k_len});
  if (opt.score_stages) {
    const Shape4 scores{p.batch, p.q_heads, p.q_len, p.k_len};
    result.scores = ScoreStages{HostTensor(scores), HostTensor(scores), HostTensor(scores)};
  }
  if (opt.row_statistics) {
    const Shape4 rows{1, p.batch, p.q_heads, p.q_len}, elements{p.batch, p.q_heads, p.q_len, p.v_dim};
    result.stats = RowStatistics{HostTensor(rows), HostTensor(rows), HostTensor(rows), HostTensor(rows), HostTensor(rows),
                                 HostTensor(elements), HostTensor(elements), HostTensor(elements),
                                 HostTensor(elements), HostTensor(elements), HostTensor(elements),
                                 HostTensor(elements), HostTensor(elements)};
  }

  const Reference reference(p, in, opt, result);
  const std::int64_t blocks_per_head = (p.q_len + opt.row_block - 1) / opt.row_block;
  const std::int64_t tasks = p.batch * p.q_heads * blocks_per_head;
  std::atomic<std::int64_t> next{0};
  auto worker = [&] {
    const detail::DefaultFloatingPointEnvironment environment;
    Workspace ws;
    for (std::int64_t t = next++; t < tasks; t = next++) {
      const std::int64_t block = t % blocks_per_head, bh = t / blocks_per_head;
      const std::int64_t i0 = block * opt.row_block;
      reference.run_block(bh / p.q_heads, bh % p.q_heads, i0, std::min(opt.row_block, p.q_len - i0), ws);
    }
  };
  const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
  const auto threads = static_cast<std::int64_t>(opt.threads > 0 ? static_cast<unsigned>(opt.threads) : hw);
  {
    // Joined before `result` is returned: a return that moves it (no NRVO) must not race the workers.
    std::vector<std::jthread> pool;
    for (std::int64_t t = 1; t < std::min(threads, tasks); ++t) pool.emplace_back(worker);
    worker();
  }
  if (p.varlen) clear_absent_rows(p, in.query_lengths, result);
  return result;
}

}  // namespace attncheck
