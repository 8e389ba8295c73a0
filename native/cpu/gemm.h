// The blocked matrix multiply of matmulCpu (GotoBLAS / BLIS): op(B) packed into column panels of
// kNr, op(A) into row panels of kMr per block of kMc rows, and a kMr x kNr register micro-tile
// that runs the k loop. Compiled once per instruction-set variant: the x86-64 baseline (6 x 8,
// SSE2 multiply then add), AVX2 (6 x 16, FMA) and AVX-512 (8 x 32, FMA), inside the namespace
// named by RLHF_CHUNK_NS.
//
// The rounding of C[i,j] is fixed by K alone: k runs in blocks of kKc, each block is one chain
// acc = a_ik * b_kj + acc from acc = 0 in k order, and C = block 0, then C += block p. Every
// element gets that chain in its own register lane whatever its place in a tile (edge tiles are
// padded, never computed differently), and threads split rows, never k, so the bits do not
// depend on M, N or the thread count.
//
// Included only by gemm.cpp, gemm_avx2.cpp and gemm_avx512.cpp.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "nn_chunks.h"
#include "rlhf/nn.h"
#include "simd.h"
#include "thread_pool.h"

namespace rlhf {
namespace RLHF_CHUNK_NS {

using namespace simd;

// Rows of a micro-tile: 12 accumulators, 2 B vectors and 1 A broadcast of the 16 registers of
// AVX2 and the baseline; 16 accumulators of the 32 of AVX-512, where 8 rows ran the [512^3]
// product at 78-84% of the FMA peak against 72-76% with 6, 74-82% with 12 and 72-74% with 14, and
// the narrow products fastest too (a row past M is computed in vain).
constexpr int kMr = W == 16 ? 8 : 6;
constexpr int kNr = 2 * W;   // columns of a micro-tile: two vectors
// k per block: part of the result (see above); a B micro-panel (16 KiB, 32 on AVX-512) stays in L1.
constexpr int64_t kKc = 256;
constexpr int64_t kMc = 144;  // rows per packed A block: 144 x 256 floats, 144 KiB of the L2
// Columns of op(B) are packed in blocks of at most this many floats (16 MiB, K x nc).
constexpr int64_t kPackedBFloats = int64_t{1} << 22;
// op(B) not transposed and at most this many floats (64 KiB) is read in place: packing it would
// cost as much as the few rows of a small multiply it serves.
constexpr int64_t kDirectBFloats = 16384;
// At most this many columns, op(A) is read in place: a packed panel would serve at most 4 tiles.
constexpr int64_t kNarrowN = 4 * kNr;
// Tasks per thread, taken from a shared counter: a thread slowed by other work on the machine
// takes fewer of them.
constexpr int64_t kTasksPerThread = 2;
// Floats of packed B per part of the parallel packing; rows of op(B), and steps of a transposed
// op(A), packed at a time (see packBColumns and packTransposedA).
constexpr int64_t kMinPackFloatsPerThread = int64_t{1} << 16;
constexpr int64_t kPackRows = 64;
constexpr int64_t kPackStepsA = 16;

static inline int64_t ceilDiv(int64_t x, int64_t y) { return (x + y - 1) / y; }

// A reusable 64-byte-aligned buffer of this thread: a fresh allocation of a large packed
// operand would page-fault on every call.
static float* threadBuffer(std::vector<float>& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n + 16) v.resize(static_cast<size_t>(n + 16));
  const uintptr_t p = reinterpret_cast<uintptr_t>(v.data());
  return reinterpret_cast<float*>((p + 63) & ~uintptr_t{63});
}
static float* bufferA(int64_t n) {
  static thread_local std::vector<float> v;
  return threadBuffer(v, n);
}
static float* bufferB(int64_t n) {
  static thread_local std::vector<float> v;
  return threadBuffer(v, n);
}

// --- the micro-tile --------------------------------------------------------------------------

// The A operand of a micro-tile as packed: step k holds the kMr rows' elements together.
struct PackedRows {
  const float* p;
  float at(int r) const { return p[r]; }
  void next() { p += kMr; }
};

// The A operand read in place: row r's element at step k is row[r][k * step]. Rows past the
// matrix repeat its last row (the results of those lanes are not stored).
struct StridedRows {
  const float* row[kMr];
  int64_t step, offset;
  float at(int r) const { return row[r][offset]; }
  void next() { offset += step; }
};

// acc[r][v] = sum_k a(r, k) * b(k, vW..vW+W-1) over k < kc for v < kVecs, each lane one chain
// from 0 in k order. b: row k of the panel at b + k * bPitch.
template <int kVecs, typename Rows>
static inline void multiplyVecs(Rows a, const float* b, int64_t bPitch, int64_t kc, VF (&acc)[kMr][2]) {
  for (int r = 0; r < kMr; ++r) acc[r][0] = acc[r][1] = zero();
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k) {
    VF bv[kVecs];
    for (int v = 0; v < kVecs; ++v) bv[v] = load(b + v * W);
    for (int r = 0; r < kMr; ++r) {
      const VF x = set1(a.at(r));
      for (int v = 0; v < kVecs; ++v) acc[r][v] = fmadd(x, bv[v], acc[r][v]);
    }
    a.next();
    b += bPitch;
  }
}

