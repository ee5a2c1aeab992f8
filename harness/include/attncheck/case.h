/// \file case.h
/// \brief One concrete check: a Problem, the dtype the kernel receives, how its values are
/// drawn, and the memory layout it is handed. Everything a failure report needs to reproduce it.
#pragma once

#include <cstdint>
#include <array>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "attncheck/backward.h"
#include "attncheck/compare.h"
#include "attncheck/layer.h"
#include "attncheck/problem.h"
#include "attncheck/reference.h"
#include "attncheck/tensor.h"

namespace attncheck {

/// How input values are drawn. Structured kinds make rounding errors coherent, so they are judged
/// with deterministic accumulation bounds (numerics/README.md §3.2).
enum class ValueKind : std::uint8_t {
  Gaussian,       ///< Q, K, V ~ N(0, 1)
  LargeLogits,    ///< Q scaled so that |s| ≈ 1e3: catches kernels without max-subtraction
  Ties,           ///< every key equal: all weights tie
  DuplicateKeys,  ///< keys repeat in pairs
  OneHotV,        ///< each V row is a one-hot vector
  Grid,           ///< values on a grid of multiples of 2^-4 in [−2, 2], exact in every dtype
  // Long rows, where accumulation bias shows (a sum of many like-signed small terms):
  Diffuse,        ///< Q scaled by 1/16: logits of spread ≈ 0.06, nearly uniform weights
  Peaked,         ///< Q scaled by 4: logits of spread ≈ 4, a few keys carry the weight
  ConstantV,      ///< every V element 10 (exact in every dtype): O = 10 whatever the weights
  NonNegativeV,   ///< V = |N(0, 1)|: every P·V term has the sign of its column
};

std::string_view value_kind_name(ValueKind kind);
std::optional<ValueKind> parse_value_kind(std::string_view name);
DataCharacter data_character(ValueKind kind);

struct AttentionCase {
  Problem problem;
  DType dtype = DType::F32;
  ValueKind values = ValueKind::Gaussian;
  bool sequence_major = false;  ///< hand Q/K/V/O to the backend as [B, L, H, D] in memory
  bool poison_masked = false;   ///< fill keys beyond key_lengths / the mask's length with NaN and huge values
  /// With problem.has_key_lengths: these lengths (one per batch, each in [0, Lk]) instead of
  /// drawn ones, for a check that must hit particular edges (a batch of length 0 next to a full
  /// one). Empty: drawn. The draw still runs, so every other value is the same either way.
  std::vector<std::int64_t> key_lengths;
  std::uint64_t seed = 0;
  /// A paged problem's physical arrangement (make_case_data): which page of the pool each slot
  /// gets is drawn from a stream seeded by `seed` and this, so changing it permutes the pages and
  /// rewrites the table while every key keeps its value.
  std::uint64_t page_shuffle = 0;
  /// A paged problem with B ≥ 2: every sequence's first full pages are batch 0's (prefix sharing).
  bool shared_prefix = false;
  /// With problem.varlen: these query counts (one per sequence, each in [0, Lq]) instead of drawn
  /// ones, as key_lengths fixes the key counts. Empty: drawn.
  std::vector<std::int64_t> query_lengths;

  /// Problem::describe() plus " dtype=f16 values=ties layout=blhd poison=1 lengths=5,0,9 qlengths=1,0,3 seed=42":
  /// one line, parseable by parse_case, enough to rebuild the exact inputs.
  std::string describe() const;
};

/// Inverse of AttentionCase::describe(). Throws ProblemError.
AttentionCase parse_case(std::string_view text);

/// The inputs of a case, already rounded to its dtype (numerics/README.md §1: the reference sees
/// exactly the values the kernel receives), stored as doubles in logical order.
struct CaseData {
  /// k and v are the logical [B, Hkv, Lk, D] keys; for a paged problem, the gather of `pages`.
  HostTensor q, k, v, mask;
  std::vector<std::int64_t> key_lengths;
  std::vector<double> alibi_slopes;  ///< [Hq] or [B, Hq] row-major, float32 values (Problem::alibi)
  std::vector<double> sinks;         ///< [Hq] sink logits, float32 values (Problem::sinks)
  PagedKv pages;                     ///< a paged problem's pool and block table (paged.h); empty otherwise
  std::vector<std::int64_t> query_lengths;  ///< a packed batch's query counts [B] (Problem::varlen)
  /// Problem::descale's factors, [1] or [B, Hkv] row-major, float32 values; q, k and v then hold
  /// the stored values (in the case's dtype, fp8 for an fp8 case), not the dequantized ones.
  std::vector<double> q_descale, k_descale, v_descale;

