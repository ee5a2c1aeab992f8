/// \file kernel_backend.h
/// \brief The naive and flash kernels as backends: dtype, head-dim and launch-size limits, the
/// profile each declares, and forward() up to the launch. The launch itself is the only part
/// that differs between the host-emulated build (host_backends.cpp) and the device build
/// (device_backends.cu).
#pragma once

#include <cstddef>
#include <string>

#include "backend_common.h"

namespace attncheck::cuda {

enum class KernelKind { Naive, Flash };

struct KernelConfig {
  KernelKind kind = KernelKind::Naive;
  DLDeviceType device = kDLCPU;  ///< memory the backend reads (kDLCPU: host emulation)
  int threads = 32;              ///< threads per block
  int tile_rows = 16;            ///< flash: query rows per block
  int tile_keys = 16;            ///< flash: keys per tile = the online-softmax block
};

class KernelBackend : public BackendImpl {
 public:
  explicit KernelBackend(const KernelConfig& config) : config_(config) {}

  bool profile(DLDataType input, attncheck_numerics_profile& profile) const override;
  std::string unsupported_reason(const attncheck_problem& problem, DLDataType input,
                                 DLDeviceType device) const override;
  void forward(const attncheck_problem& problem, const attncheck_attention_tensors& tensors) override;

  const KernelConfig& config() const { return config_; }

 protected:
  /// "" when kernels can run; else why not (e.g. "no CUDA device: …").
  virtual std::string unavailable_reason() const { return ""; }
  /// Dynamic shared memory one block may use.
  virtual std::size_t shared_memory_limit() const = 0;
  /// Runs the kernel to completion.
  virtual void launch(const AttentionParams& params, ElementType type) = 0;

 private:
  KernelConfig config_;
};

/// Bytes of dynamic shared memory the flash kernel needs for these head dims and tiles.
std::size_t flash_kernel_shared_bytes(std::int64_t qk_dim, std::int64_t v_dim, int tile_rows, int tile_keys);
/// Largest Dk / Dv of the naive kernel.
int naive_kernel_max_head_dim();

}  // namespace attncheck::cuda