// The micro-tile for the first nr columns of the panel: one vector of them when that is all
// (N = 2 heads, narrow edges) at half the work; the lanes computed are computed alike.
template <typename Rows>
static inline void multiplyTile(Rows a, const float* b, int64_t bPitch, int64_t kc, int nr, VF (&acc)[kMr][2]) {
  if (nr <= W) multiplyVecs<1>(a, b, bPitch, kc, acc);
  else multiplyVecs<2>(a, b, bPitch, kc, acc);
}

// Two micro-tiles of one vector of columns at once (a narrow panel): rows lo into acc[r][0], rows
// hi into acc[r][1]. One vector of columns gives a tile only kMr accumulator chains, too few to
// hide the latency of the FMA; two tiles give 2 kMr. Each lane's chain is the same as alone.
template <typename Rows>
static inline void multiplyNarrowPair(Rows lo, Rows hi, const float* b, int64_t bPitch, int64_t kc, VF (&acc)[kMr][2]) {
  for (int r = 0; r < kMr; ++r) acc[r][0] = acc[r][1] = zero();
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k) {
    const VF bv = load(b);
    for (int r = 0; r < kMr; ++r) {
      acc[r][0] = fmadd(set1(lo.at(r)), bv, acc[r][0]);
      acc[r][1] = fmadd(set1(hi.at(r)), bv, acc[r][1]);
    }
    lo.next();
    hi.next();
    b += bPitch;
  }
}

// Where the product's element (i, j) is stored: C row-major, or C transposed when the operands
// were swapped (see swapOperands), whose tiles are stored column by column.
struct COut {
  float* c;
  int64_t ldc;
  bool transposed;
  float* at(int64_t i, int64_t j) const { return transposed ? c + j * ldc + i : c + i * ldc + j; }
};

// C = acc (overwrite) or C += acc for the mr x nr corner of the tile at (i, j).
static inline void storeTile(const VF (&acc)[kMr][2], const COut& out, int64_t i, int64_t j, int mr, int nr,
                             bool overwrite) {
  float* c = out.at(i, j);
  const int64_t ldc = out.ldc;
  if (out.transposed) {
    alignas(64) float t[kMr][kNr];
    for (int r = 0; r < kMr; ++r)
      for (int v = 0; v < 2; ++v) store(&t[r][v * W], acc[r][v]);
    for (int jj = 0; jj < nr; ++jj)
      for (int r = 0; r < mr; ++r) c[jj * ldc + r] = overwrite ? t[r][jj] : c[jj * ldc + r] + t[r][jj];
    return;
  }
  if (mr == kMr && nr == kNr) {
    for (int r = 0; r < kMr; ++r)
      for (int v = 0; v < 2; ++v) {
        float* p = c + r * ldc + v * W;
        store(p, overwrite ? acc[r][v] : add(load(p), acc[r][v]));
      }
    return;
  }
  alignas(64) float t[kMr][kNr];
  for (int r = 0; r < kMr; ++r)
    for (int v = 0; v < 2; ++v) store(&t[r][v * W], acc[r][v]);
  for (int r = 0; r < mr; ++r)
    for (int j = 0; j < nr; ++j) c[r * ldc + j] = overwrite ? t[r][j] : c[r * ldc + j] + t[r][j];
}

