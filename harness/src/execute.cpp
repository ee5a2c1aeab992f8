#include "attncheck/execute.h"
#include "attncheck/varlen.h"

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <bit>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>
#include <fmt/format.h>
#include <memory>
#include <stdexcept>
#include <thread>

#include "attncheck/memory_domain.h"

namespace attncheck {
namespace {

// A NaN with a payload no arithmetic produces (hardware returns the canonical quiet NaN), so an
// output element still holding it after the call was never written.
std::uint64_t sentinel_bits(DType dtype) {
  switch (dtype) {
    case DType::F32: return 0x7fa5a5a5u;
    case DType::F16: return 0x7d5au;
    case DType::BF16: return 0x7fa5u;
    case DType::F64: return 0x7ff5a5a5a5a5a5a5ull;
    // fp8 is never written by a kernel (dtype.h); e4m3 has one NaN per sign, e5m2 three payloads.
    case DType::E4M3: return 0x7fu;
    case DType::E5M2: return 0x7du;
  }
  return 0;
}

bool holds_sentinel(DType dtype, const std::byte* at) {
  std::uint64_t bits = 0;
  std::memcpy(&bits, at, static_cast<size_t>(dtype_bytes(dtype)));
  return bits == sentinel_bits(dtype);
}

// Bytes in an anonymous shared mapping: a child forked for an isolated call writes here and the
// parent sees it, so nothing a crashing kernel computed before it died is lost to the probes.
class SharedBytes {
 public:
  explicit SharedBytes(size_t size) : size_(size) {
    void* p = mmap(nullptr, std::max<size_t>(size, 1), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    data_ = static_cast<std::byte*>(p);
  }
  SharedBytes(const SharedBytes&) = delete;
  SharedBytes& operator=(const SharedBytes&) = delete;
  ~SharedBytes() { munmap(data_, std::max<size_t>(size_, 1)); }
  std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  std::byte& operator[](size_t i) const { return data_[i]; }

 private:
  std::byte* data_;
  size_t size_;
};

// How one tensor is handed to the backend: the layout of its strides and what its DLTensor says.
struct Handover {
  bool sequence_major = false;  // a [B, H, L, D] tensor stored as [B, L, H, D]
  std::int64_t row_padding = 0;  // unused elements after every row of the last dimension
  std::uint64_t byte_offset = 0;  // DLTensor::byte_offset
  bool null_strides = false;     // strides = NULL when the layout is compact
};

// Q, K, V and O take the layout the options ask for; every other tensor is compact.
Handover attention_handover(const RunOptions& o) { return {o.sequence_major, o.row_padding, o.byte_offset, o.null_strides}; }
Handover compact_handover(const RunOptions& o) { return {false, 0, 0, o.null_strides}; }

// Calls f(index) for every index of `shape` (any rank), last dimension fastest.
template <class F>
void for_each_index(const std::vector<std::int64_t>& shape, F&& f) {
  for (std::int64_t n : shape)
    if (n == 0) return;
  std::vector<std::int64_t> index(shape.size(), 0);
  while (true) {
    f(index);
    size_t d = shape.size();
    while (d > 0 && ++index[d - 1] == shape[d - 1]) index[--d] = 0;
    if (d == 0) return;
  }
}

// One tensor handed to the backend: element storage between two guard regions, the DLTensor
// that describes it, and a copy of the bytes an input held before the call. With a byte offset
// the bytes between DLTensor::data and the first element belong to the leading guard.
class GuardedTensor {
 public:
  GuardedTensor(std::string name, DLDataType dl_type, int element_bytes, std::vector<std::int64_t> shape,
                std::vector<std::int64_t> strides, std::int64_t guard_elements, bool is_output,
                const Handover& handover = {})
      : name_(std::move(name)), element_bytes_(element_bytes), shape_(std::move(shape)), strides_(std::move(strides)),
        guard_bytes_(guard_elements * element_bytes), offset_bytes_(static_cast<std::int64_t>(handover.byte_offset)),
        is_output_(is_output) {
    std::int64_t span = 1, count = 1;  // elements between the lowest and highest addressed element, inclusive
    for (size_t d = 0; d < shape_.size(); ++d) {
      span += (shape_[d] - 1) * strides_[d];
      count *= shape_[d];
    }
    data_bytes_ = count == 0 ? 0 : span * element_bytes_;
    has_gaps_ = count != 0 && span != count;
    storage_ = std::make_unique<SharedBytes>(static_cast<size_t>(data_bytes_ + offset_bytes_ + 2 * guard_bytes_));
    fill_pattern(0, storage_->size());
    tensor_.data = storage_->data() + guard_bytes_;
    tensor_.device = {kDLCPU, 0};
    tensor_.ndim = static_cast<int>(shape_.size());
    tensor_.dtype = dl_type;
    tensor_.shape = shape_.data();
    tensor_.strides = handover.null_strides && is_compact() ? nullptr : strides_.data();
    tensor_.byte_offset = handover.byte_offset;
  }

  /// The whole allocation as the backend's memory holds it: guard, data, guard.
  std::byte* storage() const { return storage_->data(); }
  size_t storage_bytes() const { return storage_->size(); }
  /// Bytes from the start of the allocation to DLTensor::data.
  std::int64_t guard_bytes() const { return guard_bytes_; }

  std::byte* element(const std::vector<std::int64_t>& index) {
    std::int64_t offset = 0;
    for (size_t d = 0; d < index.size(); ++d) offset += index[d] * strides_[d];
    return storage_->data() + data_start() + offset * element_bytes_;
  }
  DLTensor* dl() { return &tensor_; }
  const std::string& name() const { return name_; }

  /// Sets every byte of the buffer (data and guards) to the pattern an output is pre-filled with,
  /// in phase with the first element whatever the byte offset.
  void prefill_output(DType dtype) {
    const std::uint64_t bits = sentinel_bits(dtype);
    std::byte pattern[8];
    std::memcpy(pattern, &bits, sizeof pattern);
    const std::int64_t size = static_cast<std::int64_t>(storage_->size());
    for (std::int64_t at = 0; at < size; ++at)
      (*storage_)[static_cast<size_t>(at)] = pattern[((at - data_start()) % element_bytes_ + element_bytes_) % element_bytes_];
    snapshot();
  }
  /// Remembers the bytes of an input after it was written, to detect writes by the backend.
  void seal_input() { snapshot(); }

