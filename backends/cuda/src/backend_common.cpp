#include "backend_common.h"

#include <cmath>
#include <cstring>
#include <new>
#include <string_view>

namespace attncheck::cuda {
namespace {

std::string fmt_shape(const DLTensor& t) {
  std::string s = "[";
  for (int d = 0; d < t.ndim; ++d) s += (d ? ", " : "") + std::to_string(t.shape[d]);
  return s + "]";
}

std::string device_name(DLDeviceType device) {
  switch (device) {
    case kDLCPU: return "CPU";
    case kDLCUDA: return "CUDA";
    case kDLCUDAHost: return "CUDA pinned host";
    case kDLCUDAManaged: return "CUDA managed";
    default: return "device type " + std::to_string(static_cast<int>(device));
  }
}

[[noreturn]] void invalid(const std::string& message) { throw BackendFailure(kAttncheckInvalidProblem, message); }

// Presence, rank, shape, dtype and device of one tensor; returns its data pointer (byte_offset
// applied) and fills strides in elements (compact row-major when DLPack's strides are NULL).
void* check_tensor(const char* name, const DLTensor* t, std::initializer_list<std::int64_t> shape,
                   std::initializer_list<const char*> dim_names, DLDataType dtype, DLDeviceType device,
                   std::int64_t* strides) {
  if (t == nullptr) invalid(std::string(name) + ": is missing (NULL)");
  if (t->ndim != static_cast<int>(shape.size()))
    invalid(std::string(name) + ": has " + std::to_string(t->ndim) + " dimensions " + fmt_shape(*t) + ", expected " +
            std::to_string(shape.size()));
  int d = 0;
  auto dim_name = dim_names.begin();
  for (std::int64_t expected : shape) {
    if (t->shape[d] != expected)
      invalid(std::string(name) + ": dim " + std::to_string(d) + " (" + *dim_name + ") is " +
              std::to_string(t->shape[d]) + ", but the problem expects " + std::to_string(expected) + " (shape " +
              fmt_shape(*t) + ")");
    ++d;
    ++dim_name;
  }
  if (t->dtype.code != dtype.code || t->dtype.bits != dtype.bits || t->dtype.lanes != dtype.lanes)
    invalid(std::string(name) + ": dtype is " + dtype_string(t->dtype) + ", expected " + dtype_string(dtype));
  if (t->device.device_type != device)
    invalid(std::string(name) + ": lives in " + device_name(t->device.device_type) + " memory, but this backend reads " +
            device_name(device) + " memory");
  if (t->data == nullptr && t->ndim > 0) invalid(std::string(name) + ": data is NULL");
  std::int64_t running = 1;
  for (int k = t->ndim - 1; k >= 0; --k) {
    strides[k] = t->strides != nullptr ? t->strides[k] : running;
    running *= t->shape[k];
  }
  return static_cast<char*>(t->data) + t->byte_offset;
}

// The C entry points: each catches everything, so no exception crosses the ABI.
struct Table {
  attncheck_backend table{};
  std::string name, description;
  std::unique_ptr<BackendImpl> impl;
  std::string last_error = "no error";
};

Table& self_of(const attncheck_backend* self) { return *static_cast<Table*>(self->context); }

template <class Body>
attncheck_status guarded(const attncheck_backend* self, Body&& body) {
  Table& table = self_of(self);
  try {
    return body(table);
  } catch (const BackendFailure& e) {
    table.last_error = std::string(table.name) + ": " + e.what();
    return e.status();
  } catch (const std::bad_alloc&) {
    table.last_error = table.name + ": out of host memory";
  } catch (const std::exception& e) {
    table.last_error = table.name + ": " + e.what();
  } catch (...) {
    table.last_error = table.name + ": unknown exception";
  }
  return kAttncheckInternalError;
}

void write_reason(const std::string& reason, char* out, size_t size) {
  if (out == nullptr || size == 0) return;
  const size_t n = std::min(reason.size(), size - 1);
  std::memcpy(out, reason.data(), n);
  out[n] = '\0';
}

attncheck_status get_profile_entry(const attncheck_backend* self, DLDataType input,
                                   attncheck_numerics_profile* profile) {
  return guarded(self, [&](Table& t) {
    if (profile == nullptr) throw BackendFailure(kAttncheckInvalidProblem, "get_profile: profile is NULL");
    if (!t.impl->profile(input, *profile))
      throw BackendFailure(kAttncheckNotSupported, "inputs of dtype " + dtype_string(input) + " are not supported");
    return kAttncheckOk;
  });
}

attncheck_status supports_entry(const attncheck_backend* self, const attncheck_problem* problem, DLDataType input,
                                DLDeviceType device, char* reason, size_t reason_size) {
  return guarded(self, [&](Table& t) {
    if (problem == nullptr) throw BackendFailure(kAttncheckInvalidProblem, "supports: problem is NULL");
    if (std::string why = problem_error(*problem); !why.empty()) {
      write_reason(why, reason, reason_size);
      throw BackendFailure(kAttncheckInvalidProblem, why);
    }
    if (std::string why = t.impl->unsupported_reason(*problem, input, device); !why.empty()) {
      write_reason(why, reason, reason_size);
      throw BackendFailure(kAttncheckNotSupported, why);
    }
    write_reason("", reason, reason_size);
    return kAttncheckOk;
  });
}

attncheck_status forward_entry(attncheck_backend* self, const attncheck_problem* problem,
                               const attncheck_attention_tensors* tensors) {
  return guarded(self, [&](Table& t) {
    if (problem == nullptr || tensors == nullptr)
      throw BackendFailure(kAttncheckInvalidProblem, "forward: problem or tensors is NULL");
    if (std::string why = problem_error(*problem); !why.empty()) throw BackendFailure(kAttncheckInvalidProblem, why);
    t.impl->forward(*problem, *tensors);
    return kAttncheckOk;
  });
}

const char* last_error_entry(const attncheck_backend* self) { return self_of(self).last_error.c_str(); }

void destroy_entry(attncheck_backend* self) {
  if (self != nullptr) delete static_cast<Table*>(self->context);
}

}  // namespace

bool element_type_of(DLDataType dtype, ElementType& type) {
  if (dtype.lanes != 1) return false;
  if (dtype.code == kDLFloat && dtype.bits == 32) type = ElementType::F32;
  else if (dtype.code == kDLFloat && dtype.bits == 16) type = ElementType::F16;
  else if (dtype.code == kDLBfloat && dtype.bits == 16) type = ElementType::BF16;
  else return false;
  return true;
}

DLDataType dlpack_type_of(ElementType type) {
  switch (type) {
    case ElementType::F32: return {kDLFloat, 32, 1};
    case ElementType::F16: return {kDLFloat, 16, 1};
    case ElementType::BF16: return {kDLBfloat, 16, 1};
  }
  return {kDLFloat, 32, 1};
}

std::string dtype_string(DLDataType dtype) {
  ElementType type;
  if (element_type_of(dtype, type)) return type == ElementType::F32 ? "f32" : type == ElementType::F16 ? "f16" : "bf16";
  if (dtype.code == kDLFloat && dtype.bits == 64 && dtype.lanes == 1) return "f64";
  if (dtype.code == kDLUInt && dtype.bits == 8 && dtype.lanes == 1) return "uint8";
  if (dtype.code == kDLInt && dtype.bits == 64 && dtype.lanes == 1) return "int64";
  return "dtype(code=" + std::to_string(dtype.code) + ", bits=" + std::to_string(dtype.bits) +
         ", lanes=" + std::to_string(dtype.lanes) + ")";
}

std::string problem_error(const attncheck_problem& p) {
  const std::pair<const char*, std::int64_t> sizes[] = {{"batch", p.batch},   {"q_heads", p.q_heads},
                                                        {"kv_heads", p.kv_heads}, {"q_len", p.q_len},
                                                        {"k_len", p.k_len},   {"qk_dim", p.qk_dim},
                                                        {"v_dim", p.v_dim}};
  for (const auto& [name, value] : sizes)
    if (value < 1) return std::string("problem: ") + name + " is " + std::to_string(value) + ", but must be at least 1";
  if (p.q_heads % p.kv_heads != 0)
    return "problem: q_heads = " + std::to_string(p.q_heads) + " is not a multiple of kv_heads = " +
           std::to_string(p.kv_heads);
  if (!std::isfinite(p.scale)) return "problem: scale is not finite";
  if (!(p.softcap >= 0) || !std::isfinite(p.softcap)) return "problem: softcap must be finite and >= 0";
  if (p.alignment < kAttncheckAlignTopLeft || p.alignment > kAttncheckAlignKeyLengths)
    return "problem: unknown alignment " + std::to_string(p.alignment);
  if (p.alignment == kAttncheckAlignKeyLengths && !p.has_key_lengths)
    return "problem: key-lengths alignment needs key_lengths";
  if (p.window_left < -1 || p.window_right < -1) return "problem: a window side must be >= 0 or -1 (unbounded)";
  if (p.mask_kind < kAttncheckMaskNone || p.mask_kind > kAttncheckMaskAdditive)
    return "problem: unknown mask kind " + std::to_string(p.mask_kind);
  if (p.mask_kind != kAttncheckMaskNone) {
    const std::int64_t full[3] = {p.batch, p.q_heads, p.q_len};
    const char* names[3] = {"batch", "heads", "query length"};
    for (int d = 0; d < 3; ++d)
      if (p.mask_shape[d] != 1 && p.mask_shape[d] != full[d])
        return "problem: mask dim " + std::to_string(d) + " (" + names[d] + ") is " + std::to_string(p.mask_shape[d]) +
               ", but must be 1 or " + std::to_string(full[d]);
    if (p.mask_shape[3] < 1 || p.mask_shape[3] > p.k_len)
      return "problem: mask dim 3 (key length) is " + std::to_string(p.mask_shape[3]) + ", but must be in [1, " +
             std::to_string(p.k_len) + "]";
  }
  return "";
}

AttentionParams make_params(const attncheck_problem& p, const attncheck_attention_tensors& t, DLDeviceType device,
                            ElementType& type) {
  if (t.q == nullptr) invalid("q: is missing (NULL)");
  if (!element_type_of(t.q->dtype, type)) invalid("q: dtype " + dtype_string(t.q->dtype) + " is not f32, f16 or bf16");
  const DLDataType dtype = dlpack_type_of(type);

  AttentionParams params;
  params.batch = p.batch;
  params.q_heads = p.q_heads;
  params.kv_heads = p.kv_heads;
  params.q_len = p.q_len;
  params.k_len = p.k_len;
  params.qk_dim = p.qk_dim;
  params.v_dim = p.v_dim;
  params.group = p.q_heads / p.kv_heads;
  params.scale = static_cast<float>(p.scale);
  params.softcap = static_cast<float>(p.softcap);
  params.causal = p.causal != 0;
  params.alignment = p.alignment;
  params.diagonal_offset = p.alignment == kAttncheckAlignOffset ? p.diagonal_offset : 0;
  params.window_left = p.window_left;
  params.window_right = p.window_right;
  params.mask_kind = p.mask_kind;

  params.q.data = check_tensor("q", t.q, {p.batch, p.q_heads, p.q_len, p.qk_dim},
                               {"batch", "query heads", "query length", "head dim"}, dtype, device, params.q.stride);
  params.k.data = check_tensor("k", t.k, {p.batch, p.kv_heads, p.k_len, p.qk_dim},
                               {"batch", "kv heads", "key length", "head dim"}, dtype, device, params.k.stride);
  params.v.data = check_tensor("v", t.v, {p.batch, p.kv_heads, p.k_len, p.v_dim},
                               {"batch", "kv heads", "key length", "value dim"}, dtype, device, params.v.stride);
  params.out.data = check_tensor("out", t.out, {p.batch, p.q_heads, p.q_len, p.v_dim},
                                 {"batch", "query heads", "query length", "value dim"}, dtype, device, params.out.stride);
  if (t.lse != nullptr) {
    std::int64_t strides[3];
    params.lse = static_cast<float*>(check_tensor("lse", t.lse, {p.batch, p.q_heads, p.q_len},
                                                  {"batch", "query heads", "query length"}, {kDLFloat, 32, 1}, device,
                                                  strides));
    for (int d = 0; d < 3; ++d) params.lse_stride[d] = strides[d];
  }
  if (p.mask_kind != kAttncheckMaskNone) {
    const DLDataType mask_dtype = p.mask_kind == kAttncheckMaskBoolean ? DLDataType{kDLUInt, 8, 1} : dtype;
    params.mask.data = check_tensor("mask", t.mask, {p.mask_shape[0], p.mask_shape[1], p.mask_shape[2], p.mask_shape[3]},
                                    {"batch", "heads", "query length", "key length"}, mask_dtype, device,
                                    params.mask.stride);
    // A broadcast dimension is read at index 0 whatever the kernel's index: stride 0.
    for (int d = 0; d < 3; ++d)
      if (p.mask_shape[d] == 1) params.mask.stride[d] = 0;
    params.mask_k_len = p.mask_shape[3];
  } else if (t.mask != nullptr) {
    invalid("mask: a mask tensor is given, but the problem's mask kind is none");
  }
  if (p.has_key_lengths) {
    std::int64_t stride[1];
    params.key_lengths = static_cast<const std::int64_t*>(
        check_tensor("key_lengths", t.key_lengths, {p.batch}, {"batch"}, {kDLInt, 64, 1}, device, stride));
    params.key_lengths_stride = stride[0];
  } else if (t.key_lengths != nullptr) {
    invalid("key_lengths: a key_lengths tensor is given, but the problem does not use key lengths");
  }
  return params;
}

attncheck_numerics_profile make_profile(const ProfileTraits& traits) {
  attncheck_numerics_profile profile{};
  profile.struct_size = sizeof(attncheck_numerics_profile);
  const DLDataType input = dlpack_type_of(traits.input), f32{kDLFloat, 32, 1};
  profile.input_dtype = input;
  profile.score_dtype = f32;  // Q·Kᵀ is accumulated and kept in fp32
  profile.probability_dtype = traits.probability_rounded_to_input ? input : f32;
  profile.accumulator_dtype = f32;
  profile.output_dtype = input;
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

attncheck_backend* make_table(const char* name, const char* description, std::unique_ptr<BackendImpl> impl) {
  auto table = std::make_unique<Table>();
  table->name = name;
  table->description = description;
  table->impl = std::move(impl);
  attncheck_backend& c = table->table;
  c.abi_version = {ATTNCHECK_ABI_VERSION_MAJOR, ATTNCHECK_ABI_VERSION_MINOR};
  c.struct_size = sizeof(attncheck_backend);
  c.name = table->name.c_str();
  c.description = table->description.c_str();
  c.context = table.get();
  c.get_profile = &get_profile_entry;
  c.supports = &supports_entry;
  c.forward = &forward_entry;
  c.forward_layer = nullptr;
  c.last_error = &last_error_entry;
  c.destroy = &destroy_entry;
  return &table.release()->table;
}

}  // namespace attncheck::cuda
