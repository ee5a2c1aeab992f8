// An attention kernel from outside attncheck, written against the plug-in ABI alone
// (<attncheck/backend.h>): fp32 inputs in CPU memory, three passes per query row (scores, max,
// softmax-weighted sum), any strides. It exports attncheck_backend_entry, so
//
//   attncheck run --backend ./libnaive_kernel.so
//
// checks it, and the CMake function attncheck_add_conformance_test() gates its CI on that run.
//
// With EXAMPLE_PLANT_BUG the causal mask drops the diagonal itself (j < p instead of j <= p), a
// classic off-by-one that the suite must catch.
#include <attncheck/backend.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

constexpr const char* kName = "example-naive";

// What forward/supports report: a status and one line saying what is wrong.
struct Failure {
  attncheck_status status;
  std::string message;
};

struct Kernel {
  attncheck_backend table{};
  std::string last_error;
};

Kernel& kernel_of(const attncheck_backend* self) {
  return *static_cast<Kernel*>(self->context);
}

bool is_f32(DLDataType t) { return t.code == kDLFloat && t.bits == 32 && t.lanes == 1; }

[[noreturn]] void invalid(const std::string& what) { throw Failure{kAttncheckInvalidProblem, what}; }

// A read view of one tensor: checks rank, shape, dtype and device once, then indexes by strides
// (in elements; NULL strides mean compact row-major, as in DLPack).
template <typename T>
class View {
 public:
  View(const char* name, const DLTensor* t, std::vector<int64_t> shape, DLDataType dtype) {
    if (t == nullptr) invalid(std::string(name) + ": tensor missing");
    if (t->device.device_type != kDLCPU) invalid(std::string(name) + ": not in CPU memory");
    if (t->dtype.code != dtype.code || t->dtype.bits != dtype.bits || t->dtype.lanes != 1)
      invalid(std::string(name) + ": unexpected dtype");
    if (t->ndim != static_cast<int32_t>(shape.size())) invalid(std::string(name) + ": unexpected rank");
    strides_.resize(shape.size());
    int64_t compact = 1;
    for (int d = static_cast<int>(shape.size()) - 1; d >= 0; --d) {
      if (t->shape[d] != shape[d])
        invalid(std::string(name) + ": dimension " + std::to_string(d) + " is " + std::to_string(t->shape[d]) +
                ", expected " + std::to_string(shape[d]));
      strides_[d] = t->strides != nullptr ? t->strides[d] : compact;
      compact *= shape[d];
    }
    base_ = reinterpret_cast<T*>(static_cast<char*>(t->data) + t->byte_offset);
  }
  T& at(int64_t a, int64_t b = 0, int64_t c = 0, int64_t d = 0) const {
    const int64_t index[4] = {a, b, c, d};
    int64_t offset = 0;
    for (std::size_t k = 0; k < strides_.size(); ++k) offset += index[k] * strides_[k];
    return base_[offset];
  }

 private:
  T* base_ = nullptr;
  std::vector<int64_t> strides_;
};

// Everything attncheck_problem promises, checked before a single element is read or written.
void validate(const attncheck_problem& p) {
  if (p.batch < 1 || p.q_heads < 1 || p.kv_heads < 1 || p.q_len < 1 || p.k_len < 1 || p.qk_dim < 1 || p.v_dim < 1)
    invalid("every size must be at least 1");
  if (p.q_heads % p.kv_heads != 0) invalid("q_heads must be a multiple of kv_heads");
  if (p.alignment < kAttncheckAlignTopLeft || p.alignment > kAttncheckAlignKeyLengths) invalid("unknown alignment");
  if (p.alignment == kAttncheckAlignKeyLengths && !p.has_key_lengths) invalid("key-length alignment without key lengths");
  if (p.mask_kind < kAttncheckMaskNone || p.mask_kind > kAttncheckMaskAdditive) invalid("unknown mask kind");
  if (!std::isfinite(p.scale) || !(p.softcap >= 0) || p.window_left < -1 || p.window_right < -1)
    invalid("scale, softcap or window out of range");
  if (p.mask_kind != kAttncheckMaskNone) {
    const int64_t* m = p.mask_shape;
    if ((m[0] != 1 && m[0] != p.batch) || (m[1] != 1 && m[1] != p.q_heads) || (m[2] != 1 && m[2] != p.q_len) ||
        m[3] < 1 || m[3] > p.k_len)
      invalid("mask_shape does not broadcast to [B, Hq, Lq, <=Lk]");
  }
}

void check_supported(const attncheck_problem* problem, DLDataType input, DLDeviceType device) {
  if (problem == nullptr) invalid("problem is NULL");
  validate(*problem);
  if (!is_f32(input)) throw Failure{kAttncheckNotSupported, "only float32 inputs"};
  if (device != kDLCPU) throw Failure{kAttncheckNotSupported, "only CPU memory"};
}

