/// \file torch_backward_call.h
/// \brief One backward call of a torch adapter on values given as doubles: each tensor encoded
/// compactly in the dtype the call takes, the adapter's dq, dk, dv (and dbias) decoded exactly
/// back to doubles. Shared by the adapter's closed-form test and the measurement against the
/// double reference (torch_backward_test.cpp, torch_backward_measure.cpp).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "attncheck/backend.h"
#include "attncheck/backend_handle.h"
#include "attncheck/backward.h"
#include "attncheck/dtype.h"
#include "attncheck/problem.h"
#include "attncheck/tensor.h"

namespace attncheck::torch_test {

/// A compact host tensor of `dtype` elements.
struct EncodedTensor {
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;
  std::vector<std::byte> bytes;
  DLTensor tensor{};

  EncodedTensor(DType type, std::vector<std::int64_t> dims) : dtype(type), shape(std::move(dims)) {
    std::size_t n = 1;
    for (std::int64_t d : shape) n *= static_cast<std::size_t>(d);
    bytes.assign(n * static_cast<std::size_t>(dtype_bytes(dtype)), std::byte{0xff});  // NaN: every element must be written
    tensor.data = bytes.data();
    tensor.device = {kDLCPU, 0};
    tensor.ndim = static_cast<std::int32_t>(shape.size());
    tensor.dtype = to_dlpack(dtype);
    tensor.shape = shape.data();
  }
  /// `values` (already representable in `type`, or rounded to nearest) in `type`.
  EncodedTensor(DType type, const HostTensor& values)
      : EncodedTensor(type, std::vector<std::int64_t>(values.shape.begin(), values.shape.end())) {
    const int size = dtype_bytes(dtype);
    for (std::size_t i = 0; i < values.values.size(); ++i) encode_value(dtype, values.values[i], bytes.data() + i * size);
  }
  EncodedTensor(const EncodedTensor&) = delete;
  EncodedTensor& operator=(const EncodedTensor&) = delete;

  HostTensor decoded() const {
    HostTensor out(Shape4{shape[0], shape[1], shape[2], shape[3]});
    const int size = dtype_bytes(dtype);
    for (std::size_t i = 0; i < out.values.size(); ++i) out.values[i] = decode_value(dtype, bytes.data() + i * size);
    return out;
  }
};

/// The inputs of one call as doubles: q, k, v (and mask) in logical order, shaped as backend.h
/// says; dout like O.
struct BackwardCallInputs {
  const HostTensor* q = nullptr;
  const HostTensor* k = nullptr;
  const HostTensor* v = nullptr;
  const HostTensor* mask = nullptr;  ///< additive bias in the input dtype, or 0/1 for a boolean mask
  std::span<const std::int64_t> key_lengths;
  const HostTensor* dout = nullptr;
  /// The forward's O [B, Hq, Lq, Dv] (in the input dtype) and LSE [1, B, Hq, Lq] (float32 values),
  /// for a backend that reads them; NULL: zeros are handed (the torch adapters read neither).
  const HostTensor* out = nullptr;
  const HostTensor* lse = nullptr;
};

/// Calls backend.backward with every tensor in `dtype` (a boolean mask as uint8) and returns the
/// gradients as doubles. O and lse are `in.out` and `in.lse`, or zeros where those are NULL (the
/// torch adapters compute their own forward and read neither: torch_adapters.cpp). dbias is
/// asked for when `want_d_bias`.
/// Throws BackendError as Backend::backward does.
inline AttentionGradients run_backward(Backend& backend, const Problem& p, DType dtype, const BackwardCallInputs& in,
                                       bool want_d_bias) {
  EncodedTensor q(dtype, *in.q), k(dtype, *in.k), v(dtype, *in.v), dout(dtype, *in.dout);
  std::optional<EncodedTensor> mask, dbias;
  if (p.mask == MaskKind::Additive) mask.emplace(dtype, *in.mask);
  std::vector<std::uint8_t> boolean_mask;
  std::vector<std::int64_t> lengths(in.key_lengths.begin(), in.key_lengths.end());
  std::vector<std::int64_t> mask_shape{p.mask_batch, p.mask_heads, p.mask_q_len, p.mask_k_len};
  std::vector<std::int64_t> lengths_shape{p.batch};
  DLTensor boolean_tensor{}, lengths_tensor{};
  if (p.mask == MaskKind::Boolean) {
    for (double x : in.mask->values) boolean_mask.push_back(x != 0 ? 1 : 0);
    boolean_tensor = {boolean_mask.data(), {kDLCPU, 0}, 4, DLDataType{kDLUInt, 8, 1}, mask_shape.data(), nullptr, 0};
  }
  if (p.has_key_lengths) lengths_tensor = {lengths.data(), {kDLCPU, 0}, 1, DLDataType{kDLInt, 64, 1}, lengths_shape.data(), nullptr, 0};
  EncodedTensor out(dtype, {p.batch, p.q_heads, p.q_len, p.v_dim}), lse(DType::F32, {p.batch, p.q_heads, p.q_len});
  std::fill(out.bytes.begin(), out.bytes.end(), std::byte{0});
  std::fill(lse.bytes.begin(), lse.bytes.end(), std::byte{0});
  if (in.out != nullptr)
    for (std::size_t i = 0; i < in.out->values.size(); ++i)
      encode_value(dtype, in.out->values[i], out.bytes.data() + i * static_cast<std::size_t>(dtype_bytes(dtype)));
  if (in.lse != nullptr)
    for (std::size_t i = 0; i < in.lse->values.size(); ++i) encode_value(DType::F32, in.lse->values[i], lse.bytes.data() + i * 4);
  EncodedTensor dq(dtype, {p.batch, p.q_heads, p.q_len, p.qk_dim}), dk(dtype, {p.batch, p.kv_heads, p.k_len, p.qk_dim}),
      dv(dtype, {p.batch, p.kv_heads, p.k_len, p.v_dim});
  if (want_d_bias) dbias.emplace(dtype, mask_shape);

  attncheck_backward_tensors t{};
  t.struct_size = sizeof t;
  t.q = &q.tensor, t.k = &k.tensor, t.v = &v.tensor;
  t.mask = p.mask == MaskKind::Boolean ? &boolean_tensor : mask ? &mask->tensor : nullptr;
  t.key_lengths = p.has_key_lengths ? &lengths_tensor : nullptr;
  t.out = &out.tensor, t.lse = &lse.tensor, t.dout = &dout.tensor;
  t.dq = &dq.tensor, t.dk = &dk.tensor, t.dv = &dv.tensor;
  t.dbias = dbias ? &dbias->tensor : nullptr;
  backend.backward(p, t);
  AttentionGradients g{dq.decoded(), dk.decoded(), dv.decoded(), std::nullopt};
  if (dbias) g.d_bias = dbias->decoded();
  return g;
}

}  // namespace attncheck::torch_test