  AttentionInputs inputs(const Problem& problem) const;
};

/// Deterministic: the same case gives the same data on every machine (std::mt19937_64 and our
/// own normal/uniform transforms, not the implementation-defined std distributions). Throws
/// ProblemError for fixed key lengths that do not fit the problem.
///
/// ALiBi slopes and sinks come from a stream of their own (case.cpp, inference_stream_seed), so
/// every other value is the same with or without them, and the pair of a property (ALiBi vs the
/// same bias as a mask, a sink vs an extra key) sees the same Q, K and V:
///  - per-head slopes, one case in two: ALiBi's closed form (Press et al., max bias 8), 2^(−8(h+1)/n)
///    for h < n = 2^⌊log2 Hq⌋ and 2^(−4(2(h−n)+1)/n) beyond (the slopes models ship with, and
///    ggml's max_bias = 8); otherwise, and always per batch row with AlibiSlopes::PerBatchHead,
///    slope_h = 2^(−8(h+1)/Hq)·(1/2 + U[0, 1)), jittered so that no two heads share a slope and
///    head order shows; rounded to float32;
///  - sink_h ~ 3·N(0, 1) rounded to float32 (the logit scale of gpt-oss's learned sinks), −inf
///    (no sink) for one head in eight.
///
/// A paged problem's keys are drawn as a contiguous one's (the same seed gives the same K and V),
/// then laid out in pages, last (case.cpp, build_pages): the pool has the pages the sequences use
/// (⌈length / page⌉ each; with shared_prefix, the full pages every sequence has are batch 0's,
/// shared) and a quarter more, at least one, that no sequence uses; their order in the pool is a
/// permutation drawn from page_shuffle's stream. Unused slots of the table name unused pages.
/// Unused pages, and with poison_masked the last page's tail too, hold the poison values (NaN,
/// ±max) when poison_masked, and otherwise values drawn like K and V: a kernel that reads them
/// attends to keys that are not the sequence's. k and v become the gather of the pages.
///
/// Descaled inputs (Problem::descale): Q, K and V are drawn as without descales, then each group
/// (the tensor, or a batch row and kv head) gets the factor amax / largest_finite(dtype) times
/// 1 + U[0, 1/2), rounded up to float32 (jitter from a stream of its own), and stores x / factor
/// rounded to the dtype: values an fp8 kernel receives, with the factors carrying the range.
/// Poisoned keys hold the dtype's poison values as stored values.
///
/// A packed batch's query counts come from a stream of their own (case.cpp, varlen_stream_seed),
/// drawn as key lengths are (0, Lq and 1 often: an empty sequence, a full one, a single token),
/// so its Q, K and V are those of the same case padded; its logical Q holds drawn values in the
/// rows that do not exist, which are never handed to a kernel.
CaseData make_case_data(const AttentionCase& c);

/// The additive bias as a kernel whose mask dtype is `mask_dtype` reads it
/// (NumericsProfile::additive_mask_dtype()): every element rounded to that dtype, as the inputs
/// are rounded to theirs, so that the reference sees exactly the bias the kernel receives and τ
/// needs no term for it (numerics/README.md §2.12). −inf stays −inf. No-op without an additive mask.
void round_additive_mask(const Problem& problem, CaseData& data, DType mask_dtype);

/// Replaces NaN and ±Inf in the keys no query may reach (beyond key_lengths[b] or the mask's key
/// length) with large finite values of `dtype`, keeping ±max-finite where it was already: the
/// poisoning for a kernel that declares masked_keys_weighted_by_zero (0·NaN = NaN is then its
/// declared convention, but finite garbage must still not reach the output).
/// With `held` (NumericsProfile::held_key_value_dtype, when the kernel keeps K or V in a narrower
/// type than `dtype`), every unreachable value is also clamped to what `held` holds finite.
void make_poison_finite(const Problem& problem, CaseData& data, DType dtype, std::optional<DType> held = {});

/// The values unreachable keys are poisoned with: NaN and ±the largest finite value, or, when
/// only finite garbage may be used, ±the largest finite value and half of it.
/// With `held` (finite_only only), the finite values are those make_poison_finite clamps to.
std::array<double, 3> poison_values(DType dtype, bool finite_only, std::optional<DType> held = {});

/// The largest value of `dtype` that is finite in `held` too (rounded down into `dtype`); the
/// largest finite value of `dtype` without `held` or when `held` holds more.
double largest_held_finite(DType dtype, std::optional<DType> held);

/// A departure from the draw that a fixed check needs and random masks hit too rarely: the mask
/// forbids keys [key_begin, key_end) (clamped to the mask's key length) in every query row for
/// which `row(i)` holds, in every mask batch and head — 0 in a boolean mask, −inf in an additive
/// one. All keys of a row make a row with no allowed key (the empty-row convention); a run of
/// whole key tiles inside live rows checks that an online softmax never forms (−inf) − (−inf).
/// Throws ProblemError when the problem has no mask.
void forbid_in_mask(const Problem& problem, CaseData& data, const std::function<bool(std::int64_t row)>& row,
                    std::int64_t key_begin, std::int64_t key_end);

/// What a backward call receives besides the forward's inputs, as doubles in logical order,
/// already in the dtypes the kernel receives them in (make_backward_data).
struct BackwardData {
  HostTensor out;    ///< O [B, Hq, Lq, Dv], values of the forward profile's output dtype
  HostTensor lse;    ///< LSE [1, B, Hq, Lq], float32 values (−inf: a row with no allowed key)
  HostTensor d_out;  ///< dO [B, Hq, Lq, Dv], values of the input dtype
  std::optional<HostTensor> d_lse;  ///< dLSE [1, B, Hq, Lq], float32 values; unset: NULL is passed

