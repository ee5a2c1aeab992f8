// cpu-flash's tile kernel, written once over a SIMD traits type V and included by each
// kernel_<isa>.cpp inside an anonymous namespace (so the per-ISA copies never meet at link time).
//
// V provides: reg, W (lanes), MR (rows per micro-tile), QK_NV / PV_NV (vectors per micro-tile),
// load/store/set1/add/mul/fma/max, hmax/hsum, exp, mask_interval, add_bias, and the scalar
// conversions half_to_float / float_to_half.
//
// One call = one query tile (kBlockRows rows) of one (batch, head), FlashAttention-2 style:
//   for each key tile touching some row's allowed interval:
//     S = Q·Kᵀ (fp32 micro-kernel)  →  scale, softcap, mask  →  m_new = max(m, rowmax S)
//     P = exp(S − m_new), α = exp(m − m_new), l = α·l + Σ P,  O = α·O + P·V (fp32 micro-kernel)
//   O /= l, LSE = m + log l.
// A row whose maximum is still −inf uses 0 as its shift, so exp(−inf − 0) = 0 and α is set to 0
// directly: (−inf) − (−inf) is never formed (numerics/README.md §6.1).

constexpr float kNegInf = -__builtin_inff();

inline std::int64_t min64(std::int64_t a, std::int64_t b) { return a < b ? a : b; }
inline std::int64_t max64(std::int64_t a, std::int64_t b) { return a > b ? a : b; }

inline float bf16_to_float(std::uint16_t h) {
  const std::uint32_t u = static_cast<std::uint32_t>(h) << 16;
  float f;
  __builtin_memcpy(&f, &u, 4);
  return f;
}

// Round-to-nearest-even float → bf16; NaN stays a (quiet) NaN.
inline std::uint16_t float_to_bf16(float f) {
  std::uint32_t u;
  __builtin_memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(u >> 16);
}

template <class V>
inline float load_elem(const char* p, Elem type) {
  switch (type) {
    case Elem::F32: {
      float f;
      __builtin_memcpy(&f, p, 4);
      return f;
    }
    case Elem::F16: {
      std::uint16_t h;
      __builtin_memcpy(&h, p, 2);
      return V::half_to_float(h);
    }
    case Elem::BF16: {
      std::uint16_t h;
      __builtin_memcpy(&h, p, 2);
      return bf16_to_float(h);
    }
    case Elem::U8: return static_cast<float>(*reinterpret_cast<const std::uint8_t*>(p));
  }
  return 0.0f;
}

inline int elem_bytes(Elem type) { return type == Elem::F32 ? 4 : type == Elem::U8 ? 1 : 2; }

template <class V>
inline void store_elem(char* p, Elem type, float x) {
  if (type == Elem::F32) {
    __builtin_memcpy(p, &x, 4);
  } else {
    const std::uint16_t h = type == Elem::F16 ? V::float_to_half(x) : float_to_bf16(x);
    __builtin_memcpy(p, &h, 2);
  }
}

/// Row `n` of a strided tensor at (i0, i1, i2): `count` elements along dim 3 into dst (fp32).
template <class V>
inline void load_row(const Strided& t, std::int64_t i0, std::int64_t i1, std::int64_t i2, std::int64_t count, float* dst) {
  const int bytes = elem_bytes(t.type);
  const char* base = t.data + (i0 * t.stride[0] + i1 * t.stride[1] + i2 * t.stride[2]) * bytes;
  const std::int64_t step = t.stride[3] * bytes;
  if (t.type == Elem::F32 && t.stride[3] == 1) {
    __builtin_memcpy(dst, base, static_cast<std::size_t>(count) * 4);
    return;
  }
  for (std::int64_t d = 0; d < count; ++d) dst[d] = load_elem<V>(base + d * step, t.type);
}

