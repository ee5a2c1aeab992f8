#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "attncheck/backend_handle.h"
#include "attncheck/memory_domain.h"

namespace attncheck {
namespace {

TEST(SimulatedDevice, CopiesRoundTripEveryByte) {
  auto domain = make_simulated_memory_domain(0);
  EXPECT_EQ(domain->device().device_type, kAttncheckSimulatedDevice);
  std::vector<unsigned char> in(10000), out(10000, 0);
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<unsigned char>(i * 37 + 11);
  void* device = domain->allocate(in.size());
  domain->copy_in(device, in.data(), in.size());
  domain->copy_out(out.data(), device, out.size());
  EXPECT_EQ(in, out);
  domain->release(device);
}

// The point of the simulated device: a read of its memory outside the suite's copies and the
// backend call faults, so an engine that touched device memory directly cannot pass on a CPU.
TEST(SimulatedDeviceDeathTest, MemoryFaultsOutsideCopiesAndCalls) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  auto domain = make_simulated_memory_domain(0);
  auto* device = static_cast<volatile unsigned char*>(domain->allocate(64));
  EXPECT_DEATH((void)device[3], "");
  domain->enter_call();
  device[3] = 7;  // mapped during the call, as the backend sees it
  EXPECT_EQ(device[3], 7);
  domain->leave_call();
  EXPECT_DEATH(device[3] = 1, "");
  unsigned char back = 0;
  domain->copy_out(&back, const_cast<unsigned char*>(device) + 3, 1);
  EXPECT_EQ(back, 7);
}

TEST(SimulatedDevice, CopyOutsideAnAllocationIsRefusedWithContext) {
  auto domain = make_simulated_memory_domain(0);
  auto* device = static_cast<unsigned char*>(domain->allocate(16));
  unsigned char buffer[32] = {};
  try {
    domain->copy_in(device + 8000, buffer, 16);  // past the one page mapped
    FAIL() << "copy accepted";
  } catch (const BackendError& e) {
    EXPECT_NE(std::string(e.what()).find("outside every allocation"), std::string::npos) << e.what();
  }
}

TEST(SimulatedDevice, ARecordedFaultSurfacesAtSynchronizeAndStays) {
  auto domain = make_simulated_memory_domain(0);
  EXPECT_EQ(domain->synchronize(), std::nullopt);
  auto* stream = static_cast<attncheck_simulated_stream*>(domain->stream());
  ASSERT_NE(stream, nullptr);
  EXPECT_EQ(stream->struct_size, sizeof(attncheck_simulated_stream));
  stream->error = 1;
  std::snprintf(stream->message, sizeof stream->message, "an illegal memory access was encountered");
  EXPECT_EQ(domain->synchronize(), std::optional<std::string>("an illegal memory access was encountered"));
  EXPECT_EQ(domain->synchronize(), std::optional<std::string>("an illegal memory access was encountered"));
}

TEST(MemoryDomains, HostMemoryIsHandedOverWithoutCopies) {
  auto domain = make_memory_domain({kDLCPU, 0});
  EXPECT_TRUE(domain->is_host());
  EXPECT_EQ(domain->stream(), nullptr);
  EXPECT_EQ(domain->synchronize(), std::nullopt);
}

TEST(MemoryDomains, UnknownDeviceIsDeclinedNamingIt) {
  try {
    (void)make_memory_domain({kDLVulkan, 0});
    FAIL() << "a Vulkan domain was made";
  } catch (const BackendError& e) {
    EXPECT_EQ(e.status(), kAttncheckNotSupported);
    EXPECT_NE(std::string(e.what()).find("device type 7"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace attncheck
