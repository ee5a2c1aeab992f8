// The torch adapters' gradients against the double reference (reference_attention_backward) over
// a grid of Problem options and the three dtypes, with cpu-naive's fp32 backward on the same
// cases beside them; then the time of the backward call beside the forward's. Prints tables that
// backends/third-party/torch/README.md quotes.
//
// Each error is normwise, per gradient tensor: max |actual − reference| / max |reference| over its
// elements (0 when both are 0), with the count of non-finite elements where the reference is
// finite. The reference's O and LSE are the exact ones of the inputs the kernel received. The
// verdict column is compare_gradients' with gradient_tolerance's τ for the backend's declared
// forward and backward profiles (numerics/README.md §10): its largest ratio |error| / τ.
//
//   torch_backward_measure [--bench-only | --grid-only]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "attncheck/backend_handle.h"
#include "attncheck/backward.h"
#include "attncheck/case.h"
#include "attncheck/dtype.h"
#include "attncheck/gradient_tolerance.h"
#include "attncheck/reference.h"
#include "torch_backward_call.h"

namespace attncheck::torch_test {
namespace {

struct Option {
  std::string name;
  Problem problem;
};

std::vector<Option> grid() {
  std::vector<Option> options;
  auto base = [] { return Problem::of_shape(2, 4, 4, 37, 600, 32, 32); };  // Lk = 600: two 512-key tiles
  options.push_back({"plain", base()});
  Problem gqa = base();
  gqa.kv_heads = 2;
  options.push_back({"gqa 4/2", gqa});
  Problem causal = Problem::of_shape(1, 4, 2, 300, 300, 32, 32);  // Lq = 300: 64-row tiles
  causal.causal = true;
  options.push_back({"causal top-left", causal});
  Problem bottom_right = base();
  bottom_right.causal = true;
  bottom_right.alignment = Alignment::BottomRight;
  options.push_back({"causal bottom-right", bottom_right});
  Problem window = base();
  window.causal = true;
  window.alignment = Alignment::BottomRight;
  window.window_left = 16;
  options.push_back({"window 16 (bottom-right)", window});
  Problem lengths = base();
  lengths.has_key_lengths = true;
  options.push_back({"key lengths", lengths});
  Problem additive = base();
  additive.mask = MaskKind::Additive;
  additive.mask_batch = 2, additive.mask_heads = 1, additive.mask_q_len = 37, additive.mask_k_len = 600;
  options.push_back({"additive mask [B,1,Lq,Lk]", additive});
  Problem broadcast = base();
  broadcast.mask = MaskKind::Additive;
  broadcast.mask_k_len = 600;
  options.push_back({"additive mask [1,1,1,Lk]", broadcast});
  Problem boolean = base();
  boolean.mask = MaskKind::Boolean;
  boolean.mask_batch = 2, boolean.mask_heads = 4, boolean.mask_q_len = 37, boolean.mask_k_len = 600;
  options.push_back({"boolean mask", boolean});
  Problem wide = base();
  wide.v_dim = 16;
  options.push_back({"Dk 32, Dv 16", wide});
  Problem long_rows = Problem::of_shape(1, 2, 2, 800, 1100, 32, 32);  // 256-row tiles, three key tiles
  options.push_back({"Lq 800, Lk 1100", long_rows});
  Problem scaled = base();
  scaled.scale = 0.75;
  options.push_back({"scale 0.75", scaled});
  return options;
}

/// dO ~ N(0, 1) rounded to `dtype`, from its own stream.
HostTensor draw_dout(const Problem& p, DType dtype, std::uint64_t seed) {
  HostTensor d(Shape4{p.batch, p.q_heads, p.q_len, p.v_dim});
  std::mt19937_64 rng(seed);
  for (std::size_t i = 0; i < d.values.size(); i += 2) {
    const double u1 = (static_cast<double>(rng() >> 11) + 0.5) * 0x1p-53, u2 = static_cast<double>(rng() >> 11) * 0x1p-53;
    const double r = std::sqrt(-2.0 * std::log(u1));
    d.values[i] = round_to(dtype, r * std::cos(2 * M_PI * u2));
    if (i + 1 < d.values.size()) d.values[i + 1] = round_to(dtype, r * std::sin(2 * M_PI * u2));
  }
  return d;
}

struct Error {
  double relative = 0;
  std::int64_t non_finite = 0;
};

Error normwise(const HostTensor& actual, const HostTensor& reference) {
  double worst = 0, scale = 0;
  Error e;
  for (std::size_t i = 0; i < reference.values.size(); ++i) {
    const double r = reference.values[i], a = actual.values[i];
    if (!std::isfinite(r)) continue;
    if (!std::isfinite(a)) {
      ++e.non_finite;
      continue;
    }
    worst = std::max(worst, std::abs(a - r));
    scale = std::max(scale, std::abs(r));
  }
  e.relative = scale > 0 ? worst / scale : worst;
  return e;
}

std::string cell(const Error& e) {
  char text[64];
  if (e.non_finite > 0)
    std::snprintf(text, sizeof text, "%.1e (%lld non-finite)", e.relative, static_cast<long long>(e.non_finite));
  else
    std::snprintf(text, sizeof text, "%.1e", e.relative);
  return text;
}

void run_grid() {
  const char* adapters[][2] = {{"torch-sdpa", ATTNCHECK_PLUGIN_TORCH_SDPA},
                               {"torch-flash-cpu", ATTNCHECK_PLUGIN_TORCH_FLASH_CPU},
                               {"torch-math", ATTNCHECK_PLUGIN_TORCH_MATH}};
  std::vector<Backend> backends;
  for (auto& a : adapters) backends.push_back(load_backend_library(a[1]));
  Backend naive = open_backend("cpu-naive");
  std::printf("| option | dtype | backend | dQ | dK | dV | dBias | verdict (max r) |\n|---|---|---|---:|---:|---:|---:|---|\n");
  std::uint64_t seed = 24301;
  for (const Option& option : grid()) {
    for (DType dtype : {DType::F32, DType::BF16, DType::F16}) {
      ++seed;
      AttentionCase c;
      c.problem = option.problem;
      c.dtype = dtype;
      c.seed = seed;
      const CaseData data = make_case_data(c);
      const AttentionInputs inputs = data.inputs(c.problem);
      const AttentionResult forward = reference_attention(c.problem, inputs);
      const HostTensor dout = draw_dout(c.problem, dtype, seed ^ 0x5eed);
      const bool additive = c.problem.mask == MaskKind::Additive;
      BackwardOptions with_bias;
      with_bias.bias_gradient = additive;
      const AttentionGradients reference =
          reference_attention_backward(c.problem, inputs, backward_inputs(forward, dout.view()), with_bias);
      BackwardCallInputs in{&data.q, &data.k, &data.v, &data.mask, data.key_lengths, &dout};
      const BackwardInputs exact = backward_inputs(forward, dout.view());
      auto row = [&](Backend& b, const BackwardProfile& pr, const AttentionGradients& g) {
        const NumericsProfile fp = *b.profile(c.problem, dtype);
        AttentionGradients judged_reference = reference;
        if (!g.d_bias) judged_reference.d_bias.reset();
        const GradientBounds tau = gradient_tolerance(c.problem, fp, pr, inputs, exact, judged_reference);
        const GradientVerdict verdict = compare_gradients(judged_reference, tau, g);
        char judged[96];
        std::snprintf(judged, sizeof judged, "%s (%.2g)", verdict.passed ? "pass" : "FAIL", verdict.max_ratio);
        std::printf("| %s | %s | %s | %s | %s | %s | %s | %s |\n", option.name.c_str(), std::string(dtype_name(dtype)).c_str(),
                    std::string(b.name()).c_str(), cell(normwise(g.d_q, reference.d_q)).c_str(),
                    cell(normwise(g.d_k, reference.d_k)).c_str(), cell(normwise(g.d_v, reference.d_v)).c_str(),
                    g.d_bias && reference.d_bias ? cell(normwise(*g.d_bias, *reference.d_bias)).c_str() : "–", judged);
        std::fflush(stdout);
      };
      for (Backend& b : backends) {
        if (b.unsupported_reason(c.problem, dtype)) continue;
        const std::optional<BackwardProfile> pr = b.backward_profile(c.problem, dtype);
        if (!pr) continue;
        row(b, *pr, run_backward(b, c.problem, dtype, in, additive && pr->writes_dbias));
      }
      if (dtype == DType::F32) {
        // cpu-naive reads the forward's O and LSE: the reference's, rounded to float32.
        HostTensor out = forward.out, lse = forward.lse;
        for (double& x : out.values) x = round_to(DType::F32, x);
        for (double& x : lse.values) x = round_to(DType::F32, x);
        BackwardCallInputs naive_in = in;
        naive_in.out = &out, naive_in.lse = &lse;
        row(naive, *naive.backward_profile(c.problem, dtype), run_backward(naive, c.problem, dtype, naive_in, additive));
      }
    }
  }
}

/// Median wall time of `repeats` runs of `body`, in milliseconds.
template <class Body>
double median_ms(int repeats, Body&& body) {
  std::vector<double> times;
  for (int r = 0; r < repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    body();
    times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

void run_bench() {
  // B1 H8 L2048 D64 fp32, no mask: the forward call, and the backward call (which runs the
  // forward again on tensors that require grad, then autograd's backward).
  const Problem p = Problem::of_shape(1, 8, 8, 2048, 2048, 64, 64);
  AttentionCase c;
  c.problem = p;
  c.seed = 7;
  const CaseData data = make_case_data(c);
  const HostTensor dout = draw_dout(p, DType::F32, 8);
  std::printf("| backend | forward (ms) | backward call (ms) | backward call / forward |\n|---|---:|---:|---:|\n");
  for (const char* path : {ATTNCHECK_PLUGIN_TORCH_SDPA, ATTNCHECK_PLUGIN_TORCH_FLASH_CPU, ATTNCHECK_PLUGIN_TORCH_MATH}) {
    Backend b = load_backend_library(path);
    EncodedTensor q(DType::F32, data.q), k(DType::F32, data.k), v(DType::F32, data.v);
    EncodedTensor out(DType::F32, {1, 8, 2048, 64}), lse(DType::F32, {1, 8, 2048});
    attncheck_attention_tensors t{};
    t.struct_size = sizeof t;
    t.q = &q.tensor, t.k = &k.tensor, t.v = &v.tensor, t.out = &out.tensor;
    t.lse = b.profile(DType::F32)->writes_lse ? &lse.tensor : nullptr;
    BackwardCallInputs in{&data.q, &data.k, &data.v, nullptr, {}, &dout};
    b.forward(p, t);  // warm-up: torch's first call allocates its thread pool and buffers
    run_backward(b, p, DType::F32, in, false);
    const double forward = median_ms(5, [&] { b.forward(p, t); });
    const double backward = median_ms(5, [&] { run_backward(b, p, DType::F32, in, false); });
    std::printf("| %s | %.0f | %.0f | %.2f |\n", std::string(b.name()).c_str(), forward, backward, backward / forward);
    std::fflush(stdout);
  }
}

}  // namespace
}  // namespace attncheck::torch_test

int main(int argc, char** argv) {
  const std::string_view mode = argc > 1 ? argv[1] : "";
  try {
    if (mode != "--bench-only") attncheck::torch_test::run_grid();
    if (mode != "--grid-only") attncheck::torch_test::run_bench();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "torch_backward_measure: %s\n", e.what());
    return 1;
  }
  return 0;
}