  void check(std::vector<std::string>& findings) const {
    check_guard("before the start", 0, static_cast<size_t>(data_start()), findings);
    check_guard("after the end", static_cast<size_t>(data_start() + data_bytes_), static_cast<size_t>(guard_bytes_), findings);
    const size_t start = static_cast<size_t>(data_start());
    if (!is_output_ && std::memcmp(before_.data() + start, storage_->data() + start, static_cast<size_t>(data_bytes_)) != 0) {
      size_t first = 0;
      while (before_[start + first] == (*storage_)[start + first]) ++first;
      findings.push_back(fmt::format("{}: the backend wrote to this input (first changed byte at offset {})", name_, first));
    }
    if (is_output_ && has_gaps_) check_gaps(findings);
  }

 private:
  std::int64_t data_start() const { return guard_bytes_ + offset_bytes_; }
  bool is_compact() const {
    std::int64_t stride = 1;
    for (size_t d = shape_.size(); d-- > 0;) {
      if (shape_[d] != 1 && strides_[d] != stride) return false;
      stride *= shape_[d];
    }
    return true;
  }
  void fill_pattern(size_t from, size_t to) {
    for (size_t i = from; i < to; ++i) (*storage_)[i] = std::byte{0xa5};
  }
  void snapshot() { before_.assign(storage_->data(), storage_->data() + storage_->size()); }
  // `length` bytes from `start` must be as they were before the call (as they were made, for a
  // tensor never sealed).
  void check_guard(const char* side, size_t start, size_t length, std::vector<std::string>& findings) const {
    const std::byte* now = storage_->data() + start;
    const std::byte* was = before_.empty() ? nullptr : before_.data() + start;
    const bool before = side[0] == 'b';
    for (size_t i = 0; i < length; ++i) {
      const std::byte expected = was ? was[i] : std::byte{0xa5};
      if (now[i] != expected) {
        // Counted in elements from the first element: −1 is the element just before it.
        const std::int64_t element = before ? (static_cast<std::int64_t>(length - i) + element_bytes_ - 1) / element_bytes_
                                            : static_cast<std::int64_t>(i) / element_bytes_;
        findings.push_back(fmt::format("{}: out-of-bounds write {}, first bad element at {}{}", name_, side,
                                       before ? "-" : "+", element));
        return;
      }
    }
  }
  // The elements the strides skip (row padding) inside an output's span must keep the pre-fill.
  void check_gaps(std::vector<std::string>& findings) const {
    std::vector<bool> covered(static_cast<size_t>(data_bytes_ / element_bytes_), false);
    for_each_index(shape_, [&](const std::vector<std::int64_t>& index) {
      std::int64_t offset = 0;
      for (size_t d = 0; d < index.size(); ++d) offset += index[d] * strides_[d];
      covered[static_cast<size_t>(offset)] = true;
    });
    const size_t start = static_cast<size_t>(data_start()), width = static_cast<size_t>(element_bytes_);
    for (size_t e = 0; e < covered.size(); ++e) {
      if (covered[e]) continue;
      if (std::memcmp(before_.data() + start + e * width, storage_->data() + start + e * width, width) != 0) {
        findings.push_back(fmt::format("{}: the backend wrote into the padding its strides skip, first at element offset {}",
                                       name_, e));
        return;
      }
    }
  }

