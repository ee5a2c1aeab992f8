// An asynchronous device error: the call returned, and the fault surfaced when the stream was
// synchronized (execute.h, DeviceCall::synchronize), as an illegal access in a CUDA kernel does.
#include "../src/alternatives.h"

namespace attncheck::diagnosis {

std::vector<Hypothesis> device_fault_hypotheses() {
  return {{"asynchronous-device-fault",
           "the device faults asynchronously: the error surfaces only when the stream is synchronized",
           [](const FailureEvidence& e) -> std::optional<std::string> {
             if (e.message.find("asynchronous device error") == std::string::npos) return std::nullopt;
             return "the device faults asynchronously, the error surfacing only when the stream is synchronized: " +
                    e.message;
           }}};
}

}  // namespace attncheck::diagnosis
