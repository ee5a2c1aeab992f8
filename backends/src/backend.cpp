// The owning handle on a backend table. Statuses become exceptions here, on our side of the ABI.
#include <fmt/format.h>
#include <utility>

#include "attncheck/backend_handle.h"
#include "attncheck/backend_impl.h"

namespace attncheck {

Backend::Backend(attncheck_backend* table, std::string origin, std::shared_ptr<void> library)
    : table_(table), origin_(std::move(origin)), library_(std::move(library)) {
  if (table_ == nullptr) throw std::invalid_argument("Backend: table is NULL (origin " + origin_ + ")");
}

Backend::Backend(Backend&& other) noexcept
    : table_(std::exchange(other.table_, nullptr)), origin_(std::move(other.origin_)), library_(std::move(other.library_)) {}

Backend& Backend::operator=(Backend&& other) noexcept {
  if (this != &other) {
    if (table_ != nullptr) table_->destroy(table_);
    table_ = std::exchange(other.table_, nullptr);
    origin_ = std::move(other.origin_);
    library_ = std::move(other.library_);  // after destroy(): the old library may unload now
  }
  return *this;
}

Backend::~Backend() {
  // The body runs before the members are destroyed, so the table is gone before library_ can
  // unload the code that destroy() lives in.
  if (table_ != nullptr) table_->destroy(table_);
}

std::string_view Backend::name() const { return table_->name != nullptr ? table_->name : ""; }
std::string_view Backend::description() const { return table_->description != nullptr ? table_->description : ""; }
attncheck_abi_version Backend::abi_version() const { return table_->abi_version; }
bool Backend::has_layer() const { return table_->forward_layer != nullptr; }

bool Backend::has_backward() const {
  // Both or neither (backend.h): a table with one of the two has no usable backward pass.
  return ATTNCHECK_HAS_FIELD(table_, attncheck_backend, backward) && table_->get_backward_profile != nullptr &&
         table_->backward != nullptr;
}

namespace {

std::string last_error_of(const attncheck_backend* t) {
  const char* message = t->last_error != nullptr ? t->last_error(t) : nullptr;
  return message != nullptr && *message != '\0' ? message : "(the backend gave no message)";
}

[[noreturn]] void fail(const attncheck_backend* t, std::string_view call, attncheck_status status) {
  throw BackendError(status, fmt::format("{}: {} returned '{}': {}", t->name != nullptr ? t->name : "?", call,
                                         status_name(status), last_error_of(t)));
}

// The options `problem` uses that `declared` (the table's problem_options) lacks, by name.
std::string undeclared_options(const Problem& problem, std::uint32_t declared) {
  const std::uint32_t used = (problem.has_alibi() ? std::uint32_t{kAttncheckOptionAlibi} : 0u) |
                             (problem.sinks ? std::uint32_t{kAttncheckOptionSinks} : 0u) |
                             (problem.is_paged() ? std::uint32_t{kAttncheckOptionPagedKv} : 0u) |
                             (problem.varlen ? std::uint32_t{kAttncheckOptionVarlen} : 0u) |
                             (problem.has_descales() ? std::uint32_t{kAttncheckOptionFp8} : 0u);
  return impl::option_names(used, declared);
}

}  // namespace

// A backend computes an option only if its table declares it (backend.h, problem_options): a
// table of an older minor has no such field, and a plug-in rebuilt against a newer header without
// implementing an option leaves it 0. Either would compute the problem as if the option were absent.
std::uint32_t Backend::declared_options() const {
  return ATTNCHECK_HAS_FIELD(table_, attncheck_backend, problem_options) ? table_->problem_options : 0u;
}

std::optional<std::string> Backend::predating_reason(const Problem& problem) const {
  const std::uint32_t declared = declared_options();
  const std::string missing = undeclared_options(problem, declared);
  if (missing.empty()) return std::nullopt;
  // The table's build predates an option it lacks when the option came in a later minor: ALiBi and
  // sinks in 2.3, paged caches in 2.4, packed batches in 2.5, descales in 2.6. The newest of them is named.
  const bool lacks_fp8 = problem.has_descales() && (declared & kAttncheckOptionFp8) == 0;
  const bool lacks_varlen = problem.varlen && (declared & kAttncheckOptionVarlen) == 0;
  const bool lacks_paged = problem.is_paged() && (declared & kAttncheckOptionPagedKv) == 0;
  const std::uint32_t introduced = lacks_fp8 ? 6 : lacks_varlen ? 5 : lacks_paged ? 4 : 3;
  if (table_->abi_version.minor < introduced)
    return fmt::format("the backend was built for ABI {}.{}, which predates {} (ABI 2.{})", table_->abi_version.major,
                       table_->abi_version.minor, missing, introduced);
  return fmt::format("the backend does not declare {} in its table's problem_options", missing);
}

std::optional<NumericsProfile> Backend::profile(DType input) const {
  attncheck_numerics_profile p{};
  p.struct_size = sizeof p;  // the buffer's size: the backend writes no more (backend.h)
  const attncheck_status status = table_->get_profile(table_, to_dlpack(input), &p);
  if (status == kAttncheckNotSupported) return std::nullopt;
  if (status != kAttncheckOk) fail(table_, "get_profile", status);
  return checked_profile(p, "get_profile", input);
}

// from_abi's message names the field; the user also needs the backend, the call and the dtype.
NumericsProfile Backend::checked_profile(const attncheck_numerics_profile& p, std::string_view call, DType input) const {
  try {
    return from_abi(p);
  } catch (const BackendError& e) {
    throw BackendError(e.status(), fmt::format("{}: {} for {} inputs: {}", name(), call, dtype_name(input), e.what()));
  }
}

bool Backend::has_problem_profiles() const {
  return ATTNCHECK_HAS_FIELD(table_, attncheck_backend, get_problem_profile) && table_->get_problem_profile != nullptr;
}

std::optional<NumericsProfile> Backend::profile(const Problem& problem, DType input) const {
  if (!has_problem_profiles()) return profile(input);
  const attncheck_problem abi_problem = to_abi(problem);
  attncheck_numerics_profile p{};
  p.struct_size = sizeof p;
  const attncheck_status status = table_->get_problem_profile(table_, &abi_problem, to_dlpack(input), &p);
  if (status == kAttncheckNotSupported) return std::nullopt;
  if (status != kAttncheckOk) fail(table_, "get_problem_profile", status);
  NumericsProfile profile = checked_profile(p, "get_problem_profile", input);
  // The per-problem profile refines the dtype's; one that describes other inputs than those
  // asked for would make every bound derived from it meaningless.
  if (profile.input != input)
    throw BackendError(kAttncheckInternalError,
                       fmt::format("{}: get_problem_profile: asked for {} inputs, it declared input = {} (the profile's "
                                   "input must be the dtype asked for)",
                                   name(), dtype_name(input), dtype_name(profile.input)));
  return profile;
}

std::optional<std::string> Backend::unsupported_reason(const Problem& problem, DType input, DLDeviceType device) const {
  if (auto reason = predating_reason(problem)) return reason;
  const attncheck_problem p = to_abi(problem);
  char reason[1024] = {};
  const attncheck_status status = table_->supports(table_, &p, to_dlpack(input), device, reason, sizeof reason);
  if (status == kAttncheckOk) return std::nullopt;
  if (status == kAttncheckNotSupported || status == kAttncheckInvalidProblem) {
    // The backend's own words, as an author wrote them: they are tallied and shown per unit.
    std::string text = reason[0] != '\0' ? std::string(reason) : last_error_of(table_);
    return status == kAttncheckNotSupported ? text : fmt::format("{} ({})", text, status_name(status));
  }
  fail(table_, "supports", status);
}

void Backend::forward(const Problem& problem, const attncheck_attention_tensors& tensors) {
  if (auto reason = predating_reason(problem)) throw BackendError(kAttncheckNotSupported, fmt::format("{}: {}", name(), *reason));
  const attncheck_problem p = to_abi(problem);
  const attncheck_status status = table_->forward(table_, &p, &tensors);
  if (status != kAttncheckOk) fail(table_, "forward", status);
}

void Backend::forward_layer(const LayerProblem& problem, const attncheck_layer_tensors& tensors) {
  if (table_->forward_layer == nullptr)
    throw BackendError(kAttncheckNotSupported, fmt::format("{}: implements the attention core only (no forward_layer)", name()));
  const attncheck_layer_problem p = to_abi(problem);
  const attncheck_status status = table_->forward_layer(table_, &p, &tensors);
  if (status != kAttncheckOk) fail(table_, "forward_layer", status);
}

std::optional<BackwardProfile> Backend::backward_profile(const Problem& problem, DType input) const {
  if (!has_backward() || predating_reason(problem)) return std::nullopt;
  const attncheck_problem abi_problem = to_abi(problem);
  attncheck_backward_profile p{};
  p.struct_size = sizeof p;
  const attncheck_status status = table_->get_backward_profile(table_, &abi_problem, to_dlpack(input), &p);
  if (status == kAttncheckNotSupported) return std::nullopt;
  if (status != kAttncheckOk) fail(table_, "get_backward_profile", status);
  try {
    return from_abi(p);
  } catch (const BackendError& e) {
    throw BackendError(e.status(),
                       fmt::format("{}: get_backward_profile for {} inputs: {}", name(), dtype_name(input), e.what()));
  }
}

void Backend::backward(const Problem& problem, const attncheck_backward_tensors& tensors) {
  if (!has_backward())
    throw BackendError(kAttncheckNotSupported, fmt::format("{}: has no backward pass (backward is NULL or absent)", name()));
  if (auto reason = predating_reason(problem)) throw BackendError(kAttncheckNotSupported, fmt::format("{}: {}", name(), *reason));
  const attncheck_problem p = to_abi(problem);
  const attncheck_status status = table_->backward(table_, &p, &tensors);
  if (status != kAttncheckOk) fail(table_, "backward", status);
}

}  // namespace attncheck