  std::string name_;
  int element_bytes_;
  std::vector<std::int64_t> shape_, strides_;
  std::int64_t guard_bytes_, offset_bytes_, data_bytes_ = 0;
  bool is_output_, has_gaps_ = false;
  std::unique_ptr<SharedBytes> storage_;
  std::vector<std::byte> before_;
  DLTensor tensor_{};
};

// Strides of a [B, H, L, D] logical tensor laid out as [B, H, L, D] or [B, L, H, D] in memory,
// each row of D elements followed by `row_padding` unused ones.
std::vector<std::int64_t> strides_for(const Shape4& s, bool sequence_major, std::int64_t row_padding = 0) {
  const std::array<int, 4> order = sequence_major ? std::array<int, 4>{0, 2, 1, 3} : std::array<int, 4>{0, 1, 2, 3};
  std::vector<std::int64_t> strides(4);
  std::int64_t stride = 1;
  for (int k = 3; k >= 0; --k) {
    const int d = order[static_cast<size_t>(k)];
    strides[static_cast<size_t>(d)] = stride;
    stride *= s[static_cast<size_t>(d)] + (k == 3 ? row_padding : 0);
  }
  return strides;
}

std::unique_ptr<GuardedTensor> make_input(const std::string& name, const View4<const double>& view, DType dtype,
                                          const Handover& handover, std::int64_t guard) {
  const Shape4& s = view.shape;
  auto t = std::make_unique<GuardedTensor>(name, to_dlpack(dtype), dtype_bytes(dtype),
                                           std::vector<std::int64_t>(s.begin(), s.end()),
                                           strides_for(s, handover.sequence_major, handover.row_padding), guard, false,
                                           handover);
  for (std::int64_t a = 0; a < s[0]; ++a)
    for (std::int64_t b = 0; b < s[1]; ++b)
      for (std::int64_t c = 0; c < s[2]; ++c)
        for (std::int64_t d = 0; d < s[3]; ++d) encode_value(dtype, view(a, b, c, d), t->element({a, b, c, d}));
  t->seal_input();
  return t;
}

// A lower-rank tensor stored as a right-aligned 4-d view: keep its last `rank` dims.
std::unique_ptr<GuardedTensor> make_input_rank(const std::string& name, const View4<const double>& view, int rank,
                                               DType dtype, std::int64_t guard, const Handover& handover) {
  std::vector<std::int64_t> shape(view.shape.end() - rank, view.shape.end());
  std::vector<std::int64_t> strides(static_cast<size_t>(rank));
  std::int64_t stride = 1;
  for (int d = rank - 1; d >= 0; --d) {
    strides[static_cast<size_t>(d)] = stride;
    stride *= shape[static_cast<size_t>(d)];
  }
  auto t = std::make_unique<GuardedTensor>(name, to_dlpack(dtype), dtype_bytes(dtype), shape, strides, guard, false, handover);
  const Shape4& s = view.shape;
  for (std::int64_t a = 0; a < s[0]; ++a)
    for (std::int64_t b = 0; b < s[1]; ++b)
      for (std::int64_t c = 0; c < s[2]; ++c)
        for (std::int64_t d = 0; d < s[3]; ++d) {
          const std::int64_t full[4] = {a, b, c, d};
          encode_value(dtype, view(a, b, c, d), t->element(std::vector<std::int64_t>(full + 4 - rank, full + 4)));
        }
  t->seal_input();
  return t;
}

// A value the encoding into `dtype` would round is refused, never rounded here: the reference
// must see exactly what the kernel receives, so the caller rounds (`remedy` says how). NaN is
// kept as NaN by every encoding.
void require_representable(const std::string& name, const View4<const double>& view, DType dtype, const char* whose,
                           const char* remedy) {
  const Shape4& s = view.shape;
  for (std::int64_t a = 0; a < s[0]; ++a)
    for (std::int64_t b = 0; b < s[1]; ++b)
      for (std::int64_t c = 0; c < s[2]; ++c)
        for (std::int64_t d = 0; d < s[3]; ++d) {
          const double x = view(a, b, c, d);
          if (!std::isnan(x) && round_to(dtype, x) != x)
            throw std::invalid_argument(fmt::format("{}: element [{},{},{},{}] is {:.17g}, which is not a {} value ({}); {}",
                                                    name, a, b, c, d, x, dtype_name(dtype), whose, remedy));
        }
}

// An additive mask is handed over in the kernel's mask dtype (NumericsProfile::additive_mask_dtype),
// whose values the caller has rounded it to (round_additive_mask).
std::unique_ptr<GuardedTensor> make_mask(const Problem& p, const View4<const double>& mask, DType mask_dtype,
                                         std::int64_t guard, const Handover& handover) {
  if (p.mask == MaskKind::Additive) {
    require_representable("mask", mask, mask_dtype, "the backend's mask dtype",
                          "round the bias to it before the reference sees it (round_additive_mask)");
    return make_input("mask", mask, mask_dtype, handover, guard);
  }
  const Shape4& s = mask.shape;
  auto t = std::make_unique<GuardedTensor>("mask", DLDataType{kDLUInt, 8, 1}, 1, std::vector<std::int64_t>(s.begin(), s.end()),
                                           strides_for(s, false), guard, false, handover);
  for (std::int64_t a = 0; a < s[0]; ++a)
    for (std::int64_t b = 0; b < s[1]; ++b)
      for (std::int64_t c = 0; c < s[2]; ++c)
        for (std::int64_t d = 0; d < s[3]; ++d) *t->element({a, b, c, d}) = std::byte{mask(a, b, c, d) != 0.0 ? std::uint8_t{1} : std::uint8_t{0}};
  t->seal_input();
  return t;
}

std::unique_ptr<GuardedTensor> make_key_lengths(std::span<const std::int64_t> lengths, std::int64_t guard,
                                                const Handover& handover) {
  auto t = std::make_unique<GuardedTensor>("key_lengths", DLDataType{kDLInt, 64, 1}, 8,
                                           std::vector<std::int64_t>{static_cast<std::int64_t>(lengths.size())},
                                           std::vector<std::int64_t>{1}, guard, false, handover);
  for (size_t b = 0; b < lengths.size(); ++b) std::memcpy(t->element({static_cast<std::int64_t>(b)}), &lengths[b], 8);
  t->seal_input();
  return t;
}

// A packed batch's offsets (ABI 2.5): int32 [B + 1].
std::unique_ptr<GuardedTensor> make_cu_seqlens(const char* name, const std::vector<std::int32_t>& offsets,
                                               std::int64_t guard, const Handover& handover) {
  const auto count = static_cast<std::int64_t>(offsets.size());
  auto t = std::make_unique<GuardedTensor>(name, DLDataType{kDLInt, 32, 1}, 4, std::vector<std::int64_t>{count},
                                           std::vector<std::int64_t>{1}, guard, false, handover);
  for (std::int64_t b = 0; b < count; ++b) std::memcpy(t->element({b}), &offsets[static_cast<size_t>(b)], 4);
  t->seal_input();
  return t;
}

// Strides of a packed [T, H, D] tensor, token-major, each row of D followed by `row_padding` unused elements.
std::vector<std::int64_t> packed_strides(const Shape4& packed, std::int64_t row_padding) {
  const std::int64_t row = packed[3] + row_padding;
  return {packed[2] * row, row, 1};
}

// A packed [1, T, H, D] HostTensor (pack_sequences) handed as [T, H, D], with the options' row
// padding and byte offset (a packed layout is token-major by definition: never sequence-major).
std::unique_ptr<GuardedTensor> make_packed_input(const std::string& name, const HostTensor& packed, DType dtype,
                                                 const Handover& handover, std::int64_t guard) {
  const Shape4& s = packed.shape;
  auto t = std::make_unique<GuardedTensor>(name, to_dlpack(dtype), dtype_bytes(dtype), std::vector<std::int64_t>{s[1], s[2], s[3]},
                                           packed_strides(s, handover.row_padding), guard, false, handover);
  for (std::int64_t a = 0; a < s[1]; ++a)
    for (std::int64_t b = 0; b < s[2]; ++b)
      for (std::int64_t c = 0; c < s[3]; ++c) encode_value(dtype, packed(0, a, b, c), t->element({a, b, c}));
  t->seal_input();
  return t;
}

std::unique_ptr<GuardedTensor> make_block_table(std::span<const std::int32_t> table, std::int64_t batch, std::int64_t slots,
                                               std::int64_t guard, const Handover& handover) {
  auto t = std::make_unique<GuardedTensor>("block_table", DLDataType{kDLInt, 32, 1}, 4, std::vector<std::int64_t>{batch, slots},
                                           std::vector<std::int64_t>{slots, 1}, guard, false, handover);
  for (std::int64_t b = 0; b < batch; ++b)
    for (std::int64_t s = 0; s < slots; ++s) std::memcpy(t->element({b, s}), &table[static_cast<size_t>(b * slots + s)], 4);
  t->seal_input();
  return t;
}

// Reads an output back, reporting elements still holding the pre-fill pattern as unwritten.
HostTensor read_output(GuardedTensor& t, const Shape4& shape, int rank, DType dtype, std::vector<std::string>& findings) {
  HostTensor result(shape);
  std::int64_t unwritten = 0;
  std::string first;
  for (std::int64_t a = 0; a < shape[0]; ++a)
    for (std::int64_t b = 0; b < shape[1]; ++b)
      for (std::int64_t c = 0; c < shape[2]; ++c)
        for (std::int64_t d = 0; d < shape[3]; ++d) {
          const std::int64_t full[4] = {a, b, c, d};
          const std::byte* at = t.element(std::vector<std::int64_t>(full + 4 - rank, full + 4));
          if (holds_sentinel(dtype, at)) {
            if (unwritten++ == 0) {
              std::vector<std::int64_t> idx(full + 4 - rank, full + 4);
              first = fmt::format("{}", fmt::join(idx, ", "));
            }
          }
          result(a, b, c, d) = decode_value(dtype, at);
        }
  if (unwritten > 0)
    findings.push_back(fmt::format("{}: {} element(s) never written by the backend, first at [{}]", t.name(), unwritten, first));
  return result;
}

std::unique_ptr<GuardedTensor> make_output(const std::string& name, const std::vector<std::int64_t>& shape,
                                           std::vector<std::int64_t> strides, DType dtype, std::int64_t guard,
                                           const Handover& handover) {
  auto t = std::make_unique<GuardedTensor>(name, to_dlpack(dtype), dtype_bytes(dtype), shape, std::move(strides), guard, true,
                                           handover);
  t->prefill_output(dtype);
  return t;
}

// What the child reports back: the backend's status and message (a fixed-size block in shared
// memory; nothing else crosses).
struct ChildReport {
  attncheck_status status;
  int finished;
  char message[2048];
};

std::string signal_description(int signal) {
  const char* name = sigabbrev_np(signal);
  return fmt::format("SIG{} ({})", name ? name : std::to_string(signal).c_str(), strsignal(signal));
}

// Runs `call` on a fresh instance of the backend in a forked child. A fresh instance because the
// parent's may own threads, which do not survive fork, and because a sticky device error must
// not outlive its case.
template <class Call>
void run_isolated(const Backend& backend, double timeout_seconds, Call&& call) {
  SharedBytes report_bytes(sizeof(ChildReport));
  auto* report = new (report_bytes.data()) ChildReport{kAttncheckInternalError, 0, {}};
  const std::string spec = backend.origin() == "built-in" ? std::string(backend.name()) : backend.origin();
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid < 0) throw BackendError(kAttncheckInternalError, fmt::format("cannot fork an isolated child: {}", strerror(errno)));
  if (pid == 0) {
    attncheck_status status = kAttncheckOk;
    std::string message;
    try {
      Backend fresh = open_backend(spec);
      call(fresh);
    } catch (const BackendError& e) {
      status = e.status();
      message = e.what();
    } catch (const std::exception& e) {
      status = kAttncheckInternalError;
      message = e.what();
    }
    report->status = status;
    std::snprintf(report->message, sizeof(report->message), "%s", message.c_str());
    report->finished = 1;
    _exit(0);  // no atexit handlers, no stdio flush: the parent owns both
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_seconds);
  auto pause = std::chrono::microseconds(50);
  int wstatus = 0;
  while (true) {
    const pid_t done = waitpid(pid, &wstatus, WNOHANG);
    if (done == pid) break;
    if (done < 0 && errno != EINTR)
      throw BackendError(kAttncheckInternalError, fmt::format("waiting for the isolated child failed: {}", strerror(errno)));
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &wstatus, 0);
      throw BackendError(kAttncheckInternalError,
                         fmt::format("the backend did not return within {} s (hang; the child was killed)", timeout_seconds));
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(20000));
  }
  if (WIFSIGNALED(wstatus))
    throw BackendError(kAttncheckInternalError, fmt::format("the backend crashed: {}", signal_description(WTERMSIG(wstatus))));
  if (!WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0 || !report->finished)
    throw BackendError(kAttncheckInternalError,
                       fmt::format("the backend exited the process (status {}) instead of returning", WEXITSTATUS(wstatus)));
  if (report->status != kAttncheckOk) throw BackendError(report->status, report->message);
}



