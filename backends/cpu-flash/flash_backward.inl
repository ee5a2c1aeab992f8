// cpu-flash's backward pass, written once over the SIMD traits type V of flash_tile.inl and
// included after it by each kernel_<isa>.cpp (inside the same anonymous namespace).
//
// FlashAttention-2's backward (Dao 2023, Algorithm 2), in the notation of backend.h's
// attncheck_backward_profile. Per row i: D_i = Σ_d dO_id O_id and the saved lse_i. Per tile of
// Bc keys × Br query rows:
//   S = Q Kᵀ → s = final_scores(S) (the forward's own scores)  →  P = exp(s − lse)
//   dV += Pᵀ dO,   dP = dO Vᵀ,   dS = P ∘ ((dP − D) + dlse)            (0 wherever P = 0)
//   dR = dS ∘ (1 − tanh²(r/c)) through a softcap c,   dQ += dR K,   dK += dRᵀ Q
// and dQ, dK are multiplied by σ once, when written. dBias = dS (the bias is added after the cap).
//
// Phases (cpu_flash.cpp runs them on its thread pool):
//  1. backward_rows, per (b, h): Q and dO in fp32, lse, D and dlse; the row's dQ sum zeroed.
//  2. backward_keys, per (b, kv head g): key tiles outer, then the group's query heads, then query
//     tiles inner. dK and dV of a key tile live in fp32 tiles of the workspace until every query
//     tile of every head of the group has added its tile sum; dQ's fp32 sum gets one tile sum per
//     key tile. One thread does all of (b, g) in this order, so the bits do not depend on the
//     thread count, and no two threads write the same element (no atomics).
//  3. backward_dbias, per row of dbias: the (b, g) partials added in order b, then g.
//
// Masked keys contribute exactly nothing: P is 0 there (the score is −inf), dS is selected to 0
// wherever P is 0 rather than multiplied by it (so NaN in a masked key's V never reaches dS), and
// a key tile whose K holds NaN or Inf takes a dQ path that skips zero dS instead of multiplying
// by it. A row with no allowed key (lse = −inf) is all zeros from phase 1 on.

template <class V>
struct FlashBackward {
  using reg = typename V::reg;
  static constexpr int W = V::W;
  static constexpr int NV = V::QK_NV;
  static constexpr int MR = static_cast<int>(kBackwardMicroRows);
  static constexpr std::int64_t Bc = kBlockKeys, Br = kBackwardRows;
  static_assert(Bc % (NV * W) == 0, "a key tile must split into whole micro-tile columns");
  static_assert(kPad % W == 0, "padded head dims must be whole vectors");

  // C[r][0 .. N·W) = (or +=) Σ_k A(r, k) B[k][0 .. N·W) for MR rows, with A(r, k) = a[r·a_row +
  // k·a_k] (so A may be a transposed tile) and B row-major. The sum over k is formed in registers
  // from zero and, with Add, added to C once: one tile sum per call (the profile's blocks).
  template <int N, bool Add>
  static void micro(const float* a, std::int64_t a_row, std::int64_t a_k, std::int64_t depth, const float* b,
                    std::int64_t ldb, float* c, std::int64_t ldc) {
    reg acc[MR][N];
    for (int r = 0; r < MR; ++r)
      for (int n = 0; n < N; ++n) acc[r][n] = V::zero();
    for (std::int64_t k = 0; k < depth; ++k) {
      reg bv[N];
      for (int n = 0; n < N; ++n) bv[n] = V::load(b + k * ldb + n * W);
      for (int r = 0; r < MR; ++r) {
        const reg ab = V::set1(a[r * a_row + k * a_k]);
        for (int n = 0; n < N; ++n) acc[r][n] = V::fma(ab, bv[n], acc[r][n]);
      }
    }
    for (int r = 0; r < MR; ++r)
      for (int n = 0; n < N; ++n) {
        float* at = c + r * ldc + n * W;
        V::store(at, Add ? V::add(V::load(at), acc[r][n]) : acc[r][n]);
      }
  }

  template <int N, bool Add>
  static void columns(const float* a, std::int64_t a_row, std::int64_t a_k, std::int64_t depth, const float* b,
                      std::int64_t ldb, std::int64_t cols, float* c, std::int64_t ldc, std::int64_t& c0) {
    for (; c0 + N * W <= cols; c0 += N * W) micro<N, Add>(a, a_row, a_k, depth, b + c0, ldb, c + c0, ldc);
  }

