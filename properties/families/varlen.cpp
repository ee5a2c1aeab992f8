// Packed variable-length batches (ABI 2.5): cu_seqlens are storage, not semantics. Each sequence
// of a packed batch is its own attention problem (problem.h), so a kernel's packed output must be
// the reference's, must equal each sequence run alone as a padded batch of one, and must not move
// when the sequences are packed in another order. The pairs are judged within τ + τ′: a kernel
// may tile a packed batch differently from a padded one, so bitwise equality is not its contract.
#include <algorithm>
#include <fmt/format.h>

#include "common.h"

namespace attncheck::props {
namespace {


// A drawn case packed: what a packed batch takes of the draw (GQA, causal, window, softcap, ALiBi,
// sinks, the scale, every value kind), aligned top-left or bottom-right per sequence, with B of
// 1 (or min_batch) to 5 so that most batches hold several sequences. Query and key counts are drawn by
// make_case_data (0, the capacity and 1 often). A mask, fixed key lengths, the [B, L, H, D] layout
// and poison have no meaning for packed tensors and are dropped; a pinned packed case is kept.
AttentionCase draw_varlen_case(PropertyContext& ctx, std::int64_t min_batch = 1) {
  ProblemSpace space = ctx.space();
  space.varlen = true;
  // Per-sequence diagonals and per-batch slopes are what packing can break: ALiBi and sinks are
  // drawn where the backend declares them.
  space.alibi = declares(ctx, kAttncheckOptionAlibi);
  space.sinks = declares(ctx, kAttncheckOptionSinks);
  AttentionCase c = ctx.draw_case(space, all_value_kinds());
  if (c.problem.varlen) return c;
  Problem& p = c.problem;
  p.mask = MaskKind::None;
  p.mask_batch = p.mask_heads = p.mask_q_len = p.mask_k_len = 1;
  p.alignment = *rc::gen::element(Alignment::TopLeft, Alignment::BottomRight);
  p.diagonal_offset = 0;
  if (p.batch < min_batch || p.batch == 1) p.batch = *rc::gen::inRange<std::int64_t>(min_batch, 6);
  p.has_key_lengths = true;
  p.varlen = true;
  c.key_lengths.clear();
  c.query_lengths.clear();
  c.sequence_major = false;
  c.poison_masked = false;
  return c;
}

// Rows [first, first + rows) of batch b of a logical [B, H, L, D] tensor, as [1, H, rows, D].
HostTensor sequence_rows(const HostTensor& t, std::int64_t b, std::int64_t first, std::int64_t rows) {
  HostTensor out({1, t.shape[1], rows, t.shape[3]});
  for (std::int64_t h = 0; h < t.shape[1]; ++h)
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t d = 0; d < t.shape[3]; ++d) out(0, h, r, d) = t(b, h, first + r, d);
  return out;
}

// Sequence b of a packed case as a padded batch of one: Lq its query count, Lk its key count (a
// sequence of no keys keeps one slot, of key length 0), the same options, ALiBi slopes of its
// batch row. Its data is the packed case's, sliced.
std::pair<AttentionCase, CaseData> sequence_alone(const AttentionCase& c, const CaseData& d, std::int64_t b) {
  const Problem& p = c.problem;
  const std::int64_t queries = d.query_lengths[static_cast<size_t>(b)], keys = d.key_lengths[static_cast<size_t>(b)];
  AttentionCase alone = c;
  Problem& a = alone.problem;
  a.varlen = false;
  a.batch = 1;
  a.q_len = queries;
  a.k_len = std::max<std::int64_t>(keys, 1);
  a.has_key_lengths = keys == 0;
  alone.key_lengths = keys == 0 ? std::vector<std::int64_t>{0} : std::vector<std::int64_t>{};
  alone.query_lengths.clear();
  if (a.alibi == AlibiSlopes::PerBatchHead) a.alibi = AlibiSlopes::PerHead;

  CaseData one;
  one.q = sequence_rows(d.q, b, p.first_query_row(queries), queries);
  one.k = sequence_rows(d.k, b, 0, a.k_len);
  one.v = sequence_rows(d.v, b, 0, a.k_len);
  one.key_lengths = alone.key_lengths;
  if (p.has_alibi()) {
    const size_t row = p.alibi == AlibiSlopes::PerBatchHead ? static_cast<size_t>(b * p.q_heads) : 0;
    one.alibi_slopes.assign(d.alibi_slopes.begin() + static_cast<std::ptrdiff_t>(row),
                            d.alibi_slopes.begin() + static_cast<std::ptrdiff_t>(row + static_cast<size_t>(p.q_heads)));
  }
  one.sinks = d.sinks;
  return {alone, one};
}

// 1. A packed batch against the reference of its sequences, and each sequence against itself run
// alone: the offsets must address each sequence's own tokens, and its diagonal must be its own.
void varlen_equals_per_sequence(PropertyContext& ctx) {
  const AttentionCase c = draw_varlen_case(ctx);
  ctx.classify(c);
  ctx.require_supported(c.problem);
  const JudgedRun packed = run_and_bound(ctx, c);
  if (std::all_of(packed.data.query_lengths.begin(), packed.data.query_lengths.end(), [](std::int64_t n) { return n == 0; }))
    ctx.decline("every sequence has 0 queries: there is no output to judge");
  ctx.expect(judge(ctx, c, packed.data, packed.run), c, "a packed batch against the reference of its sequences");
  for (std::int64_t b = 0; b < c.problem.batch; ++b) {
    const std::int64_t queries = packed.data.query_lengths[static_cast<size_t>(b)];
    if (queries == 0) continue;  // a sequence of no queries has no output to compare
    auto [alone, data] = sequence_alone(c, packed.data, b);
    if (!ctx.supports(alone.problem)) continue;
    const JudgedRun one = run_and_bound(ctx, alone, std::move(data));
    const std::int64_t first = c.problem.first_query_row(queries);
    ctx.expect(compare_pair(sequence_rows(packed.run.out, b, first, queries), sequence_rows(packed.tau, b, first, queries),
                            one.run.out, one.tau),
               c, fmt::format("sequence {} of the packed batch ({} queries, {} keys) against it run alone", b, queries,
                              packed.data.key_lengths[static_cast<size_t>(b)]));
  }
}

// 2. The order in which sequences are packed is not part of the function: the batch packed in
// reverse order gives every sequence the same output.
void varlen_packing_order(PropertyContext& ctx) {
  const AttentionCase c = draw_varlen_case(ctx, 2);
  if (c.problem.batch < 2) ctx.decline("a batch of one sequence has one order (a pinned case)");
  ctx.classify(c);
  ctx.require_supported(c.problem);
  const JudgedRun forward = run_and_bound(ctx, c);
  const Problem& p = c.problem;
  const CaseData& d = forward.data;
  if (std::all_of(d.query_lengths.begin(), d.query_lengths.end(), [](std::int64_t n) { return n == 0; }))
    ctx.decline("every sequence has 0 queries: there is no output to compare");
  const auto reversed_batches = [&](const HostTensor& t) {
    HostTensor out(t.shape);
    const std::int64_t per_batch = t.shape[1] * t.shape[2] * t.shape[3];
    for (std::int64_t b = 0; b < t.shape[0]; ++b)
      std::copy_n(t.values.begin() + (t.shape[0] - 1 - b) * per_batch, per_batch, out.values.begin() + b * per_batch);
    return out;
  };
  AttentionCase reversed = c;
  reversed.query_lengths.assign(d.query_lengths.rbegin(), d.query_lengths.rend());
  reversed.key_lengths.assign(d.key_lengths.rbegin(), d.key_lengths.rend());
  CaseData data = d;
  data.q = reversed_batches(d.q), data.k = reversed_batches(d.k), data.v = reversed_batches(d.v);
  data.query_lengths = reversed.query_lengths;
  data.key_lengths = reversed.key_lengths;
  if (p.alibi == AlibiSlopes::PerBatchHead)
    for (std::int64_t b = 0; b < p.batch; ++b)
      for (std::int64_t h = 0; h < p.q_heads; ++h)
        data.alibi_slopes[static_cast<size_t>(b * p.q_heads + h)] =
            d.alibi_slopes[static_cast<size_t>((p.batch - 1 - b) * p.q_heads + h)];
  const JudgedRun backward = run_and_bound(ctx, reversed, std::move(data));
  ctx.expect(judge(ctx, c, forward.data, forward.run), c, "the packed batch against the reference");
  ctx.expect(compare_pair(forward.run.out, forward.tau, reversed_batches(backward.run.out), reversed_batches(backward.tau)), c,
             "the packed batch against the same sequences packed in reverse order");
}

}  // namespace

std::vector<PropertyDef> varlen_properties() {
  return {
      {"varlen-equals-per-sequence", "varlen",
       "cu_seqlens are storage: each sequence of a packed batch is the attention of its own tokens, as if run alone",
       false, varlen_equals_per_sequence},
      {"varlen-packing-order", "varlen",
       "the order in which sequences are packed is not part of the function: packing them in reverse changes no output",
       false, varlen_packing_order},
  };
}

}  // namespace attncheck::props
