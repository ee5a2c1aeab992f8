#include "kernel_backend.h"

#include <string>
#include <vector>

#include "flash_attention.cuh"  // host build: only for the shared-memory formula and dim limit
#include "flash_attention_backward.cuh"  // likewise: the backward kernels' shared-memory formulas
#include "naive_attention.cuh"

namespace attncheck::cuda {

namespace {

std::vector<ElementType> inputs_of(KernelKind kind) {
  if (kind == KernelKind::Naive) return {ElementType::F32};  // the fp32 baseline
  return {ElementType::F32, ElementType::F16, ElementType::BF16};
}

}  // namespace

KernelBackend::KernelBackend(DLDevice device, const KernelConfig& config, KernelLaunch launch,
                             KernelBackwardLaunch backward_launch)
    : CudaBackend(device, inputs_of(config.kind)), config_(config), launch_(launch), backward_launch_(backward_launch) {}

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

BackwardLaunchShape KernelBackend::backward_launch_shape(const AttentionParams& p) const {
  auto shape = [&](std::int64_t extent, std::int64_t per_block, std::int64_t heads, std::size_t shared_bytes) {
    LaunchShape s;
    s.grid_x = static_cast<unsigned>((extent + per_block - 1) / per_block);
    s.grid_y = static_cast<unsigned>(heads);
    s.grid_z = static_cast<unsigned>(p.batch);
    s.threads = static_cast<unsigned>(config_.threads);
    s.shared_bytes = shared_bytes;
    return s;
  };
  const int rows = config_.tile_rows, keys = config_.tile_keys;
  return {shape(p.q_len, config_.threads, p.q_heads, 0),
          shape(p.k_len, keys, p.kv_heads, flash_backward_kv_shared_bytes(p.qk_dim, p.v_dim, rows, keys)),
          shape(p.q_len, rows, p.q_heads, flash_backward_q_shared_bytes(p.qk_dim, p.v_dim, rows, keys))};
}

void KernelBackend::check_backward_limits(const attncheck_problem& p) const {
  // The kv grid's y is Hkv <= Hq, already bounded by check_supported.
  const std::size_t kv = flash_backward_kv_shared_bytes(p.qk_dim, p.v_dim, config_.tile_rows, config_.tile_keys);
  const std::size_t q = flash_backward_q_shared_bytes(p.qk_dim, p.v_dim, config_.tile_rows, config_.tile_keys);
  const std::size_t need = kv > q ? kv : q;
  if (need > shared_memory_limit())
    impl::unsupported("backward: Dk = " + std::to_string(p.qk_dim) + ", Dv = " + std::to_string(p.v_dim) + " need " +
                      std::to_string(need) + " bytes of shared memory per block; the limit is " +
                      std::to_string(shared_memory_limit()));
}

attncheck_backward_profile KernelBackend::backward_profile(const attncheck_problem& /*problem*/, DLDataType input) const {
  if (backward_launch_ == nullptr) impl::unsupported("this backend has no backward pass");
  // Asked in the parent process under isolation (backend.h), where a device backend must not
  // touch the device: only the dtype is checked here (profile() declines the others), the
  // device, the grid and the shared memory by backward, in the call.
  (void)profile(input);
  attncheck_backward_profile declared{};
  declared.struct_size = sizeof declared;
  declared.gradient_dtype = input;  // dQ, dK, dV rounded once, from fp32, to the input dtype
  declared.probability_dtype = impl::kF32;  // P, dP, dS and dR live in fp32 shared memory
  declared.dp_dtype = impl::kF32;
  declared.ds_dtype = impl::kF32;
  declared.accumulator_dtype = impl::kF32;
  declared.group_sum_dtype = impl::kF32;  // a GQA group's heads continue the same fp32 running sums
  // Each dK, dV element is one running sum over (head, row) and each dQ element one over keys,
  // continued across tiles (flash_attention_backward.cuh): no tile sums are formed.
  declared.query_block = 0;
  declared.key_block = 0;
  declared.recomputes_from_lse = 1;
  declared.dq_atomic = 0;  // dQ has its own kernel (a block per query tile), no atomics
  declared.deterministic = 1;
  declared.accepts_dlse = 1;
  declared.writes_dbias = 0;
  return declared;
}

void KernelBackend::backward(const attncheck_problem& problem, const attncheck_backward_tensors& tensors) {
  if (backward_launch_ == nullptr) impl::unsupported("this backend has no backward pass");
  if (tensors.q == nullptr) impl::invalid("q: is NULL, but the problem requires it");
  // As forward: a decline first, then the tensors' own checks (invalid calls) in make_backward_params.
  check_supported(problem, tensors.q->dtype, device().device_type);
  check_backward_limits(problem);
  const ElementType type = *element_type_of(tensors.q->dtype);
  const BackwardParams params = make_backward_params(problem, tensors, device().device_type, type);
  backward_launch_(config_, backward_launch_shape(params.forward), params, type, tensors.stream);
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
