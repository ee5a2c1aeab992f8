#include <fmt/format.h>

#include "kernels/fixed_order.h"

namespace attncheck {
namespace detail {

#if !ATTNCHECK_REFERENCE_X86_KERNELS
const FixedOrderKernels* avx2_kernels() { return nullptr; }
const FixedOrderKernels* avx512_kernels() { return nullptr; }
#endif

namespace {

// Empty when `isa` runs on this CPU, else the feature it lacks (or why it is not built).
std::string missing_feature(ReferenceIsa isa) {
#if ATTNCHECK_REFERENCE_X86_KERNELS
  switch (isa) {
    case ReferenceIsa::Automatic:
    case ReferenceIsa::Baseline: return {};
    case ReferenceIsa::Avx2:
      if (!__builtin_cpu_supports("avx2")) return "AVX2";
      return __builtin_cpu_supports("fma") ? "" : "FMA";
    case ReferenceIsa::Avx512:
      if (!__builtin_cpu_supports("avx512f")) return "AVX-512F";
      return __builtin_cpu_supports("fma") ? "" : "FMA";
  }
  return {};
#else
  return isa == ReferenceIsa::Automatic || isa == ReferenceIsa::Baseline ? "" : "an x86-64 build";
#endif
}

}  // namespace

const FixedOrderKernels& fixed_order_kernels(ReferenceIsa isa) {
  if (isa == ReferenceIsa::Automatic) isa = supported_reference_isas().back();
  if (const std::string missing = missing_feature(isa); !missing.empty())
    throw ProblemError(fmt::format("reference: the {} kernels were asked for, but this CPU has no {}", to_string(isa),
                                   missing));
  switch (isa) {
    case ReferenceIsa::Avx2: return *avx2_kernels();
    case ReferenceIsa::Avx512: return *avx512_kernels();
    default: return baseline_kernels();
  }
}

}  // namespace detail

std::vector<ReferenceIsa> supported_reference_isas() {
  std::vector<ReferenceIsa> isas{ReferenceIsa::Baseline};
  for (const ReferenceIsa isa : {ReferenceIsa::Avx2, ReferenceIsa::Avx512})
    if (detail::missing_feature(isa).empty()) isas.push_back(isa);
  return isas;
}

std::string_view to_string(ReferenceIsa isa) {
  switch (isa) {
    case ReferenceIsa::Automatic: return "auto";
    case ReferenceIsa::Baseline: return "baseline";
    case ReferenceIsa::Avx2: return "avx2";
    case ReferenceIsa::Avx512: return "avx512";
  }
  return "?";
}

std::optional<ReferenceIsa> parse_reference_isa(std::string_view text) {
  for (const ReferenceIsa isa : {ReferenceIsa::Automatic, ReferenceIsa::Baseline, ReferenceIsa::Avx2, ReferenceIsa::Avx512})
    if (text == to_string(isa)) return isa;
  return std::nullopt;
}

}  // namespace attncheck