// --- packing ---------------------------------------------------------------------------------

// packA when op(A)[i,k] = a[k*lda + i]: a step's rows lie together. kPackStepsA steps at a
// time for all the panels, so that those lines of A are read once and stay in L1 (more would
// collide in its sets when lda is a power of two).
static void packTransposedA(const MatmulArgs& a, int64_t i0, int64_t mc, int64_t p0, int64_t kc, float* dst) {
  for (int64_t k0 = 0; k0 < kc; k0 += kPackStepsA) {
    const int64_t k1 = std::min(kc, k0 + kPackStepsA);
    for (int64_t ir = 0; ir < mc; ir += kMr) {
      const int mr = static_cast<int>(std::min<int64_t>(kMr, mc - ir));
      float* d = dst + ir * kc + k0 * kMr;
      const float* s = a.a + (p0 + k0) * a.lda + i0 + ir;
      if (mr == kMr) {
        for (int64_t k = k0; k < k1; ++k, d += kMr, s += a.lda) std::memcpy(d, s, sizeof(float) * kMr);
        continue;
      }
      for (int64_t k = k0; k < k1; ++k, d += kMr, s += a.lda)
        for (int r = 0; r < kMr; ++r) d[r] = r < mr ? s[r] : 0.0f;
    }
  }
}

// Packs op(A) rows [i0, i0+mc) x k [p0, p0+kc) as micro-panels of kMr rows, [k][kMr] each; the
// rows of the last panel past mc are zero.
static void packA(const MatmulArgs& a, int64_t i0, int64_t mc, int64_t p0, int64_t kc, float* dst) {
  if (a.transA) return packTransposedA(a, i0, mc, p0, kc, dst);
  for (int64_t ir = 0; ir < mc; ir += kMr) {
    const int mr = static_cast<int>(std::min<int64_t>(kMr, mc - ir));
    const float* row[kMr];  // read side by side, written in order
    for (int r = 0; r < kMr; ++r) row[r] = a.a + (i0 + ir + std::min(r, mr - 1)) * a.lda + p0;
    if (mr == kMr) {
      for (int64_t k = 0; k < kc; ++k, dst += kMr)
        for (int r = 0; r < kMr; ++r) dst[r] = row[r][k];
      continue;
    }
    for (int64_t k = 0; k < kc; ++k, dst += kMr)
      for (int r = 0; r < kMr; ++r) dst[r] = r < mr ? row[r][k] : 0.0f;
  }
}