// The diagonal a causal mask and a window are measured from: query i of batch b sits at key
// position i + offset (backend.h, attncheck_alignment).
int64_t diagonal_offset(const attncheck_problem& p, int64_t key_length) {
  switch (p.alignment) {
    case kAttncheckAlignBottomRight: return p.k_len - p.q_len;
    case kAttncheckAlignOffset: return p.diagonal_offset;
    case kAttncheckAlignKeyLengths: return key_length - p.q_len;
    default: return 0;
  }
}

void forward(const attncheck_problem& p, const attncheck_attention_tensors& t) {
  // ABI 2.0's rule 3 (backend.h): a struct smaller than its 2.0 layout comes from a foreign caller.
  if (p.struct_size < ATTNCHECK_PROBLEM_SIZE_2_0 || t.struct_size < ATTNCHECK_ATTENTION_TENSORS_SIZE_2_0)
    invalid("problem or tensors: struct_size smaller than ABI 2.0's");
  validate(p);
  const DLDataType f32{kDLFloat, 32, 1};
  const View<const float> q("q", t.q, {p.batch, p.q_heads, p.q_len, p.qk_dim}, f32);
  const View<const float> k("k", t.k, {p.batch, p.kv_heads, p.k_len, p.qk_dim}, f32);
  const View<const float> v("v", t.v, {p.batch, p.kv_heads, p.k_len, p.v_dim}, f32);
  const View<float> out("out", t.out, {p.batch, p.q_heads, p.q_len, p.v_dim}, f32);
  const std::vector<int64_t> mask_shape(p.mask_shape, p.mask_shape + 4);
  std::vector<View<const uint8_t>> bool_mask;
  std::vector<View<const float>> bias;
  if (p.mask_kind == kAttncheckMaskBoolean) bool_mask.emplace_back("mask", t.mask, mask_shape, DLDataType{kDLUInt, 8, 1});
  if (p.mask_kind == kAttncheckMaskAdditive) bias.emplace_back("mask", t.mask, mask_shape, f32);
  std::vector<View<float>> lse;
  if (t.lse != nullptr) lse.emplace_back("lse", t.lse, std::vector<int64_t>{p.batch, p.q_heads, p.q_len}, f32);
  std::vector<int64_t> lengths(static_cast<std::size_t>(p.batch), p.k_len);
  if (p.has_key_lengths) {
    const View<const int64_t> kl("key_lengths", t.key_lengths, {p.batch}, DLDataType{kDLInt, 64, 1});
    for (int64_t b = 0; b < p.batch; ++b) {
      lengths[b] = kl.at(b);
      if (lengths[b] < 0 || lengths[b] > p.k_len) invalid("key_lengths[" + std::to_string(b) + "] outside [0, Lk]");
    }
  }

  const int64_t group = p.q_heads / p.kv_heads;
  const float scale = static_cast<float>(p.scale);
  const float softcap = static_cast<float>(p.softcap);
  const float minus_inf = -std::numeric_limits<float>::infinity();
  std::vector<float> scores(static_cast<std::size_t>(p.k_len));
  std::vector<float> acc(static_cast<std::size_t>(p.v_dim));
  for (int64_t b = 0; b < p.batch; ++b) {
    const int64_t offset = diagonal_offset(p, lengths[b]);
    const int64_t mb = p.mask_shape[0] == 1 ? 0 : b;
    for (int64_t h = 0; h < p.q_heads; ++h) {
      const int64_t g = h / group;  // GQA: query head h reads kv head h / (Hq / Hkv)
      const int64_t mh = p.mask_shape[1] == 1 ? 0 : h;
      for (int64_t i = 0; i < p.q_len; ++i) {
        const int64_t mi = p.mask_shape[2] == 1 ? 0 : i;
        const int64_t pos = i + offset;
        // Pass 1: scores of the allowed keys; a disallowed key is -inf and its K is never read.
        float max = minus_inf;
        for (int64_t j = 0; j < p.k_len; ++j) {
          bool allowed = j < lengths[b];
          if (p.mask_kind != kAttncheckMaskNone) allowed = allowed && j < p.mask_shape[3];
          if (allowed && !bool_mask.empty()) allowed = bool_mask[0].at(mb, mh, mi, j) != 0;
#ifdef EXAMPLE_PLANT_BUG
          if (p.causal) allowed = allowed && j < pos;  // the planted bug: the diagonal is masked too
#else
          if (p.causal) allowed = allowed && j <= pos;
#endif
          if (p.window_left >= 0) allowed = allowed && j >= pos - p.window_left;
          if (p.window_right >= 0) allowed = allowed && j <= pos + p.window_right;
          // A bias of -inf masks the key as surely as a boolean mask: its K is not read either.
          const float key_bias = allowed && !bias.empty() ? bias[0].at(mb, mh, mi, j) : 0.0f;
          allowed = allowed && key_bias != minus_inf;
          float s = minus_inf;
          if (allowed) {
            float dot = 0;
            for (int64_t d = 0; d < p.qk_dim; ++d) dot += q.at(b, h, i, d) * k.at(b, g, j, d);
            s = scale * dot;
            if (softcap > 0) s = softcap * std::tanh(s / softcap);
            s += key_bias;
          }
          scores[j] = s;
          if (s > max) max = s;
        }
        // Passes 2 and 3: softmax weights and the weighted sum of V over the keys that count.
        std::fill(acc.begin(), acc.end(), 0.0f);
        float sum = 0;
        if (max != minus_inf) {
          for (int64_t j = 0; j < p.k_len; ++j) {
            if (scores[j] == minus_inf) continue;  // masked: contributes exactly nothing, V unread
            const float w = std::exp(scores[j] - max);
            sum += w;
            for (int64_t d = 0; d < p.v_dim; ++d) acc[d] += w * v.at(b, g, j, d);
          }
        }
        // A row with no allowed key: zeros and LSE = -inf, as the profile declares.
        for (int64_t d = 0; d < p.v_dim; ++d) out.at(b, h, i, d) = sum > 0 ? acc[d] / sum : 0.0f;
        if (!lse.empty()) lse[0].at(b, h, i) = sum > 0 ? max + std::log(sum) : minus_inf;
      }
    }
  }
}

