#include "cuda_backend.h"

#include <utility>
#include <string>

namespace attncheck::cuda {
namespace {

StridedTensor strided(const impl::TensorArg& arg) {
  StridedTensor t;
  // The kernels take one pointer type for inputs and outputs; they never write an input.
  t.data = const_cast<char*>(arg.data);
  for (int d = 0; d < arg.ndim; ++d) t.stride[d] = arg.strides[static_cast<std::size_t>(d)];
  return t;
}

// A packed [T, H, D] tensor as the kernels address it, (0, head, token, dim) (attention_params.h).
StridedTensor packed(const impl::TensorArg& arg) {
  StridedTensor t;
  t.data = const_cast<char*>(arg.data);
  t.stride[0] = 0, t.stride[1] = arg.strides[1], t.stride[2] = arg.strides[0], t.stride[3] = arg.strides[2];
  return t;
}

}  // namespace

std::optional<ElementType> element_type_of(DLDataType dtype) {
  if (impl::same_dtype(dtype, impl::kF32)) return ElementType::F32;
  if (impl::same_dtype(dtype, impl::kF16)) return ElementType::F16;
  if (impl::same_dtype(dtype, impl::kBF16)) return ElementType::BF16;
  return std::nullopt;
}

DLDataType dlpack_type_of(ElementType type) {
  switch (type) {
    case ElementType::F32: return impl::kF32;
    case ElementType::F16: return impl::kF16;
    case ElementType::BF16: return impl::kBF16;
  }
  return impl::kF32;
}

AttentionParams make_params(const attncheck_problem& p, const attncheck_attention_tensors& t, DLDeviceType device,
                            ElementType type) {
  const DLDataType dtype = dlpack_type_of(type);
  AttentionParams params{.batch = p.batch, .q_heads = p.q_heads, .kv_heads = p.kv_heads, .q_len = p.q_len,
                         .k_len = p.k_len, .qk_dim = p.qk_dim, .v_dim = p.v_dim, .group = p.q_heads / p.kv_heads,
                         .scale = static_cast<float>(p.scale), .softcap = static_cast<float>(p.softcap),
                         .causal = p.causal != 0, .alignment = p.alignment,
                         .diagonal_offset = p.alignment == kAttncheckAlignOffset ? p.diagonal_offset : 0,
                         .window_left = p.window_left, .window_right = p.window_right, .mask_kind = p.mask_kind};
  if (impl::is_varlen(p)) {
    // ABI 2.5: the packed tensors and their offsets stay in the backend's memory; the offsets are
    // the caller's contract (backend.h), and packed_span reads a sequence that breaks it as empty.
    if (t.mask != nullptr || t.key_lengths != nullptr || impl::block_table_of(t) != nullptr)
      impl::invalid("a packed batch takes no mask, no key_lengths (cu_seqlens_k holds its key counts) and no block_table");
    const impl::VarlenArgs va = impl::check_varlen(p, t, device);
    params.q = packed(impl::check_tensor(t.q, "q", {va.total_q, p.q_heads, p.qk_dim}, {"query tokens", "query heads", "head dim"},
                                         {dtype}, device));
    params.k = packed(impl::check_tensor(t.k, "k", {va.total_k, p.kv_heads, p.qk_dim}, {"key tokens", "kv heads", "head dim"},
                                         {dtype}, device));
    params.v = packed(impl::check_tensor(t.v, "v", {va.total_k, p.kv_heads, p.v_dim}, {"key tokens", "kv heads", "value dim"},
                                         {dtype}, device));
    params.out = packed(impl::check_tensor(t.out, "out", {va.total_q, p.q_heads, p.v_dim},
                                           {"query tokens", "query heads", "value dim"}, {dtype}, device));
    if (t.lse != nullptr) {
      const impl::TensorArg lse =
          impl::check_tensor(t.lse, "lse", {p.q_heads, va.total_q}, {"query heads", "query tokens"}, {impl::kF32}, device);
      params.lse = const_cast<float*>(lse.at<float>(0));
      params.lse_stride[0] = 0, params.lse_stride[1] = lse.strides[0], params.lse_stride[2] = lse.strides[1];
    }
    params.cu_seqlens_q = va.cu_q.at<std::int32_t>(0);
    params.cu_seqlens_k = va.cu_k.at<std::int32_t>(0);
    params.total_q = va.total_q, params.total_k = va.total_k;
  } else {
    params.q = strided(impl::check_tensor(t.q, "q", {p.batch, p.q_heads, p.q_len, p.qk_dim},
                                          {"batch", "query heads", "query length", "head dim"}, {dtype}, device));
  }
  const DLTensor* block_table = impl::block_table_of(t);
  if (impl::is_paged(p)) {
    // ABI 2.4: the pools and the table stay in the backend's memory; their entries are the
    // caller's contract (backend.h), and key_value reads 0 for a used slot that breaks it.
    const impl::PagedKvArgs pages = impl::check_paged_kv(p, t.k, t.v, block_table, {dtype}, device);
    params.k = strided(pages.k);
    params.v = strided(pages.v);
    if (impl::kv_storage_of(p) == kAttncheckKvPagedTokenMajor)  // (page, row, head, d) → (page, head, row, d)
      for (StridedTensor* pool : {&params.k, &params.v}) std::swap(pool->stride[1], pool->stride[2]);
    params.block_table = pages.table.at<std::int32_t>(0);
    params.block_table_stride[0] = pages.table.strides[0];
    params.block_table_stride[1] = pages.table.strides[1];
    params.page_size = p.page_size;
    params.num_pages = pages.num_pages;
  } else if (!impl::is_varlen(p)) {
    if (block_table != nullptr) impl::invalid("block_table: is given, but problem.kv_storage is contiguous");
    params.k = strided(impl::check_tensor(t.k, "k", {p.batch, p.kv_heads, p.k_len, p.qk_dim},
                                          {"batch", "kv heads", "key length", "head dim"}, {dtype}, device));
    params.v = strided(impl::check_tensor(t.v, "v", {p.batch, p.kv_heads, p.k_len, p.v_dim},
                                          {"batch", "kv heads", "key length", "value dim"}, {dtype}, device));
  }
  if (!impl::is_varlen(p)) {
    params.out = strided(impl::check_tensor(t.out, "out", {p.batch, p.q_heads, p.q_len, p.v_dim},
                                            {"batch", "query heads", "query length", "value dim"}, {dtype}, device));
  }
  if (t.lse != nullptr && !impl::is_varlen(p)) {
    const impl::TensorArg lse = impl::check_tensor(t.lse, "lse", {p.batch, p.q_heads, p.q_len},
                                                   {"batch", "query heads", "query length"}, {impl::kF32}, device);
    params.lse = const_cast<float*>(lse.at<float>(0));
    for (std::size_t d = 0; d < 3; ++d) params.lse_stride[d] = lse.strides[d];
  }
  if (p.mask_kind != kAttncheckMaskNone) {
    const DLDataType mask_dtype = p.mask_kind == kAttncheckMaskBoolean ? impl::kU8 : dtype;
    params.mask = strided(impl::check_tensor(t.mask, "mask",
                                             {p.mask_shape[0], p.mask_shape[1], p.mask_shape[2], p.mask_shape[3]},
                                             {"batch", "heads", "query length", "key length"}, {mask_dtype}, device));
    // A broadcast dimension is read at index 0 whatever the kernel's index: stride 0.
    for (int d = 0; d < 3; ++d)
      if (p.mask_shape[d] == 1) params.mask.stride[d] = 0;
    params.mask_k_len = p.mask_shape[3];
  } else if (t.mask != nullptr) {
    impl::invalid("mask: a mask tensor is given, but the problem's mask kind is none");
  }
  if (p.has_key_lengths) {
    const impl::TensorArg lengths =
        impl::check_tensor(t.key_lengths, "key_lengths", {p.batch}, {"batch"}, {impl::kI64}, device);
    params.key_lengths = lengths.at<std::int64_t>(0);
    params.key_lengths_stride = lengths.strides[0];
  } else if (t.key_lengths != nullptr) {
    impl::invalid("key_lengths: a key_lengths tensor is given, but the problem does not use key lengths");
  }
  // The sinks stay in device memory: their values (finite or −inf, backend.h) are the caller's
  // contract; only their shape, dtype and memory are checked here.
  const DLTensor* sinks = impl::sinks_of(t);
  if (impl::has_sinks(p)) {
    const impl::TensorArg arg = impl::check_tensor(sinks, "sinks", {p.q_heads}, {"query heads"}, {impl::kF32}, device);
    params.sinks = arg.at<float>(0);
    params.sinks_stride = arg.strides[0];
  } else if (sinks != nullptr) {
    impl::invalid("sinks: is given, but problem.has_sinks is 0");
  }
  return params;
}

BackwardParams make_backward_params(const attncheck_problem& p, const attncheck_backward_tensors& t,
                                    DLDeviceType device, ElementType type) {
  if (t.lse == nullptr) impl::invalid("lse: is NULL, but the backward pass recomputes P from the forward's lse");
  if (t.dbias != nullptr)
    impl::invalid("dbias: given, but this backend's backward profile does not write the bias gradient (writes_dbias = 0)");
  attncheck_attention_tensors forward{};
  forward.struct_size = sizeof forward;
  forward.stream = t.stream;
  forward.q = t.q;
  forward.k = t.k;
  forward.v = t.v;
  forward.mask = t.mask;
  forward.key_lengths = t.key_lengths;
  forward.sinks = impl::sinks_of(t);  // the lse carries the sink; the kernels need no more of it
  // Read only: make_params takes the forward's output slots, which the backward kernels never write.
  forward.out = const_cast<DLTensor*>(t.out);
  forward.lse = const_cast<DLTensor*>(t.lse);
  BackwardParams params;
  params.forward = make_params(p, forward, device, type);
  const DLDataType dtype = dlpack_type_of(type);
  const std::initializer_list<std::string_view> rows{"batch", "query heads", "query length"};
  params.d_out = strided(impl::check_tensor(t.dout, "dout", {p.batch, p.q_heads, p.q_len, p.v_dim},
                                            {"batch", "query heads", "query length", "value dim"}, {dtype}, device));
  if (t.dlse != nullptr) {
    const impl::TensorArg dlse =
        impl::check_tensor(t.dlse, "dlse", {p.batch, p.q_heads, p.q_len}, rows, {impl::kF32}, device);
    params.d_lse = dlse.at<float>(0);
    for (std::size_t d = 0; d < 3; ++d) params.d_lse_stride[d] = dlse.strides[d];
  }
  params.d_q = strided(impl::check_tensor(t.dq, "dq", {p.batch, p.q_heads, p.q_len, p.qk_dim},
                                          {"batch", "query heads", "query length", "head dim"}, {dtype}, device));
  params.d_k = strided(impl::check_tensor(t.dk, "dk", {p.batch, p.kv_heads, p.k_len, p.qk_dim},
                                          {"batch", "kv heads", "key length", "head dim"}, {dtype}, device));
  params.d_v = strided(impl::check_tensor(t.dv, "dv", {p.batch, p.kv_heads, p.k_len, p.v_dim},
                                          {"batch", "kv heads", "key length", "value dim"}, {dtype}, device));
  return params;
}

attncheck_numerics_profile make_profile(ElementType input, const ProfileTraits& traits) {
  attncheck_numerics_profile profile{};
  profile.struct_size = sizeof(attncheck_numerics_profile);
  const DLDataType dtype = dlpack_type_of(input);
  profile.input_dtype = dtype;
  profile.score_dtype = impl::kF32;  // Q·Kᵀ is accumulated and kept in fp32
  profile.probability_dtype = traits.probability_rounded_to_input ? dtype : impl::kF32;
  profile.accumulator_dtype = impl::kF32;
  profile.output_dtype = dtype;
  profile.accumulation_rounding = traits.accumulation;
  profile.products_per_rounding = 1;
  profile.softmax_block = traits.softmax_block;
  profile.deterministic = traits.deterministic ? 1 : 0;
  profile.empty_row = kAttncheckEmptyRowZeros;
  profile.flushes_subnormals = 0;  // built without -ftz / --use_fast_math
  profile.accepts_strides = 1;
  profile.writes_lse = 1;
  profile.exp_relative_error = 0;   // expf: ≤ 2 ulp on the device, within the 2^-22 default
  profile.tanh_relative_error = 0;  // tanhf: ≤ 2 ulp on the device, likewise
  return profile;
}

ElementType CudaBackend::accepted_input(DLDataType input) const {
  if (const std::optional<ElementType> type = element_type_of(input))
    for (ElementType accepted : inputs_)
      if (accepted == *type) return accepted;
  std::string names;
  for (ElementType type : inputs_) names += (names.empty() ? "" : ", ") + impl::dtype_string(dlpack_type_of(type));
  impl::unsupported("inputs of dtype " + impl::dtype_string(input) + " are not supported (" + names + ")");
}

attncheck_numerics_profile CudaBackend::profile(DLDataType input) const {
  const ElementType type = accepted_input(input);
  return make_profile(type, traits(type));
}

void CudaBackend::check_supported(const attncheck_problem& problem, DLDataType input, DLDeviceType device) const {
  impl::check_problem(problem);
  accepted_input(input);
  if (device != device_.device_type)
    impl::unsupported("this backend reads " + impl::device_string(device_.device_type) + " memory, not " +
                      impl::device_string(device) + " memory");
  check_available();
  // Every kernel here is launched over a grid (…, Hq, B), and CUDA's y and z are 16-bit.
  if (problem.q_heads > 65535 || problem.batch > 65535)
    impl::unsupported("batch and q_heads must be at most 65535 (grid dimensions y and z)");
  check_limits(problem);
}

void CudaBackend::forward(const attncheck_problem& problem, const attncheck_attention_tensors& tensors) {
  if (tensors.q == nullptr) impl::invalid("q: is NULL, but the problem requires it");
  // The tensors' own device is checked (an invalid call, not a decline) by make_params.
  check_supported(problem, tensors.q->dtype, device_.device_type);
  const ElementType type = accepted_input(tensors.q->dtype);
  run(make_params(problem, tensors, device_.device_type, type), type, tensors.stream);
}

}  // namespace attncheck::cuda