// Transposes the W x W block whose row i is at src + i*pitch into dst, row i at dst + i*kNr.
#if defined(__AVX512F__)
static inline void transposeBlock(const float* src, int64_t pitch, float* dst) {
  __m512 r[16], t[16], u[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * pitch);
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  // Within each 128-bit lane L of u[4q + j]: column 4L + j of rows 4q..4q+3.
  for (int i = 0; i < 16; i += 4) {
    u[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
    u[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
    u[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    u[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  // Column 4L + j gathers lane L of u[j], u[4 + j], u[8 + j], u[12 + j], in two steps.
  for (int j = 0; j < 4; ++j) {
    const __m512 x0 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x44);
    const __m512 x1 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xEE);
    const __m512 y0 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x44);
    const __m512 y1 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xEE);
    _mm512_storeu_ps(dst + j * kNr, _mm512_shuffle_f32x4(x0, y0, 0x88));
    _mm512_storeu_ps(dst + (4 + j) * kNr, _mm512_shuffle_f32x4(x0, y0, 0xDD));
    _mm512_storeu_ps(dst + (8 + j) * kNr, _mm512_shuffle_f32x4(x1, y1, 0x88));
    _mm512_storeu_ps(dst + (12 + j) * kNr, _mm512_shuffle_f32x4(x1, y1, 0xDD));
  }
}
#elif defined(__AVX2__)
static inline void transposeBlock(const float* src, int64_t pitch, float* dst) {
  __m256 r[8], t[8], u[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * pitch);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    _mm256_storeu_ps(dst + i * kNr, _mm256_permute2f128_ps(u[i], u[i + 4], 0x20));
    _mm256_storeu_ps(dst + (i + 4) * kNr, _mm256_permute2f128_ps(u[i], u[i + 4], 0x31));
  }
}
#else
static inline void transposeBlock(const float* src, int64_t pitch, float* dst) {
  __m128 r0 = _mm_loadu_ps(src), r1 = _mm_loadu_ps(src + pitch), r2 = _mm_loadu_ps(src + 2 * pitch),
         r3 = _mm_loadu_ps(src + 3 * pitch);
  _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
  _mm_storeu_ps(dst, r0);
  _mm_storeu_ps(dst + kNr, r1);
  _mm_storeu_ps(dst + 2 * kNr, r2);
  _mm_storeu_ps(dst + 3 * kNr, r3);
}
#endif

// Packs the op(B) columns [j0, j0+kNr), rows [k0, k1), as [k][kNr] at dst (row k0); columns
// past N are zero.
static void packBPanel(const MatmulArgs& a, int64_t j0, int64_t k0, int64_t k1, float* dst) {
  const int nr = static_cast<int>(std::min<int64_t>(kNr, a.N - j0));
  if (a.transB) {  // op(B)[k,j] = b[j*ldb + k]: W x W blocks transposed in registers
    int64_t k = k0;
    if (nr == kNr) {
      k = k0 + (k1 - k0) / W * W;
      for (int c = 0; c < kNr; c += W)
        for (int64_t r = k0; r < k; r += W) transposeBlock(a.b + (j0 + c) * a.ldb + r, a.ldb, dst + (r - k0) * kNr + c);
    }
    for (int c = 0; c < kNr; ++c)  // rows after the last whole block, or all of a partial panel
      for (int64_t r = k; r < k1; ++r) dst[(r - k0) * kNr + c] = c < nr ? a.b[(j0 + c) * a.ldb + r] : 0.0f;
    return;
  }
  for (int64_t k = k0; k < k1; ++k, dst += kNr) {
    const float* s = a.b + k * a.ldb + j0;
    if (nr == kNr) {
      store(dst, load(s));
      store(dst + W, load(s + W));
    } else {
      for (int c = 0; c < kNr; ++c) dst[c] = c < nr ? s[c] : 0.0f;
    }
  }
}

// Floats between packed B panels: one line more than K x kNr, so that the panels of a power-of-two
// K do not all map to the same cache sets (packing writes them side by side).
static inline int64_t panelStride(int64_t K) { return (K + 1) * kNr; }

// Where the micro-panels of op(B) are read: packed (one K x kNr panel per kNr columns of the
// column block starting at j0), or in place with only the last, partial panel packed.
struct BPanels {
  const MatmulArgs* a;
  const float* packed;  // null when op(B) is read in place
  const float* edge;    // the partial last panel, when in place
  int64_t j0;
  // The panel of columns [j, j+kNr) from k = p0, and the distance between its rows.
  const float* at(int64_t j, int64_t p0, int64_t& pitch) const {
    if (packed != nullptr) {
      pitch = kNr;
      return packed + (j - j0) / kNr * panelStride(a->K) + p0 * kNr;
    }
    if (j + kNr <= a->N) {
      pitch = a->ldb;
      return a->b + p0 * a->ldb + j;
    }
    pitch = kNr;
    return edge + p0 * kNr;
  }
};

