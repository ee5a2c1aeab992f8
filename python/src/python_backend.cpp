#include "python_backend.h"

#include <nanobind/stl/string.h>

#include <fmt/format.h>

#include <optional>
#include <utility>

#include "attncheck/numerics_profile.h"
#include "attncheck/problem.h"
#include "module_types.h"

namespace attncheck::python {

PyObject* unsupported_error = nullptr;
PyObject* invalid_problem_error = nullptr;

CallTensor::CallTensor(std::string tensor_name, const DLTensor& from, bool is_output)
    : name(std::move(tensor_name)), tensor(from), writable(is_output), original(&from) {
  // DLPack consumers differ in how they treat byte_offset and NULL strides; folding the offset
  // into the pointer and writing the strides out gives every consumer the same view.
  tensor.data = static_cast<char*>(from.data) + from.byte_offset;
  tensor.byte_offset = 0;
  std::int64_t compact = 1;
  for (int d = from.ndim - 1; d >= 0; --d) {
    shape[d] = from.shape[d];
    strides[d] = from.strides != nullptr ? from.strides[d] : compact;
    compact *= from.shape[d];
  }
  tensor.shape = shape.data();
  tensor.strides = strides.data();
}

void CallTensor::check_alive() const {
  if (!alive)
    throw nb::value_error(
        fmt::format("tensor '{}' was used after its forward call returned: the suite's buffers live only "
                    "for the duration of the call (copy what you need to keep)",
                    name)
            .c_str());
}

std::string exception_line(const nb::python_error& error) {
  try {
    nb::object format = nb::module_::import_("traceback").attr("format_exception_only");
    nb::object lines = format(error.type(), error.value());
    std::string last;
    for (nb::handle line : lines) last = nb::cast<std::string>(line);
    while (!last.empty() && (last.back() == '\n' || last.back() == ' ')) last.pop_back();
    if (!last.empty()) return last;
  } catch (const std::exception&) {
  }
  return error.what();
}

void rethrow_as_abi_error(const nb::python_error& error, const std::string& what) {
  if (unsupported_error != nullptr && error.matches(unsupported_error))
    impl::unsupported(nb::cast<std::string>(nb::str(error.value())));
  if (invalid_problem_error != nullptr && error.matches(invalid_problem_error))
    impl::invalid(nb::cast<std::string>(nb::str(error.value())));
  throw impl::AbiError(kAttncheckInternalError, fmt::format("{} raised {}", what, exception_line(error)));
}

namespace {

std::string dtype_argument(DLDataType input) {
  const auto dtype = from_dlpack(input);
  if (!dtype) impl::unsupported(fmt::format("{} inputs are not supported", impl::dtype_string(input)));
  return std::string(dtype_name(*dtype));
}

// Invalidates every tensor handed to one call when the call ends, however it ends.
class CallTensors {
 public:
  nb::object add(const char* name, const DLTensor* tensor, bool is_output) {
    if (tensor == nullptr) return nb::none();
    nb::object object = nb::cast(CallTensor(name, *tensor, is_output), nb::rv_policy::move);
    made_.push_back(object);
    return object;
  }
  ~CallTensors() {
    for (nb::handle object : made_) nb::cast<CallTensor&>(object).alive = false;
  }

