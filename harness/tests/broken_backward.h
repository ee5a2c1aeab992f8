/// \file broken_backward.h
/// \brief A backend whose backward pass is another table's (cpu-naive's) with one planted defect,
/// for the probes of run_backend_backward; built as a plug-in without that table
/// (broken_backward_plugin.cpp), one whose backward crashes or hangs, for isolation, which
/// reopens a backend by path in its child.
#pragma once

#include <array>
#include <chrono>
#include <csignal>
#include <cstring>
#include <functional>
#include <thread>

#include "attncheck/backend_impl.h"

namespace attncheck::broken {

enum class Defect {
  None,
  LeavesLastDqElementUnwritten,  ///< dq[B−1, Hq−1, Lq−1, Dk−1] keeps what was there before the call
  WritesPastDkEnd,               ///< one float32 just after dk's last element
  ModifiesDout,                  ///< flips a bit of dout[0, 0, 0, 1]
  Declines,                      ///< kAttncheckNotSupported from backward itself
  Crashes,                       ///< SIGSEGV
  Hangs,                         ///< never returns
};

/// Byte address of a logical element of a strided tensor (byte_offset and the strides applied;
/// NULL strides are compact).
inline char* element_address(const DLTensor* t, const std::int64_t (&index)[4]) {
  std::int64_t offset = 0, compact = 1;
  for (int d = t->ndim - 1; d >= 0; --d) {
    offset += index[d] * (t->strides != nullptr ? t->strides[d] : compact);
    compact *= t->shape[d];
  }
  return static_cast<char*>(t->data) + t->byte_offset + offset * (t->dtype.bits / 8);
}

class BrokenBackward final : public impl::BackendImpl {
 public:
  /// Runs `delegate`'s forward and backward (NULL: a backend that can only decline, crash or
  /// hang) and then plants `defect`. On a `device` other than the host the tensors are handed to
  /// the delegate as host memory: the simulated device's memory is mapped during the call, so a
  /// host kernel stands in for a device kernel. `observe`, when set, sees every backward call's
  /// tensors as the suite passed them.
  BrokenBackward(Defect defect, const attncheck_backend* delegate, DLDevice device = {kDLCPU, 0},
                 std::function<void(const attncheck_backward_tensors&)> observe = {})
      : defect_(defect), delegate_(delegate), device_(device), observe_(std::move(observe)) {}

  DLDevice device() const override { return device_; }

  attncheck_numerics_profile profile(DLDataType input) const override {
    attncheck_numerics_profile pr{};
    pr.struct_size = sizeof pr;
    if (delegate_ != nullptr) {
      checked(delegate_->get_profile(delegate_, input, &pr));
      return pr;
    }
    pr.input_dtype = pr.score_dtype = pr.probability_dtype = pr.accumulator_dtype = pr.output_dtype = impl::kF32;
    pr.products_per_rounding = 1;
    pr.accepts_strides = 1;
    pr.writes_lse = 1;
    return pr;
  }
  void check_supported(const attncheck_problem&, DLDataType, DLDeviceType) const override {}
  void forward(const attncheck_problem& p, const attncheck_attention_tensors& t) override {
    if (delegate_ == nullptr) impl::unsupported("this backend has a backward pass only");
    HostCopies host;
    attncheck_attention_tensors copy = t;
    for (const DLTensor** slot : {&copy.q, &copy.k, &copy.v, &copy.mask, &copy.key_lengths}) *slot = host(*slot);
    copy.out = host(copy.out);
    copy.lse = host(copy.lse);
    checked(delegate_->forward(const_cast<attncheck_backend*>(delegate_), &p, &copy));
  }

  bool has_backward() const override { return true; }
  attncheck_backward_profile backward_profile(const attncheck_problem& p, DLDataType input) const override {
    attncheck_backward_profile pr{};
    pr.struct_size = sizeof pr;
    if (delegate_ != nullptr) {
      checked(delegate_->get_backward_profile(delegate_, &p, input, &pr));
      return pr;
    }
    pr.deterministic = 1;
    pr.accepts_dlse = 1;
    return pr;
  }
  void backward(const attncheck_problem& p, const attncheck_backward_tensors& t) override {
    if (observe_) observe_(t);
    switch (defect_) {
      case Defect::Declines: impl::unsupported("broken-backward declines this backward call");
      case Defect::Crashes: std::raise(SIGSEGV); return;
      case Defect::Hangs:
        while (true) std::this_thread::sleep_for(std::chrono::seconds(1));
      default: break;
    }
    if (delegate_ == nullptr) impl::unsupported("broken-backward has no backward pass to break");
    const std::int64_t last[4] = {p.batch - 1, p.q_heads - 1, p.q_len - 1, p.qk_dim - 1};
    float kept = 0;
    std::memcpy(&kept, element_address(t.dq, last), sizeof kept);

    HostCopies host;
    attncheck_backward_tensors copy = t;
    for (const DLTensor** slot : {&copy.q, &copy.k, &copy.v, &copy.mask, &copy.key_lengths, &copy.out, &copy.lse,
                                  &copy.dout, &copy.dlse})
      *slot = host(*slot);
    for (DLTensor** slot : {&copy.dq, &copy.dk, &copy.dv, &copy.dbias}) *slot = host(*slot);
    checked(delegate_->backward(const_cast<attncheck_backend*>(delegate_), &p, &copy));

    if (defect_ == Defect::LeavesLastDqElementUnwritten) std::memcpy(element_address(t.dq, last), &kept, sizeof kept);
    if (defect_ == Defect::WritesPastDkEnd) {
      const std::int64_t dk_last[4] = {p.batch - 1, p.kv_heads - 1, p.k_len - 1, p.qk_dim - 1};
      const float stray = 1.0f;
      std::memcpy(element_address(t.dk, dk_last) + sizeof stray, &stray, sizeof stray);
    }
    if (defect_ == Defect::ModifiesDout) *element_address(t.dout, {0, 0, 0, 1}) ^= 1;
  }

 private:
  // Copies of a call's tensors that say host memory (NULL stays NULL), as many as a call has.
  class HostCopies {
   public:
    DLTensor* operator()(const DLTensor* t) {
      if (t == nullptr) return nullptr;
      DLTensor& copy = storage_.at(used_++);
      copy = *t;
      copy.device = {kDLCPU, 0};
      return &copy;
    }

   private:
    std::array<DLTensor, 16> storage_{};
    size_t used_ = 0;
  };
  void checked(attncheck_status status) const {
    if (status != kAttncheckOk) throw impl::AbiError(status, delegate_->last_error(delegate_));
  }

  Defect defect_;
  const attncheck_backend* delegate_;
  DLDevice device_;
  std::function<void(const attncheck_backward_tensors&)> observe_;
};

}  // namespace attncheck::broken
