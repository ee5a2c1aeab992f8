// The backward pass of scaled dot-product attention (backward.h), in FlashAttention-2's form:
// P is recomputed from the scores and the forward's LSE instead of being stored, and the row sum
// D_i is taken from O (Dao, "FlashAttention-2", 2023, Algorithm 2).
//
// The forward, for one row i of one head (problem.h's pipeline; σ the scale, c the softcap):
//   (1) s_ij = σ·q_i·k_j                               raw score
//   (2) t_ij = c·tanh(s_ij / c)   (t_ij = s_ij without softcap)
//   (3) z_ij = t_ij + bias_ij     for an allowed key; an excluded key takes no part below
//   (4) LSE_i = log Σ_j e^{z_ij},  P_ij = e^{z_ij − LSE_i}
//   (5) O_i = Σ_j P_ij v_j
// and f is any scalar with ∂f/∂O_i = dO_i and ∂f/∂LSE_i = dLSE_i. By the chain rule:
//   (6) dv_j  = Σ_i P_ij dO_i                          from (5): ∂O_i/∂v_j = P_ij·I
//   (7) dP_ij = dO_i·v_j                               from (5)
//   (8) ∂P_ij/∂z_ik = P_ij(δ_jk − P_ik),  ∂LSE_i/∂z_ik = P_ik        from (4)
//       so dz_ik = Σ_j dP_ij P_ij(δ_jk − P_ik) + dLSE_i P_ik = P_ik(dP_ik − Σ_j P_ij dP_ij + dLSE_i)
//   (9) D_i = Σ_j P_ij dP_ij = dO_i·Σ_j P_ij v_j = dO_i·O_i   (O(Dv) per row instead of O(Lk))
//  (10) dz_ij = P_ij·(dP_ij − D_i + dLSE_i)
//  (11) dbias_ij = dz_ij                               the bias is added after the softcap, (3)
//  (12) ds_ij = dz_ij·(1 − tanh²(s_ij / c))            d(c·tanh(s/c))/ds; ds = dz without softcap
//  (13) dq_i = σ Σ_j ds_ij k_j,   dk_j = σ Σ_i ds_ij q_i          from (1)
// With GQA every query head h of a kv head's group adds its own (6) and (13) to that kv head's
// dK and dV, and a broadcast bias sums (11) over the axes it broadcasts along.
//
// Reproducibility (reference/README.md): every product is a fixed-order chain (fixed_order.h).
// dQ's chains run over keys, one row block at a time, so they do not depend on the block. dK and
// dV sum over the query rows of every head of the group: each (batch, kv head) is one task that
// takes its heads in order and, within a head, its row blocks in order, and continues the same
// chains from block to block (product_continued). A row of another block adds only terms that
// are exactly ±0 to a key outside its range, and ±0 changes no chain that starts from +0. The
// bias gradient is summed in the same order, through a partial per task where tasks share
// elements, added up in task order. Neither the thread count nor the row block changes a bit.
#include "attncheck/backward.h"

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
  RowMatrix weights;      // [rows, keys]: the scores z of (3), then the weights P of (4)
  RowMatrix slope;        // [rows, keys]: 1 − tanh²(s/c) of (12), with softcap only
  RowMatrix d_scores;     // [rows, keys]: dP of (7), then dz of (10), then σ·ds of (12)–(13)
  RowMatrix transposed;   // [D, rows]: dOᵀ for (6), then Qᵀ for (13), non-finite entries zeroed
  RowMatrix finite_copy;  // K with its non-finite entries zeroed, when it has any
  RowMatrix q_copy, k_copy, v_copy, d_out_copy;  // gathers of views whose rows are not contiguous
  std::vector<KeyRange> ranges;  // per row of the block, relative to the block's first key
  // One task's dK and dV, transposed ([D, Lk]): (6) and (13) are then dVᵀ += dOᵀ·P and
  // dKᵀ += Qᵀ·G, which read the [rows, keys] matrices P and G in place and transpose only the
  // small [rows, D] blocks of dO and Q. fma(a, b, c) = fma(b, a, c), so the chains are those of
  // dV += Pᵀ·dO and dK += Gᵀ·Q term for term.
  RowMatrix d_k_transposed, d_v_transposed;
};

