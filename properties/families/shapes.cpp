// Shapes: a kernel must honour the shapes and layout it is handed and refuse what is
// inconsistent. An invalid problem (Hq not a multiple of Hkv, a head dim that disagrees with the
// tensors, a zero or negative size, a mask or key_lengths promised but not given, an unknown
// enumerator) is rejected with a status — never computed, never written, never crashed on.
#include <fmt/format.h>

#include "common.h"

namespace attncheck::props {
namespace {

enum class Corruption { IndivisibleHeads, HeadDimMismatch, ZeroBatch, NegativeLength, ValueDimMismatch,
                        MissingMask, MissingKeyLengths, UnknownAlignment };

const char* corruption_name(Corruption c) {
  switch (c) {
    case Corruption::IndivisibleHeads: return "Hq not a multiple of Hkv";
    case Corruption::HeadDimMismatch: return "Dk disagrees with the Q/K tensors";
    case Corruption::ZeroBatch: return "B = 0";
    case Corruption::NegativeLength: return "Lq = -1";
    case Corruption::ValueDimMismatch: return "Dv disagrees with the V/out tensors";
    case Corruption::MissingMask: return "a boolean mask declared but not given";
    case Corruption::MissingKeyLengths: return "key lengths declared but not given";
    case Corruption::UnknownAlignment: return "alignment 99";
  }
  return "?";
}

void invalid_problems_rejected(PropertyContext& ctx) {
  ProblemSpace space = ctx.plain_space();
  space.max_len = 16;
  const AttentionCase c = ctx.draw_case(space);
  const Corruption corruption = *rc::gen::element(
      Corruption::IndivisibleHeads, Corruption::HeadDimMismatch, Corruption::ZeroBatch, Corruption::NegativeLength,
      Corruption::ValueDimMismatch, Corruption::MissingMask, Corruption::MissingKeyLengths, Corruption::UnknownAlignment);
  ctx.require_supported(c.problem);
  const CaseData data = ctx.case_data(c);
  PreparedCall call(c.problem, ctx.profile(c.problem), data.inputs(c.problem), RunOptions{c.sequence_major});
  attncheck_problem problem = to_abi(c.problem);
  attncheck_status status = kAttncheckOk;
  call.execute(ctx.backend().device(), [&](const attncheck_attention_tensors& placed, DeviceCall&) {
    attncheck_attention_tensors tensors = placed;
    switch (corruption) {
      case Corruption::IndivisibleHeads: problem.kv_heads = problem.q_heads + 1; break;
      case Corruption::HeadDimMismatch: problem.qk_dim += 1; break;
      case Corruption::ZeroBatch: problem.batch = 0; break;
      case Corruption::NegativeLength: problem.q_len = -1; break;
      case Corruption::ValueDimMismatch: problem.v_dim += 1; break;
      case Corruption::MissingMask:
        problem.mask_kind = kAttncheckMaskBoolean;
        for (auto& d : problem.mask_shape) d = 1;
        tensors.mask = nullptr;
        break;
      case Corruption::MissingKeyLengths: problem.has_key_lengths = 1; tensors.key_lengths = nullptr; break;
      case Corruption::UnknownAlignment: problem.alignment = 99; break;
    }
    attncheck_backend* table = ctx.backend().table();
    status = table->forward(table, &problem, &tensors);
  });
  if (status == kAttncheckOk)
    ctx.fail(c, fmt::format("forward accepted an invalid problem ({}) and returned ok", corruption_name(corruption)));
  const BackendRun run = call.finish();
  for (const std::string& finding : run.memory_findings) {
    // A rejected call leaves every output element unwritten; anything else is a defect.
    if (finding.rfind("out:", 0) == 0 && finding.find("never written") != std::string::npos) {
      const auto elements = run.out.values.size();
      if (finding.find(fmt::format("out: {} element", elements)) == 0) continue;
    }
    if (finding.rfind("lse:", 0) == 0 && finding.find("never written") != std::string::npos) continue;
    ctx.fail(c, fmt::format("after rejecting {} with status '{}': {}", corruption_name(corruption), status_name(status), finding));
  }
  if (std::none_of(run.memory_findings.begin(), run.memory_findings.end(),
                   [](const std::string& f) { return f.rfind("out:", 0) == 0; }))
    ctx.fail(c, fmt::format("the backend rejected {} but wrote the output anyway", corruption_name(corruption)));
}

}  // namespace

std::vector<PropertyDef> shapes_properties() {
  return {
      {"invalid-problems-rejected", "shapes",
       "an inconsistent problem is refused with a status, never computed or written", false, invalid_problems_rejected, {}, false},
  };
}

}  // namespace attncheck::props
