/// \file openvino_sdpa.cpp
/// \brief Adapters for OpenVINO 2026.4.1's ScaledDotProductAttention-13 on its CPU plugin: one
/// ov::Model per problem shape, holding a single ov::op::v13::ScaledDotProductAttention node
/// (include/openvino/op/scaled_dot_product_attention.hpp), compiled for "CPU" and run with
/// ov::Tensor views of the suite's memory.
///
///   openvino-sdpa      the CPU plugin's default configuration (no property set)
///   openvino-sdpa-f32  ov::hint::inference_precision(ov::element::f32)
///
/// The operation's semantics are those of its specification (docs.openvino.ai, "ScaledDotProduct
/// Attention-13", operation-specs/sequence/scaled-dot-product-attention.html): scores
/// Q·Kᵀ·scale plus attn_bias, softmax over the keys, times V. A boolean attn_mask is true where a
/// key is attended (attn_bias = Select(LogicalNot(mask), -inf, 0)); a floating mask is added; the
/// mask broadcasts numpy-style to [..., L, S]; `causal` = numpy.triu(-inf, k = 1), the top-left
/// diagonal, and when it is set the mask input is ignored. The optional sink input is one more
/// logit per row, concatenated to the scores before the softmax and dropped after it (the
/// specification's numpy.concatenate([attn_weight, sink], axis=-1) ... attn_weight[..., :-1]):
/// backend.h's sink, whose weight is part of the denominator and whose value is zero.
///
/// Mapping of attncheck_problem (README.md beside this file has the table):
///   - causal, top-left, nothing else masked: the native `causal` attribute;
///   - everything else that masks (the suite's mask, key lengths, other alignments, windows, and
///     causal combined with any of them) is folded into one mask the adapter builds in
///     OpenVINO's format: boolean (true = attend) unless the suite's mask is additive, then an
///     additive mask of the input's element type with -inf at every masked key;
///   - GQA: Q [B, Hq, Lq, D] is read as [B, Hkv, Hq/Hkv, Lq, D] (the same bytes) and K, V as
///     [B, Hkv, 1, Lk, D], so numpy broadcasting maps query head h to kv head h / (Hq/Hkv): the
///     library's own kernel, without repeated heads;
///   - strides: compact tensors are handed over as they are; any other layout is copied into a
///     compact buffer first (and out copied back), declared by accepts_strides = 1;
///   - sinks (openvino-sdpa-f32, f32 inputs): the sink input, f32, in Q's shape with a last
///     dimension of 1 (the specification concatenates it, so it does not broadcast), every row of
///     query head h holding sinks[h];
///   - softcap: declined (the operation has no such input); LSE: not produced (writes_lse = 0).
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include <openvino/core/except.hpp>
#include <openvino/core/model.hpp>
#include <openvino/core/type/bfloat16.hpp>
#include <openvino/core/type/float16.hpp>
#include <openvino/op/constant.hpp>
#include <openvino/op/parameter.hpp>
#include <openvino/op/scaled_dot_product_attention.hpp>
#include <openvino/runtime/core.hpp>
#include <openvino/runtime/properties.hpp>

#include "attncheck/backend_impl.h"

