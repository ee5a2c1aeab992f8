/// \file host_emulation.h
/// \brief Runs a CUDA kernel written in a small subset of CUDA C++ as ordinary host C++.
///
/// Why: the CUDA backends' kernels are checked on machines without a GPU (CI, laptops). Rather than
/// keep a CPU copy of their index math, masking and causal alignment — a copy that could be right
/// while the kernel is wrong — the very same kernel source is compiled twice: by nvcc for the
/// device and by the host compiler against this header.
///
/// The model:
///  - A launch runs its blocks one after another, in blockIdx order (x fastest). One host thread
///    (std::thread) stands for each CUDA thread of a block; the same pool of threads runs every
///    block, so a launch creates blockDim.x·y·z − 1 threads, not one per block.
///  - __syncthreads() is a std::barrier over the threads of the block; the end of a block is a
///    barrier too, so no thread starts block n+1 while another still uses block n's shared memory.
///  - threadIdx, blockIdx, blockDim and gridDim are thread_local: each emulated CUDA thread is a
///    host thread, so thread-local storage is exactly "per CUDA thread" and needs no locking. They
///    are the only mutable state outside a launch's own stack frame, and they are not global: each
///    host thread sees only its own.
///  - Shared memory is owned by the launch and reused by its blocks (CUDA does not initialise it
///    either). Kernels declare it with ATTNCHECK_SHARED_ARRAY(type, name, count) and
///    ATTNCHECK_DYNAMIC_SHARED(type, name) rather than the __shared__ keyword: a host-compiled
///    `__shared__ float x[64];` could only become a function-local static, shared by every launch
///    in the process, which would make concurrent launches race.
///  - __global__, __device__, __host__ and __forceinline__ are defined away; __expf, __logf and
///    __fdividef are the accurate host functions (the device intrinsics are less accurate, so the
///    host build is never the looser of the two).
///
/// Limits: no warp-level primitives (__shfl*, __ballot, cooperative groups), no atomics, no
/// streams or events, no device-side printf guarantees; a kernel must reach every
/// __syncthreads() from every thread of its block (returning early before one deadlocks here,
/// and is undefined behaviour on the device anyway). At most kMaxThreadsPerBlock threads.
#pragma once

#ifdef __CUDACC__
#error "host_emulation.h is for host compilers; nvcc builds the kernels for the device"
#endif

#include <barrier>
#include <cmath>
#include <cstddef>
#include <exception>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline

namespace attncheck::cuda_emulation {

struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

/// More host threads than this per block would only make the emulation crawl; CUDA's own limit.
inline constexpr unsigned kMaxThreadsPerBlock = 1024;

/// The shared memory of the block being run, owned by launch().
class BlockShared {
 public:
  explicit BlockShared(std::size_t dynamic_bytes) : dynamic_(chunks(dynamic_bytes)) {}

  void* dynamic() { return dynamic_.data(); }

  /// The n-th static shared array of the kernel: the first thread to ask creates it, the others
  /// get the same storage (every thread declares the same arrays in the same order).
  void* slot(std::size_t n, std::size_t bytes) {
    std::lock_guard lock(mutex_);
    if (n == slots_.size()) {
      slots_.push_back({bytes, std::vector<Chunk>(chunks(bytes))});
    } else if (n > slots_.size() || slots_[n].bytes != bytes) {
      throw std::logic_error("host emulation: threads of one block declared different shared arrays (shared array #" +
                             std::to_string(n) + ")");
    }
    return slots_[n].storage.data();
  }

 private:
  struct alignas(16) Chunk {
    std::byte bytes[16];
  };
  static std::size_t chunks(std::size_t bytes) { return (bytes + sizeof(Chunk) - 1) / sizeof(Chunk) + 1; }
  struct Slot {
    std::size_t bytes;
    std::vector<Chunk> storage;
  };

  std::vector<Chunk> dynamic_;
  std::mutex mutex_;
  std::vector<Slot> slots_;
};

/// What one emulated CUDA thread knows about where it runs.
struct ThreadState {
  std::barrier<>* barrier = nullptr;
  BlockShared* shared = nullptr;
  std::size_t next_slot = 0;  // index of the next static shared array this thread declares
};

// Per emulated CUDA thread (see the file comment for why thread_local is the right scope).
inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;
inline thread_local ThreadState current_thread;

inline ThreadState& this_thread_state() {
  if (current_thread.barrier == nullptr)
    throw std::logic_error("host emulation: a device function was called outside an emulated launch");
  return current_thread;
}

inline void __syncthreads() { this_thread_state().barrier->arrive_and_wait(); }

template <class T>
T* shared_array(std::size_t count) {
  ThreadState& state = this_thread_state();
  return static_cast<T*>(state.shared->slot(state.next_slot++, count * sizeof(T)));
}

template <class T>
T* dynamic_shared() {
  return static_cast<T*>(this_thread_state().shared->dynamic());
}

inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float x, float y) { return x / y; }

/// kernel<<<grid, block, dynamic_shared_bytes>>>(args...), run to completion on the host.
/// Rethrows the first exception a kernel thread raised.
template <class Kernel, class... Args>
void launch(dim3 grid, dim3 block, std::size_t dynamic_shared_bytes, Kernel kernel, const Args&... args) {
  const unsigned long long threads = 1ull * block.x * block.y * block.z;
  if (threads == 0 || threads > kMaxThreadsPerBlock)
    throw std::invalid_argument("host emulation: a block of " + std::to_string(threads) + " threads (expected 1 to " +
                                std::to_string(kMaxThreadsPerBlock) + ")");
  if (1ull * grid.x * grid.y * grid.z == 0) return;

  std::barrier<> barrier(static_cast<std::ptrdiff_t>(threads));
  BlockShared shared(dynamic_shared_bytes);
  std::mutex error_mutex;
  std::exception_ptr error;

  auto run_thread = [&](unsigned linear) {
    threadIdx = {linear % block.x, (linear / block.x) % block.y, linear / (block.x * block.y)};
    blockDim = block;
    gridDim = grid;
    current_thread = {&barrier, &shared, 0};
    for (unsigned z = 0; z < grid.z; ++z)
      for (unsigned y = 0; y < grid.y; ++y)
        for (unsigned x = 0; x < grid.x; ++x) {
          blockIdx = {x, y, z};
          current_thread.next_slot = 0;
          try {
            kernel(args...);
          } catch (...) {
            {
              std::lock_guard lock(error_mutex);
              if (!error) error = std::current_exception();
            }
            barrier.arrive_and_drop();  // releases the others from any barrier this thread skips
            current_thread = {};
            return;
          }
          barrier.arrive_and_wait();  // the block ends for everyone before shared memory is reused
        }
    current_thread = {};
  };

  {
    std::vector<std::jthread> pool;
    pool.reserve(threads - 1);
    for (unsigned t = 1; t < threads; ++t) pool.emplace_back(run_thread, t);
    run_thread(0);
  }  // joins
  if (error) std::rethrow_exception(error);
}

}  // namespace attncheck::cuda_emulation

/// `__shared__ type name[count];` in a kernel that also builds for the host.
#define ATTNCHECK_SHARED_ARRAY(type, name, count) \
  type* const name = ::attncheck::cuda_emulation::shared_array<type>(count)
/// `extern __shared__ type name[];` (the launch's dynamic shared memory, 16-byte aligned).
#define ATTNCHECK_DYNAMIC_SHARED(type, name) type* const name = ::attncheck::cuda_emulation::dynamic_shared<type>()