 private:
  std::vector<nb::object> made_;
};

// The option names a Python backend may declare in its `options` (python/README.md), as the
// table's problem_options bits.
std::uint32_t declared_options(const nb::object& backend) {
  if (!nb::hasattr(backend, "options")) return 0;
  std::uint32_t bits = 0;
  for (nb::handle item : backend.attr("options")) {
    const std::string name = nb::cast<std::string>(nb::str(item));
    if (name == "alibi") bits |= impl::kOptionAlibi;
    else if (name == "sinks") bits |= impl::kOptionSinks;
    else if (name == "paged") bits |= impl::kOptionPagedKv;
    else if (name == "varlen") bits |= impl::kOptionVarlen;
    else if (name == "fp8") bits |= impl::kOptionFp8;
    else
      throw nb::value_error(
          fmt::format("options: '{}' is not one of alibi, sinks, paged, varlen, fp8 (the ABI's optional problem options)", name)
              .c_str());
  }
  return bits;
}

void check_attention_tensors(const attncheck_problem& p, const attncheck_attention_tensors& t) {
  using impl::check_cpu_tensor;
  using impl::kBF16;
  using impl::kF16;
  using impl::kF32;
  impl::check_problem(p);
  // fp8 inputs come with descales (ABI 2.6): q, k, v hold e4m3fn or e5m2 codes; the factors are
  // checked as the C++ backends check them.
  const bool fp8 = impl::descale_of(p) != kAttncheckDescaleNone;
  if (fp8) (void)impl::checked_descales(p, t, kDLCPU);
  // (An initializer_list picked by a conditional would outlive its array: two spelled-out lists.)
  auto check_q = [&](std::initializer_list<std::int64_t> shape, std::initializer_list<std::string_view> dims) {
    return fp8 ? check_cpu_tensor(t.q, "q", shape, dims, {impl::kE4M3, impl::kE5M2})
               : check_cpu_tensor(t.q, "q", shape, dims, {kF32, kF16, kBF16});
  };
  // The inference options' tensors, checked as the C++ backends check them (backend_impl.h).
  (void)impl::checked_alibi_slopes(p, impl::alibi_slopes_of(t), kDLCPU);
  (void)impl::checked_sinks(p, impl::sinks_of(t), kDLCPU);
  if (impl::is_varlen(p)) {
    const impl::VarlenArgs va = impl::check_varlen(p, t, kDLCPU);
    const impl::TensorArg q = check_q({va.total_q, p.q_heads, p.qk_dim}, {"query tokens", "query heads", "head dim"});
    check_cpu_tensor(t.k, "k", {va.total_k, p.kv_heads, p.qk_dim}, {"key tokens", "kv heads", "head dim"}, {q.dtype});
    check_cpu_tensor(t.v, "v", {va.total_k, p.kv_heads, p.v_dim}, {"key tokens", "kv heads", "value dim"}, {q.dtype});
    check_cpu_tensor(t.out, "out", {va.total_q, p.q_heads, p.v_dim}, {"query tokens", "query heads", "value dim"},
                     {kF32, kF16, kBF16});
    if (t.lse != nullptr) check_cpu_tensor(t.lse, "lse", {p.q_heads, va.total_q}, {"query heads", "query tokens"}, {kF32});
    (void)impl::checked_cu_seqlens(p, va.cu_q, "cu_seqlens_q", p.q_len, va.total_q);
    (void)impl::checked_cu_seqlens(p, va.cu_k, "cu_seqlens_k", p.k_len, va.total_k);
    return;
  }
  const impl::TensorArg q = check_q({p.batch, p.q_heads, p.q_len, p.qk_dim}, {"batch", "query heads", "query length", "head dim"});
  if (impl::is_paged(p)) {
    impl::check_paged_kv(p, t.k, t.v, impl::block_table_of(t), {q.dtype}, kDLCPU);
  } else {
    check_cpu_tensor(t.k, "k", {p.batch, p.kv_heads, p.k_len, p.qk_dim}, {"batch", "kv heads", "key length", "head dim"}, {q.dtype});
    check_cpu_tensor(t.v, "v", {p.batch, p.kv_heads, p.k_len, p.v_dim}, {"batch", "kv heads", "key length", "value dim"}, {q.dtype});
  }
  check_cpu_tensor(t.out, "out", {p.batch, p.q_heads, p.q_len, p.v_dim}, {"batch", "query heads", "query length", "value dim"},
                   {kF32, kF16, kBF16});
  if (t.lse != nullptr)
    check_cpu_tensor(t.lse, "lse", {p.batch, p.q_heads, p.q_len}, {"batch", "query heads", "query length"}, {kF32});
  if (p.mask_kind != kAttncheckMaskNone) {
    const std::initializer_list<std::int64_t> shape = {p.mask_shape[0], p.mask_shape[1], p.mask_shape[2], p.mask_shape[3]};
    const std::initializer_list<std::string_view> dims = {"batch", "heads", "query length", "key length"};
    if (p.mask_kind == kAttncheckMaskBoolean)
      check_cpu_tensor(t.mask, "mask", shape, dims, {impl::kU8});
    else
      check_cpu_tensor(t.mask, "mask", shape, dims, {kF32, kF16, kBF16});
  }
  if (p.has_key_lengths) check_cpu_tensor(t.key_lengths, "key_lengths", {p.batch}, {"batch"}, {impl::kI64});
}

class PythonBackend final : public impl::BackendImpl {
 public:
  PythonBackend(nb::object backend, std::uint32_t options) : backend_(std::move(backend)), options_(options) {
    has_layer_ = nb::hasattr(backend_, "forward_layer");
    has_problem_profiles_ = nb::hasattr(backend_, "problem_profile");
  }