  /// C (m × cols, m a multiple of MR, cols of W) = or += A (m × depth) · B (depth × cols).
  template <bool Add>
  static void product(const float* a, std::int64_t a_row, std::int64_t a_k, std::int64_t m, std::int64_t depth,
                      const float* b, std::int64_t ldb, std::int64_t cols, float* c, std::int64_t ldc) {
    for (std::int64_t r0 = 0; r0 < m; r0 += MR) {
      const float* ar = a + r0 * a_row;
      float* cr = c + r0 * ldc;
      std::int64_t c0 = 0;
      columns<NV, Add>(ar, a_row, a_k, depth, b, ldb, cols, cr, ldc, c0);
      if constexpr (NV > 3) columns<3, Add>(ar, a_row, a_k, depth, b, ldb, cols, cr, ldc, c0);
      if constexpr (NV > 2) columns<2, Add>(ar, a_row, a_k, depth, b, ldb, cols, cr, ldc, c0);
      if constexpr (NV > 1) columns<1, Add>(ar, a_row, a_k, depth, b, ldb, cols, cr, ldc, c0);
    }
  }

  static std::int64_t row_index(const BackwardParams& B, std::int64_t b, std::int64_t h, std::int64_t i) {
    return (b * B.f.q_heads + h) * B.q_len_pad + i;
  }

  // Phase 1 for (b, h).
  static void prepare_rows(const BackwardParams& B, std::int64_t b, std::int64_t h) {
    const FlashParams& P = B.f;
    const std::int64_t dk = P.qk_dim, dv = P.v_dim;
    const int obytes = elem_bytes(P.out.type);
    for (std::int64_t i = 0; i < B.q_len_pad; ++i) {
      const std::int64_t row = row_index(B, b, h, i);
      float* q = B.q_rows + row * B.dk_pad;
      float* dout = B.dout_rows + row * P.dv_pad;
      for (std::int64_t d = 0; d < B.dk_pad; ++d) B.dq_sum[row * B.dk_pad + d] = 0.0f;
      const float lse = i < P.q_len ? P.lse[b * P.lse_stride[0] + h * P.lse_stride[1] + i * P.lse_stride[2]] : kNegInf;
      B.row_lse[row] = lse;
      if (lse == kNegInf) {  // padding, or no allowed key: the row contributes nothing
        for (std::int64_t d = 0; d < B.dk_pad; ++d) q[d] = 0.0f;
        for (std::int64_t d = 0; d < P.dv_pad; ++d) dout[d] = 0.0f;
        B.row_delta[row] = B.row_dlse[row] = 0.0f;
        continue;
      }
      load_row<V>(P.q, b, h, i, dk, q);
      for (std::int64_t d = dk; d < B.dk_pad; ++d) q[d] = 0.0f;
      load_row<V>(B.dout, b, h, i, dv, dout);
      for (std::int64_t d = dv; d < P.dv_pad; ++d) dout[d] = 0.0f;
      const char* orow = P.out.data + (b * P.out.stride[0] + h * P.out.stride[1] + i * P.out.stride[2]) * obytes;
      float delta = 0.0f;  // D_i = dO_i · O_i, one fp32 FMA chain
      for (std::int64_t d = 0; d < dv; ++d)
        delta = __builtin_fmaf(dout[d], load_elem<V>(orow + d * P.out.stride[3] * obytes, P.out.type), delta);
      const float dlse = B.dlse != nullptr ? B.dlse[b * B.dlse_stride[0] + h * B.dlse_stride[1] + i * B.dlse_stride[2]] : 0.0f;
      B.row_delta[row] = delta;
      B.row_dlse[row] = dlse;
    }
  }

