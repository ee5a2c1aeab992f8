/// \file backend_impl.h
/// \brief For backend authors writing C++: derive from BackendImpl, hand it to make_backend_table()
/// and return the table from your entry function. The table's entry points wrap every call in
/// try/catch, so no exception ever crosses the C ABI: a thrown AbiError becomes its status, any
/// other exception kAttncheckInternalError, and the message is kept for last_error().
///
///   class MyBackend final : public attncheck::impl::BackendImpl { ... };
///   extern "C" attncheck_backend* my_backend_entry(void) {
///     return attncheck::impl::make_backend_table<MyBackend>("my-backend", "one line");
///   }
///
/// Also here: checks of DLTensor arguments whose errors name the tensor, the dimension, the
/// expected and the given value, and a strided accessor. Header only, C++20, no dependency beyond
/// backend.h, so a third-party plug-in can use it as is.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <initializer_list>
#include <limits>
#include <memory>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "attncheck/backend.h"

namespace attncheck::impl {

/// Thrown inside a backend to return `status` with `what()` as last_error().
class AbiError : public std::runtime_error {
 public:
  AbiError(attncheck_status status, const std::string& message) : std::runtime_error(message), status_(status) {}
  attncheck_status status() const { return status_; }

 private:
  attncheck_status status_;
};

/// kAttncheckInvalidProblem with `message`.
[[noreturn]] inline void invalid(const std::string& message) { throw AbiError(kAttncheckInvalidProblem, message); }
/// kAttncheckNotSupported with `message` (a skip for the suite).
[[noreturn]] inline void unsupported(const std::string& message) { throw AbiError(kAttncheckNotSupported, message); }

// --- dtypes -----------------------------------------------------------------------------------------

inline constexpr DLDataType kF32{kDLFloat, 32, 1};
inline constexpr DLDataType kF16{kDLFloat, 16, 1};
inline constexpr DLDataType kBF16{kDLBfloat, 16, 1};
inline constexpr DLDataType kF64{kDLFloat, 64, 1};
inline constexpr DLDataType kU8{kDLUInt, 8, 1};
inline constexpr DLDataType kI64{kDLInt, 64, 1};
inline constexpr DLDataType kI32{kDLInt, 32, 1};
inline constexpr DLDataType kE4M3{kAttncheckDLFloat8E4M3FN, 8, 1};  ///< ABI 2.6 fp8 inputs
inline constexpr DLDataType kE5M2{kAttncheckDLFloat8E5M2, 8, 1};

inline bool same_dtype(DLDataType a, DLDataType b) { return a.code == b.code && a.bits == b.bits && a.lanes == b.lanes; }

/// "float32", "bfloat16", "uint8", "float8_e4m3fn", "code 9 bits 8 lanes 2" for anything else.
inline std::string dtype_string(DLDataType d) {
  if (d.code == kAttncheckDLFloat8E4M3FN && d.bits == 8 && d.lanes == 1) return "float8_e4m3fn";
  if (d.code == kAttncheckDLFloat8E5M2 && d.bits == 8 && d.lanes == 1) return "float8_e5m2";
  const char* base = nullptr;
  switch (d.code) {
    case kDLFloat: base = "float"; break;
    case kDLBfloat: base = "bfloat"; break;
    case kDLInt: base = "int"; break;
    case kDLUInt: base = "uint"; break;
    default: break;
  }
  if (base == nullptr || d.lanes != 1)
    return "code " + std::to_string(d.code) + " bits " + std::to_string(d.bits) + " lanes " + std::to_string(d.lanes);
  return std::string(base) + std::to_string(d.bits);
}

// --- tensors ----------------------------------------------------------------------------------------

/// A checked CPU tensor of at most 4 dimensions: base pointer with byte_offset applied, shape and
/// strides in elements (compact row-major strides filled in when the DLTensor's are NULL).
struct TensorArg {
  const char* data = nullptr;
  DLDataType dtype{};
  int ndim = 0;
  std::array<std::int64_t, 4> shape{};
  std::array<std::int64_t, 4> strides{};

