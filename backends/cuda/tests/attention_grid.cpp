#include "attention_grid.h"

#include <utility>

#include "attncheck/backend_handle.h"

namespace attncheck::cuda::testing {

std::vector<GridCase> attention_grid(const std::vector<DType>& dtypes) {
  std::vector<GridCase> base;
  const auto shape = &Problem::of_shape;
  auto add = [&](std::string name, const Problem& p) -> GridCase& {
    GridCase g;
    g.name = std::move(name);
    g.c.problem = with_fp32_parameters(p);  // every CUDA kernel applies scale and softcap in fp32
    g.c.seed = 2000 + base.size();
    base.push_back(std::move(g));
    return base.back();
  };
  auto with_lengths = [](Problem p) {
    p.has_key_lengths = true;
    return p;
  };
  // Fixed lengths, and K, V beyond each of them poisoned with NaN and ±max: they must not leak.
  auto poisoned_lengths = [](GridCase& g, std::vector<std::int64_t> lengths) {
    g.c.key_lengths = std::move(lengths);
    g.c.poison_masked = true;
  };

  const Problem mha = shape(2, 4, 4, 17, 33, 16, 16);
  add("Mha", mha);
  add("Mqa", shape(2, 4, 1, 17, 33, 16, 16));
  add("GqaRatio3", shape(1, 6, 2, 17, 33, 16, 16));
  add("GqaRatio4", shape(2, 8, 2, 9, 20, 8, 8));
  add("CausalTopLeft", with_causal(mha, Alignment::TopLeft));
  add("CausalBottomRight", with_causal(mha, Alignment::BottomRight));
  add("CausalBottomRightEmptyRows", with_causal(shape(1, 2, 2, 33, 17, 16, 16), Alignment::BottomRight));
  add("CausalOffset", with_causal(shape(1, 2, 1, 9, 33, 16, 16), Alignment::Offset, 5));
  add("CausalOffsetWholeCache", with_causal(shape(1, 2, 2, 9, 20, 8, 8), Alignment::Offset, 20));
  poisoned_lengths(add("CausalKeyLengths", with_causal(with_lengths(shape(3, 2, 2, 7, 33, 16, 16)), Alignment::KeyLengths)),
                   {33, 12, 5});
  add("WindowBoth", with_window(mha, 3, 2));
  add("WindowLeftCausalBottomRight", with_causal(with_window(mha, 4, 0), Alignment::BottomRight));
  add("WindowRightOnly", with_window(mha, -1, 1));
  add("WindowZeroWidth", with_window(shape(1, 2, 2, 17, 17, 8, 8), 0, 0));
  {
    // Every row's window [i + 20, i + 23] lies past the last key (Lk = 20): all rows empty.
    Problem p = with_window(with_alignment(shape(1, 2, 2, 5, 20, 8, 8), Alignment::Offset), 0, 3);
    p.diagonal_offset = 20;
    add("WindowPastKeys", p);
  }
  {
    // Scale 1 instead of 1/sqrt(16): scores of spread 4, which the cap at 2.5 bends.
    Problem p = mha;
    p.softcap = 2.5;
    p.scale = 1.0;
    add("Softcap", p);
  }
  {
    Problem p = with_mask(with_causal(mha, Alignment::BottomRight), MaskKind::Additive, 2, 4, 17, 33);
    p.softcap = 4.0;
    add("SoftcapCausalAdditive", p);
  }
  add("BoolMaskFull", with_mask(mha, MaskKind::Boolean, 2, 4, 17, 33));
  add("BoolMaskBroadcastQK", with_mask(mha, MaskKind::Boolean, 1, 1, 17, 33));
  add("BoolMaskBroadcastBatchKeys", with_mask(mha, MaskKind::Boolean, 2, 1, 1, 33));
  add("BoolMaskShortKeys", with_mask(mha, MaskKind::Boolean, 1, 4, 17, 20));
  // Query row 0 may see no key at all: the declared empty-row convention.
  add("BoolMaskEmptyRow", with_mask(mha, MaskKind::Boolean, 2, 4, 17, 33)).adjust = [](const AttentionCase& c, CaseData& d) {
    forbid_in_mask(c.problem, d, [](std::int64_t i) { return i == 0; }, 0, c.problem.mask_k_len);
  };
  add("AdditiveMaskFull", with_mask(mha, MaskKind::Additive, 2, 4, 17, 33));
  add("AdditiveMaskBroadcastShort", with_mask(shape(2, 6, 3, 17, 33, 16, 16), MaskKind::Additive, 1, 6, 1, 25));
  poisoned_lengths(add("KeyLengths", with_lengths(shape(3, 2, 1, 9, 33, 16, 16))), {0, 17, 33});
  poisoned_lengths(add("KeyLengthsCausalBoolMask",
                       with_lengths(with_mask(with_causal(shape(2, 4, 2, 9, 33, 16, 16), Alignment::BottomRight),
                                              MaskKind::Boolean, 2, 1, 9, 30))),
                   {31, 16});
  add("SequenceMajor", mha).c.sequence_major = true;
  add("SequenceMajorGqaCausal", with_causal(shape(2, 6, 2, 17, 33, 16, 16), Alignment::BottomRight)).c.sequence_major = true;
  {
    // Rows of 16 + 3 elements whose first element lies 64 bytes after DLTensor::data: a kernel
    // must follow the strides and the byte offset it is given.
    GridCase& g = add("PaddedRowsByteOffset", with_causal(shape(2, 4, 2, 17, 33, 16, 16), Alignment::BottomRight));
    g.options.row_padding = 3;
    g.options.byte_offset = 64;
  }
  add("DkNotDv", shape(2, 2, 1, 17, 33, 24, 8));
  add("DvWide", shape(1, 2, 2, 17, 33, 8, 40));
  add("DecodeOneQuery", with_causal(shape(2, 4, 2, 1, 40, 16, 16), Alignment::BottomRight));
  add("OneKey", shape(1, 2, 2, 5, 1, 8, 8));
  // |s| ≈ 1e3 (case.h): exp overflows without the max subtraction.
  add("LargeLogits", shape(1, 2, 2, 17, 33, 16, 16)).c.values = ValueKind::LargeLogits;
  // cuda-flash's tiles hold 16 keys on the host and 32 on the device: one below, at and above
  // one and two tiles (and four of the host's).
  for (const std::int64_t keys : {15, 16, 17, 31, 32, 33, 63, 64, 65}) {
    add("TileKeys" + std::to_string(keys), shape(1, 2, 1, keys, keys, 8, 8));
    add("TileKeysCausal" + std::to_string(keys), with_causal(shape(1, 1, 1, keys, keys, 8, 8), Alignment::TopLeft));
  }
  // Attention sinks (ABI 2.3; the flash kernels only, the naive ones decline): one sink logit per
  // head, with key lengths of 0 (rows whose only key is the sink: O = 0, LSE = σ), and with GQA
  // under causal.
  {
    Problem p = mha;
    p.sinks = true;
    add("Sinks", p);
    Problem lengths = with_lengths(shape(3, 2, 1, 9, 33, 16, 16));
    lengths.sinks = true;
    poisoned_lengths(add("SinksKeyLengths", lengths), {0, 17, 33});
    Problem grouped = with_causal(shape(2, 6, 2, 17, 33, 16, 16), Alignment::BottomRight);
    grouped.sinks = true;
    add("SinksGqaCausal", grouped);
  }
  // Paged KV caches (ABI 2.4; cuda-flash only): token-major pages of 16 keys across the device's
  // 32-key tiles, with a shared prefix and a sequence ending inside a page; head-major pages of 5
  // (no power of two) under causal from the key lengths, with NaN and ±max in every unused page,
  // unused slot and tail; a decode query against pages of 1.
  {
    const auto paged = [](Problem p, KvStorage storage, std::int64_t page) {
      p.has_key_lengths = true;
      p.kv_storage = storage;
      p.page_size = page;
      return p;
    };
    GridCase& shared = add("PagedSharedPrefix", paged(shape(3, 4, 2, 9, 64, 16, 16), KvStorage::PagedTokenMajor, 16));
    shared.c.key_lengths = {40, 64, 33};
    shared.c.shared_prefix = true;
    shared.c.page_shuffle = 3;
    GridCase& head = add("PagedHeadMajorCausal", paged(with_causal(shape(2, 6, 2, 7, 35, 16, 16), Alignment::KeyLengths),
                                                       KvStorage::PagedHeadMajor, 5));
    poisoned_lengths(head, {0, 23});
    head.c.page_shuffle = 4;
    GridCase& decode = add("PagedDecodePageOfOne", paged(with_causal(shape(2, 4, 1, 1, 40, 16, 16), Alignment::KeyLengths),
                                                         KvStorage::PagedTokenMajor, 1));
    poisoned_lengths(decode, {40, 17});
  }
  // Packed batches (ABI 2.5; cuda-flash only): sequences of 0, 1 and many tokens across the
  // device's 32-key tiles under bottom-right causal with GQA; top-left with sinks and a sequence
  // of no keys (its rows hold the sink alone); packed rows with padding and a byte offset.
  {
    const auto packed = [&](std::string name, Problem p, std::vector<std::int64_t> queries,
                            std::vector<std::int64_t> keys) -> GridCase& {
      p.has_key_lengths = true;
      p.varlen = true;
      GridCase& g = add(std::move(name), p);
      g.c.query_lengths = std::move(queries);
      g.c.key_lengths = std::move(keys);
      return g;
    };
    packed("VarlenCausalGqa", with_causal(shape(4, 6, 2, 33, 70, 16, 16), Alignment::BottomRight), {33, 0, 1, 17},
           {70, 5, 33, 0});
    Problem sinks = with_causal(shape(3, 4, 4, 9, 20, 16, 16), Alignment::TopLeft);
    sinks.sinks = true;
    packed("VarlenTopLeftSinks", sinks, {9, 4, 1}, {0, 20, 3});
    GridCase& g = packed("VarlenPaddedRowsByteOffset", shape(2, 4, 2, 17, 33, 16, 16), {17, 5}, {12, 33});
    g.options.row_padding = 3;
    g.options.byte_offset = 64;
  }
  return in_dtypes(base, dtypes);
}

std::vector<GridCase> backward_attention_grid(const std::vector<DType>& dtypes) {
  std::vector<GridCase> grid = attention_grid(dtypes);
  std::erase_if(grid, [](const GridCase& g) { return g.c.problem.is_paged() || g.c.problem.varlen; });
  return grid;
}

std::string case_name(const ::testing::TestParamInfo<GridCase>& info) { return info.param.name; }

void expect_conforms(const std::string& backend, const GridCase& g) {
  Backend b = open_backend(backend);
  const CaseCheck check = check_case(b, g);
  if (check.declined) GTEST_SKIP() << *check.declined;
  EXPECT_TRUE(check.passed()) << backend << " " << g.name << " [" << g.c.describe() << "]: " << check.report();
}

}  // namespace attncheck::cuda::testing