/// Each row's allowed keys apart from an elementwise mask form one interval [lo, hi) (problem.h:
/// key length and the mask's length, causal, window, all from the row's aligned diagonal): for rows
/// q0 .. q0 + rows − 1 of batch b. Returns the union's bounds [kmin, kmax) over the non-empty ones
/// (kmin = Lk, kmax = 0 when all are empty).
inline void allowed_intervals(const FlashParams& P, std::int64_t b, std::int64_t q0, std::int64_t rows, std::int64_t* lo,
                              std::int64_t* hi, std::int64_t& kmin, std::int64_t& kmax) {
  kmin = P.k_len, kmax = 0;
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t diag = q0 + r + P.offset[b];
    std::int64_t a = 0, e = P.key_limit[b];
    if (P.causal) e = min64(e, diag + 1);
    if (P.window_left >= 0) a = max64(a, diag - P.window_left);
    if (P.window_right >= 0) e = min64(e, diag + P.window_right + 1);
    lo[r] = a, hi[r] = e;
    if (a < e) kmin = min64(kmin, a), kmax = max64(kmax, e);
  }
}

/// An elementwise mask as a bias tile for rows q0 .. q0 + rows − 1 of (b, h) and keys k0 .. k0 +
/// kBlockKeys − 1: −inf where not allowed (outside the row's interval, boolean false, additive
/// −inf), else the additive value (0 for boolean).
template <class V>
void mask_bias_tile(const FlashParams& P, std::int64_t b, std::int64_t h, std::int64_t q0, std::int64_t rows,
                    std::int64_t k0, const std::int64_t* lo, const std::int64_t* hi, float* bias) {
  const int mbytes = elem_bytes(P.mask.type);
  for (std::int64_t r = 0; r < rows; ++r) {
    float* brow = bias + r * kBlockKeys;
    const char* mrow = P.mask.data + (b * P.mask.stride[0] + h * P.mask.stride[1] + (q0 + r) * P.mask.stride[2]) * mbytes;
    for (std::int64_t c = 0; c < kBlockKeys; ++c) {
      const std::int64_t j = k0 + c;
      float value = kNegInf;
      if (j >= lo[r] && j < hi[r]) {
        const float mv = load_elem<V>(mrow + j * P.mask.stride[3] * mbytes, P.mask.type);
        value = P.mask_kind == 1 ? (mv != 0.0f ? 0.0f : kNegInf) : mv;
      }
      brow[c] = value;
    }
  }
}

/// One row of a key tile's scores as the softmax sees them, in place: srow holds q·k (fp32); it
/// becomes s = σ·(q·k), soft-capped to c·tanh(s/c), then masked: with `brow` (the row of
/// mask_bias_tile) s + bias, exactly −inf where the bias is −inf; without, −inf outside columns
/// [lo_rel, hi_rel). −inf replaces whatever a masked key's K made of the score, NaN included.
/// `tanh_out`, when given with a softcap, keeps tanh(s/c) per column (the cap's derivative).
/// With ALiBi, −slope·|j − p| is added after the cap and before the mask, column c being key
/// j = p + key_minus_diagonal + c: one fp32 product (the distance is exact) and one addition.
/// The forward and the backward both take their scores from here, so the backward recomputes
/// the very scores its forward exponentiated.
template <class V>
void final_scores(const FlashParams& P, float* srow, const float* brow, int lo_rel, int hi_rel, float* tanh_out,
                  float alibi_slope, std::int64_t key_minus_diagonal) {
  constexpr std::int64_t Bc = kBlockKeys;
  const typename V::reg vscale = V::set1(P.scale);
  for (std::int64_t c0 = 0; c0 < Bc; c0 += V::W) V::store(srow + c0, V::mul(V::load(srow + c0), vscale));
  if (P.softcap > 0) {
    for (std::int64_t c = 0; c < Bc; ++c) {
      const float t = __builtin_tanhf(srow[c] / P.softcap);
      if (tanh_out != nullptr) tanh_out[c] = t;
      srow[c] = P.softcap * t;
    }
  }
  if (P.alibi_slopes != nullptr) {
    for (std::int64_t c = 0; c < Bc; ++c) {
      const std::int64_t distance = key_minus_diagonal + c;
      srow[c] -= alibi_slope * static_cast<float>(distance < 0 ? -distance : distance);
    }
  }
  if (brow != nullptr) {
    for (std::int64_t c0 = 0; c0 < Bc; c0 += V::W) V::store(srow + c0, V::add_bias(V::load(srow + c0), V::load(brow + c0)));
  } else if (lo_rel != 0 || hi_rel != Bc) {
    for (std::int64_t c0 = 0; c0 < Bc; c0 += V::W)
      V::store(srow + c0, V::mask_interval(V::load(srow + c0), static_cast<int>(c0), lo_rel, hi_rel));
  }
}