// The tensors of one call placed in a memory domain. On the host the staging is handed over as
// it is; elsewhere every staging allocation is copied in whole, guards and pre-fill included, and
// copied back whole after the stream was synchronized, so the host-side probes see exactly what
// the backend left in its memory. Nothing but the domain's copies touches that memory.
class Placement final : public DeviceCall {
 public:
  Placement(DLDevice device, const std::vector<GuardedTensor*>& slots)
      : domain_(make_memory_domain(device)), slots_(slots), placed_(slots.size()), device_memory_(slots.size()) {
    for (size_t i = 0; i < slots_.size(); ++i) {
      GuardedTensor* t = slots_[i];
      if (t == nullptr) continue;
      placed_[i] = *t->dl();
      if (domain_->is_host()) continue;
      device_memory_[i] = domain_->allocate(t->storage_bytes());
      domain_->copy_in(device_memory_[i], t->storage(), t->storage_bytes());
      placed_[i].data = static_cast<std::byte*>(device_memory_[i]) + t->guard_bytes();
      placed_[i].device = domain_->device();
    }
  }
  Placement(const Placement&) = delete;
  Placement& operator=(const Placement&) = delete;
  ~Placement() {
    for (void* p : device_memory_)
      if (p != nullptr) domain_->release(p);
  }

  // NULL for an absent slot.
  DLTensor* placed(size_t slot) { return slots_[slot] != nullptr ? &placed_[slot] : nullptr; }
  void* stream() { return domain_->stream(); }
  bool on_host() const { return domain_->is_host(); }

