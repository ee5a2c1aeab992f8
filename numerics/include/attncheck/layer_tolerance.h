/// \file layer_tolerance.h
/// \brief τ for the multi-head attention layer: the core model (tolerance.h) applied to the
/// projected heads, plus the error the kernel's own projections carry into them and through W_O.
///
/// Derivation (first order in the unit roundoffs; every term a worst-case bound):
///  1. Projections. The kernel forms Q̂ = fl(X W_Q + b_Q) with its accumulator (u_A) and, since a
///     layer does not declare where it stores the heads, stores them in its input dtype (the
///     conservative default of numerics/README.md §3.4, u_in):
///       |δq_l| ≤ γ_{d_model+1}(u_A)(Σ_m |x_m||W_Q,ml| + |b_Q,l|) + u_in·|q̂_l|, likewise δk, δv.
///  2. Logits. s_k = σ q·k moves by at most
///       Δ^P_k = |σ| Σ_l (|δq_l||k_kl| + |q_l||δk_kl| + |δq_l||δk_kl|),
///     a logit perturbation; numerics/README.md §2.4's exact identity gives
///       δO_j ≤ e^{2Δ^P_max} Σ_k p_k Δ^P_k |V_kj − O_j|.
///  3. Values. δO_j from δV is Σ_k p_k |δv_kj| (P·V is linear in V).
///  4. The kernel's own attention error on the heads: the core τ (tolerance.h) at the exact
///     projections (its change at the perturbed ones is second order).
///  5. Output projection out_m = Σ_c H_c W_O,cm + b_O,m:
///       Σ_c E_H,c |W_O,cm| + γ_{Hq·Dv+1}(u_A)(Σ_c |H_c||W_O,cm| + |b_O,m|) + u_O|out_m| + η_O.
#pragma once

#include "attncheck/compare.h"
#include "attncheck/layer.h"
#include "attncheck/numerics_profile.h"

namespace attncheck {

/// τ for every element of the layer's output [1, B, Lq, d_model]. `reference` must come from
/// reference_layer with row statistics and probabilities.
HostTensor layer_tolerance(const LayerProblem& problem, const NumericsProfile& profile, DataCharacter data,
                           const LayerInputs& inputs, const LayerResult& reference);

/// Judges a backend's layer output against the reference layer: pass iff |Ô − O| ≤ τ everywhere
/// and no NaN/Inf where the reference is finite.
Verdict compare_layer(const LayerProblem& problem, const NumericsProfile& profile, DataCharacter data,
                      const LayerInputs& inputs, const LayerResult& reference, const HostTensor& actual_out);

}  // namespace attncheck