  // Kᵀ [Dk][Bc], K [Bc][dk_pad] and Vᵀ [Dv][Bc] of the key tile at k0 in fp32, zero beyond the last
  // key and Dk; returns whether K's tile is all finite.
  static bool pack_keys(const BackwardParams& B, std::int64_t b, std::int64_t g, std::int64_t k0, std::int64_t kc,
                        const BackwardWorkspace& ws) {
    const FlashParams& P = B.f;
    const std::int64_t dk = P.qk_dim, dv = P.v_dim, dk_pad = B.dk_pad;
    for (std::int64_t i = 0; i < Bc * dk_pad; ++i) ws.kr[i] = 0.0f;
    for (std::int64_t i = 0; i < dk * Bc; ++i) ws.kt[i] = 0.0f;
    for (std::int64_t i = 0; i < dv * Bc; ++i) ws.vt[i] = 0.0f;
    const int vbytes = elem_bytes(P.v.type);
    for (std::int64_t c = 0; c < kc; ++c) {
      float* krow = ws.kr + c * dk_pad;
      load_row<V>(P.k, b, g, k0 + c, dk, krow);
      for (std::int64_t d = 0; d < dk; ++d) ws.kt[d * Bc + c] = krow[d];
      const char* vrow = P.v.data + (b * P.v.stride[0] + g * P.v.stride[1] + (k0 + c) * P.v.stride[2]) * vbytes;
      for (std::int64_t d = 0; d < dv; ++d) ws.vt[d * Bc + c] = load_elem<V>(vrow + d * P.v.stride[3] * vbytes, P.v.type);
    }
    // x·0 is NaN exactly when x is NaN or ±inf (as pack_kv_tile tests V).
    reg z = V::zero();
    for (std::int64_t i = 0; i < kc * dk_pad; i += W) z = V::add(z, V::mul(V::load(ws.kr + i), V::zero()));
    return V::hsum(z) == 0.0f;
  }

  // One query tile (rows q0 .. of query head h) against the packed key tile at k0.
  static void tile(const BackwardParams& B, std::int64_t b, std::int64_t g, std::int64_t h, std::int64_t q0,
                   std::int64_t k0, std::int64_t kc, bool finite_k, const BackwardWorkspace& ws) {
    const FlashParams& P = B.f;
    const std::int64_t dk = P.qk_dim, dv = P.v_dim, dk_pad = B.dk_pad, dv_pad = P.dv_pad;
    const std::int64_t rows = min64(Br, P.q_len - q0);
    const std::int64_t rows_pad = (rows + MR - 1) / MR * MR;  // within the head's q_len_pad rows
    const std::int64_t row0 = row_index(B, b, h, q0);
    const float* lse = B.row_lse + row0;
    std::int64_t lo[Br], hi[Br], kmin = 0, kmax = 0;
    allowed_intervals(P, b, q0, rows, lo, hi, kmin, kmax);
    if (kmax <= k0 || kmin >= k0 + kc) return;  // no row of this tile may see these keys

    const float* q = B.q_rows + row0 * dk_pad;
    const float* dout = B.dout_rows + row0 * dv_pad;
    const bool elementwise = P.mask_kind != 0;
    product<false>(q, dk_pad, 1, rows_pad, dk, ws.kt, Bc, Bc, ws.p, Bc);       // S = Q Kᵀ
    product<false>(dout, dv_pad, 1, rows_pad, dv, ws.vt, Bc, Bc, ws.ds, Bc);  // dP = dO Vᵀ
    if (elementwise) mask_bias_tile<V>(P, b, h, q0, rows, k0, lo, hi, ws.bias);

    const reg one = V::set1(1.0f);
    for (std::int64_t r = 0; r < rows_pad; ++r) {
      float* prow = ws.p + r * Bc;
      float* dsrow = ws.ds + r * Bc;
      if (r >= rows || lse[r] == kNegInf) {  // padding, or a row with no allowed key
        for (std::int64_t c = 0; c < Bc; ++c) prow[c] = dsrow[c] = 0.0f;
        continue;
      }
      const int lo_rel = static_cast<int>(max64(0, min64(Bc, lo[r] - k0)));
      const int hi_rel = static_cast<int>(max64(0, min64(Bc, hi[r] - k0)));
      float* trow = ws.tanh + r * Bc;
      final_scores<V>(P, prow, elementwise ? ws.bias + r * Bc : nullptr, lo_rel, hi_rel, trow, P.alibi_slope(b, h),
                      k0 - (q0 + r + P.offset[b]));
      const float lse_r = lse[r];
      if (lse_r != lse_r) {
        // A row that attends a NaN: NaN weights for its allowed keys only (exp(−inf − NaN) would
        // be NaN at the masked ones too).
        for (std::int64_t c = 0; c < Bc; ++c) prow[c] = prow[c] == kNegInf ? 0.0f : V::exp1(prow[c] - lse_r);
      } else {
        const reg vlse = V::set1(lse_r);
        for (std::int64_t c0 = 0; c0 < Bc; c0 += W) V::store(prow + c0, V::exp(V::sub(V::load(prow + c0), vlse)));
      }
      const reg delta = V::set1(B.row_delta[row0 + r]), dlse = V::set1(B.row_dlse[row0 + r]);
      for (std::int64_t c0 = 0; c0 < Bc; c0 += W) {
        const reg p = V::load(prow + c0);
        const reg psi = V::add(V::sub(V::load(dsrow + c0), delta), dlse);  // (dP − D) + dlse, in that order
        V::store(dsrow + c0, V::keep_where_nonzero(p, V::mul(p, psi)));
      }
      if (B.dbias_partial != nullptr) add_dbias_row(B, b, g, h, q0 + r, k0, kc, dsrow);
      // Through the cap: dR = dS (1 − tanh²), selected again, since a masked key's tanh is that
      // of whatever its K made of the score (NaN included) and 0 · NaN would bring it back.
      if (P.softcap > 0)
        for (std::int64_t c0 = 0; c0 < Bc; c0 += W) {
          const reg t = V::load(trow + c0);
          const reg slope = V::sub(one, V::mul(t, t));
          V::store(dsrow + c0, V::keep_where_nonzero(V::load(prow + c0), V::mul(V::load(dsrow + c0), slope)));
        }
    }

    const std::int64_t keys_pad = (kc + MR - 1) / MR * MR;
    product<true>(ws.p, 1, Bc, keys_pad, rows, dout, dv_pad, dv_pad, ws.dv_sum, dv_pad);  // dV += Pᵀ dO
    product<true>(ws.ds, 1, Bc, keys_pad, rows, q, dk_pad, dk_pad, ws.dk_sum, dk_pad);    // dK += dRᵀ Q
    float* dq = B.dq_sum + row0 * dk_pad;
    if (finite_k) {
      product<true>(ws.ds, Bc, 1, rows_pad, kc, ws.kr, dk_pad, dk_pad, dq, dk_pad);  // dQ += dR K
      return;
    }
    // NaN or Inf in this K tile: keys with dR = 0 (masked, or of weight 0) are skipped rather than
    // multiplied, so 0·NaN never reaches dQ. The same tile sum, formed row by row.
    for (std::int64_t r = 0; r < rows; ++r) {
      for (std::int64_t d = 0; d < dk_pad; ++d) ws.dq_row[d] = 0.0f;
      for (std::int64_t c = 0; c < kc; ++c) {
        const float ds = ws.ds[r * Bc + c];
        if (ds == 0.0f) continue;
        for (std::int64_t d = 0; d < dk; ++d) ws.dq_row[d] = __builtin_fmaf(ds, ws.kr[c * dk_pad + d], ws.dq_row[d]);
      }
      for (std::int64_t d = 0; d < dk; ++d) dq[r * dk_pad + d] += ws.dq_row[d];
    }
  }