  // What the backend's `options` declares; the table declines every other option before
  // supports() runs (backend_impl.h), so a backend written before an option never sees it.
  std::uint32_t options() const override { return options_; }
  ~PythonBackend() override {
    nb::gil_scoped_acquire gil;
    backend_.reset();
  }

  attncheck_numerics_profile profile(DLDataType input) const override {
    const std::string dtype = dtype_argument(input);
    nb::gil_scoped_acquire gil;
    return checked_profile(call("profile", [&] { return backend_.attr("profile")(dtype); }), dtype, "profile()");
  }

  bool has_problem_profiles() const override { return has_problem_profiles_; }

  attncheck_numerics_profile problem_profile(const attncheck_problem& problem, DLDataType input) const override {
    const std::string dtype = dtype_argument(input);
    const Problem p = from_abi(problem);
    nb::gil_scoped_acquire gil;
    return checked_profile(call("problem_profile", [&] { return backend_.attr("problem_profile")(p, dtype); }), dtype,
                           "problem_profile()");
  }

  void check_supported(const attncheck_problem& problem, DLDataType input, DLDeviceType device) const override {
    impl::check_problem(problem);
    if (device != kDLCPU)
      impl::unsupported(fmt::format("a Python backend reads host memory, not {} memory", impl::device_string(device)));
    const std::string dtype = dtype_argument(input);
    const Problem p = from_abi(problem);
    nb::gil_scoped_acquire gil;
    nb::object reason = call("supports", [&] { return backend_.attr("supports")(p, dtype); });
    if (reason.is_none()) return;
    std::string text = nb::cast<std::string>(nb::str(reason));
    impl::unsupported(text.empty() ? "supports() declined without a reason" : text);
  }

  void forward(const attncheck_problem& problem, const attncheck_attention_tensors& tensors) override {
    check_attention_tensors(problem, tensors);
    const Problem p = from_abi(problem);
    nb::gil_scoped_acquire gil;
    AttentionTensorSet set;
    CallTensors made;
    set.q = made.add("q", tensors.q, false);
    set.k = made.add("k", tensors.k, false);
    set.v = made.add("v", tensors.v, false);
    set.mask = made.add("mask", tensors.mask, false);
    set.key_lengths = made.add("key_lengths", tensors.key_lengths, false);
    set.out = made.add("out", tensors.out, true);
    set.lse = made.add("lse", tensors.lse, true);
    set.alibi_slopes = made.add("alibi_slopes", impl::alibi_slopes_of(tensors), false);
    set.sinks = made.add("sinks", impl::sinks_of(tensors), false);
    set.block_table = made.add("block_table", impl::block_table_of(tensors), false);
    set.cu_seqlens_q = made.add("cu_seqlens_q", impl::cu_seqlens_q_of(tensors), false);
    set.cu_seqlens_k = made.add("cu_seqlens_k", impl::cu_seqlens_k_of(tensors), false);
    set.q_descale = made.add("q_descale", impl::q_descale_of(tensors), false);
    set.k_descale = made.add("k_descale", impl::k_descale_of(tensors), false);
    set.v_descale = made.add("v_descale", impl::v_descale_of(tensors), false);
    set.abi_problem = problem;
    set.abi_tensors = &tensors;
    nb::object set_object = nb::cast(std::move(set), nb::rv_policy::move);
    call("forward", [&] { return backend_.attr("forward")(p, set_object); });
    nb::cast<AttentionTensorSet&>(set_object).abi_tensors = nullptr;
  }

