#include "alternatives.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "attncheck/tolerance.h"

namespace attncheck::diagnosis {
namespace {

// Agreement of one element within `bound`: NaN agrees with NaN only, an infinity with itself only.
bool agrees(double x, double y, double bound) {
  if (std::isnan(x) || std::isnan(y)) return std::isnan(x) && std::isnan(y);
  if (x == y) return true;
  return std::fabs(x - y) <= bound;
}

// The declared empty-row convention applied to a reference output: the reference writes zeros
// for a row with no allowed key, a kernel declaring NaN writes NaN, and a kernel declaring the
// mean of V is not predicted there (its elements are ignored: NaN in τ).
void apply_empty_row_convention(const NumericsProfile& profile, const AttentionResult& reference, Prediction& p) {
  if (profile.empty_row == EmptyRowConvention::Zeros || !reference.stats) return;
  const HostTensor& allowed = reference.stats->allowed_keys;
  const Shape4& s = p.out.shape;
  for (std::int64_t b = 0; b < s[0]; ++b)
    for (std::int64_t h = 0; h < s[1]; ++h)
      for (std::int64_t i = 0; i < s[2]; ++i) {
        if (allowed(0, b, h, i) != 0) continue;
        for (std::int64_t d = 0; d < s[3]; ++d) {
          if (profile.empty_row == EmptyRowConvention::NaN) p.out(b, h, i, d) = std::numeric_limits<double>::quiet_NaN();
          else p.tau(b, h, i, d) = std::numeric_limits<double>::quiet_NaN();
        }
      }
}

std::int64_t sequence_offset(const Shape4& s, bool sequence_major, std::int64_t b, std::int64_t h, std::int64_t l,
                             std::int64_t d) {
  return sequence_major ? ((b * s[2] + l) * s[1] + h) * s[3] + d : ((b * s[1] + h) * s[2] + l) * s[3] + d;
}

}  // namespace

bool has_output(const FailureEvidence& e) {
  return e.run_out.shape == e.reference.out.shape && e.tau.shape == e.reference.out.shape && e.reference.stats &&
         !e.run_out.values.empty();
}

bool can_recompute(const FailureEvidence& e) {
  const Problem& p = e.attention_case.problem;
  if (!has_output(e)) return false;
  // The alternatives alter a padded problem; a packed batch's rows move with its alignment
  // (problem.h, first_query_row) and its padding rows are no one's output, so none is defined yet.
  if (p.varlen) return false;
  const double work = static_cast<double>(p.batch) * static_cast<double>(p.q_heads) * static_cast<double>(p.q_len) *
                      static_cast<double>(p.k_len) * static_cast<double>(std::max(p.qk_dim, p.v_dim));
  return work <= kMaxAlternativeWork;
}

Prediction reference_prediction(const FailureEvidence& e, const Problem& problem, const CaseData& data) {
  ReferenceOptions options;
  options.row_statistics = true;
  options.threads = 1;  // minimal cases are small: a thread pool per alternative costs more than it saves
  const AttentionInputs inputs = data.inputs(problem);
  const AttentionResult reference = reference_attention(problem, inputs, options);
  const ToleranceModel model(problem, e.profile, data_character(e.attention_case.values), inputs);
  Prediction p{reference.out, model.tau_tensor(reference)};
  apply_empty_row_convention(e.profile, reference, p);
  return p;
}

Prediction truth_prediction(const FailureEvidence& e) {
  Prediction p{e.reference.out, e.tau};
  apply_empty_row_convention(e.profile, e.reference, p);
  return p;
}

bool explains(const FailureEvidence& e, const Prediction& prediction) {
  if (prediction.out.shape != e.run_out.shape || e.attention_case.problem.varlen) return false;  // can_recompute's reason
  const Prediction truth = truth_prediction(e);
  bool distinguishable = false;
  for (size_t n = 0; n < e.run_out.values.size(); ++n) {
    const double tau = prediction.tau.values[n], truth_tau = truth.tau.values[n];
    if (std::isnan(tau) || std::isnan(truth_tau)) continue;  // not predicted here (empty_row = mean of V)
    const double alternative = prediction.out.values[n];
    if (!agrees(e.run_out.values[n], alternative, tau)) return false;
    if (!agrees(alternative, truth.out.values[n], tau + truth_tau)) distinguishable = true;
  }
  return distinguishable;
}

bool reproduces(const FailureEvidence& e, const Problem& problem, const CaseData& data) {
  return explains(e, reference_prediction(e, problem, data));
}

std::int64_t key_length_of(const Problem& problem, const CaseData& data, std::int64_t b) {
  return problem.has_key_lengths ? data.key_lengths.at(static_cast<size_t>(b)) : problem.k_len;
}

bool in_structural_range(const Problem& problem, const CaseData& data, std::int64_t b, std::int64_t i, std::int64_t j) {
  const Problem::KeyRange range = problem.structural_key_range(i, key_length_of(problem, data, b));
  return j >= range.first && j < range.last;
}

namespace {

// The original mask element for (b, h, i, j), broadcast as problem.h says; keys j ≥ Lkm are masked.
bool mask_allows(const Problem& p, const CaseData& data, std::int64_t b, std::int64_t h, std::int64_t i, std::int64_t j) {
  if (p.mask == MaskKind::None) return true;
  if (j >= p.mask_k_len) return false;
  const double m = data.mask(p.mask_batch == 1 ? 0 : b, p.mask_heads == 1 ? 0 : h, p.mask_q_len == 1 ? 0 : i, j);
  return p.mask == MaskKind::Boolean ? m != 0 : m != -std::numeric_limits<double>::infinity();
}

}  // namespace

bool key_allowed(const Problem& problem, const CaseData& data, std::int64_t b, std::int64_t h, std::int64_t i,
                 std::int64_t j) {
  return in_structural_range(problem, data, b, i, j) && mask_allows(problem, data, b, h, i, j);
}

std::pair<Problem, CaseData> with_structure(const Problem& problem, const CaseData& data, const Structure& structure) {
  Problem altered = problem;
  altered.causal = false;
  altered.window_left = altered.window_right = -1;
  // The structure decides every key, so the key lengths leave the problem; the diagonal they set
  // (Alignment::KeyLengths) was already read by `structure` from the original problem.
  altered.has_key_lengths = false;
  altered.alignment = Alignment::TopLeft;
  altered.diagonal_offset = 0;
  altered.mask = problem.mask == MaskKind::Additive ? MaskKind::Additive : MaskKind::Boolean;
  altered.mask_batch = problem.batch;
  altered.mask_heads = problem.q_heads;
  altered.mask_q_len = problem.q_len;
  altered.mask_k_len = problem.k_len;
  CaseData d = data;
  d.key_lengths.clear();
  d.mask = HostTensor({problem.batch, problem.q_heads, problem.q_len, problem.k_len});
  const double excluded = altered.mask == MaskKind::Additive ? -std::numeric_limits<double>::infinity() : 0.0;
  for (std::int64_t b = 0; b < problem.batch; ++b)
    for (std::int64_t h = 0; h < problem.q_heads; ++h)
      for (std::int64_t i = 0; i < problem.q_len; ++i)
        for (std::int64_t j = 0; j < problem.k_len; ++j) {
          const bool allowed = structure(b, i, j) && mask_allows(problem, data, b, h, i, j);
          double value = allowed ? 1.0 : excluded;
          if (allowed && problem.mask == MaskKind::Additive)
            value = data.mask(problem.mask_batch == 1 ? 0 : b, problem.mask_heads == 1 ? 0 : h,
                              problem.mask_q_len == 1 ? 0 : i, j);
          d.mask(b, h, i, j) = value;
        }
  return {altered, std::move(d)};
}

HostTensor reinterpret_layout(const HostTensor& x, bool stored_sequence_major, bool read_sequence_major) {
  const Shape4& s = x.shape;
  std::vector<double> storage(x.values.size());
  for (std::int64_t b = 0; b < s[0]; ++b)
    for (std::int64_t h = 0; h < s[1]; ++h)
      for (std::int64_t l = 0; l < s[2]; ++l)
        for (std::int64_t d = 0; d < s[3]; ++d)
          storage[static_cast<size_t>(sequence_offset(s, stored_sequence_major, b, h, l, d))] = x(b, h, l, d);
  HostTensor read(s);
  for (std::int64_t b = 0; b < s[0]; ++b)
    for (std::int64_t h = 0; h < s[1]; ++h)
      for (std::int64_t l = 0; l < s[2]; ++l)
        for (std::int64_t d = 0; d < s[3]; ++d)
          read(b, h, l, d) = storage[static_cast<size_t>(sequence_offset(s, read_sequence_major, b, h, l, d))];
  return read;
}

Hypothesis alternative_reference(std::string name, std::string statement,
                                 std::function<std::optional<Alteration>(const FailureEvidence&)> alter) {
  Hypothesis h{std::move(name), std::move(statement), {}};
  h.test = [statement = h.statement, alter = std::move(alter)](const FailureEvidence& e) -> std::optional<std::string> {
    if (!can_recompute(e)) return std::nullopt;
    const std::optional<Alteration> altered = alter(e);
    if (!altered || !reproduces(e, altered->problem, altered->data)) return std::nullopt;
    return statement;
  };
  return h;
}

std::optional<std::string> memory_finding(const FailureEvidence& e, std::string_view tensor, std::string_view text) {
  for (const std::string& finding : e.memory_findings)
    if (finding.starts_with(tensor) && finding.substr(tensor.size()).starts_with(": ") &&
        finding.find(text) != std::string::npos)
      return finding;
  return std::nullopt;
}

}  // namespace attncheck::diagnosis
