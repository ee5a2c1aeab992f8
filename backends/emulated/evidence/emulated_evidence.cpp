// emulated_evidence: the table of backends/emulated/README.md. Every emulated kernel, healthy and
// with each planted defect, on long causal cases (Lq = 1, 2, 128 × Lk = 64 … 8192 × five value
// classes), judged by conformance (the declared τ) and by accuracy (error / the baseline kernel's
// error > F). Prints Markdown.
//
//   emulated_evidence [--dtype f16] [--accuracy-factor 4] [--lengths 64,512,4096,8192]
//                     [--queries 1,2,128] [--seed 7] [--cells]
#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <fmt/format.h>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "evidence.h"

namespace attncheck::evidence {
namespace {

using emulated::Defect;
using emulated::Kernel;

constexpr Kernel kKernels[] = {Kernel::Fp32, Kernel::Fp16Acc, Kernel::Bf16P, Kernel::Ggml, Kernel::E4m3P, Kernel::E5m2P};
constexpr Defect kDefects[] = {Defect::None, Defect::Scale, Defect::DroppedKey, Defect::CausalOffByOne,
                               Defect::AccumulatorStall};
constexpr ValueClass kValues[] = {ValueClass::Gaussian, ValueClass::Diffuse, ValueClass::Peaked, ValueClass::ConstantV,
                                  ValueClass::NonNegativeV};

struct Settings {
  DType dtype = DType::F16;
  double factor = 4.0;
  std::vector<std::int64_t> lengths{64, 512, 4096, 8192};
  std::vector<std::int64_t> queries{1, 2, 128};
  std::uint64_t seed = 7;
  bool cells = false;
};

std::vector<std::int64_t> parse_list(const std::string& text, const char* option) {
  std::vector<std::int64_t> out;
  size_t at = 0;
  while (at <= text.size()) {
    const size_t comma = std::min(text.find(',', at), text.size());
    std::int64_t v = 0;
    const auto [end, ec] = std::from_chars(text.data() + at, text.data() + comma, v);
    if (ec != std::errc() || end != text.data() + comma || v < 1)
      throw std::invalid_argument(fmt::format("{}: '{}' is not a comma-separated list of positive integers", option, text));
    out.push_back(v);
    at = comma + 1;
  }
  return out;
}

Settings parse(int argc, char** argv) {
  Settings s;
  for (int a = 1; a < argc; ++a) {
    const std::string arg = argv[a];
    auto value = [&]() -> std::string {
      if (a + 1 >= argc) throw std::invalid_argument(fmt::format("{} needs a value", arg));
      return argv[++a];
    };
    if (arg == "--dtype") {
      const auto d = parse_dtype(value());
      if (!d || *d == DType::F64) throw std::invalid_argument("--dtype: expected f32, f16 or bf16");
      s.dtype = *d;
    } else if (arg == "--accuracy-factor") {
      s.factor = std::stod(value());
      if (!(s.factor > 0)) throw std::invalid_argument("--accuracy-factor must be > 0");
    } else if (arg == "--lengths") {
      s.lengths = parse_list(value(), "--lengths");
    } else if (arg == "--queries") {
      s.queries = parse_list(value(), "--queries");
    } else if (arg == "--seed") {
      s.seed = std::stoull(value());
    } else if (arg == "--cells") {
      s.cells = true;
    } else {
      throw std::invalid_argument(fmt::format("unknown option {} (see the comment at the top of emulated_evidence.cpp)", arg));
    }
  }
  return s;
}

std::string variant_name(Kernel k, Defect d) {
  if (d == Defect::None) return std::string(emulated::kernel_name(k));
  return fmt::format("{}+{}", emulated::kernel_name(k), emulated::defect_name(d));
}

struct Tally {
  int cases = 0, conformance = 0, accuracy = 0, declined = 0;
};

double quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5)];
}

