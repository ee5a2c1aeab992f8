// Conversions between the suite's types and the ABI's, defined once (backend_handle.h).
#include <cstddef>
#include <cstring>
#include <fmt/format.h>

#include "attncheck/backend_handle.h"

namespace attncheck {

std::string_view status_name(attncheck_status status) {
  switch (status) {
    case kAttncheckOk: return "ok";
    case kAttncheckNotSupported: return "not supported";
    case kAttncheckInvalidProblem: return "invalid problem";
    case kAttncheckInternalError: return "internal error";
    default: return "unknown status";
  }
}

namespace {

[[noreturn]] void bad_field(const std::string& message) { throw BackendError(kAttncheckInvalidProblem, message); }

std::string dlpack_string(DLDataType d) { return fmt::format("code {} bits {} lanes {}", d.code, d.bits, d.lanes); }

attncheck_alignment alignment_to_abi(Alignment a) {
  switch (a) {
    case Alignment::TopLeft: return kAttncheckAlignTopLeft;
    case Alignment::BottomRight: return kAttncheckAlignBottomRight;
    case Alignment::Offset: return kAttncheckAlignOffset;
    case Alignment::KeyLengths: return kAttncheckAlignKeyLengths;
  }
  return kAttncheckAlignTopLeft;
}

attncheck_mask_kind mask_to_abi(MaskKind k) {
  switch (k) {
    case MaskKind::None: return kAttncheckMaskNone;
    case MaskKind::Boolean: return kAttncheckMaskBoolean;
    case MaskKind::Additive: return kAttncheckMaskAdditive;
  }
  return kAttncheckMaskNone;
}

attncheck_empty_row empty_row_to_abi(EmptyRowConvention c) {
  switch (c) {
    case EmptyRowConvention::Zeros: return kAttncheckEmptyRowZeros;
    case EmptyRowConvention::NaN: return kAttncheckEmptyRowNaN;
    case EmptyRowConvention::MeanOfV: return kAttncheckEmptyRowMeanOfV;
  }
  return kAttncheckEmptyRowZeros;
}

DType dtype_field(DLDataType d, const char* field, const char* owner = "profile") {
  if (auto t = from_dlpack(d)) return *t;
  bad_field(fmt::format("{}.{}: DLPack dtype ({}) is not one attncheck knows (f32, f16, bf16, f64)", owner, field,
                        dlpack_string(d)));
}

// A DLDataType left zero ({0, 0, 0}, as a zero-initialised struct has it): "no such rounding"
// in the forward profile's 2.1 fields, "float32" or "the input dtype" in the backward profile's.
bool is_zero_dtype(const DLDataType& d) { return d.code == 0 && d.bits == 0 && d.lanes == 0; }

std::optional<DType> optional_dtype_field(const DLDataType& d, const char* field, const char* owner = "profile") {
  if (is_zero_dtype(d)) return std::nullopt;
  return dtype_field(d, field, owner);
}

DLDataType to_dlpack_or_zero(const std::optional<DType>& d) { return d ? to_dlpack(*d) : DLDataType{0, 0, 0}; }

}  // namespace

DLDataType to_dlpack(DType dtype) {
  switch (dtype) {
    case DType::F32: return {kDLFloat, 32, 1};
    case DType::F16: return {kDLFloat, 16, 1};
    case DType::BF16: return {kDLBfloat, 16, 1};
    case DType::F64: return {kDLFloat, 64, 1};
    case DType::E4M3: return {kAttncheckDLFloat8E4M3FN, 8, 1};
    case DType::E5M2: return {kAttncheckDLFloat8E5M2, 8, 1};
  }
  return {kDLFloat, 32, 1};
}

std::optional<DType> from_dlpack(DLDataType d) {
  if (d.lanes != 1) return std::nullopt;
  if (d.code == kDLFloat && d.bits == 32) return DType::F32;
  if (d.code == kDLFloat && d.bits == 16) return DType::F16;
  if (d.code == kDLBfloat && d.bits == 16) return DType::BF16;
  if (d.code == kDLFloat && d.bits == 64) return DType::F64;
  if (d.code == kAttncheckDLFloat8E4M3FN && d.bits == 8) return DType::E4M3;
  if (d.code == kAttncheckDLFloat8E5M2 && d.bits == 8) return DType::E5M2;
  return std::nullopt;
}

attncheck_problem to_abi(const Problem& p) {
  attncheck_problem a{};
  a.struct_size = sizeof(attncheck_problem);
  a.batch = p.batch;
  a.q_heads = p.q_heads;
  a.kv_heads = p.kv_heads;
  a.q_len = p.q_len;
  a.k_len = p.k_len;
  a.qk_dim = p.qk_dim;
  a.v_dim = p.v_dim;
  // The ABI carries the scale actually applied, so a backend never re-derives the default.
  a.scale = p.effective_scale();
  a.softcap = p.softcap;
  a.causal = p.causal ? 1 : 0;
  a.alignment = alignment_to_abi(p.alignment);
  a.diagonal_offset = p.diagonal_offset;
  a.window_left = p.window_left;
  a.window_right = p.window_right;
  a.mask_kind = mask_to_abi(p.mask);
  // A packed batch's key counts travel as cu_seqlens_k, not as key_lengths (backend.h, ABI 2.5).
  a.has_key_lengths = p.has_key_lengths && !p.varlen ? 1 : 0;
  a.mask_shape[0] = p.mask_batch;
  a.mask_shape[1] = p.mask_heads;
  a.mask_shape[2] = p.mask_q_len;
  a.mask_shape[3] = p.mask_k_len;
  a.alibi = p.alibi == AlibiSlopes::PerHead        ? kAttncheckAlibiPerHead
            : p.alibi == AlibiSlopes::PerBatchHead ? kAttncheckAlibiPerBatchHead
                                                   : kAttncheckAlibiNone;
  a.has_sinks = p.sinks ? 1 : 0;
  a.kv_storage = p.kv_storage == KvStorage::PagedTokenMajor  ? kAttncheckKvPagedTokenMajor
                 : p.kv_storage == KvStorage::PagedHeadMajor ? kAttncheckKvPagedHeadMajor
                                                             : kAttncheckKvContiguous;
  a.page_size = p.page_size;
  a.varlen = p.varlen ? 1 : 0;
  a.descale = p.descale == Descale::PerTensor ? kAttncheckDescalePerTensor
              : p.descale == Descale::PerHead ? kAttncheckDescalePerHead
                                              : kAttncheckDescaleNone;
  return a;
}

Problem from_abi(const attncheck_problem& a) {
  Problem p;
  p.batch = a.batch;
  p.q_heads = a.q_heads;
  p.kv_heads = a.kv_heads;
  p.q_len = a.q_len;
  p.k_len = a.k_len;
  p.qk_dim = a.qk_dim;
  p.v_dim = a.v_dim;
  p.scale = a.scale;  // always explicit: the ABI does not say whether it was the default
  p.softcap = a.softcap;
  p.causal = a.causal != 0;
  switch (a.alignment) {
    case kAttncheckAlignTopLeft: p.alignment = Alignment::TopLeft; break;
    case kAttncheckAlignBottomRight: p.alignment = Alignment::BottomRight; break;
    case kAttncheckAlignOffset: p.alignment = Alignment::Offset; break;
    case kAttncheckAlignKeyLengths: p.alignment = Alignment::KeyLengths; break;
    default: bad_field(fmt::format("problem.alignment: {} is not an attncheck_alignment (0..3)", a.alignment));
  }
  p.diagonal_offset = a.diagonal_offset;
  p.window_left = a.window_left;
  p.window_right = a.window_right;
  switch (a.mask_kind) {
    case kAttncheckMaskNone: p.mask = MaskKind::None; break;
    case kAttncheckMaskBoolean: p.mask = MaskKind::Boolean; break;
    case kAttncheckMaskAdditive: p.mask = MaskKind::Additive; break;
    default: bad_field(fmt::format("problem.mask_kind: {} is not an attncheck_mask_kind (0..2)", a.mask_kind));
  }
  p.has_key_lengths = a.has_key_lengths != 0;
  p.mask_batch = a.mask_shape[0];
  p.mask_heads = a.mask_shape[1];
  p.mask_q_len = a.mask_shape[2];
  p.mask_k_len = a.mask_shape[3];
  // ABI 2.3 fields, read only where the writer's struct_size covers them (backend.h, rule 2).
  if (ATTNCHECK_HAS_FIELD(&a, attncheck_problem, alibi)) {
    switch (a.alibi) {
      case kAttncheckAlibiNone: p.alibi = AlibiSlopes::None; break;
      case kAttncheckAlibiPerHead: p.alibi = AlibiSlopes::PerHead; break;
      case kAttncheckAlibiPerBatchHead: p.alibi = AlibiSlopes::PerBatchHead; break;
      default: bad_field(fmt::format("problem.alibi: {} is not an attncheck_alibi (0..2)", a.alibi));
    }
  }
  if (ATTNCHECK_HAS_FIELD(&a, attncheck_problem, has_sinks)) p.sinks = a.has_sinks != 0;
  if (ATTNCHECK_HAS_FIELD(&a, attncheck_problem, page_size)) {
    switch (a.kv_storage) {
      case kAttncheckKvContiguous: p.kv_storage = KvStorage::Contiguous; break;
      case kAttncheckKvPagedTokenMajor: p.kv_storage = KvStorage::PagedTokenMajor; break;
      case kAttncheckKvPagedHeadMajor: p.kv_storage = KvStorage::PagedHeadMajor; break;
      default: bad_field(fmt::format("problem.kv_storage: {} is not an attncheck_kv_storage (0..2)", a.kv_storage));
    }
    p.page_size = a.page_size;
  }
  if (ATTNCHECK_HAS_FIELD(&a, attncheck_problem, varlen) && a.varlen != 0) {
    if (a.has_key_lengths != 0)
      bad_field("problem.varlen: is set with has_key_lengths = 1, but a packed batch's key counts are cu_seqlens_k's");
    p.varlen = true;
    p.has_key_lengths = true;  // the Problem's key lengths are the sequences' key counts (problem.h)
  }
  if (ATTNCHECK_HAS_FIELD(&a, attncheck_problem, descale)) {
    switch (a.descale) {
      case kAttncheckDescaleNone: p.descale = Descale::None; break;
      case kAttncheckDescalePerTensor: p.descale = Descale::PerTensor; break;
      case kAttncheckDescalePerHead: p.descale = Descale::PerHead; break;
      default: bad_field(fmt::format("problem.descale: {} is not an attncheck_descale (0..2)", a.descale));
    }
  }
  return p;
}

attncheck_layer_problem to_abi(const LayerProblem& p) {
  attncheck_layer_problem a{};
  a.struct_size = sizeof(attncheck_layer_problem);
  if (p.attention.has_alibi() || p.attention.sinks || p.attention.is_paged() || p.attention.varlen ||
      p.attention.has_descales())
    bad_field("layer problem: ALiBi, sinks, paged caches, packed batches and descales are options of the attention core only (the layer "
              "embeds the ABI 2.0 problem, backend.h)");
  const attncheck_problem core = to_abi(p.attention);
  std::memcpy(&a.attention, &core, ATTNCHECK_PROBLEM_SIZE_2_0);
  a.attention.struct_size = static_cast<std::uint32_t>(ATTNCHECK_PROBLEM_SIZE_2_0);
  a.model_dim = p.model_dim;
  a.self_attention = p.self_attention ? 1 : 0;
  a.has_qkv_bias = p.has_qkv_bias ? 1 : 0;
  a.has_out_bias = p.has_out_bias ? 1 : 0;
  return a;
}

NumericsProfile from_abi(const attncheck_numerics_profile& a) {
  // Every field of minor 0 must be present; later minors only append, and a field the backend's
  // struct_size does not cover keeps its documented default (backend.h, rule 2).
  if (a.struct_size < ATTNCHECK_NUMERICS_PROFILE_SIZE_2_0)
    bad_field(fmt::format("profile.struct_size: {} bytes, but ABI 2.0 needs at least {}", a.struct_size,
                          ATTNCHECK_NUMERICS_PROFILE_SIZE_2_0));
  NumericsProfile p;
  p.input = dtype_field(a.input_dtype, "input_dtype");
  p.score = dtype_field(a.score_dtype, "score_dtype");
  p.probability = dtype_field(a.probability_dtype, "probability_dtype");
  p.accumulator = dtype_field(a.accumulator_dtype, "accumulator_dtype");
  p.output = dtype_field(a.output_dtype, "output_dtype");
  switch (a.accumulation_rounding) {
    case kAttncheckRoundNearest: p.accumulation_rounding = Rounding::Nearest; break;
    case kAttncheckRoundTowardZero: p.accumulation_rounding = Rounding::TowardZero; break;
    default:
      bad_field(fmt::format("profile.accumulation_rounding: {} is not an attncheck_rounding (0..1)",
                            a.accumulation_rounding));
  }
  if (a.products_per_rounding < 1)
    bad_field(fmt::format("profile.products_per_rounding: {}, but k0 must be >= 1", a.products_per_rounding));
  p.products_per_rounding = a.products_per_rounding;
  if (a.softmax_block < 0)
    bad_field(fmt::format("profile.softmax_block: {}, but must be >= 0 (0 = three-pass)", a.softmax_block));
  p.softmax_block = a.softmax_block;
  p.deterministic = a.deterministic != 0;
  switch (a.empty_row) {
    case kAttncheckEmptyRowZeros: p.empty_row = EmptyRowConvention::Zeros; break;
    case kAttncheckEmptyRowNaN: p.empty_row = EmptyRowConvention::NaN; break;
    case kAttncheckEmptyRowMeanOfV: p.empty_row = EmptyRowConvention::MeanOfV; break;
    default: bad_field(fmt::format("profile.empty_row: {} is not an attncheck_empty_row (0..2)", a.empty_row));
  }
  p.flushes_subnormals = a.flushes_subnormals != 0;
  p.accepts_strides = a.accepts_strides != 0;
  p.writes_lse = a.writes_lse != 0;
  if (!(a.exp_relative_error >= 0) || !(a.exp_relative_error < 1))
    bad_field(fmt::format("profile.exp_relative_error: {}, but must be in [0, 1)", a.exp_relative_error));
  if (!(a.tanh_relative_error >= 0) || !(a.tanh_relative_error < 1))
    bad_field(fmt::format("profile.tanh_relative_error: {}, but must be in [0, 1)", a.tanh_relative_error));
  p.exp_relative_error = a.exp_relative_error;
  p.tanh_relative_error = a.tanh_relative_error;

  // ABI 2.1.
  auto optional_dtype = [](const DLDataType& field, const char* name, bool present) -> std::optional<DType> {
    return present ? optional_dtype_field(field, name) : std::nullopt;
  };
#define ATTNCHECK_PROFILE_HAS(field) ATTNCHECK_HAS_FIELD(&a, attncheck_numerics_profile, field)
  p.query_rounding = optional_dtype(a.query_rounding, "query_rounding", ATTNCHECK_PROFILE_HAS(query_rounding));
  p.key_rounding = optional_dtype(a.key_rounding, "key_rounding", ATTNCHECK_PROFILE_HAS(key_rounding));
  p.value_rounding = optional_dtype(a.value_rounding, "value_rounding", ATTNCHECK_PROFILE_HAS(value_rounding));
  p.mask_dtype = optional_dtype(a.mask_dtype, "mask_dtype", ATTNCHECK_PROFILE_HAS(mask_dtype));
  p.row_sum_accumulator = optional_dtype(a.row_sum_dtype, "row_sum_dtype", ATTNCHECK_PROFILE_HAS(row_sum_dtype));
  if (ATTNCHECK_PROFILE_HAS(keys_per_partial_sum)) {
    if (a.keys_per_partial_sum < 0)
      bad_field(fmt::format("profile.keys_per_partial_sum: {}, but must be >= 0 (0 = one running sum)",
                            a.keys_per_partial_sum));
    p.keys_per_partial_sum = a.keys_per_partial_sum;
  }
  if (ATTNCHECK_PROFILE_HAS(kv_splits)) {
    if (a.kv_splits < 0) bad_field(fmt::format("profile.kv_splits: {}, but must be >= 0 (0 or 1 = no split)", a.kv_splits));
    p.kv_splits = a.kv_splits;
  }
  if (ATTNCHECK_PROFILE_HAS(empty_row_lse)) {
    switch (a.empty_row_lse) {
      case kAttncheckEmptyRowLseNegInf: p.empty_row_lse = EmptyRowLse::NegativeInfinity; break;
      case kAttncheckEmptyRowLseZero: p.empty_row_lse = EmptyRowLse::Zero; break;
      case kAttncheckEmptyRowLseUnspecified: p.empty_row_lse = EmptyRowLse::Unspecified; break;
      default:
        bad_field(fmt::format("profile.empty_row_lse: {} is not an attncheck_empty_row_lse (0..2)", a.empty_row_lse));
    }
  }
  if (ATTNCHECK_PROFILE_HAS(masked_keys_weighted_by_zero))
    p.masked_keys_weighted_by_zero = a.masked_keys_weighted_by_zero != 0;
#undef ATTNCHECK_PROFILE_HAS
  return p;
}

attncheck_numerics_profile to_abi(const NumericsProfile& p) {
  attncheck_numerics_profile a{};
  a.struct_size = sizeof(attncheck_numerics_profile);
  a.input_dtype = to_dlpack(p.input);
  a.score_dtype = to_dlpack(p.score);
  a.probability_dtype = to_dlpack(p.probability);
  a.accumulator_dtype = to_dlpack(p.accumulator);
  a.output_dtype = to_dlpack(p.output);
  a.accumulation_rounding =
      p.accumulation_rounding == Rounding::Nearest ? kAttncheckRoundNearest : kAttncheckRoundTowardZero;
  a.products_per_rounding = p.products_per_rounding;
  a.softmax_block = p.softmax_block;
  a.deterministic = p.deterministic ? 1 : 0;
  a.empty_row = empty_row_to_abi(p.empty_row);
  a.flushes_subnormals = p.flushes_subnormals ? 1 : 0;
  a.accepts_strides = p.accepts_strides ? 1 : 0;
  a.writes_lse = p.writes_lse ? 1 : 0;
  a.exp_relative_error = p.exp_relative_error;
  a.tanh_relative_error = p.tanh_relative_error;
  a.query_rounding = to_dlpack_or_zero(p.query_rounding);
  a.key_rounding = to_dlpack_or_zero(p.key_rounding);
  a.value_rounding = to_dlpack_or_zero(p.value_rounding);
  a.mask_dtype = to_dlpack_or_zero(p.mask_dtype);
  a.row_sum_dtype = to_dlpack_or_zero(p.row_sum_accumulator);
  a.keys_per_partial_sum = p.keys_per_partial_sum;
  a.kv_splits = p.kv_splits;
  a.empty_row_lse = p.empty_row_lse == EmptyRowLse::Zero          ? kAttncheckEmptyRowLseZero
                    : p.empty_row_lse == EmptyRowLse::Unspecified ? kAttncheckEmptyRowLseUnspecified
                                                                  : kAttncheckEmptyRowLseNegInf;
  a.masked_keys_weighted_by_zero = p.masked_keys_weighted_by_zero ? 1 : 0;
  return a;
}

BackwardProfile from_abi(const attncheck_backward_profile& a) {
  if (a.struct_size < ATTNCHECK_BACKWARD_PROFILE_SIZE_2_2)
    bad_field(fmt::format("backward_profile.struct_size: {} bytes, but ABI 2.2 needs at least {}", a.struct_size,
                          ATTNCHECK_BACKWARD_PROFILE_SIZE_2_2));
  // Zero means float32 for the stages and "the input dtype" for the gradients (backend.h).
  auto optional_stage = [](const DLDataType& field, const char* name) {
    return optional_dtype_field(field, name, "backward_profile");
  };
  auto stage = [&](const DLDataType& field, const char* name) { return optional_stage(field, name).value_or(DType::F32); };
  BackwardProfile p;
  p.gradient = optional_stage(a.gradient_dtype, "gradient_dtype");
  p.probability = stage(a.probability_dtype, "probability_dtype");
  p.dp = stage(a.dp_dtype, "dp_dtype");
  p.ds = stage(a.ds_dtype, "ds_dtype");
  p.accumulator = stage(a.accumulator_dtype, "accumulator_dtype");
  p.group_sum = optional_stage(a.group_sum_dtype, "group_sum_dtype");
  if (a.query_block < 0 || a.key_block < 0)
    bad_field(fmt::format("backward_profile.query_block/key_block: {}/{}, but must be >= 0 (0 = one running sum)",
                          a.query_block, a.key_block));
  p.query_block = a.query_block;
  p.key_block = a.key_block;
  p.recomputes_from_lse = a.recomputes_from_lse != 0;
  p.dq_atomic = a.dq_atomic != 0;
  p.deterministic = a.deterministic != 0;
  p.accepts_dlse = a.accepts_dlse != 0;
  p.writes_dbias = a.writes_dbias != 0;
  if (p.dq_atomic && p.deterministic)
    bad_field("backward_profile: dq_atomic and deterministic are both set, but atomics add in no fixed order");
  return p;
}

attncheck_backward_profile to_abi(const BackwardProfile& p) {
  attncheck_backward_profile a{};
  a.struct_size = sizeof(attncheck_backward_profile);
  a.gradient_dtype = to_dlpack_or_zero(p.gradient);
  a.probability_dtype = to_dlpack(p.probability);
  a.dp_dtype = to_dlpack(p.dp);
  a.ds_dtype = to_dlpack(p.ds);
  a.accumulator_dtype = to_dlpack(p.accumulator);
  a.group_sum_dtype = to_dlpack_or_zero(p.group_sum);
  a.query_block = p.query_block;
  a.key_block = p.key_block;
  a.recomputes_from_lse = p.recomputes_from_lse ? 1 : 0;
  a.dq_atomic = p.dq_atomic ? 1 : 0;
  a.deterministic = p.deterministic ? 1 : 0;
  a.accepts_dlse = p.accepts_dlse ? 1 : 0;
  a.writes_dbias = p.writes_dbias ? 1 : 0;
  return a;
}

}  // namespace attncheck