  template <class Call>
  void run(Call&& call) {
    domain_->enter_call();
    try {
      call();
    } catch (...) {
      domain_->leave_call();
      throw;
    }
    domain_->leave_call();
    synchronize();
  }

  void synchronize() override {
    if (auto error = domain_->synchronize())
      throw BackendError(kAttncheckInternalError,
                         fmt::format("asynchronous device error after the call returned: {}", *error));
  }

  void read_back() {
    if (domain_->is_host()) return;
    for (size_t i = 0; i < slots_.size(); ++i)
      if (slots_[i] != nullptr) domain_->copy_out(slots_[i]->storage(), device_memory_[i], slots_[i]->storage_bytes());
  }

 private:
  std::unique_ptr<MemoryDomain> domain_;
  std::vector<GuardedTensor*> slots_;
  std::vector<DLTensor> placed_;
  std::vector<void*> device_memory_;
};

// A fresh instance decides supports() in an isolated child when the backend's memory is not the
// host's: asking in the parent would initialise the device there, and a forked child cannot use
// a device its parent initialised.
void require_supported_in_child(const Backend& fresh, const Problem& p, DType input) {
  if (fresh.device().device_type == kDLCPU) return;
  if (auto reason = fresh.unsupported_reason(p, input)) throw BackendError(kAttncheckNotSupported, *reason);
}

// Runs `call(backend)` in this process or, with options.isolate, `call(fresh)` on a fresh
// instance in a forked child (run_isolated), which first asks supports() there when the memory
// is a device's. Every entry point calls its backend through here.
template <class Call>
void call_backend(Backend& backend, const Problem& p, DType input, const RunOptions& options, Call&& call) {
  if (!options.isolate) {
    call(backend);
    return;
  }
  run_isolated(backend, options.timeout_seconds, [&](Backend& fresh) {
    require_supported_in_child(fresh, p, input);
    call(fresh);
  });
}

const char* const kReadBackNote = " (read back after the stream was synchronized)";

// The guarded tensors of one call, one slot per tensor of its ABI struct (an empty slot is a
// tensor not passed, NULL), and what every entry point does with them: place them in the
// backend's memory and run the call, then probe every buffer and read the outputs back.
class GuardedCall {
 public:
  explicit GuardedCall(size_t slots) : tensors_(slots) {}

  void put(size_t slot, std::unique_ptr<GuardedTensor> tensor) { tensors_.at(slot) = std::move(tensor); }
  bool has(size_t slot) const { return tensors_.at(slot) != nullptr; }

  // Places every tensor in `device`'s memory, runs `call(placement)` inside the domain's call
  // window, synchronizes and reads everything back — even when the call failed, so that the
  // probes still see what a failing backend wrote. Whether the memory was a device's is kept in
  // shared memory: an isolated child runs this, the parent reads the outputs.
  template <class Call>
  void execute(DLDevice device, Call&& call) {
    ran_on_device_[0] = std::byte{0};
    Placement placement(device, slots());
    try {
      placement.run([&] { call(placement); });
    } catch (...) {
      placement.read_back();
      throw;
    }
    placement.read_back();
    ran_on_device_[0] = std::byte{!placement.on_host()};
  }

  // Guards, input fingerprints and output padding of every tensor: the findings that do not
  // depend on reading an output.
  std::vector<std::string> probe() const {
    std::vector<std::string> findings;
    for (const auto& t : tensors_)
      if (t) t->check(findings);
    return findings;
  }

  // The output in `slot`, logical shape `shape` of which the tensor has the last `rank` dims,
  // converted exactly to double; unwritten elements become a finding, marked as read back from
  // the device when the call ran on one.
  HostTensor read(size_t slot, const Shape4& shape, int rank, DType dtype, std::vector<std::string>& findings) {
    const size_t before = findings.size();
    HostTensor values = read_output(*tensors_.at(slot), shape, rank, dtype, findings);
    if (ran_on_device_[0] != std::byte{0})
      for (size_t i = before; i < findings.size(); ++i) findings[i] += kReadBackNote;
    return values;
  }

 private:
  std::vector<GuardedTensor*> slots() const {
    std::vector<GuardedTensor*> raw;
    for (const auto& t : tensors_) raw.push_back(t.get());
    return raw;
  }

  std::vector<std::unique_ptr<GuardedTensor>> tensors_;
  SharedBytes ran_on_device_{1};
};

// Slots in the order of attncheck_attention_tensors and attncheck_backward_tensors, which share
// their first five tensors; the backward's out and lse are inputs where the forward's are outputs.
enum Slot : size_t {
  kQ, kK, kV, kMask, kKeyLengths, kOut, kLse, kAlibiSlopes, kSinks, kBlockTable, kCuSeqlensQ, kCuSeqlensK,
  kQDescale, kKDescale, kVDescale, kForwardSlots
};
enum BackwardSlot : size_t { kDOut = kForwardSlots, kDLse, kDQ, kDK, kDV, kDBias, kBackwardSlots };