int run(const Settings& s) {
  // tally[variant][(Lq, Lk)]
  std::map<std::string, std::map<std::pair<std::int64_t, std::int64_t>, Tally>> tally;
  std::map<std::string, std::vector<double>> healthy_conformance, healthy_accuracy;
  std::vector<std::string> cell_lines;
  std::uint64_t seed = s.seed;
  for (std::int64_t q_len : s.queries)
    for (std::int64_t k_len : s.lengths)
      for (ValueClass values : kValues) {
        EvidenceCell cell(evidence_case(q_len, k_len, values, s.dtype, seed++), values);
        for (Kernel kernel : kKernels)
          for (Defect defect : kDefects) {
            const Judgement j = cell.judge(kernel, defect);
            const std::string name = variant_name(kernel, defect);
            Tally& t = tally[name][{q_len, k_len}];
            if (j.declined) {
              ++t.declined;
              continue;
            }
            ++t.cases;
            t.conformance += !j.conforms;
            t.accuracy += j.accuracy_flagged(s.factor);
            if (defect == Defect::None) {
              healthy_conformance[name].push_back(std::max(j.max_ratio, j.aggregate_ratio));
              healthy_accuracy[name].push_back(std::max(j.accuracy_max, j.accuracy_aggregate));
            }
            if (s.cells)
              cell_lines.push_back(fmt::format("| {} | {} | {} | {} | {} | {:.3g} ({}) | {:.3g} | {:.3g} | {:.3g} | {:.2g} |", name,
                                               q_len, k_len, value_class_name(values), j.conforms ? "pass" : "FAIL",
                                               j.max_ratio, j.dominant_term, j.aggregate_ratio, j.accuracy_max, j.accuracy_aggregate, j.tau_relative));
          }
      }

  fmt::print("Inputs {}, accuracy factor {}, seed {}. Each cell: C n = conformance fails n of the {} value classes; "
             "A n = the accuracy verdict flags n; - = neither.\n\n",
             dtype_name(s.dtype), s.factor, s.seed, std::size(kValues));
  std::string header = "| kernel |", rule = "|---|";
  for (std::int64_t q : s.queries)
    for (std::int64_t k : s.lengths) {
      header += fmt::format(" Lq={} Lk={} |", q, k);
      rule += "---|";
    }
  fmt::print("{}\n{}\n", header, rule);
  for (Kernel kernel : kKernels)
    for (Defect defect : kDefects) {
      const std::string name = variant_name(kernel, defect);
      std::string line = fmt::format("| {} |", name);
      for (std::int64_t q : s.queries)
        for (std::int64_t k : s.lengths) {
          const Tally& t = tally[name][{q, k}];
          std::string text;
          if (t.cases == 0) text = "declined";
          if (t.conformance) text += fmt::format("C {}", t.conformance);
          if (t.accuracy) text += fmt::format("{}A {}", text.empty() ? "" : " ", t.accuracy);
          line += fmt::format(" {} |", text.empty() ? std::string("-") : text);
        }
      fmt::print("{}\n", line);
    }

  fmt::print("\nHealthy kernels over every cell: conformance ratio max(max r, aggregate r) and accuracy ratio "
             "max(max, aggregate) of error / baseline error.\n\n");
  fmt::print("| kernel | cases | conformance p50 | p90 | max | cases > 0.5 | accuracy p50 | p90 | max | flagged (> {}) |\n",
             s.factor);
  fmt::print("|---|---|---|---|---|---|---|---|---|---|\n");
  for (Kernel kernel : kKernels) {
    const std::string name = variant_name(kernel, Defect::None);
    const auto& c = healthy_conformance[name];
    const auto& a = healthy_accuracy[name];
    const auto above = std::count_if(c.begin(), c.end(), [](double r) { return r > 0.5; });
    const auto flagged = std::count_if(a.begin(), a.end(), [&](double r) { return r > s.factor; });
    fmt::print("| {} | {} | {:.3g} | {:.3g} | {:.3g} | {} | {:.3g} | {:.3g} | {:.3g} | {} |\n", name, c.size(),
               quantile(c, 0.5), quantile(c, 0.9), c.empty() ? 0.0 : *std::max_element(c.begin(), c.end()), above,
               quantile(a, 0.5), quantile(a, 0.9), a.empty() ? 0.0 : *std::max_element(a.begin(), a.end()), flagged);
  }
  if (s.cells) {
    fmt::print("\n| kernel | Lq | Lk | values | conformance | max r (τ's largest term) | aggregate r | accuracy max | accuracy aggregate | τ/max|O| |\n"
               "|---|---|---|---|---|---|---|---|---|---|\n");
    for (const std::string& l : cell_lines) fmt::print("{}\n", l);
  }
  return 0;
}

}  // namespace
}  // namespace attncheck::evidence

int main(int argc, char** argv) {
  try {
    return attncheck::evidence::run(attncheck::evidence::parse(argc, argv));
  } catch (const std::exception& e) {
    std::cerr << "emulated_evidence: " << e.what() << "\n";
    return 2;
  }
}