namespace attncheck::openvino_sdpa {
namespace {

using impl::check_cpu_tensor;
using impl::TensorArg;

/// Which configuration of the CPU plugin a backend compiles for.
enum class Configuration {
  PluginDefault,  ///< no property: the plugin picks the inference precision (bf16 where the CPU has it natively)
  F32,            ///< ov::hint::inference_precision(ov::element::f32)
};

ov::element::Type element_of(DLDataType d) {
  if (impl::same_dtype(d, impl::kF32)) return ov::element::f32;
  if (impl::same_dtype(d, impl::kF16)) return ov::element::f16;
  if (impl::same_dtype(d, impl::kBF16)) return ov::element::bf16;
  impl::unsupported("OpenVINO SDPA adapters take float32, float16 or bfloat16 inputs, not " + impl::dtype_string(d));
}

std::size_t element_bytes(DLDataType d) { return static_cast<std::size_t>(d.bits) / 8; }

/// A tensor as OpenVINO sees it: `data` is compact row-major in the logical shape, either the
/// suite's own memory or `copy`.
struct CompactView {
  void* data = nullptr;
  std::vector<unsigned char> copy;
};

bool is_compact(const TensorArg& t) {
  std::int64_t expected = 1;
  for (int d = t.ndim - 1; d >= 0; --d) {
    if (t.shape[d] != 1 && t.strides[d] != expected) return false;
    expected *= t.shape[d];
  }
  return true;
}

/// Element-by-element copy between a strided 4-d tensor and a compact buffer (either direction).
void copy_strided(const TensorArg& t, std::size_t bytes, unsigned char* compact, bool to_compact) {
  std::size_t n = 0;
  for (std::int64_t i0 = 0; i0 < t.shape[0]; ++i0)
    for (std::int64_t i1 = 0; i1 < t.shape[1]; ++i1)
      for (std::int64_t i2 = 0; i2 < t.shape[2]; ++i2)
        for (std::int64_t i3 = 0; i3 < t.shape[3]; ++i3, ++n) {
          unsigned char* element =
              const_cast<unsigned char*>(reinterpret_cast<const unsigned char*>(t.data)) +
              static_cast<std::ptrdiff_t>(bytes) * (i0 * t.strides[0] + i1 * t.strides[1] + i2 * t.strides[2] + i3 * t.strides[3]);
          if (to_compact)
            std::memcpy(compact + n * bytes, element, bytes);
          else
            std::memcpy(element, compact + n * bytes, bytes);
        }
}

CompactView compact_input(const TensorArg& t, std::size_t bytes) {
  CompactView view;
  if (is_compact(t)) {
    // OpenVINO reads an input tensor it is given and never writes it; ov::Tensor has no
    // read-only constructor, hence the cast.
    view.data = const_cast<char*>(t.data);
    return view;
  }
  view.copy.resize(static_cast<std::size_t>(t.shape[0] * t.shape[1] * t.shape[2] * t.shape[3]) * bytes);
  copy_strided(t, bytes, view.copy.data(), true);
  view.data = view.copy.data();
  return view;
}

/// What one compiled graph depends on: the shapes, the element types and which inputs exist.
/// The scale is a runtime input, so problems differing only in it share a graph.
struct GraphKey {
  int element = 0;  // ov::element::Type_t of q, k, v (and of an additive mask)
  std::int64_t batch = 0, q_heads = 0, kv_heads = 0, q_len = 0, k_len = 0, qk_dim = 0, v_dim = 0;
  bool native_causal = false;
  int mask = 0;  // 0 none, 1 boolean, 2 additive (the mask the adapter builds)
  std::int64_t mask_batch = 0, mask_heads = 0;
  bool sink = false;
  auto tie() const {
    return std::tie(element, batch, q_heads, kv_heads, q_len, k_len, qk_dim, v_dim, native_causal, mask, mask_batch,
                    mask_heads, sink);
  }
  bool operator<(const GraphKey& o) const { return tie() < o.tie(); }
};

struct Graph {
  ov::CompiledModel compiled;
  ov::InferRequest request;
  ov::Shape q_shape, k_shape, v_shape, mask_shape, sink_shape, out_shape;
};

/// How the adapter maps one problem: which masking is native, which goes through its own mask.
struct Plan {
  bool native_causal = false;
  int mask = 0;  // as GraphKey::mask
  std::int64_t mask_batch = 1, mask_heads = 1;
};

Plan plan_for(const attncheck_problem& p) {
  Plan plan;
  const bool windowed = p.window_left >= 0 || p.window_right >= 0;
  const bool other_masking = p.mask_kind != kAttncheckMaskNone || p.has_key_lengths || windowed;
  // The native attribute is the top-left diagonal (numpy.triu(k = 1) in the specification), and
  // it makes the operation ignore its mask input: only a causal top-left problem with nothing
  // else to mask maps onto it.
  if (p.causal && p.alignment == kAttncheckAlignTopLeft && !other_masking) {
    plan.native_causal = true;
    return plan;
  }
  if (!other_masking && !p.causal) return plan;
  plan.mask = p.mask_kind == kAttncheckMaskAdditive ? 2 : 1;
  const bool per_batch = p.has_key_lengths || (p.mask_kind != kAttncheckMaskNone && p.mask_shape[0] == p.batch);
  plan.mask_batch = per_batch ? p.batch : 1;
  plan.mask_heads = p.mask_kind != kAttncheckMaskNone ? p.mask_shape[1] : 1;
  return plan;
}

/// Q as OpenVINO is given it: [B, Hq, Lq, D], or [B, Hkv, Hq/Hkv, Lq, D] for GQA so that the kv
/// heads broadcast over the group axis (the same bytes in both shapes).
bool grouped(const attncheck_problem& p) { return p.kv_heads != 1 && p.kv_heads != p.q_heads; }

ov::Shape query_like(const attncheck_problem& p, std::int64_t heads, std::int64_t len, std::int64_t dim, bool is_kv) {
  auto u = [](std::int64_t v) { return static_cast<std::size_t>(v); };
  if (!grouped(p)) return {u(p.batch), u(heads), u(len), u(dim)};
  if (is_kv) return {u(p.batch), u(p.kv_heads), 1, u(len), u(dim)};
  return {u(p.batch), u(p.kv_heads), u(p.q_heads / p.kv_heads), u(len), u(dim)};
}

ov::Shape mask_shape_for(const attncheck_problem& p, const Plan& plan) {
  auto u = [](std::int64_t v) { return static_cast<std::size_t>(v); };
  if (!grouped(p)) return {u(plan.mask_batch), u(plan.mask_heads), u(p.q_len), u(p.k_len)};
  if (plan.mask_heads == 1) return {u(plan.mask_batch), 1, 1, u(p.q_len), u(p.k_len)};
  return {u(plan.mask_batch), u(p.kv_heads), u(p.q_heads / p.kv_heads), u(p.q_len), u(p.k_len)};
}

/// Whether key j is allowed for row i of batch b by the structural clauses of backend.h (key
/// lengths, causal, window) under the problem's alignment; the suite's mask is applied apart.
bool structurally_allowed(const attncheck_problem& p, const std::vector<std::int64_t>& key_lengths, std::int64_t b,
                          std::int64_t i, std::int64_t j) {
  if (p.has_key_lengths && j >= key_lengths[static_cast<std::size_t>(b)]) return false;
  const std::int64_t diagonal =
      i + impl::diagonal_offset(p, p.has_key_lengths ? key_lengths[static_cast<std::size_t>(b)] : p.k_len);
  if (p.causal && j > diagonal) return false;
  if (p.window_left >= 0 && j < diagonal - p.window_left) return false;
  if (p.window_right >= 0 && j > diagonal + p.window_right) return false;
  return true;
}

/// -inf in the bytes of `element` (f32, f16 or bf16).
void write_negative_infinity(unsigned char* to, ov::element::Type element) {
  if (element == ov::element::f32) {
    const float v = -std::numeric_limits<float>::infinity();
    std::memcpy(to, &v, sizeof v);
  } else {
    const std::uint16_t bits = element == ov::element::bf16 ? 0xFF80u : 0xFC00u;  // sign, all-ones exponent
    std::memcpy(to, &bits, sizeof bits);
  }
}

bool is_negative_infinity(const unsigned char* from, DLDataType dtype) {
  if (impl::same_dtype(dtype, impl::kF32)) {
    float v;
    std::memcpy(&v, from, sizeof v);
    return v == -std::numeric_limits<float>::infinity();
  }
  std::uint16_t bits;
  std::memcpy(&bits, from, sizeof bits);
  return bits == (impl::same_dtype(dtype, impl::kBF16) ? 0xFF80u : 0xFC00u);
}

/// Writes the suite's bias value at `from` (in `dtype`) into the graph's mask element at `to`:
/// bit for bit when the types agree; a bf16 bias (the declared mask dtype of an f32 graph run at
/// bf16 precision) widened exactly to f32.
void write_bias(unsigned char* to, ov::element::Type element, const unsigned char* from, DLDataType dtype) {
  if (impl::same_dtype(dtype, impl::kF32) && element == ov::element::f32) {
    std::memcpy(to, from, 4);
  } else if ((impl::same_dtype(dtype, impl::kBF16) && element == ov::element::bf16) ||
             (impl::same_dtype(dtype, impl::kF16) && element == ov::element::f16)) {
    std::memcpy(to, from, 2);
  } else if (impl::same_dtype(dtype, impl::kBF16) && element == ov::element::f32) {
    std::uint16_t bits;
    std::memcpy(&bits, from, sizeof bits);
    const std::uint32_t widened = static_cast<std::uint32_t>(bits) << 16;  // bf16 is the top half of an f32
    std::memcpy(to, &widened, sizeof widened);
  } else {
    impl::invalid("mask: a " + impl::dtype_string(dtype) + " bias cannot be handed to a " + element.get_type_name() +
                  " graph");
  }
}

/// The mask the adapter hands OpenVINO, [mask_batch, mask_heads, Lq, Lk] in compact order: the
/// suite's mask (keys past its Lkm masked, per backend.h) combined with every structural clause.
/// Boolean: 1 = attend. Additive: the suite's bias where allowed (write_bias), -inf where not.
std::vector<unsigned char> build_mask(const attncheck_problem& p, const Plan& plan, const TensorArg& suite_mask,
                                      const std::vector<std::int64_t>& key_lengths, ov::element::Type element) {
  const std::size_t bytes = plan.mask == 1 ? 1 : element.size();
  std::vector<unsigned char> mask(
      static_cast<std::size_t>(plan.mask_batch * plan.mask_heads * p.q_len * p.k_len) * bytes);
  std::size_t n = 0;
  for (std::int64_t b = 0; b < plan.mask_batch; ++b)
    for (std::int64_t h = 0; h < plan.mask_heads; ++h)
      for (std::int64_t i = 0; i < p.q_len; ++i)
        for (std::int64_t j = 0; j < p.k_len; ++j, ++n) {
          unsigned char* to = mask.data() + n * bytes;
          // With mask_batch = 1 no structural clause depends on the batch (plan_for), so batch 0
          // stands for all.
          bool allowed = structurally_allowed(p, key_lengths, b, i, j);
          const unsigned char* bias = nullptr;
          if (p.mask_kind != kAttncheckMaskNone) {
            if (j >= p.mask_shape[3]) {
              allowed = false;  // a short mask masks the keys it does not reach
            } else {
              const std::int64_t mb = p.mask_shape[0] == 1 ? 0 : b;
              const std::int64_t mi = p.mask_shape[2] == 1 ? 0 : i;
              const unsigned char* at =
                  reinterpret_cast<const unsigned char*>(suite_mask.data) +
                  static_cast<std::ptrdiff_t>(element_bytes(suite_mask.dtype)) *
                      (mb * suite_mask.strides[0] + h * suite_mask.strides[1] + mi * suite_mask.strides[2] +
                       j * suite_mask.strides[3]);
              if (p.mask_kind == kAttncheckMaskBoolean) {
                allowed = allowed && *at != 0;
              } else {
                bias = at;
                allowed = allowed && !is_negative_infinity(at, suite_mask.dtype);
              }
            }
          }
          if (plan.mask == 1) {
            *to = allowed ? 1 : 0;
          } else if (!allowed) {
            write_negative_infinity(to, element);
          } else if (bias != nullptr) {
            write_bias(to, element, bias, suite_mask.dtype);
          } else {
            std::memset(to, 0, bytes);  // +0 in f32, f16 and bf16
          }
        }
  return mask;
}

/// The message of an OpenVINO exception (its "Exception from <file>:<line>" chain), trailing
/// newlines dropped so that it fits the one-line skip and error reports.
std::string library_message(const std::exception& e) {
  std::string text = e.what();
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

class OpenvinoSdpa final : public impl::BackendImpl {
 public:
  explicit OpenvinoSdpa(Configuration configuration) : configuration_(configuration) {
    try {
      // What the plugin will choose for a model compiled without the hint: the device's own
      // default of INFERENCE_PRECISION_HINT (bf16 on CPUs with AVX512_BF16 or AMX, f32 otherwise;
      // docs.openvino.ai, "CPU Device", Supported Model Precision / bf16 inference).
      chosen_precision_ = configuration == Configuration::F32
                              ? ov::element::f32
                              : core_.get_property("CPU", ov::hint::inference_precision);
    } catch (const ov::Exception& e) {
      throw impl::AbiError(kAttncheckInternalError, "OpenVINO CPU plugin did not load: " + library_message(e));
    }
  }

  attncheck_numerics_profile profile(DLDataType input) const override { return profile_for(input, nullptr); }

  bool has_problem_profiles() const override { return true; }
  attncheck_numerics_profile problem_profile(const attncheck_problem& problem, DLDataType input) const override {
    return profile_for(input, &problem);
  }

  void check_supported(const attncheck_problem& p, DLDataType input, DLDeviceType device) const override {
    impl::check_problem(p);
    check_input(input);
    if (device != kDLCPU) impl::unsupported("the OpenVINO CPU plugin reads host memory only");
    if (p.softcap > 0)
      impl::unsupported("ScaledDotProductAttention-13 has no softcap (its inputs are q, k, v, attn_mask, scale, sink)");
    check_scale(p, input);
    check_sinks(p, input);
  }

  /// Sinks only where the sink input's element type (the query's, by the specification) holds
  /// the suite's f32 logits exactly and the graph computes in f32: openvino-sdpa-f32 with f32
  /// inputs. A 16-bit graph would round each logit, a perturbation no profile field places, and
  /// under the default bf16 precision where the plugin converts the sink is not documented.
  std::uint32_t options() const override {
    return configuration_ == Configuration::F32 ? std::uint32_t{impl::kOptionSinks} : 0u;
  }

  void forward(const attncheck_problem& p, const attncheck_attention_tensors& t) override {
    impl::check_problem(p);
    check_input(t.q != nullptr ? t.q->dtype : impl::kF32);
    if (p.softcap > 0) impl::unsupported("ScaledDotProductAttention-13 has no softcap");
    const DLDataType in = t.q->dtype;
    check_scale(p, in);
    check_sinks(p, in);
    const attncheck_numerics_profile declared = profile_for(in, &p);
    const TensorArg q = check_cpu_tensor(t.q, "q", {p.batch, p.q_heads, p.q_len, p.qk_dim}, {"batch", "query heads", "query length", "head dim"}, {in});
    const TensorArg k = check_cpu_tensor(t.k, "k", {p.batch, p.kv_heads, p.k_len, p.qk_dim}, {"batch", "kv heads", "key length", "head dim"}, {in});
    const TensorArg v = check_cpu_tensor(t.v, "v", {p.batch, p.kv_heads, p.k_len, p.v_dim}, {"batch", "kv heads", "key length", "value dim"}, {in});
    const TensorArg out = check_cpu_tensor(t.out, "out", {p.batch, p.q_heads, p.q_len, p.v_dim}, {"batch", "query heads", "query length", "value dim"},
                                           {declared.output_dtype});
    TensorArg suite_mask;
    if (p.mask_kind != kAttncheckMaskNone) {
      const std::initializer_list<std::string_view> dims{"batch", "heads", "query length", "key length"};
      const std::initializer_list<std::int64_t> shape{p.mask_shape[0], p.mask_shape[1], p.mask_shape[2], p.mask_shape[3]};
      suite_mask = p.mask_kind == kAttncheckMaskBoolean
                       ? check_cpu_tensor(t.mask, "mask", shape, dims, {impl::kU8})
                       : check_cpu_tensor(t.mask, "mask", shape, dims, {mask_dtype(in)});
    } else if (t.mask != nullptr) {
      impl::invalid("mask: given, but problem.mask_kind is none");
    }
    const std::vector<std::int64_t> key_lengths = impl::checked_key_lengths(p, t.key_lengths);
    const std::vector<float> sinks = impl::checked_sinks(p, impl::sinks_of(t), kDLCPU);

    const ov::element::Type element = element_of(in);
    const Plan plan = plan_for(p);
    Graph& graph = graph_for(p, plan, element);

    const std::size_t bytes = element_bytes(in);
    CompactView qv = compact_input(q, bytes), kv = compact_input(k, bytes), vv = compact_input(v, bytes);
    std::vector<unsigned char> mask;
    if (plan.mask != 0) mask = build_mask(p, plan, suite_mask, key_lengths, element);
    std::vector<float> sink_rows;  // [B, Hq, Lq, 1], compact: row (b, h, i) holds sinks[h]
    if (!sinks.empty()) {
      sink_rows.reserve(static_cast<std::size_t>(p.batch * p.q_heads * p.q_len));
      for (std::int64_t b = 0; b < p.batch; ++b)
        for (std::int64_t h = 0; h < p.q_heads; ++h) sink_rows.insert(sink_rows.end(), static_cast<std::size_t>(p.q_len), sinks[static_cast<std::size_t>(h)]);
    }
    // The scale input has the query's element type (specification); the suite resolved it in
    // fp32 (numerics/README.md §1), exact in f32 graphs.
    std::array<unsigned char, 4> scale_bytes{};
    const float scale32 = static_cast<float>(p.scale);
    if (element == ov::element::f32) {
      std::memcpy(scale_bytes.data(), &scale32, sizeof scale32);
    } else if (element == ov::element::bf16) {
      const ov::bfloat16 narrowed(scale32);
      std::memcpy(scale_bytes.data(), &narrowed, sizeof narrowed);
    } else {
      const ov::float16 narrowed(scale32);
      std::memcpy(scale_bytes.data(), &narrowed, sizeof narrowed);
    }

    const bool out_compact = is_compact(out);
    std::vector<unsigned char> out_copy;
    void* out_data = const_cast<char*>(out.data);
    const DLDataType out_dtype = declared.output_dtype;
    if (!out_compact) {
      out_copy.resize(static_cast<std::size_t>(p.batch * p.q_heads * p.q_len * p.v_dim) * element_bytes(out_dtype));
      out_data = out_copy.data();
    }
    try {
      ov::InferRequest& request = graph.request;
      std::size_t port = 0;
      request.set_input_tensor(port++, ov::Tensor(element, graph.q_shape, qv.data));
      request.set_input_tensor(port++, ov::Tensor(element, graph.k_shape, kv.data));
      request.set_input_tensor(port++, ov::Tensor(element, graph.v_shape, vv.data));
      if (plan.mask != 0)
        request.set_input_tensor(port++, ov::Tensor(plan.mask == 1 ? ov::element::boolean : element, graph.mask_shape, mask.data()));
      request.set_input_tensor(port++, ov::Tensor(element, ov::Shape{}, scale_bytes.data()));
      if (!sink_rows.empty()) request.set_input_tensor(port++, ov::Tensor(ov::element::f32, graph.sink_shape, sink_rows.data()));
      if (impl::same_dtype(out_dtype, in)) {
        request.set_output_tensor(0, ov::Tensor(element, graph.out_shape, out_data));
        request.infer();
      } else {
        request.infer();
        write_narrowed_output(request.get_output_tensor(0), out_dtype, out_data);
      }
    } catch (const ov::Exception& e) {
      throw impl::AbiError(kAttncheckInternalError, "OpenVINO inference failed: " + library_message(e));
    }
    if (!out_compact) copy_strided(out, element_bytes(out_dtype), out_copy.data(), false);
  }

  /// The inference precision the compiled graphs run at (ov::hint::inference_precision as the
  /// compiled model reports it), for `list` and the README.
  ov::element::Type chosen_precision() const { return chosen_precision_; }

 private:
  void check_input(DLDataType input) const {
    (void)element_of(input);
    if (configuration_ == Configuration::PluginDefault && chosen_precision_ == ov::element::bf16 &&
        !impl::same_dtype(input, impl::kF32) && !impl::same_dtype(input, impl::kBF16))
      impl::unsupported("under the default bf16 inference precision an " + impl::dtype_string(input) +
                        " graph would be run in bf16 with a conversion the profile cannot place; openvino-sdpa-f32 covers it");
  }

  /// The scale input has the query's element type (ScaledDotProductAttention-13 specification:
  /// "scale: a floating-point type scalar" of the same type as query), so a 16-bit graph would
  /// round the suite's fp32 scale to f16 or bf16: a perturbation of every logit that no profile
  /// field places. Problems whose scale is not exactly such a value are declined.
  static void check_scale(const attncheck_problem& p, DLDataType input) {
    const float scale32 = static_cast<float>(p.scale);
    float narrowed = scale32;
    if (impl::same_dtype(input, impl::kBF16)) narrowed = static_cast<float>(ov::bfloat16(scale32));
    if (impl::same_dtype(input, impl::kF16)) narrowed = static_cast<float>(ov::float16(scale32));
    if (narrowed != scale32)
      impl::unsupported("the scale input of ScaledDotProductAttention-13 has the query's element type, and scale " +
                        std::to_string(scale32) + " is not exactly a " + impl::dtype_string(input) + " value");
  }

  void check_sinks(const attncheck_problem& p, DLDataType input) const {
    if (!impl::has_sinks(p)) return;
    if (configuration_ != Configuration::F32)
      impl::unsupported("sinks: under the plugin's default precision the conversion of the sink input is not documented; openvino-sdpa-f32 takes them");
    if (!impl::same_dtype(input, impl::kF32))
      impl::unsupported("sinks: the sink input has the query's element type, so a " + impl::dtype_string(input) +
                        " graph would round the suite's f32 logits");
  }

  /// The dtype the suite must hand an additive mask in (the profile's mask_dtype, or the input's).
  DLDataType mask_dtype(DLDataType input) const {
    const attncheck_numerics_profile pr = profile_for(input, nullptr);
    const bool declared = pr.mask_dtype.bits != 0;
    return declared ? pr.mask_dtype : input;
  }

  /// Copies the f32 output tensor of a bf16-run graph into out as bf16: the graph's last stage
  /// stored bf16 values (declared output_dtype), so this conversion is exact.
  static void write_narrowed_output(const ov::Tensor& result, DLDataType out_dtype, void* out) {
    if (result.get_element_type() != ov::element::f32 || !impl::same_dtype(out_dtype, impl::kBF16))
      impl::invalid("output conversion from " + result.get_element_type().get_type_name() + " to " +
                    impl::dtype_string(out_dtype) + " is not implemented");
    const float* from = result.data<const float>();
    auto* to = static_cast<std::uint16_t*>(out);
    for (std::size_t n = 0; n < result.get_size(); ++n) {
      std::uint32_t bits;
      std::memcpy(&bits, &from[n], sizeof bits);
      // Round to nearest even: exact when the value already is a bf16 value, as declared.
      const std::uint32_t rounding = 0x7FFFu + ((bits >> 16) & 1u);
      to[n] = (bits & 0x7F800000u) == 0x7F800000u ? static_cast<std::uint16_t>((bits >> 16) | ((bits & 0xFFFFu) ? 0x40u : 0u))
                                                  : static_cast<std::uint16_t>((bits + rounding) >> 16);
    }
  }

  attncheck_numerics_profile profile_for(DLDataType input, const attncheck_problem* problem) const;

  Graph& graph_for(const attncheck_problem& p, const Plan& plan, ov::element::Type element) {
    GraphKey key;
    key.element = static_cast<int>(ov::element::Type_t(element));
    key.batch = p.batch;
    key.q_heads = p.q_heads;
    key.kv_heads = p.kv_heads;
    key.q_len = p.q_len;
    key.k_len = p.k_len;
    key.qk_dim = p.qk_dim;
    key.v_dim = p.v_dim;
    key.native_causal = plan.native_causal;
    key.mask = plan.mask;
    key.mask_batch = plan.mask_batch;
    key.mask_heads = plan.mask_heads;
    key.sink = impl::has_sinks(p);
    if (auto found = graphs_.find(key); found != graphs_.end()) return found->second;
    // A quick run meets a few hundred shapes; compiled graphs hold their own buffers, so the
    // cache is bounded rather than kept for the life of the backend.
    if (graphs_.size() >= kMaxGraphs) graphs_.clear();
    Graph graph;
    graph.q_shape = query_like(p, p.q_heads, p.q_len, p.qk_dim, false);
    graph.k_shape = query_like(p, p.kv_heads, p.k_len, p.qk_dim, true);
    graph.v_shape = query_like(p, p.kv_heads, p.k_len, p.v_dim, true);
    graph.out_shape = query_like(p, p.q_heads, p.q_len, p.v_dim, false);
    if (plan.mask != 0) graph.mask_shape = mask_shape_for(p, plan);
    if (key.sink) {
      graph.sink_shape = graph.q_shape;
      graph.sink_shape.back() = 1;
    }
    try {
      auto q = std::make_shared<ov::op::v0::Parameter>(element, graph.q_shape);
      auto k = std::make_shared<ov::op::v0::Parameter>(element, graph.k_shape);
      auto v = std::make_shared<ov::op::v0::Parameter>(element, graph.v_shape);
      ov::ParameterVector parameters{q, k, v};
      std::shared_ptr<ov::Node> mask;
      if (plan.mask != 0) {
        auto m = std::make_shared<ov::op::v0::Parameter>(plan.mask == 1 ? ov::element::boolean : element, graph.mask_shape);
        parameters.push_back(m);
        mask = m;
      } else {
        // No mask but an explicit scale: the specification's "scalar float type zero value" mask.
        mask = ov::op::v0::Constant::create(element, ov::Shape{}, {0.0f});
      }
      auto scale = std::make_shared<ov::op::v0::Parameter>(element, ov::Shape{});
      parameters.push_back(scale);
      std::shared_ptr<ov::op::v13::ScaledDotProductAttention> sdpa;
      if (key.sink) {
        auto sink = std::make_shared<ov::op::v0::Parameter>(ov::element::f32, graph.sink_shape);
        parameters.push_back(sink);
        sdpa = std::make_shared<ov::op::v13::ScaledDotProductAttention>(q, k, v, mask, scale, sink, plan.native_causal);
      } else {
        sdpa = std::make_shared<ov::op::v13::ScaledDotProductAttention>(q, k, v, mask, scale, plan.native_causal);
      }
      auto model = std::make_shared<ov::Model>(ov::OutputVector{sdpa}, parameters, "attncheck_sdpa");
      graph.compiled = configuration_ == Configuration::F32
                           ? core_.compile_model(model, "CPU", ov::hint::inference_precision(ov::element::f32))
                           : core_.compile_model(model, "CPU");
      graph.request = graph.compiled.create_infer_request();
      // The profile was written for chosen_precision_; a compiled model that reports another
      // precision would be checked against the wrong declaration.
      const ov::element::Type compiled_precision = graph.compiled.get_property(ov::hint::inference_precision);
      if (compiled_precision != chosen_precision_)
        throw impl::AbiError(kAttncheckInternalError, "OpenVINO compiled the graph at inference precision " +
                                                          compiled_precision.get_type_name() + ", but the profile declares " +
                                                          chosen_precision_.get_type_name());
    } catch (const ov::Exception& e) {
      // Shape inference or the plugin refused the graph: the library does not take this problem.
      impl::unsupported("OpenVINO refused the graph: " + library_message(e));
    }
    return graphs_.emplace(key, std::move(graph)).first->second;
  }

  static constexpr std::size_t kMaxGraphs = 64;
  Configuration configuration_;
  ov::Core core_;
  ov::element::Type chosen_precision_ = ov::element::f32;
  std::map<GraphKey, Graph> graphs_;
};

attncheck_numerics_profile OpenvinoSdpa::profile_for(DLDataType input, const attncheck_problem* problem) const {
  (void)element_of(input);
  (void)problem;
  // The CPU plugin's SDPA node (src/plugins/intel_cpu/src/nodes/scaled_attn.cpp, MHAKernel) is
  // three passes per block of query rows: Q·Kᵀ as one GEMM into an fp32 score buffer (MLAS sgemm
  // for f32, oneDNN brgemm with fp32 accumulation for bf16/f16), then attn_softmax over the whole
  // row (kernels/scaled_attn/softmax.hpp: scale, mask, max, exp, sum in fp32, P written in the
  // compute precision), then P·V as a second GEMM with an fp32 accumulator; xf16 results are
  // converted from that fp32 buffer to the compute precision at the end (attn_memcpy2d_kernel).
  const bool bf16_compute = configuration_ == Configuration::PluginDefault && chosen_precision_ == ov::element::bf16;
  attncheck_numerics_profile pr{};
  pr.input_dtype = input;
  pr.score_dtype = impl::kF32;
  // P is stored in the compute precision for the second GEMM: fp32 in an f32 graph, the input's
  // 16-bit type in an f16/bf16 one (the f32 hint converts those to f32 first), bf16 under bf16
  // inference precision.
  pr.probability_dtype = bf16_compute ? impl::kBF16 : impl::kF32;
  pr.accumulator_dtype = impl::kF32;
  // The result leaves the node in the compute precision: under bf16 inference that is bf16, and
  // the f32 Result only widens it, so the declared output stage is bf16 (the adapter writes it
  // into a bf16 out, exactly). Otherwise the graph's output has the input's type.
  pr.output_dtype = bf16_compute ? impl::kBF16 : input;
  if (bf16_compute && !impl::same_dtype(input, impl::kBF16)) {
    // An f32 graph run at bf16 precision: the plugin converts each input to bf16 first
    // (docs.openvino.ai, "Precision Control": inference precision is independent of the model's
    // element types), the additive mask included.
    pr.query_rounding = impl::kBF16;
    pr.key_rounding = impl::kBF16;
    pr.value_rounding = impl::kBF16;
    pr.mask_dtype = impl::kBF16;
  }
  pr.accumulation_rounding = kAttncheckRoundNearest;
  // GEMM microkernels sum each product into an fp32 FMA accumulator: one rounding per product,
  // in an order the summation bound does not depend on.
  pr.products_per_rounding = 1;
  pr.softmax_block = 0;  // the whole row's scores exist before the max is taken
  // Threads split (batch, head, query block) only (parallel_for2d / parallel_nt_static over
  // B, H, m_blocks in scaled_attn.cpp): no sum is split across threads.
  pr.deterministic = 1;
  pr.empty_row = kAttncheckEmptyRowNaN;
  // bf16 values are made by VCVTNEPS2BF16 on AVX512_BF16 CPUs (the plugin's cvt helpers and the
  // brgemm packing), which treats subnormal inputs as zero and flushes subnormal results
  // whatever MXCSR says (Intel SDM, VCVTNEPS2BF16, "Operation": DAZ and FTZ always). Where P or
  // the output is bf16, subnormal values therefore become zero. The f32 and f16 stages keep the
  // MXCSR default (the plugin's denormals_optimization is off unless set).
  pr.flushes_subnormals = bf16_compute || impl::same_dtype(input, impl::kBF16) ? 1 : 0;
  pr.accepts_strides = 1;  // compact tensors are handed over as they are, others copied (above)
  pr.writes_lse = 0;       // the operation has one output, the attention
  // attn_softmax's exp is a JIT polynomial (jit_exp in the plugin's eltwise emitters) whose error
  // bound is not documented: the suite's default allowance (2^-22) is declared.
  pr.exp_relative_error = 0;
  pr.tanh_relative_error = 0;
  pr.empty_row_lse = kAttncheckEmptyRowLseUnspecified;
  // Both GEMMs run over every key and masked scores only become weight 0 (scaled_attn.cpp), so a
  // NaN or Inf stored at a masked key reaches the result through 0·Inf.
  pr.masked_keys_weighted_by_zero = 1;
  return pr;
}

}  // namespace
}  // namespace attncheck::openvino_sdpa

namespace attncheck::openvino_sdpa {
namespace {
/// The table of one configuration; its description names the inference precision the plugin
/// reports, so `attncheck list` shows what this machine runs. NULL if OpenVINO does not load.
attncheck_backend* make_table(const char* name, const char* what, Configuration configuration) noexcept {
  try {
    auto backend = std::make_unique<OpenvinoSdpa>(configuration);
    const std::string description = std::string("OpenVINO 2026.4.1 ScaledDotProductAttention-13, CPU plugin, ") + what +
                                    " (inference precision " + backend->chosen_precision().get_type_name() + ")";
    return impl::make_backend_table(std::move(backend), name, description.c_str());
  } catch (...) {
    return nullptr;
  }
}
}  // namespace
}  // namespace attncheck::openvino_sdpa

extern "C" attncheck_backend* attncheck_openvino_sdpa_entry(void) {
  using namespace attncheck::openvino_sdpa;
  return make_table("openvino-sdpa", "default configuration", Configuration::PluginDefault);
}

extern "C" attncheck_backend* attncheck_openvino_sdpa_f32_entry(void) {
  using namespace attncheck::openvino_sdpa;
  return make_table("openvino-sdpa-f32", "ov::hint::inference_precision(f32)", Configuration::F32);
}
