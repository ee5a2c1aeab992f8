/// \file kernel_backend.h
/// \brief The naive and flash kernels as backends: their limits, profiles and launch geometry,
/// shared by the host-emulated and the device builds, which differ only in their memory, their
/// shared-memory limit and the launch statement each backend's folder supplies.
#pragma once

#include <cstddef>

#include "cuda_backend.h"

namespace attncheck::cuda {

enum class KernelKind { Naive, Flash };

/// A kernel backend as its folder states it; only its launch is code.
struct KernelConfig {
  const char* name = "";         ///< the backend's stable name
  const char* description = "";  ///< one line for listings
  KernelKind kind = KernelKind::Naive;
  int threads = 32;    ///< threads per block
  int tile_rows = 16;  ///< flash: query rows per block
  int tile_keys = 16;  ///< flash: keys per tile = the online-softmax block
};

/// Grid, block and dynamic shared memory of one launch; computed once for both builds, so the
/// host build checks the device build's geometry too.
struct LaunchShape {
  unsigned grid_x = 1, grid_y = 1, grid_z = 1;
  unsigned threads = 1;
  std::size_t shared_bytes = 0;
};

/// The one thing a kernel backend's folder adds: the launch of its kernel, emulated or on
/// `stream`, for inputs of `type`.
using KernelLaunch = void (*)(const KernelConfig& config, const LaunchShape& shape, const AttentionParams& params,
                              ElementType type, void* stream);

class KernelBackend : public CudaBackend {
 public:
  const KernelConfig& config() const { return config_; }
  /// grid (⌈Lq / rows per block⌉, Hq, B): a thread per row (naive) or a tile of rows (flash).
  LaunchShape launch_shape(const AttentionParams& params) const;

 protected:
  KernelBackend(DLDevice device, const KernelConfig& config, KernelLaunch launch);

  ProfileTraits traits(ElementType input) const override;
  void check_limits(const attncheck_problem& problem) const override;
  void run(const AttentionParams& params, ElementType type, void* stream) final;
  /// Dynamic shared memory one block may use.
  virtual std::size_t shared_memory_limit() const = 0;

 private:
  KernelConfig config_;
  KernelLaunch launch_;
};

/// A kernel run on the host by host_emulation.h, reading the suite's simulated device: its memory
/// is host memory mapped only for the call, so the suite's device path is exercised without a GPU.
class HostKernelBackend final : public KernelBackend {
 public:
  HostKernelBackend(const KernelConfig& config, KernelLaunch launch)
      : KernelBackend({kAttncheckSimulatedDevice, 0}, config, launch) {}

 protected:
  /// An emulated block's shared memory is host memory; the cap only keeps a runaway head dim from
  /// allocating without bound (1 MiB fits Dk = Dv = 1024 at the host tile sizes).
  std::size_t shared_memory_limit() const override { return std::size_t{1} << 20; }
};

}  // namespace attncheck::cuda
