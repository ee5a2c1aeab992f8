// The fixed-order loops of fixed_order.h, included by each kernels_*.cpp inside an anonymous
// namespace after defining Lanes, kLanes, kRows and kCols (the register tile: kRows rows of A ×
// kCols columns of B, sized to the instruction set's registers). Vectors run across the tile's
// columns, which reorders nothing.
// Needs kernels/elementary.h, included by the including file. No std:: templates here: what
// they instantiate would be shared (weak) across the builds, and the linker could hand an AVX
// copy to baseline code.

// Depth per pass: a tile's kRows × kDepthBlock of A and the kDepthBlock × kCols panel of B it
// meets stay in L1/L2. The running sums are stored in C between passes and reloaded, so a pass boundary
// continues each fma chain exactly where it stopped.
constexpr std::int64_t kDepthBlock = 256;

// One register tile: acc = C (or +0 on the first pass), then acc_rc = fma(a_rt, b_tc, acc_rc)
// for t increasing. A partial tile's rows and columns are zero-padded copies, so the loop has no
// edge cases;
// only the `rows` × `cols` corner is stored. Lanes (defined by the including file) is the
// instruction set's vector of doubles: kLanes wide, with load, store, broadcast and a fused
// multiply-add that rounds once per lane.
void product_tile(std::int64_t depth, const double* a_panel, std::int64_t lda, const double* b_panel, std::int64_t ldb, double* c,
                  std::int64_t ldc, std::int64_t rows, std::int64_t cols, bool first_pass, const double* alpha) {
  constexpr int kVectors = kCols / kLanes;
  const bool full = rows == kRows && cols == kCols;  // most tiles: C is read and written in place
  alignas(64) double staged[kRows][kCols];
  if (!full)
    for (int r = 0; r < kRows; ++r)
      for (int j = 0; j < kCols; ++j) staged[r][j] = (first_pass || r >= rows || j >= cols) ? 0.0 : c[r * ldc + j];
  typename Lanes::reg acc[kRows][kVectors];
  for (int r = 0; r < kRows; ++r)
    for (int v = 0; v < kVectors; ++v)
      acc[r][v] = !full ? Lanes::load(&staged[r][v * kLanes]) : first_pass ? Lanes::broadcast(0.0) : Lanes::load(c + r * ldc + v * kLanes);
  for (std::int64_t t = 0; t < depth; ++t) {
    typename Lanes::reg b_t[kVectors];
    for (int v = 0; v < kVectors; ++v) b_t[v] = Lanes::load(b_panel + t * ldb + v * kLanes);
    for (int r = 0; r < kRows; ++r) {
      const typename Lanes::reg a_tr = Lanes::broadcast(a_panel[r * lda + t]);
      for (int v = 0; v < kVectors; ++v) acc[r][v] = Lanes::fma(a_tr, b_t[v], acc[r][v]);
    }
  }
  if (alpha) {  // the last pass: each finished chain times α, one rounding
    const typename Lanes::reg scale = Lanes::broadcast(*alpha);
    for (int r = 0; r < kRows; ++r)
      for (int v = 0; v < kVectors; ++v) acc[r][v] = Lanes::mul(acc[r][v], scale);
  }
  if (full) {
    for (int r = 0; r < kRows; ++r)
      for (int v = 0; v < kVectors; ++v) Lanes::store(c + r * ldc + v * kLanes, acc[r][v]);
    return;
  }
  for (int r = 0; r < kRows; ++r)
    for (int v = 0; v < kVectors; ++v) Lanes::store(&staged[r][v * kLanes], acc[r][v]);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t j = 0; j < cols; ++j) c[r * ldc + j] = staged[r][j];
}

std::int64_t smaller(std::int64_t a, std::int64_t b) { return a < b ? a : b; }

// A heap buffer of doubles (what std::vector would be, without its shared instantiations).
struct Buffer {
  explicit Buffer(std::int64_t n) : data(new double[static_cast<unsigned long>(n)]) {}
  ~Buffer() { delete[] data; }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  double* data;
};