  bool present() const { return data != nullptr || ndim != 0; }
  /// Element pointer at a logical index (any strides, including 0 and negative ones).
  template <class T>
  const T* at(std::int64_t i0, std::int64_t i1 = 0, std::int64_t i2 = 0, std::int64_t i3 = 0) const {
    return reinterpret_cast<const T*>(data) + (i0 * strides[0] + i1 * strides[1] + i2 * strides[2] + i3 * strides[3]);
  }
  template <class T>
  T* mut(std::int64_t i0, std::int64_t i1 = 0, std::int64_t i2 = 0, std::int64_t i3 = 0) const {
    return const_cast<T*>(at<T>(i0, i1, i2, i3));
  }
};

/// "CPU", "CUDA", "CUDA host-pinned", "CUDA managed", "simulated device" or "device type N".
inline std::string device_string(DLDeviceType device) {
  switch (static_cast<int>(device)) {
    case kDLCPU: return "CPU";
    case kDLCUDA: return "CUDA";
    case kDLCUDAHost: return "CUDA host-pinned";
    case kDLCUDAManaged: return "CUDA managed";
    case kAttncheckSimulatedDevice: return "simulated device";
    default: return "device type " + std::to_string(static_cast<int>(device));
  }
}

/// An expected extent of check_tensor that accepts any extent of at least 1 (a page pool's page count).
inline constexpr std::int64_t kAnyExtent = -1;

/// Checks `tensor` (named `name`, e.g. "k") against its expected logical shape, one of the
/// accepted dtypes and the memory the backend declared (`device`); throws
/// AbiError(kAttncheckInvalidProblem) with a message such as "k: dim 2 (key length) is 5,
/// expected Lk = 7". Dimension names come from `dims`. The result's data pointer is only
/// dereferenceable from where that memory is (the host, for kDLCPU).
inline TensorArg check_tensor(const DLTensor* tensor, std::string_view name, std::initializer_list<std::int64_t> shape,
                              std::initializer_list<std::string_view> dims, std::initializer_list<DLDataType> dtypes,
                              DLDeviceType device) {
  const std::string n(name);
  if (tensor == nullptr) invalid(n + ": is NULL, but the problem requires it");
  if (tensor->device.device_type != device)
    invalid(n + ": lives in " + device_string(tensor->device.device_type) + " memory, but this backend reads " +
            device_string(device) + " memory");
  if (tensor->ndim != static_cast<std::int32_t>(shape.size()))
    invalid(n + ": has " + std::to_string(tensor->ndim) + " dimensions, expected " + std::to_string(shape.size()));
  bool dtype_ok = false;
  std::string accepted;
  for (DLDataType d : dtypes) {
    dtype_ok = dtype_ok || same_dtype(d, tensor->dtype);
    accepted += (accepted.empty() ? "" : " or ") + dtype_string(d);
  }
  if (!dtype_ok) invalid(n + ": dtype is " + dtype_string(tensor->dtype) + ", expected " + accepted);
  TensorArg arg;
  arg.dtype = tensor->dtype;
  arg.ndim = tensor->ndim;
  auto dim_name = dims.begin();
  int d = 0;
  std::int64_t elements = 1;
  for (std::int64_t expected : shape) {
    const std::int64_t got = tensor->shape[d];
    if (expected == kAnyExtent && got < 1)
      invalid(n + ": dim " + std::to_string(d) + " (" + std::string(dim_name != dims.end() ? *dim_name : "?") +
              ") is " + std::to_string(got) + ", expected at least 1");
    if (expected != kAnyExtent && got != expected)
      invalid(n + ": dim " + std::to_string(d) + " (" + std::string(dim_name != dims.end() ? *dim_name : "?") +
              ") is " + std::to_string(got) + ", expected " + std::to_string(expected));
    arg.shape[d] = got;
    elements *= got;
    ++d;
    if (dim_name != dims.end()) ++dim_name;
  }
  std::int64_t compact = 1;
  for (int i = tensor->ndim - 1; i >= 0; --i) {
    arg.strides[i] = tensor->strides != nullptr ? tensor->strides[i] : compact;
    compact *= tensor->shape[i];
  }
  if (tensor->data == nullptr && elements > 0) invalid(n + ": data is NULL");
  arg.data = static_cast<const char*>(tensor->data) + tensor->byte_offset;
  return arg;
}

/// check_tensor for host memory.
inline TensorArg check_cpu_tensor(const DLTensor* tensor, std::string_view name, std::initializer_list<std::int64_t> shape,
                                  std::initializer_list<std::string_view> dims, std::initializer_list<DLDataType> dtypes) {
  return check_tensor(tensor, name, shape, dims, dtypes, kDLCPU);
}

/// Refuses a struct smaller than its first layout in this major (rule 3 of backend.h's
/// versioning): ABI 2.0's, or `first_version`'s for a struct added by a later minor.
inline void check_struct_size(std::uint32_t struct_size, std::size_t minimum, const char* what,
                              const char* first_version = "2.0") {
  if (struct_size < minimum)
    invalid(std::string(what) + ": struct_size is " + std::to_string(struct_size) + " bytes, but ABI " + first_version +
            " needs at least " + std::to_string(minimum) + " (a caller built for another attncheck ABI?)");
}

// --- the problem ------------------------------------------------------------------------------------

/// The structural checks every backend needs before it indexes anything; throws
/// AbiError(kAttncheckInvalidProblem) naming the field.
/// Whether the problem is a packed batch; false where the caller's struct predates 2.5.
inline bool is_varlen(const attncheck_problem& p) { return ATTNCHECK_HAS_FIELD(&p, attncheck_problem, varlen) && p.varlen != 0; }
/// The problem's descales of fp8 inputs; kAttncheckDescaleNone where the caller's struct predates 2.6.
inline attncheck_descale descale_of(const attncheck_problem& p) {
  return ATTNCHECK_HAS_FIELD(&p, attncheck_problem, descale) ? p.descale : kAttncheckDescaleNone;
}

/// The problem's K/V storage; contiguous where the caller's struct predates 2.4.
inline attncheck_kv_storage kv_storage_of(const attncheck_problem& p) {
  return ATTNCHECK_HAS_FIELD(&p, attncheck_problem, page_size) ? p.kv_storage : kAttncheckKvContiguous;
}
inline bool is_paged(const attncheck_problem& p) { return kv_storage_of(p) != kAttncheckKvContiguous; }

inline void check_problem(const attncheck_problem& p) {
  check_struct_size(p.struct_size, ATTNCHECK_PROBLEM_SIZE_2_0, "problem");
  auto positive = [](std::int64_t v, const char* field) {
    if (v < 1) invalid(std::string("problem.") + field + " is " + std::to_string(v) + ", but must be >= 1");
  };
  positive(p.batch, "batch");
  positive(p.q_heads, "q_heads");
  positive(p.kv_heads, "kv_heads");
  positive(p.q_len, "q_len");
  positive(p.k_len, "k_len");
  positive(p.qk_dim, "qk_dim");
  positive(p.v_dim, "v_dim");
  if (p.q_heads % p.kv_heads != 0)
    invalid("problem.kv_heads is " + std::to_string(p.kv_heads) + ", but q_heads = " + std::to_string(p.q_heads) +
            " is not a multiple of it");
  if (!std::isfinite(p.scale)) invalid("problem.scale is not finite");
  if (!std::isfinite(p.softcap) || p.softcap < 0) invalid("problem.softcap must be finite and >= 0");
  if (p.alignment < kAttncheckAlignTopLeft || p.alignment > kAttncheckAlignKeyLengths)
    invalid("problem.alignment is " + std::to_string(p.alignment) + ", not a known attncheck_alignment");
  if (p.alignment == kAttncheckAlignKeyLengths && !p.has_key_lengths)
    invalid("problem.alignment is key-lengths, but has_key_lengths is 0");
  if (p.window_left < -1 || p.window_right < -1) invalid("problem.window_left/right must be >= -1");
  if (p.mask_kind < kAttncheckMaskNone || p.mask_kind > kAttncheckMaskAdditive)
    invalid("problem.mask_kind is " + std::to_string(p.mask_kind) + ", not a known attncheck_mask_kind");
  if (p.mask_kind != kAttncheckMaskNone) {
    const std::int64_t full[4] = {p.batch, p.q_heads, p.q_len, p.k_len};
    const char* names[4] = {"batch", "heads", "query length", "key length"};
    for (int d = 0; d < 3; ++d)
      if (p.mask_shape[d] != 1 && p.mask_shape[d] != full[d])
        invalid("problem.mask_shape[" + std::to_string(d) + "] (" + names[d] + ") is " + std::to_string(p.mask_shape[d]) +
                ", expected 1 or " + std::to_string(full[d]));
    if (p.mask_shape[3] < 1 || p.mask_shape[3] > p.k_len)
      invalid("problem.mask_shape[3] (key length) is " + std::to_string(p.mask_shape[3]) + ", expected 1.." +
              std::to_string(p.k_len));
  }
  if (ATTNCHECK_HAS_FIELD(&p, attncheck_problem, alibi) &&
      (p.alibi < kAttncheckAlibiNone || p.alibi > kAttncheckAlibiPerBatchHead))
    invalid("problem.alibi is " + std::to_string(p.alibi) + ", not a known attncheck_alibi");
  if (ATTNCHECK_HAS_FIELD(&p, attncheck_problem, page_size)) {
    if (p.kv_storage < kAttncheckKvContiguous || p.kv_storage > kAttncheckKvPagedHeadMajor)
      invalid("problem.kv_storage is " + std::to_string(p.kv_storage) + ", not a known attncheck_kv_storage");
    if (p.kv_storage == kAttncheckKvContiguous && p.page_size != 0)
      invalid("problem.page_size is " + std::to_string(p.page_size) + ", but K and V are contiguous (expected 0)");
    if (p.kv_storage != kAttncheckKvContiguous) {
      if (p.page_size < 1) invalid("problem.page_size is " + std::to_string(p.page_size) + ", expected >= 1 for a paged cache");
      if (p.k_len % p.page_size != 0)
        invalid("problem.k_len is " + std::to_string(p.k_len) + ", expected a multiple of page_size = " + std::to_string(p.page_size));
      if (!p.has_key_lengths) invalid("problem.kv_storage is paged, but has_key_lengths is 0 (a paged cache needs them)");
    }
  }
  if (is_varlen(p)) {
    if (p.has_key_lengths) invalid("problem.varlen is set, but has_key_lengths is 1 (a packed batch's key counts are cu_seqlens_k's)");
    if (p.mask_kind != kAttncheckMaskNone) invalid("problem.varlen is set, but mask_kind is not none (a packed batch takes no mask)");
    if (p.kv_storage != kAttncheckKvContiguous) invalid("problem.varlen is set, but kv_storage is paged");
    if (p.alignment != kAttncheckAlignTopLeft && p.alignment != kAttncheckAlignBottomRight)
      invalid("problem.varlen is set, but alignment is " + std::to_string(p.alignment) +
              " (a packed batch aligns each sequence top-left or bottom-right)");
  }
  const attncheck_descale descale = descale_of(p);
  if (descale < kAttncheckDescaleNone || descale > kAttncheckDescalePerHead)
    invalid("problem.descale is " + std::to_string(descale) + ", not a known attncheck_descale");
  if (descale != kAttncheckDescaleNone) {
    if (p.mask_kind == kAttncheckMaskAdditive) invalid("problem.descale is set, but mask_kind is additive (fp8 inputs take no additive mask)");
    if (is_paged(p)) invalid("problem.descale is set, but kv_storage is paged (fp8 inputs are contiguous)");
    if (is_varlen(p)) invalid("problem.descale is set, but varlen is set (fp8 inputs are a padded batch)");
  }
}

// --- ABI 2.3 options ---------------------------------------------------------------------------------

/// The problem's ALiBi slopes kind; kAttncheckAlibiNone where the caller's struct predates 2.3.
inline attncheck_alibi alibi_of(const attncheck_problem& p) {
  return ATTNCHECK_HAS_FIELD(&p, attncheck_problem, alibi) ? p.alibi : kAttncheckAlibiNone;
}
/// Whether the problem has sinks; false where the caller's struct predates 2.3.
inline bool has_sinks(const attncheck_problem& p) {
  return ATTNCHECK_HAS_FIELD(&p, attncheck_problem, has_sinks) && p.has_sinks != 0;
}

/// Optional problem options a backend implements (BackendImpl::options()): whatever is not
/// listed is declined by the table before check_supported runs, so an option added to the ABI
/// later can never be silently ignored by a backend written before it.
enum ProblemOption : std::uint32_t {
  kOptionAlibi = kAttncheckOptionAlibi,  ///< ABI 2.3: problem.alibi
  kOptionSinks = kAttncheckOptionSinks,  ///< ABI 2.3: problem.has_sinks
  kOptionPagedKv = kAttncheckOptionPagedKv,  ///< ABI 2.4: problem.kv_storage paged
  kOptionVarlen = kAttncheckOptionVarlen,    ///< ABI 2.5: problem.varlen
  kOptionFp8 = kAttncheckOptionFp8,          ///< ABI 2.6: fp8 inputs with problem.descale
};


/// The names of the options `used` (ProblemOption bits) holds that `implemented` lacks, joined by
/// " and " ("ALiBi and attention sinks"); empty if none. The one list of option names.
inline std::string option_names(std::uint32_t used, std::uint32_t implemented) {
  std::string missing;
  for (const auto& [option, what] : {std::pair{kOptionAlibi, "ALiBi"}, std::pair{kOptionSinks, "attention sinks"},
                                     std::pair{kOptionPagedKv, "paged KV caches"},
                                     std::pair{kOptionVarlen, "packed variable-length batches"},
                                     std::pair{kOptionFp8, "fp8 inputs with descales"}})
    if ((used & option) != 0 && (implemented & option) == 0) missing += (missing.empty() ? "" : " and ") + std::string(what);
  return missing;
}

/// The options of `p` that are not in `implemented`, as a reason for a decline; empty if none.
inline std::string missing_options(const attncheck_problem& p, std::uint32_t implemented) {
  const std::uint32_t used =
      (alibi_of(p) != kAttncheckAlibiNone ? std::uint32_t{kOptionAlibi} : 0u) | (has_sinks(p) ? std::uint32_t{kOptionSinks} : 0u) |
      (is_paged(p) ? std::uint32_t{kOptionPagedKv} : 0u) | (is_varlen(p) ? std::uint32_t{kOptionVarlen} : 0u) |
      (descale_of(p) != kAttncheckDescaleNone ? std::uint32_t{kOptionFp8} : 0u);
  const std::string missing = option_names(used, implemented);
  return missing.empty() ? missing : "this backend does not implement " + missing;
}

/// The ALiBi slopes of a call as a flat [Hq] or [B, Hq] row-major vector, checked (float32,
/// shape, finite); empty without ALiBi. `tensor` is the tensor set's alibi_slopes (NULL where the
/// set predates 2.3).
inline std::vector<float> checked_alibi_slopes(const attncheck_problem& p, const DLTensor* tensor, DLDeviceType device) {
  std::vector<float> slopes;
  const attncheck_alibi kind = alibi_of(p);
  if (kind == kAttncheckAlibiNone) {
    if (tensor != nullptr) invalid("alibi_slopes: is given, but problem.alibi is none");
    return slopes;
  }
  const TensorArg arg = kind == kAttncheckAlibiPerHead
                            ? check_tensor(tensor, "alibi_slopes", {p.q_heads}, {"query heads"}, {kF32}, device)
                            : check_tensor(tensor, "alibi_slopes", {p.batch, p.q_heads}, {"batch", "query heads"},
                                           {kF32}, device);
  const std::int64_t rows = kind == kAttncheckAlibiPerHead ? 1 : p.batch;
  for (std::int64_t b = 0; b < rows; ++b)
    for (std::int64_t h = 0; h < p.q_heads; ++h) {
      const float slope = kind == kAttncheckAlibiPerHead ? *arg.at<float>(h) : *arg.at<float>(b, h);
      if (!std::isfinite(slope)) invalid("alibi_slopes: element " + std::to_string(b * p.q_heads + h) + " is not finite");
      slopes.push_back(slope);
    }
  return slopes;
}

/// The slope of (b, h) in checked_alibi_slopes' vector; 0 when it is empty.
inline float alibi_slope_at(const attncheck_problem& p, const std::vector<float>& slopes, std::int64_t b, std::int64_t h) {
  if (slopes.empty()) return 0.0f;
  return slopes[static_cast<size_t>(alibi_of(p) == kAttncheckAlibiPerHead ? h : b * p.q_heads + h)];
}

// --- ABI 2.6: fp8 inputs with descales ------------------------------------------------------------

/// The 2.6 descale tensors of a forward call, NULL where the caller's struct predates them.
inline const DLTensor* q_descale_of(const attncheck_attention_tensors& t) {
  return ATTNCHECK_HAS_FIELD(&t, attncheck_attention_tensors, q_descale) ? t.q_descale : nullptr;
}
inline const DLTensor* k_descale_of(const attncheck_attention_tensors& t) {
  return ATTNCHECK_HAS_FIELD(&t, attncheck_attention_tensors, k_descale) ? t.k_descale : nullptr;
}
inline const DLTensor* v_descale_of(const attncheck_attention_tensors& t) {
  return ATTNCHECK_HAS_FIELD(&t, attncheck_attention_tensors, v_descale) ? t.v_descale : nullptr;
}

/// The descales of a call (backend.h, ABI 2.6), checked (float32, [1] or [B, Hkv], finite and
/// positive), each flat row-major; all empty without descales. Host memory only.
struct Descales {
  std::vector<float> q, k, v;
  /// The factor of batch b, kv head g in one of the vectors above (the per-tensor one for every (b, g)).
  static float at(const std::vector<float>& d, const attncheck_problem& p, std::int64_t b, std::int64_t g) {
    return d.size() == 1 ? d[0] : d[static_cast<size_t>(b * p.kv_heads + g)];
  }
};

inline Descales checked_descales(const attncheck_problem& p, const attncheck_attention_tensors& t, DLDeviceType device) {
  Descales d;
  const attncheck_descale kind = descale_of(p);
  const std::pair<const DLTensor*, const char*> tensors[3] = {
      {q_descale_of(t), "q_descale"}, {k_descale_of(t), "k_descale"}, {v_descale_of(t), "v_descale"}};
  std::vector<float>* into[3] = {&d.q, &d.k, &d.v};
  for (int e = 0; e < 3; ++e) {
    const auto [tensor, name] = tensors[e];
    if (kind == kAttncheckDescaleNone) {
      if (tensor != nullptr) invalid(std::string(name) + ": is given, but problem.descale is none");
      continue;
    }
    const bool per_head = kind == kAttncheckDescalePerHead;
    const TensorArg arg = per_head ? check_tensor(tensor, name, {p.batch, p.kv_heads}, {"batch", "kv heads"}, {kF32}, device)
                                   : check_tensor(tensor, name, {1}, {"elements"}, {kF32}, device);
    for (std::int64_t b = 0; b < (per_head ? p.batch : 1); ++b)
      for (std::int64_t g = 0; g < (per_head ? p.kv_heads : 1); ++g) {
        const float x = per_head ? *arg.at<float>(b, g) : *arg.at<float>(0);
        if (!(std::isfinite(x) && x > 0))
          invalid(std::string(name) + ": element " + std::to_string(b * p.kv_heads + g) + " is " + std::to_string(x) +
                  ", but a descale must be finite and positive");
        into[e]->push_back(x);
      }
  }
  return d;
}

/// Whether `d` is one of the ABI 2.6 fp8 formats.
inline bool is_fp8(const DLDataType& d) { return same_dtype(d, kE4M3) || same_dtype(d, kE5M2); }

/// The value of an fp8 byte: e4m3fn (bias 7, S.1111.111 the only NaN, no infinity) or e5m2 (bias
/// 15, IEEE's infinities and NaNs). Exact in float.
inline float fp8_value(std::uint8_t bits, bool e4m3) {
  const int mantissa_bits = e4m3 ? 3 : 2, bias = e4m3 ? 7 : 15, top = e4m3 ? 0xf : 0x1f;
  const int exponent = (bits >> mantissa_bits) & top, mantissa = bits & ((1 << mantissa_bits) - 1);
  const float sign = (bits & 0x80) != 0 ? -1.0f : 1.0f;
  if (exponent == top && (!e4m3 || mantissa == 7))
    return e4m3 || mantissa != 0 ? std::numeric_limits<float>::quiet_NaN() : sign * std::numeric_limits<float>::infinity();
  if (exponent == 0) return sign * std::ldexp(static_cast<float>(mantissa), 1 - bias - mantissa_bits);
  return sign * std::ldexp(static_cast<float>((1 << mantissa_bits) + mantissa), exponent - bias - mantissa_bits);
}

/// A forward call's fp8 q, k and v (any strides, host memory) dequantized into compact float32
/// [B, H, L, D] tensors, each element code · descale rounded once; the descales (all 1 without
/// them) are checked_descales'. `v_factor_power` is how often v's factor is applied: 1 in a correct
/// kernel. Not copyable: the DLTensors point into it.
class DequantizedF32 {
 public:
  DequantizedF32(const attncheck_problem& p, const attncheck_attention_tensors& t, DLDeviceType device, int v_factor_power = 1)
      : descales_(checked_descales(p, t, device)) {
    if (t.q == nullptr) invalid("q: is NULL, but the problem requires it");
    const DLDataType dt = t.q->dtype;
    if (!is_fp8(dt)) invalid("q: dtype is " + dtype_string(dt) + ", but descales come with fp8 (e4m3fn or e5m2) inputs");
    const bool e4m3 = same_dtype(dt, kE4M3);
    const auto q = check_tensor(t.q, "q", {p.batch, p.q_heads, p.q_len, p.qk_dim}, {"batch", "query heads", "query length", "head dim"}, {dt}, device);
    const auto k = check_tensor(t.k, "k", {p.batch, p.kv_heads, p.k_len, p.qk_dim}, {"batch", "kv heads", "key length", "head dim"}, {dt}, device);
    const auto v = check_tensor(t.v, "v", {p.batch, p.kv_heads, p.k_len, p.v_dim}, {"batch", "kv heads", "key length", "value dim"}, {dt}, device);
    const auto factor = [&](const std::vector<float>& d, std::int64_t b, std::int64_t g, int power) {
      float f = 1.0f;
      for (int i = 0; i < power && !d.empty(); ++i) f *= Descales::at(d, p, b, g);
      return f;
    };
    fill(q_, q, e4m3, [&](std::int64_t b, std::int64_t h) { return factor(descales_.q, b, h / (p.q_heads / p.kv_heads), 1); });
    fill(k_, k, e4m3, [&](std::int64_t b, std::int64_t g) { return factor(descales_.k, b, g, 1); });
    fill(v_, v, e4m3, [&](std::int64_t b, std::int64_t g) { return factor(descales_.v, b, g, v_factor_power); });
  }
  DequantizedF32(const DequantizedF32&) = delete;
  DequantizedF32& operator=(const DequantizedF32&) = delete;