template <class V>
struct FlashTile {
  using reg = typename V::reg;
  static constexpr int W = V::W;
  static constexpr int MR = V::MR;
  static constexpr std::int64_t Bc = kBlockKeys;
  static_assert(Bc % (V::QK_NV * V::W) == 0, "a key tile must split into whole Q·Kᵀ micro-tiles");
  static_assert(kBlockRows % V::MR == 0, "a query tile must split into whole micro-tiles");
  static_assert(kPad % V::W == 0, "the value padding must be whole vectors");

  // S[r][c] = Σ_d Q[r][d]·Kᵀ[d][c] for MR rows and NV·W columns: MR·NV accumulators in registers;
  // each step loads NV vectors of Kᵀ and broadcasts one Q element per row.
  template <int NV>
  static void qk_micro(const float* q, std::int64_t dk, const float* kt, float* s) {
    reg acc[MR][NV];
    for (int r = 0; r < MR; ++r)
      for (int c = 0; c < NV; ++c) acc[r][c] = V::zero();
    for (std::int64_t d = 0; d < dk; ++d) {
      reg kv[NV];
      for (int c = 0; c < NV; ++c) kv[c] = V::load(kt + d * Bc + c * W);
      for (int r = 0; r < MR; ++r) {
        const reg qb = V::set1(q[r * dk + d]);
        for (int c = 0; c < NV; ++c) acc[r][c] = V::fma(qb, kv[c], acc[r][c]);
      }
    }
    for (int r = 0; r < MR; ++r)
      for (int c = 0; c < NV; ++c) V::store(s + r * Bc + c * W, acc[r][c]);
  }

  // O[r][c] = α_r·O[r][c] + Σ_k P[r][k]·V[k][c] for MR rows and NV·W columns of O.
  template <int NV>
  static void pv_micro(const float* p, std::int64_t kc, const float* v, std::int64_t ldv, float* o, std::int64_t ldo,
                       const float* alpha) {
    reg acc[MR][NV];
    for (int r = 0; r < MR; ++r) {
      const reg a = V::set1(alpha[r]);
      for (int c = 0; c < NV; ++c) acc[r][c] = V::mul(V::load(o + r * ldo + c * W), a);
    }
    for (std::int64_t k = 0; k < kc; ++k) {
      reg vv[NV];
      for (int c = 0; c < NV; ++c) vv[c] = V::load(v + k * ldv + c * W);
      for (int r = 0; r < MR; ++r) {
        const reg pb = V::set1(p[r * Bc + k]);
        for (int c = 0; c < NV; ++c) acc[r][c] = V::fma(pb, vv[c], acc[r][c]);
      }
    }
    for (int r = 0; r < MR; ++r)
      for (int c = 0; c < NV; ++c) V::store(o + r * ldo + c * W, acc[r][c]);
  }

  template <int NV>
  static void pv_columns(const float* p, std::int64_t kc, const float* v, std::int64_t dv_pad, float* o,
                         const float* alpha, std::int64_t& c0) {
    for (; c0 + NV * W <= dv_pad; c0 += NV * W) pv_micro<NV>(p, kc, v + c0, dv_pad, o + c0, dv_pad, alpha);
  }