  bool has_layer() const override { return has_layer_; }

  void forward_layer(const attncheck_layer_problem& problem, const attncheck_layer_tensors& tensors) override {
    const attncheck_problem core = attncheck_layer_core(&problem);
    impl::check_problem(core);
    LayerProblem lp;
    lp.attention = from_abi(core);
    lp.model_dim = problem.model_dim;
    lp.self_attention = problem.self_attention != 0;
    lp.has_qkv_bias = problem.has_qkv_bias != 0;
    lp.has_out_bias = problem.has_out_bias != 0;
    nb::gil_scoped_acquire gil;
    LayerTensorSet set;
    CallTensors made;
    set.x = made.add("x", tensors.x, false);
    set.x_kv = made.add("x_kv", tensors.x_kv, false);
    set.w_q = made.add("w_q", tensors.w_q, false);
    set.w_k = made.add("w_k", tensors.w_k, false);
    set.w_v = made.add("w_v", tensors.w_v, false);
    set.b_q = made.add("b_q", tensors.b_q, false);
    set.b_k = made.add("b_k", tensors.b_k, false);
    set.b_v = made.add("b_v", tensors.b_v, false);
    set.w_o = made.add("w_o", tensors.w_o, false);
    set.b_o = made.add("b_o", tensors.b_o, false);
    set.mask = made.add("mask", tensors.mask, false);
    set.key_lengths = made.add("key_lengths", tensors.key_lengths, false);
    set.out = made.add("out", tensors.out, true);
    set.abi_problem = problem;
    set.abi_tensors = &tensors;
    nb::object set_object = nb::cast(std::move(set), nb::rv_policy::move);
    call("forward_layer", [&] { return backend_.attr("forward_layer")(lp, set_object); });
    nb::cast<LayerTensorSet&>(set_object).abi_tensors = nullptr;
  }

 private:
  template <class Body>
  static nb::object call(const char* method, Body&& body) {
    try {
      return body();
    } catch (nb::python_error& e) {
      rethrow_as_abi_error(e, fmt::format("{}()", method));
    } catch (const nb::cast_error& e) {
      impl::invalid(fmt::format("{}(): {}", method, e.what()));
    }
  }

  static attncheck_numerics_profile checked_profile(const nb::object& result, const std::string& dtype, const char* what) {
    if (result.is_none()) impl::unsupported(fmt::format("{} inputs are not supported", dtype));
    NumericsProfile profile;
    try {
      profile = nb::cast<NumericsProfile>(result);
    } catch (const nb::cast_error&) {
      impl::invalid(fmt::format("{} returned {}, expected an attncheck.Profile or None", what,
                                nb::cast<std::string>(nb::repr(result.type()))));
    }
    return to_abi(profile);
  }

  nb::object backend_;
  bool has_layer_ = false;
  bool has_problem_profiles_ = false;
  std::uint32_t options_ = 0;
};

}  // namespace

attncheck_backend* make_python_backend_table(nb::object backend, const std::string& name, const std::string& description) {
  // Read here, where a ValueError for an unknown option name reaches the caller (the table's
  // constructor swallows exceptions: it returns NULL across the C ABI).
  const std::uint32_t options = declared_options(backend);
  return impl::make_backend_table<PythonBackend>(name.c_str(), description.c_str(), std::move(backend), options);
}

}  // namespace attncheck::python