// Where one task adds its (11): the part of dBias its heads reach, [1, heads, Lqm, Lkm] with
// heads = 1 when the mask broadcasts over heads, else the group's query heads.
struct BiasSlice {
  View4<double> view;
  std::int64_t first_head = 0;  // the query head at index 0 of the view's heads
};

bool all_finite(const RowMap& m) {
  for (std::int64_t r = 0; r < m.rows(); ++r) {  // row by row: rows are contiguous, columns not
    const double* row = m.data() + r * m.outerStride();
    double zero_if_finite = 0;
    for (std::int64_t j = 0; j < m.cols(); ++j) zero_if_finite += row[j] - row[j];  // NaN for ±inf and NaN
    if (zero_if_finite != 0) return false;
  }
  return true;
}

// The products below take a zero weight to annihilate whatever it multiplies: 0·NaN and 0·Inf
// count as 0, as a key of weight 0 counts in the forward's P·V (reference.h). So NaN padding in
// K, or in the Q or dO of an empty row, reaches no gradient. The other operand's non-finite
// entries are zeroed for the fixed-order product, and their terms added back where the weight is
// nonzero; such an element is non-finite whatever the order of its terms.

// C = W·X for the weights W [m × k] and X [k × n], X possibly non-finite (dQ = G·K).
void weights_times(const FixedOrderKernels& kernels, std::int64_t m, std::int64_t n, std::int64_t k,
                   const RowMatrix& w, const RowMap& x, double* c, std::int64_t ldc, RowMatrix& finite_copy) {
  const bool finite = all_finite(x);
  if (!finite) finite_copy = x.unaryExpr([](double e) { return std::isfinite(e) ? e : 0.0; });
  const double* x_data = finite ? x.data() : finite_copy.data();
  kernels.product(m, n, k, w.data(), w.outerStride(), x_data, finite ? x.outerStride() : finite_copy.outerStride(), c,
                  ldc);
  if (finite) return;
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t t = 0; t < k; ++t)
      if (w(i, t) != 0.0)
        for (std::int64_t j = 0; j < n; ++j)
          if (!std::isfinite(x(t, j))) c[i * ldc + j] += w(i, t) * x(t, j);
}

// C += Xᵀ·W, continuing C's chains, for X [rows × d] possibly non-finite and the weights
// W [rows × n] (dVᵀ += dOᵀ·P, dKᵀ += Qᵀ·G). `xt` receives Xᵀ with its non-finite entries zeroed.
void add_transposed_times_weights(const FixedOrderKernels& kernels, const RowMap& x, const RowMatrix& w, double* c,
                                  std::int64_t ldc, RowMatrix& xt) {
  const std::int64_t rows = x.rows(), d = x.cols(), n = w.cols();
  xt.resize(d, rows);
  bool finite = true;
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t l = 0; l < d; ++l) {
      const double e = x(r, l);
      finite = finite && std::isfinite(e);
      xt(l, r) = std::isfinite(e) ? e : 0.0;
    }
  kernels.product_continued(d, n, rows, xt.data(), xt.outerStride(), w.data(), w.outerStride(), c, ldc);
  if (finite) return;
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t l = 0; l < d; ++l)
      if (!std::isfinite(x(r, l)))
        for (std::int64_t j = 0; j < n; ++j)
          if (w(r, j) != 0.0) c[l * ldc + j] += x(r, l) * w(r, j);
}

class Backward {
 public:
  Backward(const Problem& p, const AttentionInputs& in, const BackwardInputs& bw, AttentionGradients& out,
           ReferenceIsa isa)
      : p_(p), in_(in), bw_(bw), out_(out), scale_(p.effective_scale()), kernels_(detail::fixed_order_kernels(isa)) {}

  void run_block(std::int64_t b, std::int64_t h, std::int64_t i0, std::int64_t rows, const BiasSlice* bias,
                 Workspace& ws) const;
  void write_key_gradients(std::int64_t b, std::int64_t kv, const Workspace& ws) const;

