// libFuzzer target: decode_fixture on arbitrary bytes.
//
// decode_fixture promises to treat its input as hostile and to refuse every defect with
// FixtureError. Anything else (another exception, a sanitizer report, a leak) is a bug. A fixture
// it accepts must then be safe to use, so the harness also
//   * checks the canonical form: encode_fixture of an accepted fixture decodes again, and encoding
//     that gives the same bytes (a reader and writer that disagree corrupt the golden set);
//   * converts every tensor as a consumer of the format does (to_host_tensor, to_int64_values),
//     which may refuse with FixtureError and nothing else;
//   * for an attention fixture, whose shapes the reader promises to have checked against its
//     problem, runs the double reference on those tensors: it must accept them (a ProblemError
//     would mean the reader let through a fixture its own problem contradicts), except for key
//     lengths out of [0, Lk], which the format leaves to the reference to refuse. Packed batches
//     (format version 7) are unpacked from their cu_seqlens and paged caches (version 6) handed
//     over with their block table, as attncheck::fixtures reads them.
//
// The harness links attncheck::fixture_format alone. Completing decode and layer fixtures with
// the reference (with_reference_outputs) belongs to attncheck::fixtures and its tests.
//
// The data section is covered by a SHA-256 in the header, which random mutation never matches,
// so nearly every mutant would stop at the checksum. Each input is therefore decoded twice: as
// given (the checksum path itself), and with the header's sha256 value overwritten by the hash of
// the actual data section, which lets mutations reach the shape, offset and problem checks.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "attncheck/fixture.h"
#include "attncheck/paged.h"
#include "attncheck/reference.h"
#include "attncheck/varlen.h"
#include "attncheck/sha256.h"
#include "fuzz_support.h"