// --- the blocked loops -------------------------------------------------------------------------

// Rows [i0, i1) x columns [j0, j1) for the k block [p0, p0+kc) with op(A) packed per kMc rows:
// a B micro-panel stays in L1 while the A block streams from L2.
static void packedRowsBlock(const MatmulArgs& a, const BPanels& bp, const COut& out, int64_t i0, int64_t i1, int64_t j0,
                            int64_t j1, int64_t p0, int64_t kc, bool overwrite) {
  float* ap = bufferA(kMc * kKc);
  VF acc[kMr][2];
  for (int64_t ic = i0; ic < i1; ic += kMc) {
    const int64_t mc = std::min(kMc, i1 - ic);
    packA(a, ic, mc, p0, kc, ap);
    for (int64_t j = j0; j < j1; j += kNr) {
      const int nr = static_cast<int>(std::min<int64_t>(kNr, j1 - j));
      int64_t pitch;
      const float* b = bp.at(j, p0, pitch);
      for (int64_t ir = 0; ir < mc; ir += kMr) {
        multiplyTile(PackedRows{ap + ir * kc}, b, pitch, kc, nr, acc);
        storeTile(acc, out, ic + ir, j, static_cast<int>(std::min<int64_t>(kMr, mc - ir)), nr, overwrite);
      }
    }
  }
}

// op(A) rows [i, i + mr) read in place from k = p0 (rows past the matrix repeat its last row).
static inline StridedRows stridedRows(const MatmulArgs& a, int64_t i, int mr, int64_t p0) {
  const int64_t rowStride = a.transA ? 1 : a.lda, step = a.transA ? a.lda : 1;
  StridedRows rows;
  for (int r = 0; r < kMr; ++r) rows.row[r] = a.a + (i + std::min(r, mr - 1)) * rowStride;
  rows.step = step;
  rows.offset = p0 * step;
  return rows;
}

// The same with op(A) read in place, for few columns: a tile's A rows stay in L1 across the row.
// A panel of at most one vector of columns (a narrow C: a head of a few actions) runs two tiles
// of rows at a time.
static void directRowsBlock(const MatmulArgs& a, const BPanels& bp, const COut& out, int64_t i0, int64_t i1, int64_t j0,
                            int64_t j1, int64_t p0, int64_t kc, bool overwrite) {
  VF acc[kMr][2];
  const bool narrow = j1 - j0 <= W;
  for (int64_t i = i0; i < i1;) {
    const int mr = static_cast<int>(std::min<int64_t>(kMr, i1 - i));
    const StridedRows rows = stridedRows(a, i, mr, p0);
    if (narrow && i1 - i > kMr) {
      const int mrHi = static_cast<int>(std::min<int64_t>(kMr, i1 - i - kMr));
      int64_t pitch;
      const float* b = bp.at(j0, p0, pitch);
      multiplyNarrowPair(rows, stridedRows(a, i + kMr, mrHi, p0), b, pitch, kc, acc);
      VF hi[kMr][2];
      for (int r = 0; r < kMr; ++r) hi[r][0] = acc[r][1], hi[r][1] = zero();
      storeTile(acc, out, i, j0, kMr, static_cast<int>(j1 - j0), overwrite);
      storeTile(hi, out, i + kMr, j0, mrHi, static_cast<int>(j1 - j0), overwrite);
      i += 2 * kMr;
      continue;
    }
    for (int64_t j = j0; j < j1; j += kNr) {
      const int nr = static_cast<int>(std::min<int64_t>(kNr, j1 - j));
      int64_t pitch;
      const float* b = bp.at(j, p0, pitch);
      multiplyTile(rows, b, pitch, kc, nr, acc);
      storeTile(acc, out, i, j, mr, nr, overwrite);
    }
    i += kMr;
  }
}