 private:
  const Problem& p_;
  const AttentionInputs& in_;
  const BackwardInputs& bw_;
  AttentionGradients& out_;
  const double scale_;
  const FixedOrderKernels& kernels_;
};

void Backward::run_block(std::int64_t b, std::int64_t h, std::int64_t i0, std::int64_t rows, const BiasSlice* bias,
                         Workspace& ws) const {
  const std::int64_t kv = p_.kv_head_of(h);
  const std::int64_t key_length = p_.has_key_lengths ? in_.key_lengths[static_cast<size_t>(b)] : p_.k_len;
  const BlockKeys span = detail::block_keys(p_, key_length, i0, rows, false, ws.ranges);
  if (span.count == 0) return;  // every row is empty: dQ stays +0, nothing flows to K, V or the bias
  const std::int64_t key0 = span.first, keys = span.count;

  const RowMap q = detail::matrix_at(in_.q, b, h, i0, rows, ws.q_copy);
  const RowMap k = detail::matrix_at(in_.k, b, kv, key0, keys, ws.k_copy);
  const RowMap v = detail::matrix_at(in_.v, b, kv, key0, keys, ws.v_copy);
  const RowMap d_out = detail::matrix_at(bw_.d_out, b, h, i0, rows, ws.d_out_copy);

  // (1)–(3) by the forward's own operations, so that z has the forward's bits.
  ws.weights.resize(rows, keys);
  kernels_.scaled_product_transposed(rows, keys, p_.qk_dim, scale_, q.data(), q.outerStride(), k.data(),
                                     k.outerStride(), ws.weights.data(), ws.weights.outerStride());
  if (p_.softcap > 0) detail::apply_softcap(p_.softcap, ws.weights, &ws.slope);
  detail::exclude_and_bias(p_, {in_.mask, detail::alibi_slope(p_, in_.alibi_slopes, b, h), key_length}, b, h, i0, key0,
                           ws.ranges, ws.weights);

  // (7): dP = dO·Vᵀ, as a product with α = 1 (exact).
  ws.d_scores.resize(rows, keys);
  kernels_.scaled_product_transposed(rows, keys, p_.v_dim, 1.0, d_out.data(), d_out.outerStride(), v.data(),
                                     v.outerStride(), ws.d_scores.data(), ws.d_scores.outerStride());

  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t i = i0 + r;
    double* weight = ws.weights.row(r).data();
    double* d_score = ws.d_scores.row(r).data();
    const double lse = bw_.lse(0, b, h, i);
    if (lse == kNegInf) {  // an empty row contributes nothing, whatever its dO and dLSE hold
      std::fill_n(weight, keys, 0.0);
      std::fill_n(d_score, keys, 0.0);
      continue;
    }
    // (4) from the forward's LSE. An excluded key has z = −inf and so weight e^{−inf} = +0. A NaN
    // LSE (a row that attends a NaN or an Inf) has NaN weights at its allowed keys.
    if (std::isfinite(lse))
      kernels_.exp_shifted(weight, keys, lse);
    else
      for (std::int64_t j = 0; j < keys; ++j) weight[j] = weight[j] == kNegInf ? 0.0 : kNaN;
    // (9) as a chain of fused multiply-adds from +0, the order of fixed_order.h's products.
    double d_row = 0.0;
    for (std::int64_t c = 0; c < p_.v_dim; ++c) d_row = std::fma(d_out(r, c), bw_.out(b, h, i, c), d_row);
    const double d_lse = bw_.d_lse.empty() ? 0.0 : bw_.d_lse(0, b, h, i);
    // (10). A key of weight exactly 0 passes no gradient (dz = 0 by assignment), as its V never
    // reaches O in the forward: NaN or Inf in an excluded key's V (hence dP) stays out.
    // (detail::select rather than ?: so that the loop vectorizes.)
    for (std::int64_t j = 0; j < keys; ++j)
      d_score[j] = detail::select(weight[j] == 0.0, 0.0, weight[j] * ((d_score[j] - d_row) + d_lse));
  }

  // (11), then (12) and σ of (13) folded into one factor per score: G = σ·ds.
  for (std::int64_t r = 0; r < rows; ++r) {
    double* d_score = ws.d_scores.row(r).data();
    if (bias) {
      const std::int64_t i = p_.mask_q_len == 1 ? 0 : i0 + r;
      const std::int64_t head = p_.mask_heads == 1 ? 0 : h - bias->first_head;
      for (std::int64_t j = 0; j < keys && key0 + j < p_.mask_k_len; ++j)
        bias->view(0, head, i, key0 + j) += d_score[j];
    }
    // A zero dz stays +0 even where the slope is NaN (the raw score of an excluded key).
    if (p_.softcap > 0) {
      const double* slope = ws.slope.row(r).data();
      for (std::int64_t j = 0; j < keys; ++j)
        d_score[j] = detail::select(d_score[j] == 0.0, 0.0, (d_score[j] * slope[j]) * scale_);
    } else {
      for (std::int64_t j = 0; j < keys; ++j) d_score[j] = detail::select(d_score[j] == 0.0, 0.0, d_score[j] * scale_);
    }
  }

  // (13) dQ = G·K for these rows; (6) dVᵀ += dOᵀ·P and (13) dKᵀ += Qᵀ·G, continuing the chains.
  weights_times(kernels_, rows, p_.qk_dim, keys, ws.d_scores, k, &out_.d_q(b, h, i0, 0), p_.qk_dim, ws.finite_copy);
  add_transposed_times_weights(kernels_, d_out, ws.weights, &ws.d_v_transposed(0, key0),
                               ws.d_v_transposed.outerStride(), ws.transposed);
  add_transposed_times_weights(kernels_, q, ws.d_scores, &ws.d_k_transposed(0, key0),
                               ws.d_k_transposed.outerStride(), ws.transposed);
}