  /// `reference`'s exact O and LSE with this dO and dLSE: what reference_attention_backward and
  /// gradient_tolerance take (the rounded O and LSE above are only what the kernel is handed; their
  /// rounding is a term of τ). The views point into `reference` and this, which must outlive them.
  BackwardInputs exact_inputs(const AttentionResult& reference) const;
};

/// The loss gradients of a backward check and the forward outputs it is handed, from case `c`'s
/// seed (a stream of its own, seeded by a hash of it (case.cpp, backward_stream_seed), so the
/// forward's inputs are the same with or without them, and dO the same with or without dLSE): dO ~
/// N(0, 1) rounded to c.dtype; with `with_d_lse`, dLSE ~ N(0, 1) rounded to float32; O and LSE
/// the double reference's (`reference`, of make_case_data(c)) rounded to `output` and to float32
/// (−inf stays −inf). A row with no allowed key keeps the reference's O = 0 and LSE = −inf; its dO
/// and dLSE are drawn like any other, and a kernel must ignore them (backward.h). Deterministic,
/// like make_case_data. Throws ProblemError when `reference` has another problem's shapes.
BackwardData make_backward_data(const AttentionCase& c, const AttentionResult& reference, DType output,
                                bool with_d_lse);

/// A layer case: the problem, the dtype of X and the weights, and the seed of their values.
struct LayerCase {
  LayerProblem problem;
  DType dtype = DType::F32;
  /// With problem.attention.has_key_lengths: fixed lengths, as AttentionCase::key_lengths.
  std::vector<std::int64_t> key_lengths;
  std::uint64_t seed = 0;
  /// LayerProblem::describe() plus " dtype=f16 lengths=5,0 seed=42".
  std::string describe() const;
};

/// The inputs of a layer case, rounded to its dtype, as 4-d tensors right-aligned with leading 1s
/// (layer.h's convention).
struct LayerCaseData {
  HostTensor x, x_kv, w_q, w_k, w_v, b_q, b_k, b_v, w_o, b_o, mask;
  std::vector<std::int64_t> key_lengths;
  HostTensor x_v;  ///< with problem.separate_values: the value input
  LayerInputs inputs(const LayerProblem& problem) const;
};

/// X ~ N(0, 1); weights ~ N(0, 1/fan-in), so every projection is O(1) as in trained layers;
/// biases ~ N(0, 0.01); an additive mask ~ N(0, 1); key lengths as make_case_data draws them,
/// after everything else. Deterministic, like make_case_data.
LayerCaseData make_layer_case_data(const LayerCase& c);

/// A small deterministic generator with portable distributions, shared by everything that draws
/// values (std::normal_distribution differs between standard libraries).
class PortableRandom {
 public:
  explicit PortableRandom(std::uint64_t seed);
  std::uint64_t next();
  double uniform();                                    ///< [0, 1)
  double normal();                                     ///< N(0, 1), Box–Muller
  std::int64_t below(std::int64_t bound);              ///< [0, bound)

 private:
  std::uint64_t state_;
};

}  // namespace attncheck
