/// \file layer.h
/// \brief The multi-head attention layer of the transformer, in double precision.
///
///   head_h = attention(X W_Q^(h) + b_Q^(h), X_kv W_K^(g) + b_K^(g), X_kv W_V^(g) + b_V^(g)),
///            g = h / (Hq / Hkv)   (MQA: Hkv = 1, GQA: a group of heads shares one K/V projection)
///   out    = concat(head_0, …, head_{Hq−1}) W_O + b_O
/// with X_kv = X for self-attention. torch's kdim/vdim: the keys may come from an input X_kv of
/// width key_dim and the values from their own input X_v of width value_dim (separate_values), so
/// W_K is [key width, Dk] and W_V [value width, Dv] per head. Lower-rank tensors are stored as 4-d views right-aligned
/// with leading 1s (numpy broadcasting order): X [1, B, L, d_model], W_Q [1, Hq, d_model, Dk],
/// b_Q [1, 1, Hq, Dk], W_O [1, 1, Hq·Dv, d_model], b_O [1, 1, 1, d_model].
#pragma once

#include <string>
#include <string_view>

#include "attncheck/problem.h"
#include "attncheck/reference.h"

namespace attncheck {

struct LayerProblem {
  Problem attention;            ///< q_len = length of X, k_len = length of X_kv; heads, Dk, Dv, masks
  std::int64_t model_dim = 1;   ///< d_model
  bool self_attention = true;   ///< keys and values projected from X itself
  bool has_qkv_bias = false;    ///< b_Q, b_K, b_V given
  bool has_out_bias = false;    ///< b_O given
  /// Width of the key input X_kv (torch's kdim); 0 = d_model. Cross-attention only.
  std::int64_t key_dim = 0;
  /// Width of the value input X_v (torch's vdim); 0 = d_model. Only with separate_values.
  std::int64_t value_dim = 0;
  /// Values projected from their own input X_v instead of X_kv (torch's key and value arguments
  /// being different tensors). Cross-attention only.
  bool separate_values = false;

  /// The width W_K projects from: key_dim, or d_model when it is 0.
  std::int64_t key_width() const { return key_dim > 0 ? key_dim : model_dim; }
  /// The width W_V projects from: X_v's with separate values, else X_kv's.
  std::int64_t value_width() const { return separate_values ? (value_dim > 0 ? value_dim : model_dim) : key_width(); }
  /// Whether a key or value input is not d_model wide or values have their own input: what the
  /// layer ABI cannot say.
  bool has_kv_widths() const { return key_dim > 0 || value_dim > 0 || separate_values; }

  /// Throws ProblemError (also for self-attention with Lq != Lk).
  void validate() const;
  /// Problem::describe() plus " dmodel=… cross=1 qkvbias=1 outbias=1 kdim=… vdim=… sepv=1"
  /// (the last three only when set).
  std::string describe() const;
  bool operator==(const LayerProblem&) const = default;
};

/// Parses LayerProblem::describe()'s output. Throws ProblemError.
LayerProblem parse_layer_problem(std::string_view text);

struct LayerInputs {
  View4<const double> x;     ///< [1, B, Lq, d_model]
  View4<const double> x_kv;  ///< [1, B, Lk, key width]; empty for self-attention
  View4<const double> w_q;   ///< [1, Hq, d_model, Dk]
  View4<const double> w_k;   ///< [1, Hkv, key width, Dk]
  View4<const double> w_v;   ///< [1, Hkv, value width, Dv]
  View4<const double> b_q;   ///< [1, 1, Hq, Dk] or empty
  View4<const double> b_k;   ///< [1, 1, Hkv, Dk] or empty
  View4<const double> b_v;   ///< [1, 1, Hkv, Dv] or empty
  View4<const double> w_o;   ///< [1, 1, Hq·Dv, d_model]
  View4<const double> b_o;   ///< [1, 1, 1, d_model] or empty
  View4<const double> mask;  ///< as AttentionInputs::mask
  std::span<const std::int64_t> key_lengths;
  View4<const double> x_v;   ///< [1, B, Lk, value width]; only with separate_values
};

struct LayerResult {
  HostTensor out;             ///< [1, B, Lq, d_model]
  HostTensor q, k, v;         ///< the projections, [B, Hq, Lq, Dk], [B, Hkv, Lk, Dk], [B, Hkv, Lk, Dv]
  AttentionResult attention;  ///< core attention on (q, k, v): O [B, Hq, Lq, Dv], LSE, stats if requested
};

/// Throws ProblemError naming the tensor and dimension on the first mismatch.
void validate_layer_inputs(const LayerProblem& problem, const LayerInputs& inputs);

/// The layer, computed by projecting in double and calling reference_attention per head.
LayerResult reference_layer(const LayerProblem& problem, const LayerInputs& inputs,
                            const ReferenceOptions& options = {});

}  // namespace attncheck