// The forward's inputs: Q, K and V in the layout the options ask for, the mask and the key
// lengths compact.
void put_attention_inputs(GuardedCall& call, const Problem& p, const NumericsProfile& profile, const AttentionInputs& in,
                          const RunOptions& options) {
  const std::int64_t guard = options.guard_elements;
  const Handover layout = attention_handover(options), compact = compact_handover(options);
  if (p.varlen) {
    // ABI 2.5: Q, K and V packed token-major ([T, H, D], varlen.h) with the options' row padding
    // and byte offset, the offsets int32 [B + 1] compact; the key counts travel as cu_seqlens_k.
    const Handover packed{false, options.row_padding, options.byte_offset, options.null_strides};
    call.put(kQ, make_packed_input("Q", pack_sequences(p, in.q, in.query_lengths, PackedRows::Queries), profile.input,
                                   packed, guard));
    call.put(kK, make_packed_input("K", pack_sequences(p, in.k, in.key_lengths, PackedRows::Keys), profile.input, packed, guard));
    call.put(kV, make_packed_input("V", pack_sequences(p, in.v, in.key_lengths, PackedRows::Keys), profile.input, packed, guard));
    call.put(kCuSeqlensQ, make_cu_seqlens("cu_seqlens_q", cumulative_lengths(in.query_lengths, "cu_seqlens_q"), guard, compact));
    call.put(kCuSeqlensK, make_cu_seqlens("cu_seqlens_k", cumulative_lengths(in.key_lengths, "cu_seqlens_k"), guard, compact));
  } else if (p.is_paged()) {
    call.put(kQ, make_input("Q", in.q, profile.input, layout, guard));
    // ABI 2.4: K and V as page pools in the layout the problem names (never sequence-major: the
    // layout is the problem's), with the row padding and byte offset of the options, and the
    // block table int32 [B, Lk / page] compact.
    validate_paged_kv(p, in.paged, in.key_lengths);
    const Handover pool{false, options.row_padding, options.byte_offset, options.null_strides};
    call.put(kK, make_input("K", in.paged.k_pages, profile.input, pool, guard));
    call.put(kV, make_input("V", in.paged.v_pages, profile.input, pool, guard));
    call.put(kBlockTable, make_block_table(in.paged.block_table, p.batch, p.pages_per_sequence(), guard, compact));
  } else {
    call.put(kQ, make_input("Q", in.q, profile.input, layout, guard));
    call.put(kK, make_input("K", in.k, profile.input, layout, guard));
    call.put(kV, make_input("V", in.v, profile.input, layout, guard));
  }
  if (p.mask != MaskKind::None) call.put(kMask, make_mask(p, in.mask, profile.additive_mask_dtype(), guard, compact));
  if (p.has_key_lengths && !p.varlen) call.put(kKeyLengths, make_key_lengths(in.key_lengths, guard, compact));
  // ABI 2.3: slopes [Hq] or [B, Hq] and sinks [Hq], float32 (backend.h). A value float32 would
  // round is refused: make_case_data draws them in float32.
  const char* const in_float32 = "round it to float32 before the reference sees it (make_case_data does)";
  auto put_float32 = [&](size_t slot, const char* name, std::span<const double> values, std::int64_t rows, int rank) {
    const std::int64_t cols = static_cast<std::int64_t>(values.size()) / rows;
    const View4<const double> view{values.data(), {1, 1, rows, cols}, {0, 0, cols, 1}};
    require_representable(name, view, DType::F32, "it is float32", in_float32);
    call.put(slot, make_input_rank(name, view, rank, DType::F32, guard, compact));
  };
  if (p.alibi == AlibiSlopes::PerHead) put_float32(kAlibiSlopes, "alibi_slopes", in.alibi_slopes, 1, 1);
  if (p.alibi == AlibiSlopes::PerBatchHead) put_float32(kAlibiSlopes, "alibi_slopes", in.alibi_slopes, p.batch, 2);
  if (p.sinks) put_float32(kSinks, "sinks", in.sinks, 1, 1);
  // ABI 2.6: descales [1] or [B, Hkv], float32.
  if (p.has_descales()) {
    const std::int64_t rows = p.descale == Descale::PerHead ? p.batch : 1;
    const int rank = p.descale == Descale::PerHead ? 2 : 1;
    put_float32(kQDescale, "q_descale", in.q_descale, rows, rank);
    put_float32(kKDescale, "k_descale", in.k_descale, rows, rank);
    put_float32(kVDescale, "v_descale", in.v_descale, rows, rank);
  }
}

// A [B, H, L, D] output (O, dQ, dK, dV) in the layout the options ask for.
std::unique_ptr<GuardedTensor> make_attention_output(const std::string& name, const Shape4& shape, DType dtype,
                                                     const RunOptions& options) {
  return make_output(name, {shape.begin(), shape.end()}, strides_for(shape, options.sequence_major, options.row_padding),
                     dtype, options.guard_elements, attention_handover(options));
}

// The tensor struct of a call with the slots both structs share filled from the placement.
template <class Tensors>
Tensors shared_tensors(Placement& placed) {
  Tensors tensors{};
  tensors.struct_size = sizeof(Tensors);
  tensors.stream = placed.stream();
  tensors.q = placed.placed(kQ);
  tensors.k = placed.placed(kK);
  tensors.v = placed.placed(kV);
  tensors.mask = placed.placed(kMask);
  tensors.key_lengths = placed.placed(kKeyLengths);
  tensors.alibi_slopes = placed.placed(kAlibiSlopes);
  tensors.sinks = placed.placed(kSinks);
  if constexpr (requires { tensors.block_table; }) tensors.block_table = placed.placed(kBlockTable);
  if constexpr (requires { tensors.cu_seqlens_q; }) {
    tensors.cu_seqlens_q = placed.placed(kCuSeqlensQ);
    tensors.cu_seqlens_k = placed.placed(kCuSeqlensK);
  }
  if constexpr (requires { tensors.q_descale; }) {
    tensors.q_descale = placed.placed(kQDescale);
    tensors.k_descale = placed.placed(kKDescale);
    tensors.v_descale = placed.placed(kVDescale);
  }
  return tensors;
}

}  // namespace

struct PreparedCall::Buffers {
  Problem problem;
  NumericsProfile profile;
  GuardedCall call{kForwardSlots};
  std::vector<std::int64_t> query_lengths, key_lengths;  // a packed batch's, to unpack its outputs
};

PreparedCall::PreparedCall(const Problem& p, const NumericsProfile& profile, const AttentionInputs& in,
                           const RunOptions& options)
    : buffers_(std::make_unique<Buffers>()) {
  Buffers& b = *buffers_;
  b.problem = p;
  b.profile = profile;
  put_attention_inputs(b.call, p, profile, in, options);
  if (p.varlen) {
    // ABI 2.5: out [Tq, Hq, Dv] token-major with the options' row padding, lse [Hq, Tq] compact.
    b.query_lengths.assign(in.query_lengths.begin(), in.query_lengths.end());
    b.key_lengths.assign(in.key_lengths.begin(), in.key_lengths.end());
    const std::int64_t tokens = cumulative_lengths(in.query_lengths, "cu_seqlens_q").back();
    const Shape4 packed{1, tokens, p.q_heads, p.v_dim};
    b.call.put(kOut, make_output("out", {tokens, p.q_heads, p.v_dim}, packed_strides(packed, options.row_padding),
                                 profile.output, options.guard_elements,
                                 {false, options.row_padding, options.byte_offset, options.null_strides}));
    if (options.want_lse && profile.writes_lse)
      b.call.put(kLse, make_output("lse", {p.q_heads, tokens}, {tokens, 1}, DType::F32, options.guard_elements,
                                   compact_handover(options)));
    return;
  }
  b.call.put(kOut, make_attention_output("out", {p.batch, p.q_heads, p.q_len, p.v_dim}, profile.output, options));
  if (options.want_lse && profile.writes_lse)
    b.call.put(kLse, make_output("lse", {p.batch, p.q_heads, p.q_len}, {p.q_heads * p.q_len, p.q_len, 1}, DType::F32,
                                 options.guard_elements, compact_handover(options)));
}