  static void run(const FlashParams& P, std::int64_t b, std::int64_t h, std::int64_t q0, const Workspace& ws) {
    const std::int64_t dk = P.qk_dim, dv = P.v_dim, dv_pad = P.dv_pad;
    const std::int64_t rows = min64(kBlockRows, P.q_len - q0);
    const std::int64_t rows_pad = (rows + MR - 1) / MR * MR;
    const std::int64_t g = h / P.group;
    const bool elementwise = P.mask_kind != 0;
    const float neg_inf = kNegInf;
    const float alibi_slope = P.alibi_slope(b, h);

    // Each row's allowed keys, apart from an elementwise mask, form one interval [lo, hi).
    std::int64_t lo[kBlockRows], hi[kBlockRows];
    std::int64_t kmin = 0, kmax = 0;
    allowed_intervals(P, b, q0, rows, lo, hi, kmin, kmax);

    // Q tile in fp32; padding rows are zero.
    for (std::int64_t r = 0; r < rows; ++r) load_row<V>(P.q, b, h, q0 + r, dk, ws.q + r * dk);
    for (std::int64_t i = rows * dk; i < rows_pad * dk; ++i) ws.q[i] = 0.0f;
    for (std::int64_t i = 0; i < rows_pad * dv_pad; ++i) ws.o[i] = 0.0f;
    for (std::int64_t r = 0; r < rows_pad; ++r) ws.m[r] = neg_inf, ws.l[r] = 0.0f, ws.alpha[r] = 0.0f;

    const std::int64_t kv_tile0 = (b * P.kv_heads + g) * P.key_tiles;
    for (std::int64_t k0 = kmin / Bc * Bc; k0 < kmax; k0 += Bc) {
      const std::int64_t kc = min64(Bc, P.k_len - k0);
      // Kᵀ [dk][Bc] and V [Bc][dv_pad] of this key tile, packed in fp32 by pack_kv().
      const std::int64_t tile = kv_tile0 + k0 / Bc;
      const float* kt = P.packed_k + tile * dk * Bc;
      const float* vt = P.packed_v + tile * Bc * dv_pad;
      const bool finite_v = P.v_finite[tile] != 0;

      // S = Q·Kᵀ.
      for (std::int64_t r0 = 0; r0 < rows_pad; r0 += MR)
        for (std::int64_t c0 = 0; c0 < Bc; c0 += V::QK_NV * W)
          qk_micro<V::QK_NV>(ws.q + r0 * dk, dk, kt + c0, ws.s + r0 * Bc + c0);

      if (elementwise) mask_bias_tile<V>(P, b, h, q0, rows, k0, lo, hi, ws.bias);

      // Online softmax over this tile, row by row.
      for (std::int64_t r = 0; r < rows; ++r) {
        float* srow = ws.s + r * Bc;
        const int lo_rel = static_cast<int>(max64(0, min64(Bc, lo[r] - k0)));
        const int hi_rel = static_cast<int>(max64(0, min64(Bc, hi[r] - k0)));
        final_scores<V>(P, srow, elementwise ? ws.bias + r * Bc : nullptr, lo_rel, hi_rel, nullptr, alibi_slope,
                        k0 - (q0 + r + P.offset[b]));
        reg mx = V::set1(neg_inf);
        for (std::int64_t c0 = 0; c0 < Bc; c0 += W) mx = V::max(mx, V::load(srow + c0));
        const float m_old = ws.m[r];
        const float m_tile = V::hmax(mx);
        const float m_new = m_tile > m_old ? m_tile : m_old;
        const float shift = m_new == neg_inf ? 0.0f : m_new;  // never (−inf) − (−inf)
        const float alpha = m_old == neg_inf ? 0.0f : V::exp1(m_old - shift);
        const reg vshift = V::set1(shift);
        reg sum = V::zero();
        for (std::int64_t c0 = 0; c0 < Bc; c0 += W) {
          const reg p = V::exp(V::sub(V::load(srow + c0), vshift));
          V::store(srow + c0, p);
          sum = V::add(sum, p);
        }
        ws.m[r] = m_new;
        ws.l[r] = alpha * ws.l[r] + V::hsum(sum);
        ws.alpha[r] = alpha;
      }
      for (std::int64_t r = rows; r < rows_pad; ++r)
        for (std::int64_t c = 0; c < Bc; ++c) ws.s[r * Bc + c] = 0.0f;

      // O = α·O + P·V.
      if (finite_v) {
        for (std::int64_t r0 = 0; r0 < rows_pad; r0 += MR) {
          std::int64_t c0 = 0;
          const float* p = ws.s + r0 * Bc;
          float* o = ws.o + r0 * dv_pad;
          pv_columns<V::PV_NV>(p, kc, vt, dv_pad, o, ws.alpha + r0, c0);
          if constexpr (V::PV_NV > 3) pv_columns<3>(p, kc, vt, dv_pad, o, ws.alpha + r0, c0);
          if constexpr (V::PV_NV > 2) pv_columns<2>(p, kc, vt, dv_pad, o, ws.alpha + r0, c0);
          if constexpr (V::PV_NV > 1) pv_columns<1>(p, kc, vt, dv_pad, o, ws.alpha + r0, c0);
        }
      } else {
        // NaN or Inf in this V tile: weights of exactly zero (masked keys) are skipped instead of
        // multiplied, so 0·NaN never reaches O (backend.h: masked keys contribute nothing).
        for (std::int64_t r = 0; r < rows; ++r) {
          float* o = ws.o + r * dv_pad;
          for (std::int64_t d = 0; d < dv; ++d) o[d] *= ws.alpha[r];
          for (std::int64_t k = 0; k < kc; ++k) {
            const float p = ws.s[r * Bc + k];
            if (p == 0.0f) continue;
            for (std::int64_t d = 0; d < dv; ++d) o[d] = __builtin_fmaf(p, vt[k * dv_pad + d], o[d]);
          }
        }
      }
    }

    // A sink σ (backend.h) is one last key of value 0: like a key tile, it may raise the row's
    // max, rescaling O and l by α = e^{m − m'}, and adds e^{σ − m'} to l. A row without an allowed
    // key gets O = 0 and LSE = σ.
    const float sink = P.sinks != nullptr ? P.sinks[h] : neg_inf;
    if (sink != neg_inf) {
      for (std::int64_t r = 0; r < rows; ++r) {
        const float m_old = ws.m[r];
        const float m_new = sink > m_old ? sink : m_old;
        const float alpha = m_old == neg_inf ? 0.0f : V::exp1(m_old - m_new);
        if (alpha != 1.0f)
          for (std::int64_t d = 0; d < dv; ++d) ws.o[r * dv_pad + d] *= alpha;
        ws.l[r] = alpha * ws.l[r] + V::exp1(sink - m_new);
        ws.m[r] = m_new;
      }
    }

    // O /= l (one division per element), written in the output dtype; LSE = m + log l.
    const int obytes = elem_bytes(P.out.type);
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::int64_t i = q0 + r;
      const bool empty = ws.m[r] == neg_inf;  // no allowed key: O = 0, LSE = −inf
      const float l = ws.l[r];
      char* orow = const_cast<char*>(P.out.data) + (b * P.out.stride[0] + h * P.out.stride[1] + i * P.out.stride[2]) * obytes;
      for (std::int64_t d = 0; d < dv; ++d)
        store_elem<V>(orow + d * P.out.stride[3] * obytes, P.out.type, empty ? 0.0f : ws.o[r * dv_pad + d] / l);
      if (P.lse != nullptr)
        P.lse[b * P.lse_stride[0] + h * P.lse_stride[1] + i * P.lse_stride[2]] = empty ? neg_inf : ws.m[r] + __builtin_logf(l);
    }
  }
};