  const DLTensor* q() const { return &q_.tensor; }
  const DLTensor* k() const { return &k_.tensor; }
  const DLTensor* v() const { return &v_.tensor; }

 private:
  struct Owned {
    std::vector<float> values;
    std::array<std::int64_t, 4> shape{};
    DLTensor tensor{};
  };
  template <class Factor>
  static void fill(Owned& o, const TensorArg& x, bool e4m3, Factor&& factor_of) {
    o.shape = x.shape;
    o.values.resize(static_cast<size_t>(x.shape[0] * x.shape[1] * x.shape[2] * x.shape[3]));
    size_t e = 0;
    for (std::int64_t b = 0; b < x.shape[0]; ++b)
      for (std::int64_t h = 0; h < x.shape[1]; ++h) {
        const float f = factor_of(b, h);
        for (std::int64_t i = 0; i < x.shape[2]; ++i)
          for (std::int64_t d = 0; d < x.shape[3]; ++d) o.values[e++] = fp8_value(*x.at<std::uint8_t>(b, h, i, d), e4m3) * f;
      }
    o.tensor.data = o.values.data();
    o.tensor.device = {kDLCPU, 0};
    o.tensor.ndim = 4;
    o.tensor.dtype = kF32;
    o.tensor.shape = o.shape.data();
    o.tensor.strides = nullptr;  // compact
    o.tensor.byte_offset = 0;
  }
  Descales descales_;
  Owned q_, k_, v_;
};

/// `t` with q, k and v replaced by `d`'s float32 tensors and no descales, for `p` without them.
inline attncheck_attention_tensors without_descales(const attncheck_attention_tensors& t, const DequantizedF32& d) {
  attncheck_attention_tensors plain = t;
  plain.q = d.q(), plain.k = d.k(), plain.v = d.v();
  if (ATTNCHECK_HAS_FIELD(&t, attncheck_attention_tensors, q_descale)) plain.q_descale = plain.k_descale = plain.v_descale = nullptr;
  return plain;
}
inline attncheck_problem without_descales(const attncheck_problem& p) {
  attncheck_problem plain = p;
  if (ATTNCHECK_HAS_FIELD(&p, attncheck_problem, descale)) plain.descale = kAttncheckDescaleNone;
  return plain;
}

/// The sink logits of a call [Hq], checked (float32, not NaN, not +inf); empty without sinks.
inline std::vector<float> checked_sinks(const attncheck_problem& p, const DLTensor* tensor, DLDeviceType device) {
  std::vector<float> sinks;
  if (!has_sinks(p)) {
    if (tensor != nullptr) invalid("sinks: is given, but problem.has_sinks is 0");
    return sinks;
  }
  const TensorArg arg = check_tensor(tensor, "sinks", {p.q_heads}, {"query heads"}, {kF32}, device);
  for (std::int64_t h = 0; h < p.q_heads; ++h) {
    const float sink = *arg.at<float>(h);
    if (std::isnan(sink) || sink == INFINITY)
      invalid("sinks: element " + std::to_string(h) + " is " + std::to_string(sink) + ", but must be finite or -inf");
    sinks.push_back(sink);
  }
  return sinks;
}

/// The 2.3 tensors of a set, NULL where the caller's struct predates them.
template <class Tensors>
const DLTensor* alibi_slopes_of(const Tensors& t) {
  return ATTNCHECK_HAS_FIELD(&t, Tensors, alibi_slopes) ? t.alibi_slopes : nullptr;
}
template <class Tensors>
const DLTensor* sinks_of(const Tensors& t) {
  return ATTNCHECK_HAS_FIELD(&t, Tensors, sinks) ? t.sinks : nullptr;
}

/// The 2.4 block table of a forward call, NULL where the caller's struct predates it.
inline const DLTensor* block_table_of(const attncheck_attention_tensors& t) {
  return ATTNCHECK_HAS_FIELD(&t, attncheck_attention_tensors, block_table) ? t.block_table : nullptr;
}

// --- ABI 2.4: paged KV caches ----------------------------------------------------------------------

/// A paged call's K and V pools and block table, checked (backend.h, attncheck_problem): the pools
/// of the problem's layout with the same page count, the table [B, Lk / page_size] int32. Data
/// pointers are only dereferenceable where `device` memory is.
struct PagedKvArgs {
  TensorArg k, v, table;
  std::int64_t num_pages = 0;
};

inline PagedKvArgs check_paged_kv(const attncheck_problem& p, const DLTensor* k, const DLTensor* v, const DLTensor* table,
                                  std::initializer_list<DLDataType> dtypes, DLDeviceType device) {
  PagedKvArgs a;
  const bool head_major = kv_storage_of(p) == kAttncheckKvPagedHeadMajor;
  const auto pool = [&](const DLTensor* t, const char* name, std::int64_t dim, const char* dim_name) {
    return head_major ? check_tensor(t, name, {kAnyExtent, p.kv_heads, p.page_size, dim}, {"pages", "kv heads", "page size", dim_name}, dtypes, device)
                      : check_tensor(t, name, {kAnyExtent, p.page_size, p.kv_heads, dim}, {"pages", "page size", "kv heads", dim_name}, dtypes, device);
  };
  a.k = pool(k, "k", p.qk_dim, "head dim");
  a.num_pages = a.k.shape[0];
  a.v = pool(v, "v", p.v_dim, "value dim");
  if (a.v.shape[0] != a.num_pages)
    invalid("v: dim 0 (pages) is " + std::to_string(a.v.shape[0]) + ", expected k's page count " + std::to_string(a.num_pages));
  a.table = check_tensor(table, "block_table", {p.batch, p.k_len / p.page_size}, {"batch", "pages per sequence"}, {kI32}, device);
  return a;
}

/// Host memory: every used slot's entry (s < ceil(key_length[b] / page_size), backend.h) names a
/// page of the pool. `key_length(b)` gives batch b's length.
template <class KeyLength>
void check_block_table_entries(const attncheck_problem& p, const PagedKvArgs& a, KeyLength&& key_length) {
  for (std::int64_t b = 0; b < p.batch; ++b) {
    const std::int64_t used = (key_length(b) + p.page_size - 1) / p.page_size;
    for (std::int64_t s = 0; s < used; ++s) {
      const std::int32_t page = *a.table.at<std::int32_t>(b, s);
      if (page < 0 || page >= a.num_pages)
        invalid("block_table[" + std::to_string(b) + ", " + std::to_string(s) + "] is " + std::to_string(page) +
                ", but the slot is used (key length " + std::to_string(key_length(b)) + ") and the pool has pages 0.." +
                std::to_string(a.num_pages - 1));
    }
  }
}

// --- ABI 2.5: packed variable-length batches -------------------------------------------------------

/// The 2.5 offsets of a forward call, NULL where the caller's struct predates them.
inline const DLTensor* cu_seqlens_q_of(const attncheck_attention_tensors& t) {
  return ATTNCHECK_HAS_FIELD(&t, attncheck_attention_tensors, cu_seqlens_q) ? t.cu_seqlens_q : nullptr;
}
inline const DLTensor* cu_seqlens_k_of(const attncheck_attention_tensors& t) {
  return ATTNCHECK_HAS_FIELD(&t, attncheck_attention_tensors, cu_seqlens_k) ? t.cu_seqlens_k : nullptr;
}

/// A packed call's offsets, checked as tensors ([B + 1] int32 in `device` memory), and the token
/// counts Tq and Tk its q and k say they hold (dim 0; q, k, v, out and lse are then checked with
/// check_tensor against them). The offsets' values are only readable where `device` memory is:
/// checked_cu_seqlens checks them there.
struct VarlenArgs {
  TensorArg cu_q, cu_k;
  std::int64_t total_q = 0, total_k = 0;
};

inline VarlenArgs check_varlen(const attncheck_problem& p, const attncheck_attention_tensors& t, DLDeviceType device) {
  VarlenArgs a;
  a.cu_q = check_tensor(cu_seqlens_q_of(t), "cu_seqlens_q", {p.batch + 1}, {"batch + 1"}, {kI32}, device);
  a.cu_k = check_tensor(cu_seqlens_k_of(t), "cu_seqlens_k", {p.batch + 1}, {"batch + 1"}, {kI32}, device);
  const auto tokens = [](const DLTensor* x, const char* name) -> std::int64_t {
    if (x == nullptr) invalid(std::string(name) + ": is NULL, but the problem requires it");
    if (x->ndim != 3) invalid(std::string(name) + ": has " + std::to_string(x->ndim) + " dimensions, expected 3 (packed [T, H, D])");
    if (x->shape[0] < 0) invalid(std::string(name) + ": dim 0 (tokens) is " + std::to_string(x->shape[0]) + ", expected >= 0");
    return x->shape[0];
  };
  a.total_q = tokens(t.q, "q");
  a.total_k = tokens(t.k, "k");
  return a;
}

/// Host memory: the offsets of one side ("cu_seqlens_q" with the queries' `capacity` q_len and
/// `total` Tq, or the keys'), checked: cu[0] = 0, each sequence's count in [0, capacity], and
/// cu[B] = total. Returns the B + 1 offsets.
inline std::vector<std::int64_t> checked_cu_seqlens(const attncheck_problem& p, const TensorArg& cu, const char* name,
                                                    std::int64_t capacity, std::int64_t total) {
  std::vector<std::int64_t> offsets(static_cast<size_t>(p.batch + 1));
  for (std::int64_t b = 0; b <= p.batch; ++b) offsets[static_cast<size_t>(b)] = *cu.at<std::int32_t>(b);
  if (offsets[0] != 0) invalid(std::string(name) + "[0] is " + std::to_string(offsets[0]) + ", expected 0");
  for (std::int64_t b = 0; b < p.batch; ++b) {
    const std::int64_t count = offsets[static_cast<size_t>(b + 1)] - offsets[static_cast<size_t>(b)];
    if (count < 0 || count > capacity)
      invalid(std::string(name) + ": sequence " + std::to_string(b) + " has " + std::to_string(count) +
              " tokens, expected 0.." + std::to_string(capacity));
  }
  if (offsets.back() != total)
    invalid(std::string(name) + "[B] is " + std::to_string(offsets.back()) + ", but the packed tensor holds " +
            std::to_string(total) + " tokens");
  return offsets;
}

/// The diagonal offset of a packed sequence of `q_count` queries and `k_count` keys (backend.h,
/// ABI 2.5): its query r's diagonal is p = r + offset.
inline std::int64_t varlen_diagonal_offset(const attncheck_problem& p, std::int64_t q_count, std::int64_t k_count) {
  return p.alignment == kAttncheckAlignBottomRight ? k_count - q_count : 0;
}

/// The diagonal offset of batch b (problem.h): row i's diagonal is p = i + offset.
inline std::int64_t diagonal_offset(const attncheck_problem& p, std::int64_t key_length_b) {
  switch (p.alignment) {
    case kAttncheckAlignBottomRight: return p.k_len - p.q_len;
    case kAttncheckAlignOffset: return p.diagonal_offset;
    case kAttncheckAlignKeyLengths: return key_length_b - p.q_len;
    default: return 0;
  }
}

/// The key lengths of a problem with has_key_lengths, checked: `key_lengths` must be a [B] int64
/// CPU tensor whose entries lie in 0..Lk (the error names the batch row and the value). Empty
/// when the problem has none.
inline std::vector<std::int64_t> checked_key_lengths(const attncheck_problem& p, const DLTensor* key_lengths) {
  std::vector<std::int64_t> lengths;
  if (!p.has_key_lengths) return lengths;
  const TensorArg kl = check_cpu_tensor(key_lengths, "key_lengths", {p.batch}, {"batch"}, {kI64});
  for (std::int64_t b = 0; b < p.batch; ++b) {
    const std::int64_t len = *kl.at<std::int64_t>(b);
    if (len < 0 || len > p.k_len)
      invalid("key_lengths[" + std::to_string(b) + "] is " + std::to_string(len) + ", expected 0..Lk = " +
              std::to_string(p.k_len));
    lengths.push_back(len);
  }
  return lengths;
}

// --- the table --------------------------------------------------------------------------------------

/// What a C++ backend implements. Each method may throw; the table turns that into a status.
class BackendImpl {
 public:
  virtual ~BackendImpl() = default;
  /// Where the suite must place every tensor (the table's `device`); host memory by default.
  virtual DLDevice device() const { return {kDLCPU, 0}; }
  /// The profile for inputs of `input`; throw AbiError(kAttncheckNotSupported) if not handled.
  virtual attncheck_numerics_profile profile(DLDataType input) const = 0;
  /// Throw AbiError(kAttncheckNotSupported, reason) if `problem` is not handled; return otherwise.
  virtual void check_supported(const attncheck_problem& problem, DLDataType input, DLDeviceType device) const = 0;
  virtual void forward(const attncheck_problem& problem, const attncheck_attention_tensors& tensors) = 0;
  /// The optional problem options (ProblemOption bits) forward implements; the table declines
  /// every other one in supports, forward and backward, before the calls above run.
  virtual std::uint32_t options() const { return 0; }
  /// The options backward implements; by default those of forward.
  virtual std::uint32_t backward_options() const { return options(); }
  /// Whether the profile depends on the problem (the table's get_problem_profile is NULL otherwise).
  virtual bool has_problem_profiles() const { return false; }
  /// The profile of the path forward takes for `problem` (ABI 2.1); only called when
  /// has_problem_profiles(). Throw AbiError(kAttncheckNotSupported) if `input` is not handled.
  virtual attncheck_numerics_profile problem_profile(const attncheck_problem& problem, DLDataType input) const {
    (void)problem;
    return profile(input);
  }
  /// Whether forward_layer is implemented (the table's pointer is NULL otherwise).
  virtual bool has_layer() const { return false; }
  virtual void forward_layer(const attncheck_layer_problem&, const attncheck_layer_tensors&) {
    unsupported("this backend implements the attention core only");
  }
  /// Whether backward is implemented (ABI 2.2; the table's get_backward_profile and backward are
  /// NULL otherwise). A backend with a backward pass writes the lse in forward.
  virtual bool has_backward() const { return false; }
  /// Throw AbiError(kAttncheckNotSupported) if backward does not handle `problem` with `input`.
  virtual attncheck_backward_profile backward_profile(const attncheck_problem&, DLDataType) const {
    unsupported("this backend has no backward pass");
  }
  virtual void backward(const attncheck_problem&, const attncheck_backward_tensors&) {
    unsupported("this backend has no backward pass");
  }
};

namespace detail {

/// The table and what it owns; context points back here.
struct TableHolder {
  attncheck_backend table{};
  std::unique_ptr<BackendImpl> impl;
  std::string name, description;
  mutable std::string last_error = "no error";
};

inline TableHolder& holder(const attncheck_backend* self) { return *static_cast<TableHolder*>(self->context); }

/// Runs `body`, mapping exceptions to statuses and remembering the message.
template <class Body>
attncheck_status guarded(const attncheck_backend* self, Body&& body) noexcept {
  TableHolder& h = holder(self);
  try {
    body(h);
    return kAttncheckOk;
  } catch (const AbiError& e) {
    h.last_error.assign(e.what());
    return e.status();
  } catch (const std::bad_alloc&) {
    h.last_error.assign(h.name + ": out of memory");
    return kAttncheckInternalError;
  } catch (const std::exception& e) {
    h.last_error.assign(h.name + ": " + e.what());
    return kAttncheckInternalError;
  } catch (...) {
    h.last_error.assign(h.name + ": unknown exception");
    return kAttncheckInternalError;
  }
}

inline void copy_reason(const std::string& text, char* reason, size_t reason_size) {
  if (reason == nullptr || reason_size == 0) return;
  const size_t n = text.size() < reason_size - 1 ? text.size() : reason_size - 1;
  std::memcpy(reason, text.data(), n);
  reason[n] = '\0';
}

}  // namespace detail

/// Builds the C table around `impl`. Returns NULL (never throws) if allocation fails.
inline attncheck_backend* make_backend_table(std::unique_ptr<BackendImpl> impl, const char* name,
                                             const char* description) noexcept {
  try {
    auto h = std::make_unique<detail::TableHolder>();
    h->impl = std::move(impl);
    h->name = name;
    h->description = description != nullptr ? description : "";
    attncheck_backend& t = h->table;
    t.abi_version = {ATTNCHECK_ABI_VERSION_MAJOR, ATTNCHECK_ABI_VERSION_MINOR};
    t.struct_size = sizeof(attncheck_backend);
    t.name = h->name.c_str();
    t.description = h->description.c_str();
    t.context = h.get();
    t.device = h->impl->device();
    t.problem_options = h->impl->options();  // what the suite may send (backend.h)
    t.get_profile = [](const attncheck_backend* self, DLDataType input, attncheck_numerics_profile* out) {
      return detail::guarded(self, [&](detail::TableHolder& holder) {
        if (out == nullptr) invalid("get_profile: profile is NULL");
        const attncheck_numerics_profile full = holder.impl->profile(input);
        attncheck_write_profile(out, &full);  // no more than the suite's buffer holds (backend.h)
      });
    };
    if (h->impl->has_problem_profiles())
      t.get_problem_profile = [](const attncheck_backend* self, const attncheck_problem* problem, DLDataType input,
                                 attncheck_numerics_profile* out) {
        return detail::guarded(self, [&](detail::TableHolder& holder) {
          if (problem == nullptr || out == nullptr) invalid("get_problem_profile: problem or profile is NULL");
          check_problem(*problem);
          const attncheck_numerics_profile full = holder.impl->problem_profile(*problem, input);
          attncheck_write_profile(out, &full);
        });
      };
    t.supports = [](const attncheck_backend* self, const attncheck_problem* problem, DLDataType input,
                    DLDeviceType device, char* reason, size_t reason_size) {
      const attncheck_status status = detail::guarded(self, [&](detail::TableHolder& holder) {
        if (problem == nullptr) invalid("supports: problem is NULL");
        if (const std::string missing = missing_options(*problem, holder.impl->options()); !missing.empty())
          unsupported(missing);
        holder.impl->check_supported(*problem, input, device);
      });
      detail::copy_reason(status == kAttncheckOk ? std::string() : detail::holder(self).last_error, reason, reason_size);
      return status;
    };
    t.forward = [](attncheck_backend* self, const attncheck_problem* problem, const attncheck_attention_tensors* tensors) {
      return detail::guarded(self, [&](detail::TableHolder& holder) {
        if (problem == nullptr || tensors == nullptr) invalid("forward: problem or tensors is NULL");
        check_struct_size(tensors->struct_size, ATTNCHECK_ATTENTION_TENSORS_SIZE_2_0, "forward: tensors");
        if (const std::string missing = missing_options(*problem, holder.impl->options()); !missing.empty())
          unsupported(missing);
        holder.impl->forward(*problem, *tensors);
      });
    };
    if (h->impl->has_layer()) {
      t.forward_layer = [](attncheck_backend* self, const attncheck_layer_problem* problem,
                           const attncheck_layer_tensors* tensors) {
        return detail::guarded(self, [&](detail::TableHolder& holder) {
          if (problem == nullptr || tensors == nullptr) invalid("forward_layer: problem or tensors is NULL");
          check_struct_size(problem->struct_size, ATTNCHECK_LAYER_PROBLEM_SIZE_2_0, "forward_layer: problem");
          check_struct_size(tensors->struct_size, ATTNCHECK_LAYER_TENSORS_SIZE_2_0, "forward_layer: tensors");
          holder.impl->forward_layer(*problem, *tensors);
        });
      };
    }
    if (h->impl->has_backward()) {
      t.get_backward_profile = [](const attncheck_backend* self, const attncheck_problem* problem, DLDataType input,
                                  attncheck_backward_profile* out) {
        return detail::guarded(self, [&](detail::TableHolder& holder) {
          if (problem == nullptr || out == nullptr) invalid("get_backward_profile: problem or profile is NULL");
          check_problem(*problem);
          if (const std::string missing = missing_options(*problem, holder.impl->backward_options()); !missing.empty())
            unsupported(missing + " in its backward pass");
          const attncheck_backward_profile full = holder.impl->backward_profile(*problem, input);
          attncheck_write_backward_profile(out, &full);  // no more than the suite's buffer holds
        });
      };
      t.backward = [](attncheck_backend* self, const attncheck_problem* problem, const attncheck_backward_tensors* tensors) {
        return detail::guarded(self, [&](detail::TableHolder& holder) {
          if (problem == nullptr || tensors == nullptr) invalid("backward: problem or tensors is NULL");
          check_problem(*problem);
          check_struct_size(tensors->struct_size, ATTNCHECK_BACKWARD_TENSORS_SIZE_2_2, "backward: tensors", "2.2");
          if (const std::string missing = missing_options(*problem, holder.impl->backward_options()); !missing.empty())
            unsupported(missing + " in its backward pass");
          holder.impl->backward(*problem, *tensors);
        });
      };
    }
    t.last_error = [](const attncheck_backend* self) { return detail::holder(self).last_error.c_str(); };
    t.destroy = [](attncheck_backend* self) { delete &detail::holder(self); };
    return &h.release()->table;
  } catch (...) {
    return nullptr;
  }
}

/// Convenience: constructs Impl(args...) and builds its table; NULL if construction throws.
template <class Impl, class... Args>
attncheck_backend* make_backend_table(const char* name, const char* description, Args&&... args) noexcept {
  try {
    return make_backend_table(std::make_unique<Impl>(std::forward<Args>(args)...), name, description);
  } catch (...) {
    return nullptr;
  }
}

}  // namespace attncheck::impl