// The task's dK and dV, from their transposed accumulators, into the result.
void Backward::write_key_gradients(std::int64_t b, std::int64_t kv, const Workspace& ws) const {
  double* d_k = &out_.d_k(b, kv, 0, 0);
  double* d_v = &out_.d_v(b, kv, 0, 0);
  for (std::int64_t j = 0; j < p_.k_len; ++j) {
    for (std::int64_t l = 0; l < p_.qk_dim; ++l) d_k[j * p_.qk_dim + l] = ws.d_k_transposed(l, j);
    for (std::int64_t c = 0; c < p_.v_dim; ++c) d_v[j * p_.v_dim + c] = ws.d_v_transposed(c, j);
  }
}

const char* const kONames[4] = {"batch", "query heads", "query length", "value dim"};
const char* const kLseNames[4] = {"unit", "batch", "query heads", "query length"};

// Whether two (batch, kv head) tasks add to the same dBias element: a mask broadcast over the
// batch meets every batch, one broadcast over heads every group.
bool tasks_share_bias_elements(const Problem& p) {
  return (p.batch > 1 && p.mask_batch == 1) || (p.kv_heads > 1 && p.mask_heads == 1);
}

}  // namespace

BackwardInputs backward_inputs(const AttentionResult& forward, View4<const double> d_out, View4<const double> d_lse) {
  return {forward.out.view(), forward.lse.view(), d_out, d_lse};
}

void validate_backward_inputs(const Problem& p, const AttentionInputs& in, const BackwardInputs& bw) {
  validate_inputs(p, in);
  detail::check_view("O", bw.out, {p.batch, p.q_heads, p.q_len, p.v_dim}, kONames);
  detail::check_view("LSE", bw.lse, {1, p.batch, p.q_heads, p.q_len}, kLseNames);
  detail::check_view("dO", bw.d_out, {p.batch, p.q_heads, p.q_len, p.v_dim}, kONames);
  if (!bw.d_lse.empty()) detail::check_view("dLSE", bw.d_lse, {1, p.batch, p.q_heads, p.q_len}, kLseNames);
}

