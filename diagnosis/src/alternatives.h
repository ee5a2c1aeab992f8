// What the hypotheses share: the alternative reference (the double reference of an altered
// problem or altered data, with τ from the tolerance model for it), the rule that names one, and
// the facts about a case several hypotheses read (which keys a row may attend to).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "attncheck/evidence.h"
#include "attncheck/hypothesis.h"

namespace attncheck::diagnosis {

/// Above this many multiply-adds (B·Hq·Lq·Lk·max(Dk, Dv)) no alternative reference is computed:
/// minimal cases are far smaller, and a catalogue of references on a large case costs more than
/// the property did.
inline constexpr double kMaxAlternativeWork = 4e6;

/// Whether the evidence holds the kernel's O, shaped like the reference's, and the reference's
/// row statistics: what every hypothesis on the output needs.
bool has_output(const FailureEvidence& e);

/// Whether alternative references apply: the kernel's O is there, shaped like the reference's,
/// and the case is small enough.
bool can_recompute(const FailureEvidence& e);

/// An output a hypothesis predicts, with its bound, laid out as the kernel's O.
struct Prediction {
  HostTensor out;
  HostTensor tau;
};

/// The double reference of `problem` on `data` with τ from the tolerance model for that problem,
/// under the evidence's profile and data character; rows with no allowed key carry the declared
/// empty-row convention (NaN where NaN is declared), as the kernel's would.
Prediction reference_prediction(const FailureEvidence& e, const Problem& problem, const CaseData& data);
/// The truth in the same terms: the evidence's reference and τ, with the declared convention.
Prediction truth_prediction(const FailureEvidence& e);

/// The naming rule. True iff the kernel's O is within the prediction's τ everywhere (NaN matching
/// NaN) and the prediction differs from the truth by more than τ_alt + τ_true somewhere: there no
/// output can be within τ of both, so a kernel that matches the prediction fails the truth and
/// the case tells the two apart.
bool explains(const FailureEvidence& e, const Prediction& prediction);

/// reference_prediction then explains.
bool reproduces(const FailureEvidence& e, const Problem& problem, const CaseData& data);

/// The length of batch b's keys: key_lengths[b] with Problem::has_key_lengths, else Lk.
std::int64_t key_length_of(const Problem& problem, const CaseData& data, std::int64_t b);

/// Whether key j is allowed to query row i of (b, h): the structural range (key length, the
/// mask's key length, causal, window) and the mask element (boolean false and additive −inf exclude).
bool key_allowed(const Problem& problem, const CaseData& data, std::int64_t b, std::int64_t h, std::int64_t i,
                 std::int64_t j);

/// An altered structure: a predicate of (b, i, j) replacing causal, the window, the key length
/// and the mask's key length (all on the original problem's diagonal, Problem::diagonal_key).
using Structure = std::function<bool(std::int64_t b, std::int64_t i, std::int64_t j)>;
/// The problem and data that compute attention under `structure`: causal and window off, and a
/// full [B, Hq, Lq, Lk] mask (boolean, or additive with −inf, keeping any bias) that allows key j
/// of row i iff `structure` does and the original mask element does.
std::pair<Problem, CaseData> with_structure(const Problem& problem, const CaseData& data, const Structure& structure);

/// Whether key j lies in the original structural range of row i of batch b.
bool in_structural_range(const Problem& problem, const CaseData& data, std::int64_t b, std::int64_t i, std::int64_t j);

/// `x` read back through another layout: the [B, H, L, D] tensor stored compact in `stored`
/// order, each logical element read at its offset in `read` order (sequence-major = [B, L, H, D]).
HostTensor reinterpret_layout(const HostTensor& x, bool stored_sequence_major, bool read_sequence_major);

/// A hypothesis whose test is "reproduces(e, alteration(e))", for an alteration that may not
/// apply to the case (nullopt: not applicable).
struct Alteration {
  Problem problem;
  CaseData data;
};
Hypothesis alternative_reference(std::string name, std::string statement,
                                 std::function<std::optional<Alteration>(const FailureEvidence&)> alter);

/// Whether any memory finding starts with `tensor` + ": " and contains `text`; the first such.
std::optional<std::string> memory_finding(const FailureEvidence& e, std::string_view tensor, std::string_view text);

}  // namespace attncheck::diagnosis
