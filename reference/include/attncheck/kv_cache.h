/// \file kv_cache.h
/// \brief KV-cache decoding: one step appends new keys and values to a cache of P past tokens and
/// attends the new queries to all of it (ONNX Attention with past_key / past_value).
///
/// A step is an ordinary Problem whose alignment is Offset with diagonal_offset = P (ONNX: the
/// causal offset is past_len, not T − Sq), q_len = the new queries, k_len = P + the new keys:
///   present_K = concat(past_K, K_new, axis 2)   [B, Hkv, P + Lnew_kv, Dk]
///   present_V = concat(past_V, V_new, axis 2)   [B, Hkv, P + Lnew_kv, Dv]
///   O, LSE    = reference_attention(step, Q, present_K, present_V)
/// Query r of the step is token P + r of the sequence, so with causal it sees keys j <= P + r: the
/// same set as row P + r of the full causal (top-left) computation over the whole sequence.
#pragma once

#include <cstdint>
#include <span>

#include "attncheck/problem.h"
#include "attncheck/reference.h"

namespace attncheck {

struct DecodeInputs {
  View4<const double> q;       ///< [B, Hq, Lq, Dk], the new queries
  View4<const double> past_k;  ///< [B, Hkv, P, Dk]; may be empty when P = 0
  View4<const double> past_v;  ///< [B, Hkv, P, Dv]; may be empty when P = 0
  View4<const double> k_new;   ///< [B, Hkv, Lk − P, Dk]; may be empty when Lk = P
  View4<const double> v_new;   ///< [B, Hkv, Lk − P, Dv]; may be empty when Lk = P
  View4<const double> mask;    ///< as AttentionInputs::mask, over all Lk = P + new keys
  std::span<const std::int64_t> key_lengths;  ///< as AttentionInputs::key_lengths
  std::span<const double> alibi_slopes;       ///< as AttentionInputs::alibi_slopes (measured from the step's diagonal)
  std::span<const double> sinks;              ///< as AttentionInputs::sinks
};

struct DecodeResult {
  AttentionResult attention;  ///< O [B, Hq, Lq, Dv], LSE, and whatever the options asked for
  HostTensor present_k;       ///< [B, Hkv, Lk, Dk]
  HostTensor present_v;       ///< [B, Hkv, Lk, Dv]
};

/// The causal step that appends `new_len` tokens (and as many queries) to a cache of `past_len`:
/// batch, heads, dims, scale and softcap from `model`; q_len = new_len, k_len = past_len + new_len,
/// causal, alignment Offset, diagonal_offset = past_len. Windows are kept (measured from the same
/// diagonal), and so are ALiBi and sinks; a mask is not (its shape depends on the step), so `model`
/// must have none.
Problem decode_step_problem(const Problem& model, std::int64_t past_len, std::int64_t new_len);

/// Throws ProblemError naming the tensor and dimension on the first mismatch.
void validate_decode_inputs(const Problem& step, const DecodeInputs& inputs);

/// One decoding step (see the file comment). `step.alignment` must be Offset.
DecodeResult reference_decode_step(const Problem& step, const DecodeInputs& inputs,
                                   const ReferenceOptions& options = {});

}  // namespace attncheck
