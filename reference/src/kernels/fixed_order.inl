// The fixed-order loops of fixed_order.h, included by each kernels_*.cpp inside an anonymous
// namespace after defining Lanes, kLanes, kRows and kCols (the register tile: kRows rows of A ×
// kCols columns of B, sized to the instruction set's registers). Vectors run across the tile's
// columns, which reorders nothing.
// Needs kernels/elementary.h, included by the including file. No std:: templates here: what
// they instantiate would be shared (weak) across the builds, and the linker could hand an AVX
// copy to baseline code.

// Depth per pass: a packed panel of A (kDepthBlock × kRows) and the kDepthBlock × kCols panel of
// B it meets stay in L1/L2. The running sums are stored in C between passes and reloaded, so a pass boundary
// continues each fma chain exactly where it stopped.
constexpr std::int64_t kDepthBlock = 256;

// One register tile: acc = C (or +0 on the first pass), then acc_rc = fma(a_tr, b_tc, acc_rc)
// for t increasing. The panels are zero-padded to the full tile, so the loop has no edge cases;
// only the `rows` × `cols` corner is stored. Lanes (defined by the including file) is the
// instruction set's vector of doubles: kLanes wide, with load, store, broadcast and a fused
// multiply-add that rounds once per lane.
void product_tile(std::int64_t depth, const double* a_panel, const double* b_panel, std::int64_t ldb, double* c,
                  std::int64_t ldc, std::int64_t rows, std::int64_t cols, bool first_pass) {
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
      const typename Lanes::reg a_tr = Lanes::broadcast(a_panel[t * kRows + r]);
      for (int v = 0; v < kVectors; ++v) acc[r][v] = Lanes::fma(a_tr, b_t[v], acc[r][v]);
    }
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

void product(std::int64_t m, std::int64_t n, std::int64_t k, const double* a, std::int64_t lda, const double* b,
             std::int64_t ldb, double* c, std::int64_t ldc) {
  if (k == 0) {
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t j = 0; j < n; ++j) c[i * ldc + j] = 0.0;
    return;
  }
  const std::int64_t row_tiles = (m + kRows - 1) / kRows;
  Buffer a_pack(row_tiles * kRows * smaller(k, kDepthBlock));
  Buffer b_pack(kCols * smaller(k, kDepthBlock));
  for (std::int64_t t0 = 0; t0 < k; t0 += kDepthBlock) {
    const std::int64_t depth = smaller(kDepthBlock, k - t0);
    // A's rows in tiles of kRows, each tile stored depth-major: a_pack[tile][t][r].
    for (std::int64_t tile = 0; tile < row_tiles; ++tile) {
      double* panel = a_pack.data + tile * kRows * depth;
      for (std::int64_t r = 0; r < kRows; ++r) {
        const std::int64_t i = tile * kRows + r;
        for (std::int64_t t = 0; t < depth; ++t) panel[t * kRows + r] = i < m ? a[i * lda + t0 + t] : 0.0;
      }
    }
    for (std::int64_t j0 = 0; j0 < n; j0 += kCols) {
      // B is read in place where the panel is full width; the last, narrower panel is copied
      // into a zero-padded one.
      const std::int64_t cols = smaller(kCols, n - j0);
      const double* b_panel = b + t0 * ldb + j0;
      std::int64_t panel_stride = ldb;
      if (cols < kCols) {
        for (std::int64_t t = 0; t < depth; ++t)
          for (std::int64_t j = 0; j < kCols; ++j) b_pack.data[t * kCols + j] = j < cols ? b[(t0 + t) * ldb + j0 + j] : 0.0;
        b_panel = b_pack.data;
        panel_stride = kCols;
      }
      for (std::int64_t tile = 0; tile < row_tiles; ++tile) {
        const std::int64_t i0 = tile * kRows;
        product_tile(depth, a_pack.data + tile * kRows * depth, b_panel, panel_stride, c + i0 * ldc + j0, ldc,
                     smaller(kRows, m - i0), cols, t0 == 0);
      }
    }
  }
}

void exp_shifted(double* x, std::int64_t n, double shift) {
  for (std::int64_t e = 0; e < n; ++e) x[e] = detail::exp(x[e] - shift);
}

double max(const double* x, std::int64_t n) {
  // Eight running maxima; the maximum of numbers is the same in any order. A NaN anywhere makes
  // the result NaN (comparisons with NaN are false, so the maxima alone would skip it).
  double part[8];
  for (double& p : part) p = -__builtin_inf();
  std::uint64_t nan = 0;
  std::int64_t e = 0;
  for (; e + 8 <= n; e += 8)
    for (int l = 0; l < 8; ++l) {
      part[l] = select(x[e + l] > part[l], x[e + l], part[l]);
      nan |= static_cast<std::uint64_t>(x[e + l] != x[e + l]);
    }
  for (; e < n; ++e) {
    part[0] = select(x[e] > part[0], x[e], part[0]);
    nan |= static_cast<std::uint64_t>(x[e] != x[e]);
  }
  double m = part[0];
  for (int l = 1; l < 8; ++l) m = part[l] > m ? part[l] : m;
  return nan ? __builtin_nan("") : m;
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
