#include "attncheck/memory_domain.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fmt/format.h>
#include <map>

#include "attncheck/backend_handle.h"

namespace attncheck {
namespace {

// Host memory: the staging buffers are the backend's buffers, so nothing is copied and every
// write is complete when forward returns (backend.h: kDLCPU has no stream).
class HostDomain final : public MemoryDomain {
 public:
  DLDevice device() const override { return {kDLCPU, 0}; }
  bool is_host() const override { return true; }
  void* allocate(std::size_t) override { throw BackendError(kAttncheckInternalError, "host domain: nothing to allocate"); }
  void release(void*) noexcept override {}
  void copy_in(void*, const void*, std::size_t) override {}
  void copy_out(void*, const void*, std::size_t) override {}
  void* stream() override { return nullptr; }
  std::optional<std::string> synchronize() override { return std::nullopt; }
};

// The simulated device. Each allocation is its own mapping, PROT_NONE at rest, so a read or a
// write by the suite outside copy_in/copy_out — the bug a CPU-only test of a device path cannot
// otherwise see, because the pointers would simply work — faults at once. During the call the
// pages are read-write, which is what lets host-emulated kernels stand in for device kernels.
class SimulatedDomain final : public MemoryDomain {
 public:
  explicit SimulatedDomain(int device_id) : device_id_(device_id) {
    stream_.struct_size = sizeof(attncheck_simulated_stream);
  }
  ~SimulatedDomain() override {
    for (auto& [pointer, bytes] : mappings_) munmap(pointer, bytes);
  }

  DLDevice device() const override { return {kAttncheckSimulatedDevice, device_id_}; }

  void* allocate(std::size_t bytes) override {
    const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    const std::size_t mapped = std::max<std::size_t>((bytes + page - 1) / page * page, page);
    void* p = mmap(nullptr, mapped, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
      throw BackendError(kAttncheckInternalError,
                         fmt::format("simulated device: cannot map {} bytes: {}", mapped, std::strerror(errno)));
    mappings_[p] = mapped;
    return p;
  }
  void release(void* pointer) noexcept override {
    auto it = mappings_.find(pointer);
    if (it == mappings_.end()) return;
    munmap(it->first, it->second);
    mappings_.erase(it);
  }
  void copy_in(void* destination, const void* source, std::size_t bytes) override {
    void* mapping = mapping_of(destination, bytes);
    protect(mapping, PROT_READ | PROT_WRITE);
    std::memcpy(destination, source, bytes);
    protect(mapping, PROT_NONE);
  }
  void copy_out(void* destination, const void* source, std::size_t bytes) override {
    void* mapping = mapping_of(source, bytes);
    protect(mapping, PROT_READ);
    std::memcpy(destination, source, bytes);
    protect(mapping, PROT_NONE);
  }
  void* stream() override { return &stream_; }
  std::optional<std::string> synchronize() override {
    if (stream_.error == 0) return std::nullopt;
    stream_.message[sizeof stream_.message - 1] = '\0';
    return std::string(stream_.message[0] != '\0' ? stream_.message : "(the backend recorded a fault without a message)");
  }
  void enter_call() override {
    for (auto& [pointer, bytes] : mappings_) protect(pointer, PROT_READ | PROT_WRITE);
  }
  void leave_call() override {
    for (auto& [pointer, bytes] : mappings_) protect(pointer, PROT_NONE);
  }

 private:
  // The mapping holding [pointer, pointer + bytes): copies must stay inside one allocation, as
  // cudaMemcpy's must.
  void* mapping_of(const void* pointer, std::size_t bytes) const {
    const auto* p = static_cast<const std::byte*>(pointer);
    auto it = mappings_.upper_bound(const_cast<void*>(pointer));
    if (it != mappings_.begin()) {
      --it;
      const auto* start = static_cast<const std::byte*>(it->first);
      if (p >= start && p + bytes <= start + it->second) return it->first;
    }
    throw BackendError(kAttncheckInternalError,
                       fmt::format("simulated device: a copy of {} bytes at {} lies outside every allocation", bytes, pointer));
  }
  void protect(void* mapping, int protection) const {
    if (mprotect(mapping, mappings_.at(mapping), protection) != 0)
      throw BackendError(kAttncheckInternalError, fmt::format("simulated device: mprotect failed: {}", std::strerror(errno)));
  }

  int device_id_;
  std::map<void*, std::size_t> mappings_;
  attncheck_simulated_stream stream_{};
};

}  // namespace

std::unique_ptr<MemoryDomain> make_simulated_memory_domain(int device_id) {
  return std::make_unique<SimulatedDomain>(device_id);
}

std::unique_ptr<MemoryDomain> make_memory_domain(DLDevice device) {
  switch (static_cast<int>(device.device_type)) {
    case kDLCPU: return std::make_unique<HostDomain>();
    case kAttncheckSimulatedDevice: return make_simulated_memory_domain(device.device_id);
    case kDLCUDA:
    case kDLCUDAHost:
    case kDLCUDAManaged: return make_cuda_memory_domain(device);
    default:
      throw BackendError(kAttncheckNotSupported, fmt::format("attncheck cannot place tensors in memory of DLPack device type {}",
                                                             static_cast<int>(device.device_type)));
  }
}

}  // namespace attncheck