  // dS of one row (before the cap's derivative: the bias is added after the cap) into the (b, g)
  // partial, at the mask elements the row reads; keys at or past the mask's length are masked, so
  // their dS is 0 and they have no element.
  static void add_dbias_row(const BackwardParams& B, std::int64_t b, std::int64_t g, std::int64_t h, std::int64_t i,
                            std::int64_t k0, std::int64_t kc, const float* ds) {
    const std::int64_t lqm = B.mask_shape[2], lkm = B.mask_shape[3];
    const std::int64_t hp = B.dbias_heads == 1 ? 0 : h - g * B.f.group;
    const std::int64_t im = lqm == 1 ? 0 : i;
    float* partial = B.dbias_partial + (((b * B.f.kv_heads + g) * B.dbias_heads + hp) * lqm + im) * lkm;
    const std::int64_t end = min64(kc, lkm - k0);
    for (std::int64_t c = 0; c < end; ++c) partial[k0 + c] += ds[c];
  }

  // Phase 2 for (b, g).
  static void key_task(const BackwardParams& B, std::int64_t b, std::int64_t g, const BackwardWorkspace& ws) {
    const FlashParams& P = B.f;
    const std::int64_t dk = P.qk_dim, dv = P.v_dim, dk_pad = B.dk_pad, dv_pad = P.dv_pad;
    const float scale = P.scale;
    if (B.dbias_partial != nullptr) {
      const std::int64_t n = B.dbias_heads * B.mask_shape[2] * B.mask_shape[3];
      float* partial = B.dbias_partial + (b * P.kv_heads + g) * n;
      for (std::int64_t e = 0; e < n; ++e) partial[e] = 0.0f;
    }
    // The keys some row of batch b may see: tiles outside get dK = dV = 0 without any work.
    std::int64_t kmin = P.k_len, kmax = 0;
    for (std::int64_t q0 = 0; q0 < P.q_len; q0 += Br) {
      std::int64_t lo[Br], hi[Br], a = 0, e = 0;
      allowed_intervals(P, b, q0, min64(Br, P.q_len - q0), lo, hi, a, e);
      if (a < e) kmin = min64(kmin, a), kmax = max64(kmax, e);
    }
    const int kbytes = elem_bytes(P.k.type), vbytes = elem_bytes(P.v.type);
    for (std::int64_t k0 = 0; k0 < P.k_len; k0 += Bc) {
      const std::int64_t kc = min64(Bc, P.k_len - k0);
      for (std::int64_t i = 0; i < Bc * dk_pad; ++i) ws.dk_sum[i] = 0.0f;
      for (std::int64_t i = 0; i < Bc * dv_pad; ++i) ws.dv_sum[i] = 0.0f;
      if (k0 < kmax && k0 + kc > kmin) {
        const bool finite_k = pack_keys(B, b, g, k0, kc, ws);
        for (std::int64_t h = g * P.group; h < (g + 1) * P.group; ++h)
          for (std::int64_t q0 = 0; q0 < P.q_len; q0 += Br) tile(B, b, g, h, q0, k0, kc, finite_k, ws);
      }
      for (std::int64_t c = 0; c < kc; ++c) {
        char* dkrow = const_cast<char*>(B.dk.data) + (b * B.dk.stride[0] + g * B.dk.stride[1] + (k0 + c) * B.dk.stride[2]) * kbytes;
        char* dvrow = const_cast<char*>(B.dv.data) + (b * B.dv.stride[0] + g * B.dv.stride[1] + (k0 + c) * B.dv.stride[2]) * vbytes;
        for (std::int64_t d = 0; d < dk; ++d)
          store_elem<V>(dkrow + d * B.dk.stride[3] * kbytes, B.dk.type, scale * ws.dk_sum[c * dk_pad + d]);
        for (std::int64_t d = 0; d < dv; ++d) store_elem<V>(dvrow + d * B.dv.stride[3] * vbytes, B.dv.type, ws.dv_sum[c * dv_pad + d]);
      }
    }
    const int qbytes = elem_bytes(P.q.type);
    for (std::int64_t h = g * P.group; h < (g + 1) * P.group; ++h)
      for (std::int64_t i = 0; i < P.q_len; ++i) {
        const float* sum = B.dq_sum + row_index(B, b, h, i) * dk_pad;
        char* dqrow = const_cast<char*>(B.dq.data) + (b * B.dq.stride[0] + h * B.dq.stride[1] + i * B.dq.stride[2]) * qbytes;
        for (std::int64_t d = 0; d < dk; ++d) store_elem<V>(dqrow + d * B.dq.stride[3] * qbytes, B.dq.type, scale * sum[d]);
      }
  }

