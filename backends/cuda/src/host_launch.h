/// \file host_launch.h
/// \brief KernelBackend for host memory: the kernels run through host_emulation.h.
#pragma once

#include "kernel_backend.h"

namespace attncheck::cuda {

/// Shared memory of an emulated block is host memory; this cap only keeps a runaway head dim
/// from allocating without bound (1 MiB fits Dk = Dv = 1024 at the host tile sizes).
inline constexpr std::size_t kHostSharedMemoryLimit = std::size_t{1} << 20;

/// Host emulation runs one host thread per CUDA thread, so blocks stay small (32 threads) and
/// tiles short (16 × 16): property tests at small sizes then cross several tile boundaries.
inline constexpr KernelConfig kNaiveHostConfig{KernelKind::Naive, kDLCPU, 32, 1, 1};
inline constexpr KernelConfig kFlashHostConfig{KernelKind::Flash, kDLCPU, 32, 16, 16};

}  // namespace attncheck::cuda