// C = A·B (kTransposedB false: B is [k × n]) or C = A·Btᵀ (true: `b` is Bt, [n × k]), then
// C ← α·C if `alpha` is given. With `continue_chains` each chain starts from C's value instead of
// +0, so C = A₁·B₁ then C += A₂·B₂ is the one chain over the depth of both, whatever the split.
template <bool kTransposedB>
void product_impl(std::int64_t m, std::int64_t n, std::int64_t k, const double* a, std::int64_t lda, const double* b,
                  std::int64_t ldb, const double* alpha, double* c, std::int64_t ldc, bool continue_chains) {
  if (k == 0) {
    if (continue_chains) return;
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t j = 0; j < n; ++j) c[i * ldc + j] = 0.0;
    return;
  }
  const std::int64_t row_tiles = (m + kRows - 1) / kRows, full_row_tiles = m / kRows;
  Buffer a_pack(kRows * smaller(k, kDepthBlock));
  Buffer b_pack(kCols * smaller(k, kDepthBlock));
  for (std::int64_t t0 = 0; t0 < k; t0 += kDepthBlock) {
    const std::int64_t depth = smaller(kDepthBlock, k - t0);
    const bool last_pass = t0 + depth == k;
    // A is read in place; only a last, partial tile of rows is copied, zero-padded to kRows.
    if (full_row_tiles < row_tiles)
      for (std::int64_t r = 0; r < kRows; ++r) {
        const std::int64_t i = full_row_tiles * kRows + r;
        for (std::int64_t t = 0; t < depth; ++t) a_pack.data[r * depth + t] = i < m ? a[i * lda + t0 + t] : 0.0;
      }
    for (std::int64_t j0 = 0; j0 < n; j0 += kCols) {
      // B is read in place where it is row-major and the panel full width; otherwise the panel is
      // copied into a zero-padded depth-major one (a transposed B is read along its rows).
      const std::int64_t cols = smaller(kCols, n - j0);
      const double* b_panel = b + t0 * ldb + j0;
      std::int64_t panel_stride = ldb;
      if (kTransposedB || cols < kCols) {
        for (std::int64_t j = 0; j < kCols; ++j)
          for (std::int64_t t = 0; t < depth; ++t)
            b_pack.data[t * kCols + j] =
                j >= cols ? 0.0 : kTransposedB ? b[(j0 + j) * ldb + t0 + t] : b[(t0 + t) * ldb + j0 + j];
        b_panel = b_pack.data;
        panel_stride = kCols;
      }
      for (std::int64_t tile = 0; tile < row_tiles; ++tile) {
        const std::int64_t i0 = tile * kRows;
        const bool padded = tile == full_row_tiles;
        product_tile(depth, padded ? a_pack.data : a + i0 * lda + t0, padded ? depth : lda, b_panel, panel_stride,
                     c + i0 * ldc + j0, ldc,
                     smaller(kRows, m - i0), cols, t0 == 0 && !continue_chains, last_pass ? alpha : nullptr);
      }
    }
  }
}

void product(std::int64_t m, std::int64_t n, std::int64_t k, const double* a, std::int64_t lda, const double* b,
             std::int64_t ldb, double* c, std::int64_t ldc) {
  product_impl<false>(m, n, k, a, lda, b, ldb, nullptr, c, ldc, false);
}

void product_continued(std::int64_t m, std::int64_t n, std::int64_t k, const double* a, std::int64_t lda,
                       const double* b, std::int64_t ldb, double* c, std::int64_t ldc) {
  product_impl<false>(m, n, k, a, lda, b, ldb, nullptr, c, ldc, true);
}

void scaled_product_transposed(std::int64_t m, std::int64_t n, std::int64_t k, double alpha, const double* a,
                               std::int64_t lda, const double* bt, std::int64_t ldbt, double* c, std::int64_t ldc) {
  product_impl<true>(m, n, k, a, lda, bt, ldbt, &alpha, c, ldc, false);
}

void exp_shifted(double* x, std::int64_t n, double shift) {
  for (std::int64_t e = 0; e < n; ++e) x[e] = detail::exp(x[e] - shift);
}

double max(const double* x, std::int64_t n) {
  // Eight running maxima, element e in maximum e mod 8; the maximum of numbers is the same in
  // any order. Lanes::max(x, m) is x > m ? x : m, so NaNs are skipped.
  constexpr int kVectors = 8 / kLanes;
  typename Lanes::reg part[kVectors];
  for (auto& p : part) p = Lanes::broadcast(-__builtin_inf());
  std::int64_t e = 0;
  for (; e + 8 <= n; e += 8)
    for (int v = 0; v < kVectors; ++v) part[v] = Lanes::max(Lanes::load(x + e + v * kLanes), part[v]);
  alignas(64) double lanes[8];
  for (int v = 0; v < kVectors; ++v) Lanes::store(lanes + v * kLanes, part[v]);
  double m = -__builtin_inf();
  for (const double p : lanes) m = p > m ? p : m;
  for (; e < n; ++e) m = x[e] > m ? x[e] : m;
  return m;
}

double sum(const double* x, std::int64_t n, std::int64_t first) {
  double part[8] = {};
  std::int64_t e = 0;
  for (; e < n && ((first + e) & 7) != 0; ++e) part[(first + e) & 7] += x[e];
  for (; e + 8 <= n; e += 8)
    for (int l = 0; l < 8; ++l) part[l] += x[e + l];
  for (; e < n; ++e) part[(first + e) & 7] += x[e];
  return ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
}