namespace {

using attncheck::fuzz::invariant_broken;

std::string_view as_text(std::span<const std::byte> bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

// The input with its "sha256" metadata value replaced by the hash of its data section, or nullopt
// when the input has no such value in its header (or it already matches). The value keeps its
// length, so every offset in the file stays where it was.
std::optional<std::vector<std::byte>> with_true_checksum(std::span<const std::byte> bytes) {
  if (bytes.size() < 8) return std::nullopt;
  std::uint64_t header_length = 0;
  for (int i = 7; i >= 0; --i) header_length = header_length << 8 | std::to_integer<std::uint64_t>(bytes[i]);
  if (header_length > bytes.size() - 8) return std::nullopt;
  const std::string_view header = as_text(bytes.subspan(8, header_length));
  constexpr std::string_view key = "\"sha256\":\"";
  const auto at = header.find(key);
  constexpr std::size_t kHexDigits = 64;
  if (at == std::string_view::npos || header.size() - (at + key.size()) < kHexDigits) return std::nullopt;
  const std::string actual = attncheck::sha256_hex(bytes.subspan(8 + header_length));
  const std::size_t value_at = 8 + at + key.size();
  if (as_text(bytes.subspan(value_at, kHexDigits)) == actual) return std::nullopt;
  std::vector<std::byte> repaired(bytes.begin(), bytes.end());
  std::transform(actual.begin(), actual.end(), repaired.begin() + static_cast<std::ptrdiff_t>(value_at),
                 [](char c) { return static_cast<std::byte>(c); });
  return repaired;
}

void check_canonical_form(const attncheck::Fixture& fixture) {
  // Exceptions here escape on purpose: the writer refusing what the reader accepted is a bug.
  const std::vector<std::byte> first = attncheck::encode_fixture(fixture);
  const attncheck::Fixture again = attncheck::decode_fixture(first, "<re-encoded>");
  const std::vector<std::byte> second = attncheck::encode_fixture(again);
  if (first != second)
    invariant_broken("encode(decode(encode(f))) differs from encode(f)", as_text(first), as_text(second));
}

// The reference's cost grows with B·Hq·Lq·Lk·(Dk + Dv), which a few kilobytes of input can make
// large (Dk = Dv = 1, thousands of keys). Above this many multiply-adds (more than any golden
// fixture needs) the harness skips the reference run: it would spend the budget on arithmetic the
// reader never sees, while every check of the reader has already run on that input.
constexpr double kMaxReferenceWork = 1 << 18;

// cu_seqlens [B + 1] offsets as the B sequence lengths (varlen.h takes lengths).
std::vector<std::int64_t> counts_of_offsets(const std::vector<std::int64_t>& offsets) {
  std::vector<std::int64_t> counts;
  for (std::size_t b = 0; b + 1 < offsets.size(); ++b) counts.push_back(offsets[b + 1] - offsets[b]);
  return counts;
}

void use_fixture(const attncheck::Fixture& fixture) {
  for (const auto& [name, tensor] : fixture.tensors) {
    try {
      (void)attncheck::to_host_tensor(tensor);
      if (tensor.type == attncheck::StorageType::I64 || tensor.type == attncheck::StorageType::U8)
        (void)attncheck::to_int64_values(tensor);
    } catch (const attncheck::FixtureError&) {
      // e.g. more than 4 axes, or an I64 value beyond 2^53: refused, as documented.
    }
  }
  if (fixture.kind != attncheck::FixtureKind::Attention) return;

  const attncheck::Problem& p = fixture.problem;
  const double work = static_cast<double>(p.batch) * static_cast<double>(p.q_heads) * static_cast<double>(p.q_len) *
                      static_cast<double>(p.k_len) * static_cast<double>(p.qk_dim + p.v_dim);
  if (work > kMaxReferenceWork) return;
  // Version 2 may state the mask as attn_mask plus key_padding_mask, which golden generation
  // combines (attncheck::fixtures); the harness runs the reference on a single "mask" only.
  if (p.mask != attncheck::MaskKind::None && !fixture.tensors.count("mask")) return;
  attncheck::HostTensor q, k, v, mask, slopes, sinks, q_descale, k_descale, v_descale;
  std::vector<std::int64_t> key_lengths, query_lengths;
  std::vector<std::int32_t> block_table;
  try {
    q = attncheck::to_host_tensor(fixture.tensors.at("q"));
    k = attncheck::to_host_tensor(fixture.tensors.at("k"));
    v = attncheck::to_host_tensor(fixture.tensors.at("v"));
    if (p.mask != attncheck::MaskKind::None) mask = attncheck::to_host_tensor(fixture.tensors.at("mask"));
    // A packed batch (format version 7) states its lengths as cu_seqlens offsets, not key_lengths.
    if (p.varlen) {
      query_lengths = counts_of_offsets(attncheck::to_int64_values(fixture.tensors.at("cu_seqlens_q")));
      key_lengths = counts_of_offsets(attncheck::to_int64_values(fixture.tensors.at("cu_seqlens_k")));
    } else if (p.has_key_lengths) {
      key_lengths = attncheck::to_int64_values(fixture.tensors.at("key_lengths"));
    }
    if (p.is_paged())  // format version 6; the reader checked that every entry is an int32
      for (const std::int64_t entry : attncheck::to_int64_values(fixture.tensors.at("block_table")))
        block_table.push_back(static_cast<std::int32_t>(entry));
    if (p.has_alibi()) slopes = attncheck::to_host_tensor(fixture.tensors.at("alibi_slopes"));
    if (p.sinks) sinks = attncheck::to_host_tensor(fixture.tensors.at("sinks"));
    if (p.has_descales()) {  // format version 8
      q_descale = attncheck::to_host_tensor(fixture.tensors.at("q_descale"));
      k_descale = attncheck::to_host_tensor(fixture.tensors.at("k_descale"));
      v_descale = attncheck::to_host_tensor(fixture.tensors.at("v_descale"));
    }
  } catch (const attncheck::FixtureError&) {
    return;  // refused above already; std::out_of_range (a missing tensor) escapes: the reader checked them
  }
  attncheck::AttentionInputs inputs;
  if (p.mask != attncheck::MaskKind::None) inputs.mask = mask.view();
  if (p.has_key_lengths) inputs.key_lengths = key_lengths;
  inputs.alibi_slopes = slopes.values;  // format version 5; empty without the option
  inputs.sinks = sinks.values;
  inputs.q_descale = q_descale.values;  // format version 8; empty without descales
  inputs.k_descale = k_descale.values;
  inputs.v_descale = v_descale.values;
  inputs.q = q.view();
  if (p.varlen) {
    // The reader checked the offsets against the packed shapes and the capacities Lq, Lk, so
    // unpacking must succeed; the reference then sees the logical [B, H, L, D] tensors.
    q = attncheck::unpack_sequences(p, q.view(), query_lengths, attncheck::PackedRows::Queries, p.q_len, 0.0);
    k = attncheck::unpack_sequences(p, k.view(), key_lengths, attncheck::PackedRows::Keys, p.k_len, 0.0);
    v = attncheck::unpack_sequences(p, v.view(), key_lengths, attncheck::PackedRows::Keys, p.k_len, 0.0);
    inputs.q = q.view();
    inputs.query_lengths = query_lengths;
  }
  if (p.is_paged()) {
    inputs.paged = {k.view(), v.view(), block_table};  // the reference gathers K and V itself
  } else {
    inputs.k = k.view();
    inputs.v = v.view();
  }
  // One thread: starting threads would cost more than these problems.
  attncheck::ReferenceOptions options;
  options.threads = 1;
  try {
    (void)attncheck::reference_attention(p, inputs, options);
  } catch (const attncheck::ProblemError& e) {
    if (!p.has_key_lengths)
      invariant_broken("the reference refuses an attention fixture the reader accepted", e.what(), p.describe());
  }
}

void decode_and_use(std::span<const std::byte> bytes) {
  std::optional<attncheck::Fixture> fixture;
  try {
    fixture = attncheck::decode_fixture(bytes, "<fuzz>");
  } catch (const attncheck::FixtureError&) {
    return;  // the documented refusal
  }
  check_canonical_form(*fixture);
  use_fixture(*fixture);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  decode_and_use(bytes);
  if (const auto repaired = with_true_checksum(bytes)) decode_and_use(*repaired);
  return 0;
}
