#include "kernel_backend.h"

#include "flash_attention.cuh"  // host build: only for the shared-memory formula and dim limit
#include "naive_attention.cuh"

namespace attncheck::cuda {

std::size_t flash_kernel_shared_bytes(std::int64_t qk_dim, std::int64_t v_dim, int tile_rows, int tile_keys) {
  return flash_shared_bytes(qk_dim, v_dim, tile_rows, tile_keys);
}

int naive_kernel_max_head_dim() { return kNaiveMaxHeadDim; }

bool KernelBackend::profile(DLDataType input, attncheck_numerics_profile& profile) const {
  ProfileTraits traits;
  if (!element_type_of(input, traits.input)) return false;
  // The naive kernel is the fp32 baseline; the flash kernel reads all three input dtypes.
  if (config_.kind == KernelKind::Naive && traits.input != ElementType::F32) return false;
  traits.probability_rounded_to_input = false;  // P stays in fp32 registers / shared memory
  traits.accumulation = kAttncheckRoundNearest;  // CUDA-core fp32 FMA
  // Naive: the running max may move at every key, so each key is a rescale (block of 1).
  traits.softmax_block = config_.kind == KernelKind::Naive ? 1 : config_.tile_keys;
  traits.deterministic = true;  // fixed summation order, no atomics
  profile = make_profile(traits);
  return true;
}

std::string KernelBackend::unsupported_reason(const attncheck_problem& p, DLDataType input,
                                              DLDeviceType device) const {
  attncheck_numerics_profile ignored;
  if (!profile(input, ignored))
    return "inputs of dtype " + dtype_string(input) + " are not supported (" +
           (config_.kind == KernelKind::Naive ? "f32 only" : "f32, f16, bf16") + ")";
  if (device != config_.device)
    return std::string("tensors must be in ") + (config_.device == kDLCPU ? "host (kDLCPU)" : "CUDA (kDLCUDA)") +
           " memory";
  if (std::string why = unavailable_reason(); !why.empty()) return why;
  if (p.q_heads > 65535 || p.batch > 65535)
    return "batch and q_heads must be at most 65535 (grid dimensions y and z)";
  if (config_.kind == KernelKind::Naive) {
    const int limit = naive_kernel_max_head_dim();
    if (p.qk_dim > limit || p.v_dim > limit)
      return "head dims above " + std::to_string(limit) + " are not supported (Dk = " + std::to_string(p.qk_dim) +
             ", Dv = " + std::to_string(p.v_dim) + ")";
  } else {
    const std::size_t need = flash_kernel_shared_bytes(p.qk_dim, p.v_dim, config_.tile_rows, config_.tile_keys);
    if (need > shared_memory_limit())
      return "Dk = " + std::to_string(p.qk_dim) + ", Dv = " + std::to_string(p.v_dim) + " need " +
             std::to_string(need) + " bytes of shared memory per block; the limit is " +
             std::to_string(shared_memory_limit());
  }
  return "";
}

void KernelBackend::forward(const attncheck_problem& problem, const attncheck_attention_tensors& tensors) {
  if (tensors.q == nullptr) throw BackendFailure(kAttncheckInvalidProblem, "q: is missing (NULL)");
  if (std::string why = unsupported_reason(problem, tensors.q->dtype, tensors.q->device.device_type); !why.empty())
    throw BackendFailure(kAttncheckNotSupported, why);
  ElementType type;
  const AttentionParams params = make_params(problem, tensors, config_.device, type);
  launch(params, type);
}

}  // namespace attncheck::cuda
