#include "kernel_backend.h"

#include <string>
#include <vector>

#include "flash_attention.cuh"  // host build: only for the shared-memory formula and dim limit
#include "naive_attention.cuh"

namespace attncheck::cuda {

namespace {

std::vector<ElementType> inputs_of(KernelKind kind) {
  if (kind == KernelKind::Naive) return {ElementType::F32};  // the fp32 baseline
  return {ElementType::F32, ElementType::F16, ElementType::BF16};
}

}  // namespace

KernelBackend::KernelBackend(DLDevice device, const KernelConfig& config, KernelLaunch launch)
    : CudaBackend(device, inputs_of(config.kind)), config_(config), launch_(launch) {}

void KernelBackend::run(const AttentionParams& params, ElementType type, void* stream) {
  launch_(config_, launch_shape(params), params, type, stream);
}

ProfileTraits KernelBackend::traits(ElementType) const {
  ProfileTraits traits;
  traits.probability_rounded_to_input = false;  // P stays in fp32 registers / shared memory
  traits.accumulation = kAttncheckRoundNearest;  // CUDA-core fp32 FMA
  // Naive: the running max may move at every key, so each key is a rescale (block of 1).
  traits.softmax_block = config_.kind == KernelKind::Naive ? 1 : config_.tile_keys;
  traits.deterministic = true;  // fixed summation order, no atomics
  return traits;
}

LaunchShape KernelBackend::launch_shape(const AttentionParams& p) const {
  const bool flash = config_.kind == KernelKind::Flash;
  const std::int64_t rows_per_block = flash ? config_.tile_rows : config_.threads;
  LaunchShape shape;
  shape.grid_x = static_cast<unsigned>((p.q_len + rows_per_block - 1) / rows_per_block);
  shape.grid_y = static_cast<unsigned>(p.q_heads);
  shape.grid_z = static_cast<unsigned>(p.batch);
  shape.threads = static_cast<unsigned>(config_.threads);
  shape.shared_bytes = flash ? flash_shared_bytes(p.qk_dim, p.v_dim, config_.tile_rows, config_.tile_keys) : 0;
  return shape;
}

void KernelBackend::check_limits(const attncheck_problem& p) const {
  if (config_.kind == KernelKind::Naive) {
    if (p.qk_dim > kNaiveMaxHeadDim || p.v_dim > kNaiveMaxHeadDim)
      impl::unsupported("head dims above " + std::to_string(kNaiveMaxHeadDim) + " are not supported (Dk = " +
                        std::to_string(p.qk_dim) + ", Dv = " + std::to_string(p.v_dim) + ")");
    return;
  }
  const std::size_t need = flash_shared_bytes(p.qk_dim, p.v_dim, config_.tile_rows, config_.tile_keys);
  if (need > shared_memory_limit())
    impl::unsupported("Dk = " + std::to_string(p.qk_dim) + ", Dv = " + std::to_string(p.v_dim) + " need " +
                      std::to_string(need) + " bytes of shared memory per block; the limit is " +
                      std::to_string(shared_memory_limit()));
}

}  // namespace attncheck::cuda
