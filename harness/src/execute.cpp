#include "attncheck/execute.h"

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <bit>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>
#include <fmt/format.h>
#include <memory>
#include <thread>

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
  }
  return 0;
}

void encode(double x, DType dtype, std::byte* at) {
  switch (dtype) {
    case DType::F32: {
      const float f = static_cast<float>(x);
      std::memcpy(at, &f, 4);
      return;
    }
    case DType::F16: {
      const std::uint16_t bits = to_f16_bits(x);
      std::memcpy(at, &bits, 2);
      return;
    }
    case DType::BF16: {
      const std::uint16_t bits = to_bf16_bits(x);
      std::memcpy(at, &bits, 2);
      return;
    }
    case DType::F64: std::memcpy(at, &x, 8); return;
  }
}

double decode(DType dtype, const std::byte* at) {
  switch (dtype) {
    case DType::F32: {
      float f;
      std::memcpy(&f, at, 4);
      return f;
    }
    case DType::F16: {
      std::uint16_t bits;
      std::memcpy(&bits, at, 2);
      return from_f16_bits(bits);
    }
    case DType::BF16: {
      std::uint16_t bits;
      std::memcpy(&bits, at, 2);
      return from_bf16_bits(bits);
    }
    case DType::F64: {
      double d;
      std::memcpy(&d, at, 8);
      return d;
    }
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

// One tensor handed to the backend: element storage between two guard regions, the DLTensor
// that describes it, and a copy of the bytes an input held before the call.
class GuardedTensor {
 public:
  GuardedTensor(std::string name, DLDataType dl_type, int element_bytes, std::vector<std::int64_t> shape,
                std::vector<std::int64_t> strides, std::int64_t guard_elements, bool is_output)
      : name_(std::move(name)), element_bytes_(element_bytes), shape_(std::move(shape)), strides_(std::move(strides)),
        guard_bytes_(guard_elements * element_bytes), is_output_(is_output) {
    std::int64_t span = 1;  // elements between the lowest and highest addressed element, inclusive
    for (size_t d = 0; d < shape_.size(); ++d) span += (shape_[d] - 1) * strides_[d];
    bool any_empty = false;
    for (auto s : shape_) any_empty |= s == 0;
    data_bytes_ = any_empty ? 0 : span * element_bytes_;
    storage_ = std::make_unique<SharedBytes>(static_cast<size_t>(data_bytes_ + 2 * guard_bytes_));
    fill_pattern(0, storage_->size());
    tensor_.data = storage_->data() + guard_bytes_;
    tensor_.device = {kDLCPU, 0};
    tensor_.ndim = static_cast<int>(shape_.size());
    tensor_.dtype = dl_type;
    tensor_.shape = shape_.data();
    tensor_.strides = strides_.data();
    tensor_.byte_offset = 0;
  }

  std::byte* element(const std::vector<std::int64_t>& index) {
    std::int64_t offset = 0;
    for (size_t d = 0; d < index.size(); ++d) offset += index[d] * strides_[d];
    return storage_->data() + guard_bytes_ + offset * element_bytes_;
  }
  DLTensor* dl() { return &tensor_; }

  /// Sets every byte of the buffer (data and guards) to the pattern an output is pre-filled with.
  void prefill_output(DType dtype) {
    const std::uint64_t bits = sentinel_bits(dtype);
    for (size_t at = 0; at + static_cast<size_t>(element_bytes_) <= storage_->size(); at += static_cast<size_t>(element_bytes_))
      std::memcpy(storage_->data() + at, &bits, static_cast<size_t>(element_bytes_));
    snapshot();
  }
  /// Remembers the bytes of an input after it was written, to detect writes by the backend.
  void seal_input() { snapshot(); }

  void check(std::vector<std::string>& findings) const {
    check_guard("before the start", 0, findings);
    check_guard("after the end", static_cast<size_t>(guard_bytes_ + data_bytes_), findings);
    if (!is_output_ && std::memcmp(before_.data() + guard_bytes_, storage_->data() + guard_bytes_,
                                   static_cast<size_t>(data_bytes_)) != 0) {
      std::int64_t first = 0;
      while (before_[static_cast<size_t>(guard_bytes_ + first)] == (*storage_)[static_cast<size_t>(guard_bytes_ + first)]) ++first;
      findings.push_back(fmt::format("{}: the backend wrote to this input (first changed byte at offset {})", name_, first));
    }
  }

 private:
  void fill_pattern(size_t from, size_t to) {
    for (size_t i = from; i < to; ++i) (*storage_)[i] = std::byte{0xa5};
  }
  void snapshot() { before_.assign(storage_->data(), storage_->data() + storage_->size()); }
  void check_guard(const char* side, size_t start, std::vector<std::string>& findings) const {
    const std::byte* now = storage_->data() + start;
    const std::byte* was = before_.empty() ? nullptr : before_.data() + start;
    for (std::int64_t i = 0; i < guard_bytes_; ++i) {
      const std::byte expected = was ? was[i] : std::byte{0xa5};
      if (now[i] != expected) {
        const std::int64_t element = i / element_bytes_;
        findings.push_back(fmt::format("{}: out-of-bounds write {}, first bad element at {}{}", name_, side,
                                       side[0] == 'b' ? "-" : "+",
                                       side[0] == 'b' ? guard_bytes_ / element_bytes_ - element : element));
        return;
      }
    }
  }

  std::string name_;
  int element_bytes_;
  std::vector<std::int64_t> shape_, strides_;
  std::int64_t guard_bytes_, data_bytes_ = 0;
  bool is_output_;
  std::unique_ptr<SharedBytes> storage_;
  std::vector<std::byte> before_;
  DLTensor tensor_{};
};

// Strides of a [B, H, L, D] logical tensor laid out as [B, H, L, D] or [B, L, H, D] in memory.
std::vector<std::int64_t> strides_for(const Shape4& s, bool sequence_major) {
  if (!sequence_major) {
    const Shape4 c = compact_strides(s);
    return {c[0], c[1], c[2], c[3]};
  }
  const Shape4 m = compact_strides({s[0], s[2], s[1], s[3]});
  return {m[0], m[2], m[1], m[3]};
}

std::unique_ptr<GuardedTensor> make_input(const std::string& name, const View4<const double>& view, DType dtype,
                                          bool sequence_major, std::int64_t guard) {
  const Shape4& s = view.shape;
  auto t = std::make_unique<GuardedTensor>(name, to_dlpack(dtype), dtype_bytes(dtype),
                                           std::vector<std::int64_t>(s.begin(), s.end()), strides_for(s, sequence_major),
                                           guard, false);
  for (std::int64_t a = 0; a < s[0]; ++a)
    for (std::int64_t b = 0; b < s[1]; ++b)
      for (std::int64_t c = 0; c < s[2]; ++c)
        for (std::int64_t d = 0; d < s[3]; ++d) encode(view(a, b, c, d), dtype, t->element({a, b, c, d}));
  t->seal_input();
  return t;
}

// A lower-rank tensor stored as a right-aligned 4-d view: keep its last `rank` dims.
std::unique_ptr<GuardedTensor> make_input_rank(const std::string& name, const View4<const double>& view, int rank,
                                               DType dtype, std::int64_t guard) {
  std::vector<std::int64_t> shape(view.shape.end() - rank, view.shape.end());
  std::vector<std::int64_t> strides(static_cast<size_t>(rank));
  std::int64_t stride = 1;
  for (int d = rank - 1; d >= 0; --d) {
    strides[static_cast<size_t>(d)] = stride;
    stride *= shape[static_cast<size_t>(d)];
  }
  auto t = std::make_unique<GuardedTensor>(name, to_dlpack(dtype), dtype_bytes(dtype), shape, strides, guard, false);
  const Shape4& s = view.shape;
  for (std::int64_t a = 0; a < s[0]; ++a)
    for (std::int64_t b = 0; b < s[1]; ++b)
      for (std::int64_t c = 0; c < s[2]; ++c)
        for (std::int64_t d = 0; d < s[3]; ++d) {
          const std::int64_t full[4] = {a, b, c, d};
          encode(view(a, b, c, d), dtype, t->element(std::vector<std::int64_t>(full + 4 - rank, full + 4)));
        }
  t->seal_input();
  return t;
}

std::unique_ptr<GuardedTensor> make_mask(const Problem& p, const View4<const double>& mask, DType input, std::int64_t guard) {
  if (p.mask == MaskKind::Additive) return make_input("mask", mask, input, false, guard);
  const Shape4& s = mask.shape;
  auto t = std::make_unique<GuardedTensor>("mask", DLDataType{kDLUInt, 8, 1}, 1, std::vector<std::int64_t>(s.begin(), s.end()),
                                           strides_for(s, false), guard, false);
  for (std::int64_t a = 0; a < s[0]; ++a)
    for (std::int64_t b = 0; b < s[1]; ++b)
      for (std::int64_t c = 0; c < s[2]; ++c)
        for (std::int64_t d = 0; d < s[3]; ++d) *t->element({a, b, c, d}) = std::byte{mask(a, b, c, d) != 0.0 ? std::uint8_t{1} : std::uint8_t{0}};
  t->seal_input();
  return t;
}

std::unique_ptr<GuardedTensor> make_key_lengths(std::span<const std::int64_t> lengths, std::int64_t guard) {
  auto t = std::make_unique<GuardedTensor>("key_lengths", DLDataType{kDLInt, 64, 1}, 8,
                                           std::vector<std::int64_t>{static_cast<std::int64_t>(lengths.size())},
                                           std::vector<std::int64_t>{1}, guard, false);
  for (size_t b = 0; b < lengths.size(); ++b) std::memcpy(t->element({static_cast<std::int64_t>(b)}), &lengths[b], 8);
  t->seal_input();
  return t;
}

// Reads an output back, reporting elements still holding the pre-fill pattern as unwritten.
HostTensor read_output(GuardedTensor& t, const std::string& name, const Shape4& shape, int rank, DType dtype,
                       std::vector<std::string>& findings) {
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
          result(a, b, c, d) = decode(dtype, at);
        }
  if (unwritten > 0)
    findings.push_back(fmt::format("{}: {} element(s) never written by the backend, first at [{}]", name, unwritten, first));
  return result;
}

std::unique_ptr<GuardedTensor> make_output(const std::string& name, const std::vector<std::int64_t>& shape,
                                           std::vector<std::int64_t> strides, DType dtype, std::int64_t guard) {
  auto t = std::make_unique<GuardedTensor>(name, to_dlpack(dtype), dtype_bytes(dtype), shape, std::move(strides), guard, true);
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

}  // namespace

struct PreparedCall::Buffers {
  Problem problem;
  NumericsProfile profile;
  std::unique_ptr<GuardedTensor> q, k, v, mask, lengths, out, lse;
  attncheck_attention_tensors tensors{};
};

PreparedCall::PreparedCall(const Problem& p, const NumericsProfile& profile, const AttentionInputs& in,
                           const RunOptions& options)
    : buffers_(std::make_unique<Buffers>()) {
  Buffers& b = *buffers_;
  b.problem = p;
  b.profile = profile;
  const std::int64_t guard = options.guard_elements;
  b.q = make_input("Q", in.q, profile.input, options.sequence_major, guard);
  b.k = make_input("K", in.k, profile.input, options.sequence_major, guard);
  b.v = make_input("V", in.v, profile.input, options.sequence_major, guard);
  if (p.mask != MaskKind::None) b.mask = make_mask(p, in.mask, profile.input, guard);
  if (p.has_key_lengths) b.lengths = make_key_lengths(in.key_lengths, guard);
  const Shape4 out_shape{p.batch, p.q_heads, p.q_len, p.v_dim};
  b.out = make_output("out", {out_shape.begin(), out_shape.end()}, strides_for(out_shape, options.sequence_major),
                      profile.output, guard);
  if (options.want_lse && profile.writes_lse)
    b.lse = make_output("lse", {p.batch, p.q_heads, p.q_len}, {p.q_heads * p.q_len, p.q_len, 1}, DType::F32, guard);
  auto dl = [](const std::unique_ptr<GuardedTensor>& t) { return t ? t->dl() : nullptr; };
  b.tensors = {b.q->dl(), b.k->dl(), b.v->dl(), dl(b.mask), dl(b.lengths), b.out->dl(), dl(b.lse)};
}

PreparedCall::~PreparedCall() = default;

const attncheck_attention_tensors& PreparedCall::tensors() const { return buffers_->tensors; }

BackendRun PreparedCall::finish() {
  Buffers& b = *buffers_;
  const Problem& p = b.problem;
  BackendRun run;
  for (const auto* t : {&b.q, &b.k, &b.v, &b.mask, &b.lengths, &b.out, &b.lse})
    if (*t) (*t)->check(run.memory_findings);
  run.out = read_output(*b.out, "out", {p.batch, p.q_heads, p.q_len, p.v_dim}, 4, b.profile.output, run.memory_findings);
  if (b.lse) run.lse = read_output(*b.lse, "lse", {1, p.batch, p.q_heads, p.q_len}, 3, DType::F32, run.memory_findings);
  return run;
}

BackendRun run_backend(Backend& backend, const Problem& p, const NumericsProfile& profile, const AttentionInputs& in,
                       const RunOptions& options) {
  PreparedCall call(p, profile, in, options);
  if (options.isolate) {
    run_isolated(backend, options.timeout_seconds, [&](Backend& fresh) { fresh.forward(p, call.tensors()); });
  } else {
    backend.forward(p, call.tensors());
  }
  return call.finish();
}

BackendRun run_backend_layer(Backend& backend, const LayerProblem& lp, const NumericsProfile& profile,
                             const LayerInputs& in, const RunOptions& options) {
  const std::int64_t guard = options.guard_elements;
  const Problem& p = lp.attention;
  const DType dt = profile.input;
  auto x = make_input_rank("x", in.x, 3, dt, guard);
  std::unique_ptr<GuardedTensor> x_kv, b_q, b_k, b_v, b_o, mask, lengths;
  if (!lp.self_attention) x_kv = make_input_rank("x_kv", in.x_kv, 3, dt, guard);
  auto w_q = make_input_rank("w_q", in.w_q, 3, dt, guard);
  auto w_k = make_input_rank("w_k", in.w_k, 3, dt, guard);
  auto w_v = make_input_rank("w_v", in.w_v, 3, dt, guard);
  auto w_o = make_input_rank("w_o", in.w_o, 2, dt, guard);
  if (lp.has_qkv_bias) {
    b_q = make_input_rank("b_q", in.b_q, 2, dt, guard);
    b_k = make_input_rank("b_k", in.b_k, 2, dt, guard);
    b_v = make_input_rank("b_v", in.b_v, 2, dt, guard);
  }
  if (lp.has_out_bias) b_o = make_input_rank("b_o", in.b_o, 1, dt, guard);
  if (p.mask != MaskKind::None) mask = make_mask(p, in.mask, dt, guard);
  if (p.has_key_lengths) lengths = make_key_lengths(in.key_lengths, guard);
  auto out = make_output("out", {p.batch, p.q_len, lp.model_dim}, {p.q_len * lp.model_dim, lp.model_dim, 1},
                         profile.output, guard);
  auto dl = [](const std::unique_ptr<GuardedTensor>& t) -> const DLTensor* { return t ? t->dl() : nullptr; };
  attncheck_layer_tensors tensors{x->dl(), dl(x_kv), w_q->dl(), w_k->dl(), w_v->dl(), dl(b_q), dl(b_k), dl(b_v),
                                  w_o->dl(), dl(b_o), dl(mask), dl(lengths), out->dl()};
  if (options.isolate) {
    run_isolated(backend, options.timeout_seconds, [&](Backend& fresh) { fresh.forward_layer(lp, tensors); });
  } else {
    backend.forward_layer(lp, tensors);
  }

  BackendRun run;
  for (GuardedTensor* t : {x.get(), x_kv.get(), w_q.get(), w_k.get(), w_v.get(), w_o.get(), b_q.get(), b_k.get(),
                           b_v.get(), b_o.get(), mask.get(), lengths.get(), out.get()})
    if (t) t->check(run.memory_findings);
  run.out = read_output(*out, "out", {1, p.batch, p.q_len, lp.model_dim}, 3, profile.output, run.memory_findings);
  return run;
}

}  // namespace attncheck