  // Phase 3: row `row` = (mb·Hm + mh)·Lqm + im of dbias, summed over the (b, g) partials that
  // reach it in order b, then g: every b when the mask broadcasts over the batch (else b = mb),
  // every g when it broadcasts over heads (else the g of head mh, at its place in the group).
  static void dbias_row(const BackwardParams& B, std::int64_t row) {
    const FlashParams& P = B.f;
    const std::int64_t bm = B.mask_shape[0], hm = B.mask_shape[1], lqm = B.mask_shape[2], lkm = B.mask_shape[3];
    const std::int64_t im = row % lqm, mh = row / lqm % hm, mb = row / lqm / hm;
    const std::int64_t part = B.dbias_heads * lqm * lkm;
    const std::int64_t hp = B.dbias_heads == 1 ? 0 : mh % P.group;
    const std::int64_t b_first = bm == 1 ? 0 : mb, b_end = bm == 1 ? P.batch : mb + 1;
    const std::int64_t g_first = hm == 1 ? 0 : mh / P.group, g_end = hm == 1 ? P.kv_heads : g_first + 1;
    const int bytes = elem_bytes(B.dbias.type);
    char* out = const_cast<char*>(B.dbias.data) + (mb * B.dbias.stride[0] + mh * B.dbias.stride[1] + im * B.dbias.stride[2]) * bytes;
    for (std::int64_t j = 0; j < lkm; ++j) {
      float sum = 0.0f;
      for (std::int64_t b = b_first; b < b_end; ++b)
        for (std::int64_t g = g_first; g < g_end; ++g)
          sum += B.dbias_partial[(b * P.kv_heads + g) * part + (hp * lqm + im) * lkm + j];
      store_elem<V>(out + j * B.dbias.stride[3] * bytes, B.dbias.type, sum);
    }
  }
};