/// Packs key tile t of (batch b) for kv heads [g0, g0 + heads) once per call, for every query tile
/// and every head of each group: Kᵀ [dk][Bc] and V [Bc][dv_pad] in fp32, zero beyond the last key
/// and Dv, and a flag saying whether V's tile is all finite (flash_tile.inl's P·V takes a guarded
/// path if not). Key by key, every head of the range is read before the next key: in a layout
/// whose heads are adjacent ([B, L, H, D], a token-major page [page, Hkv, D]) that reads memory in
/// order. Keys at or past the batch's key limit are never read, only zeroed: no row may see them,
/// and in a paged cache their slots need not name a page (backend.h, ABI 2.4).
template <class V>
void pack_kv_tile(const FlashParams& P, std::int64_t b, std::int64_t g0, std::int64_t heads, std::int64_t t,
                  float* packed_k, float* packed_v, unsigned char* v_finite) {
  constexpr std::int64_t Bc = kBlockKeys;
  const std::int64_t dk = P.qk_dim, dv = P.v_dim, dv_pad = P.dv_pad, k0 = t * Bc;
  const std::int64_t kc = max64(0, min64(Bc, min64(P.k_len, P.key_read_limit(b)) - k0));
  const int kbytes = elem_bytes(P.k.type), vbytes = elem_bytes(P.v.type);
  // Each key's row offset in K and V, kv head 0: a stride apart when contiguous; through the block
  // table, one lookup per page the tile crosses (no division per key), when paged.
  std::int64_t k_rows[Bc], v_rows[Bc];
  if (P.block_table == nullptr) {
    for (std::int64_t c = 0; c < kc; ++c) {
      k_rows[c] = b * P.k.stride[0] + (k0 + c) * P.k.stride[2];
      v_rows[c] = b * P.v.stride[0] + (k0 + c) * P.v.stride[2];
    }
  } else {
    std::int64_t slot = k0 / P.page_size, row = k0 % P.page_size;
    for (std::int64_t c = 0; c < kc;) {
      const std::int64_t page = P.block_table[b * P.table_stride + slot];
      for (; row < P.page_size && c < kc; ++row, ++c) {
        k_rows[c] = page * P.k.stride[0] + row * P.k.stride[2];
        v_rows[c] = page * P.v.stride[0] + row * P.v.stride[2];
      }
      ++slot, row = 0;
    }
  }
  const auto tile_of = [&](std::int64_t g) { return (b * P.kv_heads + g) * P.key_tiles + t; };
  for (std::int64_t c = 0; c < kc; ++c)
    for (std::int64_t g = g0; g < g0 + heads; ++g) {
      float* kt = packed_k + tile_of(g) * dk * Bc;
      const char* krow = P.k.data + (k_rows[c] + g * P.k.stride[1]) * kbytes;
      for (std::int64_t d = 0; d < dk; ++d) kt[d * Bc + c] = load_elem<V>(krow + d * P.k.stride[3] * kbytes, P.k.type);
      float* vrow = packed_v + tile_of(g) * Bc * dv_pad + c * dv_pad;
      const char* vsrc = P.v.data + (v_rows[c] + g * P.v.stride[1]) * vbytes;
      if (P.v.type == Elem::F32 && P.v.stride[3] == 1) {
        __builtin_memcpy(vrow, vsrc, static_cast<std::size_t>(dv) * 4);
      } else {
        for (std::int64_t d = 0; d < dv; ++d) vrow[d] = load_elem<V>(vsrc + d * P.v.stride[3] * vbytes, P.v.type);
      }
      for (std::int64_t d = dv; d < dv_pad; ++d) vrow[d] = 0.0f;
    }
  for (std::int64_t g = g0; g < g0 + heads; ++g) {
    float* kt = packed_k + tile_of(g) * dk * Bc;
    float* vt = packed_v + tile_of(g) * Bc * dv_pad;
    for (std::int64_t d = 0; d < dk; ++d)
      for (std::int64_t c = kc; c < Bc; ++c) kt[d * Bc + c] = 0.0f;
    for (std::int64_t i = kc * dv_pad; i < Bc * dv_pad; ++i) vt[i] = 0.0f;
    // x·0 is NaN exactly when x is NaN or ±inf; the sum of those products is 0 iff all are finite.
    typename V::reg z = V::zero();
    for (std::int64_t i = 0; i < kc * dv_pad; i += V::W) z = V::add(z, V::mul(V::load(vt + i), V::zero()));
    v_finite[tile_of(g)] = V::hsum(z) == 0.0f ? 1 : 0;
  }
}

template <class V>
void exp_array(const float* x, float* y, std::int64_t n) {
  std::int64_t i = 0;
  for (; i + V::W <= n; i += V::W) V::store(y + i, V::exp(V::load(x + i)));
  for (; i < n; ++i) y[i] = V::exp1(x[i]);
}