// --- The C table: every entry point catches everything; only statuses cross the boundary. --------

attncheck_status fail(const attncheck_backend* self, const Failure& f) {
  kernel_of(self).last_error = f.message;
  return f.status;
}

template <typename Body>
attncheck_status guarded(const attncheck_backend* self, Body body) {
  try {
    body();
    return kAttncheckOk;
  } catch (const Failure& f) {
    return fail(self, f);
  } catch (const std::exception& e) {
    return fail(self, Failure{kAttncheckInternalError, e.what()});
  } catch (...) {
    return fail(self, Failure{kAttncheckInternalError, "unknown exception"});
  }
}

attncheck_status get_profile(const attncheck_backend* self, DLDataType input, attncheck_numerics_profile* profile) {
  return guarded(self, [&] {
    if (!is_f32(input)) throw Failure{kAttncheckNotSupported, "only float32 inputs"};
    const DLDataType f32{kDLFloat, 32, 1};
    // Declared as computed: every stage in fp32, one rounding per product-and-add (k0 = 1),
    // a three-pass softmax, deterministic, zeros for empty rows.
    attncheck_numerics_profile p{};
    p.input_dtype = p.score_dtype = p.probability_dtype = f32;
    p.accumulator_dtype = p.output_dtype = f32;
    p.accumulation_rounding = kAttncheckRoundNearest;
    p.products_per_rounding = 1;
    p.softmax_block = 0;
    p.deterministic = 1;
    p.empty_row = kAttncheckEmptyRowZeros;
    p.accepts_strides = 1;
    p.writes_lse = 1;
    // The suite owns *profile and says how large it is; never write past it (backend.h).
    attncheck_write_profile(profile, &p);
  });
}

attncheck_status supports(const attncheck_backend* self, const attncheck_problem* problem, DLDataType input,
                          DLDeviceType device, char* reason, size_t reason_size) {
  const attncheck_status status = guarded(self, [&] { check_supported(problem, input, device); });
  if (status != kAttncheckOk && reason != nullptr && reason_size > 0) {
    std::strncpy(reason, kernel_of(self).last_error.c_str(), reason_size - 1);
    reason[reason_size - 1] = '\0';
  }
  return status;
}

attncheck_status forward_entry(attncheck_backend* self, const attncheck_problem* problem,
                               const attncheck_attention_tensors* tensors) {
  return guarded(self, [&] {
    if (problem == nullptr || tensors == nullptr) invalid("problem or tensors is NULL");
    forward(*problem, *tensors);
  });
}

const char* last_error(const attncheck_backend* self) { return kernel_of(self).last_error.c_str(); }

void destroy(attncheck_backend* self) { delete &kernel_of(self); }

}  // namespace

extern "C" ATTNCHECK_EXPORT attncheck_backend* attncheck_backend_entry(void) {
  Kernel* kernel = new (std::nothrow) Kernel;
  if (kernel == nullptr) return nullptr;
  attncheck_backend& t = kernel->table;
  t.abi_version = {ATTNCHECK_ABI_VERSION_MAJOR, ATTNCHECK_ABI_VERSION_MINOR};
  t.struct_size = sizeof(attncheck_backend);
  t.name = kName;
  t.description = "example out-of-tree kernel: fp32, three passes, any strides";
  t.context = kernel;
  t.device = {kDLCPU, 0};  // host memory: forward is complete when it returns, no stream
  t.get_profile = get_profile;
  t.supports = supports;
  t.forward = forward_entry;
  t.forward_layer = nullptr;  // the core only: layer properties are skipped
  t.last_error = last_error;
  t.destroy = destroy;
  return &t;
}
