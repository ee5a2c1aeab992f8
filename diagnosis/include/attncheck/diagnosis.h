/// \file diagnosis.h
/// \brief What is wrong: for a failing case, the catalogue of known wrong conventions and classic
/// bugs (diagnosis/hypotheses/, one file each) evaluated against the kernel's output. A
/// hypothesis is named when it reproduces what the kernel returned within τ (or, for a crash,
/// a memory finding or a probe, when the failure's evidence is what that bug leaves).
#pragma once

#include <vector>

#include "attncheck/evidence.h"

namespace attncheck {

/// The hypotheses that explain `evidence`, best first; empty when none does.
std::vector<Diagnosis> diagnose(const FailureEvidence& evidence);

}  // namespace attncheck
