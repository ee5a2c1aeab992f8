#include "backward_grid.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <memory>
#include <optional>
#include <vector>

#include "attncheck/backend_handle.h"
#include "attncheck/backward.h"
#include "attncheck/memory_domain.h"
#include "attncheck/reference.h"

namespace attncheck::cuda::testing {
namespace {

// Interim: the backward call made directly through the table, with compact tensors in the
// backend's memory domain, until the harness's run_backend_backward and make_backward_data
// replace it (they add the guards, NaN pre-fill, fingerprints and layouts).
struct DomainTensor {
  MemoryDomain* domain = nullptr;
  DType dtype = DType::F32;
  Shape4 shape{};
  int ndim = 4;
  std::int64_t shape_abi[4]{}, strides_abi[4]{};
  std::vector<std::byte> staging;
  void* memory = nullptr;
  DLTensor tensor{};

  DomainTensor(MemoryDomain& d, DType type, const Shape4& s, int dims) : domain(&d), dtype(type), shape(s), ndim(dims) {
    const std::int64_t n = element_count(s);
    staging.assign(static_cast<std::size_t>(n * dtype_bytes(type)), std::byte{0xff});  // NaN in every dtype
    memory = d.allocate(staging.size());
    const int offset = 4 - dims;  // an [1, B, H, L] tensor handed as [B, H, L]
    const Shape4 strides = compact_strides(s);
    for (int i = 0; i < dims; ++i) {
      shape_abi[i] = s[static_cast<std::size_t>(i + offset)];
      strides_abi[i] = strides[static_cast<std::size_t>(i + offset)];
    }
    tensor.data = memory;
    tensor.device = d.device();
    tensor.ndim = dims;
    tensor.dtype = to_dlpack(type);
    tensor.shape = shape_abi;
    tensor.strides = strides_abi;
  }
  DomainTensor(const DomainTensor&) = delete;
  DomainTensor& operator=(const DomainTensor&) = delete;
  ~DomainTensor() { domain->release(memory); }