// C rows [i0, i1) x columns [j0, j1), k block after k block.
static void multiplyRows(const MatmulArgs& a, const BPanels& bp, const COut& out, int64_t i0, int64_t i1, int64_t j0,
                         int64_t j1) {
  const bool packedA = a.N > kNarrowN;
  for (int64_t p0 = 0; p0 < a.K; p0 += kKc) {
    const int64_t kc = std::min(kKc, a.K - p0);
    const bool overwrite = p0 == 0 && !a.accumulate;
    if (packedA) packedRowsBlock(a, bp, out, i0, i1, j0, j1, p0, kc, overwrite);
    else directRowsBlock(a, bp, out, i0, i1, j0, j1, p0, kc, overwrite);
  }
}

// Packs the panels of columns [j0, j1) into dst (panelStride apart), spread over the pool when
// there are many. kPackRows rows at a time across a part's panels, so that every line of op(B)
// is read once while its neighbours are still in cache.
static void packBColumns(const MatmulArgs& a, int64_t j0, int64_t j1, float* dst) {
  const int64_t panels = ceilDiv(j1 - j0, kNr);
  const int64_t grain = std::max<int64_t>(1, kMinPackFloatsPerThread / (a.K * kNr));
  parallelFor(panels, grain, 1, [&](int64_t q0, int64_t q1) {
    for (int64_t k0 = 0; k0 < a.K; k0 += kPackRows) {
      const int64_t k1 = std::min(a.K, k0 + kPackRows);
      for (int64_t q = q0; q < q1; ++q) packBPanel(a, j0 + q * kNr, k0, k1, dst + q * panelStride(a.K) + k0 * kNr);
    }
  });
}

// C = 0 for K = 0 (an empty sum), unless accumulating.
static void clearOutput(const MatmulArgs& a) {
  if (a.accumulate) return;
  for (int64_t i = 0; i < a.M; ++i) std::fill(a.c + i * a.ldc, a.c + i * a.ldc + a.N, 0.0f);
}

// The bias and activation of a dense layer over rows [i0, i1) x columns [j0, j1) of the finished
// C, while they are still in cache: the chunk kernel of biasAct, so the bits are its own.
static void applyEpilogue(const MatmulArgs& a, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
  if (a.hasEpilogue()) biasActBlock(a.act, a.c, a.bias, a.c, a.z, a.ldc, i0, i1, j0, j1);
}

// How the C columns of one block are cut into tasks: rowTasks x colTasks of them, each a nearly
// equal share of the `tiles` micro-tile rows and the `panels` column panels (whole tiles and
// panels, so that no two tasks write one tile); columns are cut too when there are too few rows
// for kTasksPerThread tasks per thread. A single task below kMinParallelFlops or on one thread.
struct TaskGrid {
  int64_t tiles, panels, rowTasks, colTasks;
  int64_t rowBegin(int64_t r) const { return r * tiles / rowTasks * kMr; }
  int64_t colBegin(int64_t c) const { return c * panels / colTasks * kNr; }
};

static TaskGrid taskGrid(const MatmulArgs& a, int64_t columns) {
  const int64_t threads = ThreadPool::instance().numThreads();
  const int64_t tiles = ceilDiv(a.M, kMr), panels = ceilDiv(columns, kNr);
  if (threads == 1 || 2 * a.M * columns * a.K < kMinParallelFlops) return {tiles, panels, 1, 1};
  const int64_t wanted = threads * kTasksPerThread;
  const int64_t rowTasks = std::min(wanted, tiles);
  return {tiles, panels, rowTasks, std::min(panels, ceilDiv(wanted, rowTasks))};
}