PreparedCall::~PreparedCall() = default;

void PreparedCall::execute(DLDevice device,
                           const std::function<void(const attncheck_attention_tensors&, DeviceCall&)>& call) {
  buffers_->call.execute(device, [&](Placement& placed) {
    attncheck_attention_tensors tensors = shared_tensors<attncheck_attention_tensors>(placed);
    tensors.out = placed.placed(kOut);
    tensors.lse = placed.placed(kLse);
    call(tensors, placed);
  });
}

BackendRun PreparedCall::finish() {
  Buffers& b = *buffers_;
  const Problem& p = b.problem;
  BackendRun run;
  run.memory_findings = b.call.probe();
  if (p.varlen) {
    // Back to the logical padded problem (varlen.h): rows that do not exist hold O = 0 and
    // LSE = −inf, as the reference's do, and no comparison reads them.
    const std::int64_t tokens = cumulative_lengths(b.query_lengths, "cu_seqlens_q").back();
    const HostTensor out = b.call.read(kOut, {1, tokens, p.q_heads, p.v_dim}, 3, b.profile.output, run.memory_findings);
    run.out = unpack_sequences(p, out.view(), b.query_lengths, PackedRows::Queries, p.q_len, 0.0);
    if (b.call.has(kLse)) {
      const HostTensor lse = b.call.read(kLse, {1, 1, p.q_heads, tokens}, 2, DType::F32, run.memory_findings);
      // [Hq, Tq] as [1, Tq, Hq, 1] for unpack_sequences, then [B, Hq, Lq, 1] as [1, B, Hq, Lq].
      HostTensor transposed({1, tokens, p.q_heads, 1});
      for (std::int64_t t = 0; t < tokens; ++t)
        for (std::int64_t h = 0; h < p.q_heads; ++h) transposed(0, t, h, 0) = lse(0, 0, h, t);
      HostTensor logical = unpack_sequences(p, transposed.view(), b.query_lengths, PackedRows::Queries, p.q_len,
                                            -std::numeric_limits<double>::infinity());
      logical.shape = {1, p.batch, p.q_heads, p.q_len};
      run.lse = std::move(logical);
    }
    return run;
  }
  run.out = b.call.read(kOut, {p.batch, p.q_heads, p.q_len, p.v_dim}, 4, b.profile.output, run.memory_findings);
  if (b.call.has(kLse)) run.lse = b.call.read(kLse, {1, p.batch, p.q_heads, p.q_len}, 3, DType::F32, run.memory_findings);
  return run;
}

BackendRun run_backend(Backend& backend, const Problem& p, const NumericsProfile& profile, const AttentionInputs& in,
                       const RunOptions& options) {
  PreparedCall call(p, profile, in, options);
  call_backend(backend, p, profile.input, options, [&](Backend& b) {
    call.execute(b.device(), [&](const attncheck_attention_tensors& tensors, DeviceCall&) { b.forward(p, tensors); });
  });
  return call.finish();
}

std::optional<BackendError> forward_with_problem(Backend& backend, const Problem& prepared, const Problem& called,
                                                 const NumericsProfile& profile, const AttentionInputs& inputs,
                                                 const RunOptions& options) {
  PreparedCall call(prepared, profile, inputs, options);
  try {
    call.execute(backend.device(), [&](const attncheck_attention_tensors& tensors, DeviceCall&) { backend.forward(called, tensors); });
  } catch (const BackendError& e) {
    return e;
  }
  return std::nullopt;
}

