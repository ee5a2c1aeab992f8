#include "attncheck/diagnosis.h"

namespace attncheck {

std::vector<Diagnosis> diagnose(const FailureEvidence&) { return {}; }

}  // namespace attncheck
