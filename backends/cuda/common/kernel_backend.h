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

/// The three launches of the flash backward pass (flash_attention_backward.cuh), in order.
struct BackwardLaunchShape {
  LaunchShape delta;  ///< flash_backward_delta_kernel: (⌈Lq / threads⌉, Hq, B), a thread per row
  LaunchShape kv;     ///< flash_backward_kv_kernel: (⌈Lk / tile_keys⌉, Hkv, B)
  LaunchShape q;      ///< flash_backward_q_kernel: (⌈Lq / tile_rows⌉, Hq, B)
};

/// A flash backend folder's backward launch: allocates params.delta ([B, Hq, Lq] fp32, in the
/// backend's memory, alive until the three kernels are done) and runs the three kernels.
using KernelBackwardLaunch = void (*)(const KernelConfig& config, const BackwardLaunchShape& shape,
                                      BackwardParams params, ElementType type, void* stream);

class KernelBackend : public CudaBackend {
 public:
  const KernelConfig& config() const { return config_; }
  /// grid (⌈Lq / rows per block⌉, Hq, B): a thread per row (naive) or a tile of rows (flash).
  LaunchShape launch_shape(const AttentionParams& params) const;
  BackwardLaunchShape backward_launch_shape(const AttentionParams& params) const;

  /// The backward pass (ABI 2.2): a backend built with a backward launch (cuda-flash and its
  /// @host twin) has one. backward_profile declines only dtypes the kernels do not read (it must
  /// not touch a device); backward checks as forward does, and declines what exceeds the
  /// backward kernels' shared memory.
  bool has_backward() const final { return backward_launch_ != nullptr; }
  /// Attention sinks (ABI 2.3) in the flash kernels, forward and backward (the backward reads
  /// them through the lse); the naive kernels implement no option.
  /// Paged caches (ABI 2.4) in the flash forward; the backward ABI takes contiguous K and V only.
  std::uint32_t options() const final {
    return config_.kind == KernelKind::Flash ? impl::kOptionSinks | impl::kOptionPagedKv | impl::kOptionVarlen : 0u;
  }
  std::uint32_t backward_options() const final { return config_.kind == KernelKind::Flash ? impl::kOptionSinks : 0u; }
  attncheck_backward_profile backward_profile(const attncheck_problem& problem, DLDataType input) const final;
  void backward(const attncheck_problem& problem, const attncheck_backward_tensors& tensors) final;

 protected:
  KernelBackend(DLDevice device, const KernelConfig& config, KernelLaunch launch,
                KernelBackwardLaunch backward_launch = nullptr);

  ProfileTraits traits(ElementType input) const override;
  void check_limits(const attncheck_problem& problem) const override;
  void run(const AttentionParams& params, ElementType type, void* stream) final;
  /// Dynamic shared memory one block may use.
  virtual std::size_t shared_memory_limit() const = 0;

 private:
  /// Declines (impl::unsupported) what the backward kernels cannot take beyond the forward's
  /// checks: shared memory of the two tiled kernels.
  void check_backward_limits(const attncheck_problem& problem) const;

  KernelConfig config_;
  KernelLaunch launch_;
  KernelBackwardLaunch backward_launch_;
};

/// A kernel run on the host by host_emulation.h, reading the suite's simulated device: its memory
/// is host memory mapped only for the call, so the suite's device path is exercised without a GPU.
class HostKernelBackend final : public KernelBackend {
 public:
  HostKernelBackend(const KernelConfig& config, KernelLaunch launch, KernelBackwardLaunch backward_launch = nullptr)
      : KernelBackend({kAttncheckSimulatedDevice, 0}, config, launch, backward_launch) {}

 protected:
  /// An emulated block's shared memory is host memory; the cap only keeps a runaway head dim from
  /// allocating without bound (1 MiB fits Dk = Dv = 1024 at the host tile sizes).
  std::size_t shared_memory_limit() const override { return std::size_t{1} << 20; }
};

}  // namespace attncheck::cuda