BackwardRun run_backend_backward(Backend& backend, const Problem& p, const NumericsProfile& profile,
                                 const BackwardProfile& backward_profile, const AttentionInputs& in,
                                 const BackwardData& data, bool want_d_bias, const RunOptions& options) {
  const View4<const double> d_lse = data.d_lse ? data.d_lse->view() : View4<const double>{};
  validate_backward_inputs(p, in, BackwardInputs{data.out.view(), data.lse.view(), data.d_out.view(), d_lse});
  if (want_d_bias && p.mask != MaskKind::Additive)
    throw std::invalid_argument(fmt::format("dbias: asked for, but the problem's mask kind is {} (only an additive mask "
                                            "has a gradient)", mask_kind_name(p.mask)));
  if (want_d_bias && !backward_profile.writes_dbias)
    throw std::invalid_argument("dbias: asked for, but the backward profile does not write it (writes_dbias = 0)");
  if (p.varlen)
    throw std::invalid_argument("cu_seqlens_q: the backward ABI takes padded batches only (a packed batch is a "
                                "forward layout: backend.h, ABI 2.5)");
  if (p.is_paged())
    throw std::invalid_argument("block_table: the backward ABI takes contiguous K and V only (a paged cache is an "
                                "inference layout: backend.h, ABI 2.4)");
  if (data.d_lse && !backward_profile.accepts_dlse)
    throw std::invalid_argument("dlse: given, but the backward profile does not take it (accepts_dlse = 0: dlse must be NULL)");

  const std::int64_t guard = options.guard_elements;
  const Handover layout = attention_handover(options), compact = compact_handover(options);
  const DType gradient = backward_profile.gradient_dtype(profile.input);
  const char* const rounded = "round it as make_backward_data does before the reference sees it";
  GuardedCall call(kBackwardSlots);
  put_attention_inputs(call, p, profile, in, options);
  require_representable("out", data.out.view(), profile.output, "the forward profile's output dtype", rounded);
  call.put(kOut, make_input("out", data.out.view(), profile.output, layout, guard));
  require_representable("lse", data.lse.view(), DType::F32, "lse is float32", rounded);
  call.put(kLse, make_input_rank("lse", data.lse.view(), 3, DType::F32, guard, compact));
  require_representable("dout", data.d_out.view(), profile.input, "the input dtype", rounded);
  call.put(kDOut, make_input("dout", data.d_out.view(), profile.input, layout, guard));
  if (data.d_lse) {
    require_representable("dlse", d_lse, DType::F32, "dlse is float32", rounded);
    call.put(kDLse, make_input_rank("dlse", d_lse, 3, DType::F32, guard, compact));
  }
  const Shape4 dq_shape{p.batch, p.q_heads, p.q_len, p.qk_dim}, dk_shape{p.batch, p.kv_heads, p.k_len, p.qk_dim},
      dv_shape{p.batch, p.kv_heads, p.k_len, p.v_dim}, bias_shape{p.mask_batch, p.mask_heads, p.mask_q_len, p.mask_k_len};
  call.put(kDQ, make_attention_output("dq", dq_shape, gradient, options));
  call.put(kDK, make_attention_output("dk", dk_shape, gradient, options));
  call.put(kDV, make_attention_output("dv", dv_shape, gradient, options));
  if (want_d_bias)
    call.put(kDBias, make_output("dbias", {bias_shape.begin(), bias_shape.end()}, strides_for(bias_shape, false), gradient,
                                 guard, compact));

  call_backend(backend, p, profile.input, options, [&](Backend& b) {
    call.execute(b.device(), [&](Placement& placed) {
      attncheck_backward_tensors tensors = shared_tensors<attncheck_backward_tensors>(placed);
      tensors.out = placed.placed(kOut);
      tensors.lse = placed.placed(kLse);
      tensors.dout = placed.placed(kDOut);
      tensors.dlse = placed.placed(kDLse);
      tensors.dq = placed.placed(kDQ);
      tensors.dk = placed.placed(kDK);
      tensors.dv = placed.placed(kDV);
      tensors.dbias = placed.placed(kDBias);
      b.backward(p, tensors);
    });
  });

  BackwardRun run;
  run.memory_findings = call.probe();
  run.gradients.d_q = call.read(kDQ, dq_shape, 4, gradient, run.memory_findings);
  run.gradients.d_k = call.read(kDK, dk_shape, 4, gradient, run.memory_findings);
  run.gradients.d_v = call.read(kDV, dv_shape, 4, gradient, run.memory_findings);
  if (want_d_bias) run.gradients.d_bias = call.read(kDBias, bias_shape, 4, gradient, run.memory_findings);
  return run;
}

BackendRun run_backend_layer(Backend& backend, const LayerProblem& lp, const NumericsProfile& profile,
                             const LayerInputs& in, const RunOptions& options) {
  const std::int64_t guard = options.guard_elements;
  const Problem& p = lp.attention;
  const DType dt = profile.input;
  const Handover compact = compact_handover(options);
  // Slots in the order of attncheck_layer_tensors.
  enum LayerSlot : size_t { kX, kXKv, kWQ, kWK, kWV, kBQ, kBK, kBV, kWO, kBO, kLayerMask, kLayerKeyLengths, kLayerOut, kLayerSlots };
  GuardedCall call(kLayerSlots);
  call.put(kX, make_input_rank("x", in.x, 3, dt, guard, compact));
  if (!lp.self_attention) call.put(kXKv, make_input_rank("x_kv", in.x_kv, 3, dt, guard, compact));
  call.put(kWQ, make_input_rank("w_q", in.w_q, 3, dt, guard, compact));
  call.put(kWK, make_input_rank("w_k", in.w_k, 3, dt, guard, compact));
  call.put(kWV, make_input_rank("w_v", in.w_v, 3, dt, guard, compact));
  call.put(kWO, make_input_rank("w_o", in.w_o, 2, dt, guard, compact));
  if (lp.has_qkv_bias) {
    call.put(kBQ, make_input_rank("b_q", in.b_q, 2, dt, guard, compact));
    call.put(kBK, make_input_rank("b_k", in.b_k, 2, dt, guard, compact));
    call.put(kBV, make_input_rank("b_v", in.b_v, 2, dt, guard, compact));
  }
  if (lp.has_out_bias) call.put(kBO, make_input_rank("b_o", in.b_o, 1, dt, guard, compact));
  if (p.mask != MaskKind::None) call.put(kLayerMask, make_mask(p, in.mask, dt, guard, compact));
  if (p.has_key_lengths) call.put(kLayerKeyLengths, make_key_lengths(in.key_lengths, guard, compact));
  call.put(kLayerOut, make_output("out", {p.batch, p.q_len, lp.model_dim}, {p.q_len * lp.model_dim, lp.model_dim, 1},
                                  profile.output, guard, compact));
  call_backend(backend, p, profile.input, options, [&](Backend& b) {
    call.execute(b.device(), [&](Placement& placed) {
      attncheck_layer_tensors tensors{};
      tensors.struct_size = sizeof(attncheck_layer_tensors);
      tensors.stream = placed.stream();
      tensors.x = placed.placed(kX);
      tensors.x_kv = placed.placed(kXKv);
      tensors.w_q = placed.placed(kWQ);
      tensors.w_k = placed.placed(kWK);
      tensors.w_v = placed.placed(kWV);
      tensors.b_q = placed.placed(kBQ);
      tensors.b_k = placed.placed(kBK);
      tensors.b_v = placed.placed(kBV);
      tensors.w_o = placed.placed(kWO);
      tensors.b_o = placed.placed(kBO);
      tensors.mask = placed.placed(kLayerMask);
      tensors.key_lengths = placed.placed(kLayerKeyLengths);
      tensors.out = placed.placed(kLayerOut);
      b.forward_layer(lp, tensors);
    });
  });
  BackendRun run;
  run.memory_findings = call.probe();
  run.out = call.read(kLayerOut, {1, p.batch, p.q_len, lp.model_dim}, 3, profile.output, run.memory_findings);
  return run;
}

}  // namespace attncheck