AttentionGradients reference_attention_backward(const Problem& p, const AttentionInputs& in, const BackwardInputs& bw,
                                                const BackwardOptions& opt) {
  validate_backward_inputs(p, in, bw);
  if (opt.row_block < 1) throw ProblemError(fmt::format("row_block: is {}, but must be at least 1", opt.row_block));
  if (opt.bias_gradient && p.mask != MaskKind::Additive)
    throw ProblemError(fmt::format("dBias: is asked for, but the problem's mask kind is {} (only an additive mask "
                                   "has a gradient)", mask_kind_name(p.mask)));

  AttentionGradients result;
  result.d_q = HostTensor({p.batch, p.q_heads, p.q_len, p.qk_dim});
  result.d_k = HostTensor({p.batch, p.kv_heads, p.k_len, p.qk_dim});
  result.d_v = HostTensor({p.batch, p.kv_heads, p.k_len, p.v_dim});
  if (opt.bias_gradient) result.d_bias = HostTensor({p.mask_batch, p.mask_heads, p.mask_q_len, p.mask_k_len});

  // One task per (batch, kv head): it alone writes that kv head's dK and dV, and its heads' dQ.
  const std::int64_t tasks = p.batch * p.kv_heads, group = p.group_size();
  const bool bias_partials = opt.bias_gradient && tasks_share_bias_elements(p);
  const Shape4 slice_shape{1, p.mask_heads == 1 ? 1 : group, p.mask_q_len, p.mask_k_len};
  std::vector<HostTensor> partials(bias_partials ? static_cast<size_t>(tasks) : 0);

  const Backward backward(p, in, bw, result, opt.isa);
  std::atomic<std::int64_t> next{0};
  auto worker = [&] {
    const detail::DefaultFloatingPointEnvironment environment;
    Workspace ws;
    for (std::int64_t t = next++; t < tasks; t = next++) {
      const std::int64_t b = t / p.kv_heads, first_head = (t % p.kv_heads) * group;
      BiasSlice slice{{}, first_head};
      if (bias_partials) {
        HostTensor& partial = partials[static_cast<size_t>(t)];
        partial = HostTensor(slice_shape);
        slice.view = partial.view();
      } else if (opt.bias_gradient) {
        View4<double> whole = result.d_bias->view();
        slice.view = {&whole(p.mask_batch == 1 ? 0 : b, p.mask_heads == 1 ? 0 : first_head, 0, 0), slice_shape,
                      whole.strides};
      }
      ws.d_k_transposed.setZero(p.qk_dim, p.k_len);
      ws.d_v_transposed.setZero(p.v_dim, p.k_len);
      for (std::int64_t h = first_head; h < first_head + group; ++h)
        for (std::int64_t i0 = 0; i0 < p.q_len; i0 += opt.row_block)
          backward.run_block(b, h, i0, std::min(opt.row_block, p.q_len - i0), opt.bias_gradient ? &slice : nullptr, ws);
      backward.write_key_gradients(b, first_head / group, ws);
    }
  };
  {
    const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
    const auto threads = static_cast<std::int64_t>(opt.threads > 0 ? static_cast<unsigned>(opt.threads) : hw);
    std::vector<std::jthread> pool;
    for (std::int64_t t = 1; t < std::min(threads, tasks); ++t) pool.emplace_back(worker);
    worker();
  }

  const detail::DefaultFloatingPointEnvironment environment;
  if (bias_partials) {  // in task order, the same for any thread count
    View4<double> whole = result.d_bias->view();
    for (std::int64_t t = 0; t < tasks; ++t) {
      const HostTensor& partial = partials[static_cast<size_t>(t)];
      const std::int64_t b = t / p.kv_heads, first_head = (t % p.kv_heads) * group;
      for (std::int64_t hl = 0; hl < slice_shape[1]; ++hl)
        for (std::int64_t i = 0; i < slice_shape[2]; ++i)
          for (std::int64_t j = 0; j < slice_shape[3]; ++j)
            whole(p.mask_batch == 1 ? 0 : b, p.mask_heads == 1 ? 0 : first_head + hl, i, j) += partial(0, hl, i, j);
    }
  }
  for (HostTensor* t : {&result.d_q, &result.d_k, &result.d_v, result.d_bias ? &*result.d_bias : nullptr})
    if (t) detail::canonicalize_nan(t->values.data(), static_cast<std::int64_t>(t->values.size()));
  return result;
}

}  // namespace attncheck