  void write(const HostTensor& values) {
    for (std::size_t i = 0; i < values.values.size(); ++i)
      encode_value(dtype, values.values[i], staging.data() + i * static_cast<std::size_t>(dtype_bytes(dtype)));
    domain->copy_in(memory, staging.data(), staging.size());
  }
  void write_lengths(const std::vector<std::int64_t>& lengths) {
    std::copy_n(reinterpret_cast<const std::byte*>(lengths.data()), staging.size(), staging.begin());
    domain->copy_in(memory, staging.data(), staging.size());
  }
  void upload() { domain->copy_in(memory, staging.data(), staging.size()); }
  HostTensor read() {
    domain->copy_out(staging.data(), memory, staging.size());
    HostTensor t(shape);
    for (std::size_t i = 0; i < t.values.size(); ++i)
      t.values[i] = decode_value(dtype, staging.data() + i * static_cast<std::size_t>(dtype_bytes(dtype)));
    return t;
  }
};

HostTensor rounded(const HostTensor& t, DType dtype) {
  HostTensor r = t;
  for (double& x : r.values) x = round_to(dtype, x);
  return r;
}

HostTensor normal_tensor(const Shape4& shape, DType dtype, PortableRandom& random) {
  HostTensor t(shape);
  for (double& x : t.values) x = round_to(dtype, random.normal());
  return t;
}

// max |actual − reference| / max |reference| over the tensor: the interim report (no bound yet).
double relative_error(const HostTensor& actual, const HostTensor& reference) {
  double error = 0, magnitude = 0;
  for (std::size_t i = 0; i < reference.values.size(); ++i) {
    if (!std::isfinite(reference.values[i])) continue;
    error = std::max(error, std::abs(actual.values[i] - reference.values[i]));
    magnitude = std::max(magnitude, std::abs(reference.values[i]));
  }
  return magnitude == 0 ? error : error / magnitude;
}

// Where the reference's gradient is exactly 0 (a key no row may see, a row with no allowed key)
// or not finite, the kernel's must be the same.
void expect_same_zeros_and_non_finites(const char* name, const HostTensor& actual, const HostTensor& reference) {
  for (std::size_t i = 0; i < reference.values.size(); ++i) {
    const double r = reference.values[i], a = actual.values[i];
    if (r == 0.0) {
      ASSERT_EQ(a, 0.0) << name << " flat index " << i << ": the reference's gradient is exactly 0";
    } else if (std::isnan(r)) {
      ASSERT_TRUE(std::isnan(a)) << name << " flat index " << i << ": the reference's gradient is NaN, got " << a;
    } else {
      ASSERT_TRUE(std::isfinite(a)) << name << " flat index " << i << ": " << a << ", the reference's is " << r;
    }
  }
}

}  // namespace

void expect_gradients_conform(const std::string& name, const GridCase& g, bool with_d_lse) {
  Backend backend = open_backend(name);
  const Problem& problem = g.c.problem;
  const DType dtype = g.c.dtype;
  if (const std::optional<std::string> reason = backend.unsupported_reason(problem, dtype)) GTEST_SKIP() << *reason;
  const std::optional<BackwardProfile> backward_profile = backend.backward_profile(problem, dtype);
  ASSERT_TRUE(backward_profile.has_value()) << name << " takes the forward but declares no backward profile";
  const DType gradient = backward_profile->gradient_dtype(dtype);

  const CaseData data = g.data();
  const AttentionInputs inputs = data.inputs(problem);
  const AttentionResult reference = reference_attention(problem, inputs);
  PortableRandom random(g.c.seed ^ 0x6261636b77617264ull);  // "backward": a stream apart from the inputs'
  const HostTensor d_out = normal_tensor(reference.out.shape, dtype, random);
  const std::optional<HostTensor> d_lse =
      with_d_lse ? std::optional(normal_tensor(reference.lse.shape, DType::F32, random)) : std::nullopt;
  const BackwardInputs exact = backward_inputs(reference, d_out.view(), d_lse ? d_lse->view() : View4<const double>{});
  BackwardOptions options;
  options.bias_gradient = false;
  const AttentionGradients expected = reference_attention_backward(problem, inputs, exact, options);

  std::unique_ptr<MemoryDomain> domain = make_memory_domain(backend.device());
  const Shape4 q_shape{problem.batch, problem.q_heads, problem.q_len, problem.qk_dim};
  const Shape4 k_shape{problem.batch, problem.kv_heads, problem.k_len, problem.qk_dim};
  const Shape4 v_shape{problem.batch, problem.kv_heads, problem.k_len, problem.v_dim};
  DomainTensor q(*domain, dtype, q_shape, 4), k(*domain, dtype, k_shape, 4), v(*domain, dtype, v_shape, 4);
  DomainTensor out(*domain, dtype, reference.out.shape, 4), d_out_t(*domain, dtype, reference.out.shape, 4);
  DomainTensor lse(*domain, DType::F32, reference.lse.shape, 3);
  DomainTensor dq(*domain, gradient, q_shape, 4), dk(*domain, gradient, k_shape, 4), dv(*domain, gradient, v_shape, 4);
  q.write(data.q);
  k.write(data.k);
  v.write(data.v);
  out.write(rounded(reference.out, dtype));
  lse.write(rounded(reference.lse, DType::F32));
  d_out_t.write(d_out);
  dq.upload();
  dk.upload();
  dv.upload();
  std::optional<DomainTensor> mask, lengths, d_lse_t;
  if (problem.mask != MaskKind::None) {
    mask.emplace(*domain, problem.mask == MaskKind::Boolean ? DType::F32 : dtype, data.mask.shape, 4);
    if (problem.mask == MaskKind::Boolean) {
      mask->tensor.dtype = {kDLUInt, 8, 1};
      mask->staging.resize(data.mask.values.size());
      for (std::size_t i = 0; i < data.mask.values.size(); ++i)
        mask->staging[i] = std::byte{static_cast<unsigned char>(data.mask.values[i] != 0 ? 1 : 0)};
      mask->upload();
    } else {
      mask->write(data.mask);
    }
  }
  if (problem.has_key_lengths) {
    lengths.emplace(*domain, DType::F64, Shape4{1, 1, 1, problem.batch}, 1);  // 8 bytes per element
    lengths->tensor.dtype = {kDLInt, 64, 1};
    lengths->write_lengths(data.key_lengths);
  }
  if (d_lse) {
    d_lse_t.emplace(*domain, DType::F32, d_lse->shape, 3);
    d_lse_t->write(*d_lse);
  }

  attncheck_backward_tensors tensors{};
  tensors.struct_size = sizeof tensors;
  tensors.stream = domain->stream();
  tensors.q = &q.tensor;
  tensors.k = &k.tensor;
  tensors.v = &v.tensor;
  tensors.mask = mask ? &mask->tensor : nullptr;
  tensors.key_lengths = lengths ? &lengths->tensor : nullptr;
  tensors.out = &out.tensor;
  tensors.lse = &lse.tensor;
  tensors.dout = &d_out_t.tensor;
  tensors.dlse = d_lse_t ? &d_lse_t->tensor : nullptr;
  tensors.dq = &dq.tensor;
  tensors.dk = &dk.tensor;
  tensors.dv = &dv.tensor;
  domain->enter_call();
  try {
    backend.backward(problem, tensors);
  } catch (...) {
    domain->leave_call();
    throw;
  }
  domain->leave_call();
  const std::optional<std::string> fault = domain->synchronize();
  ASSERT_FALSE(fault.has_value()) << *fault;

  const HostTensor got_q = dq.read(), got_k = dk.read(), got_v = dv.read();
  expect_same_zeros_and_non_finites("dQ", got_q, expected.d_q);
  expect_same_zeros_and_non_finites("dK", got_k, expected.d_k);
  expect_same_zeros_and_non_finites("dV", got_v, expected.d_v);
  std::printf("%s %s: max relative error dQ %.3g dK %.3g dV %.3g\n", name.c_str(), g.name.c_str(),
              relative_error(got_q, expected.d_q), relative_error(got_k, expected.d_k),
              relative_error(got_v, expected.d_v));
}

}  // namespace attncheck::cuda::testing