// At most kSwapN columns and at least kSwapMinM rows: the product runs as C^T = op(B)^T op(A)^T,
// whose vectors run along the rows of C, and is stored transposed. With the columns in the
// vectors, a C of one or two columns would fill a quarter of each and the k loop would broadcast
// a row element per multiply. Each element is still its own chain over k in the same order (a
// multiply's operands commute), so the bits are those of the direct path. From 64 rows: four AVX2
// panels of the swapped product, two AVX-512 ones; on AVX-512 a [64, 4] product with K = 128 ran
// in 0.7-0.9 us swapped against 3.2 us direct.
constexpr int64_t kSwapN = 4;
constexpr int64_t kSwapMinM = 64;

static bool swapOperands(const MatmulArgs& a) { return a.N <= kSwapN && a.M >= kSwapMinM; }

// The product with the operands swapped (C^T [N, M] = op(B)^T op(A)^T), without the epilogue,
// which is applied to C afterwards.
static MatmulArgs swapped(const MatmulArgs& a) {
  MatmulArgs s = a;
  s.M = a.N;
  s.N = a.M;
  s.a = a.b;
  s.lda = a.ldb;
  s.transA = !a.transB;
  s.b = a.a;
  s.ldb = a.lda;
  s.transB = !a.transA;
  s.bias = nullptr;
  s.act = Activation::Identity;
  s.z = nullptr;
  return s;
}

static void multiply(const MatmulArgs& a, const COut& out);

static void gemm(const MatmulArgs& a) {
  if (a.M <= 0 || a.N <= 0) return;
  if (a.K <= 0) {
    clearOutput(a);
    return applyEpilogue(a, 0, a.M, 0, a.N);
  }
  if (!swapOperands(a)) return multiply(a, COut{a.c, a.ldc, false});
  multiply(swapped(a), COut{a.c, a.ldc, true});
  if (a.hasEpilogue())
    parallelFor(a.M, std::max<int64_t>(1, kMinElementsPerThread / a.N), 1,
                [&](int64_t i0, int64_t i1) { applyEpilogue(a, i0, i1, 0, a.N); });
}

// The blocked product of a into `out`, with the epilogue of a applied by each task to its block.
static void multiply(const MatmulArgs& a, const COut& out) {
  const bool packB = a.transB || (a.K * a.N > kDirectBFloats && a.M > kMr);
  // Columns per block: all of them unless the packed panels would exceed kPackedBFloats.
  const int64_t nc = packB ? std::max<int64_t>(kNr, kPackedBFloats / a.K / kNr * kNr) : a.N;
  for (int64_t j0 = 0; j0 < a.N; j0 += nc) {
    const int64_t j1 = std::min(a.N, j0 + nc);
    BPanels bp{&a, nullptr, nullptr, j0};
    if (packB) {
      float* dst = bufferB(ceilDiv(j1 - j0, kNr) * panelStride(a.K));
      packBColumns(a, j0, j1, dst);
      bp.packed = dst;
    } else if (a.N % kNr != 0) {
      float* edge = bufferB(kNr * a.K);
      packBPanel(a, a.N / kNr * kNr, 0, a.K, edge);
      bp.edge = edge;
    }
    const TaskGrid g = taskGrid(a, j1 - j0);
    auto task = [&](int64_t t) {
      const int64_t r = t / g.colTasks, c = t % g.colTasks;
      const int64_t i0 = g.rowBegin(r), i1 = std::min(a.M, g.rowBegin(r + 1));
      const int64_t c0 = j0 + g.colBegin(c), c1 = std::min(j1, j0 + g.colBegin(c + 1));
      multiplyRows(a, bp, out, i0, i1, c0, c1);
      applyEpilogue(a, i0, i1, c0, c1);
    };
    if (g.rowTasks * g.colTasks == 1) task(0);
    else ThreadPool::instance().run(g.rowTasks * g.colTasks, task);
  }
}

}  // namespace RLHF_CHUNK_NS
}  // namespace rlhf
