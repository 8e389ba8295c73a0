// CUDA GAE, token GAE and discounted returns (SEMANTICS.md §3), each with two algorithms:
//
//  - sequential: one thread per lane (a column of time-major GAE, a row of token GAE) walks
//    time backwards with the scalar reference's operations in the reference's order. The build
//    passes --fmad=false, so the results are bit-identical to the CPU.
//  - tile scan: A_t = d_t + c_t*A_{t+1} is a backward associative scan over what each step
//    does to the carried state, so that a few long lanes (T up to 128K and beyond) spread over
//    thousands of threads. Results differ from the sequential walk by rounding only. A block
//    scans a lane group's tiles; for thousands of batch-major rows a warp scans a row's.
//
// The choice (chooseAlgorithm) depends on the shape alone, never on the GPU, so that a shape
// rounds the same on every GPU. RLHF_CUDA_ADVANTAGES=sequential|scan forces one algorithm; the
// conformance test and the benchmark use it to check and time both on every shape.
//
// Each op is described once, as a policy struct (GaeOp, TokenGaeOp, ReturnsOp) that the
// kernels are templated on: how one step's inputs are loaded, the step itself (the reference
// loop body), the step as a scan element (its Span), and where the outputs go.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include "device.h"
#include "rlhf/cuda.h"
#include "rlhf/error.h"

namespace rlhf {
namespace cuda {

namespace {

constexpr unsigned kFullMask = 0xffffffffu;

int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// --- scan elements ----------------------------------------------------------------------------
// A Span is what a run of consecutive steps does to the state carried backwards in time.
// combine(earlier, later) is the span of both (apply `later` first); apply(span, state) runs
// it. Both are associative compositions, so any fixed tree of them gives the same result up
// to rounding, and a fixed tree gives the same rounding every time.

// GAE and discounted returns carry one number: A -> d + c*A.
struct AffineSpan {
  float c, d;
  __device__ static AffineSpan identity() { return {1.0f, 0.0f}; }
};

__device__ AffineSpan combine(const AffineSpan& earlier, const AffineSpan& later) {
  return {earlier.c * later.c, earlier.d + earlier.c * later.d};
}

__device__ float apply(const AffineSpan& s, float next) { return s.d + s.c * next; }

__device__ AffineSpan shuffleDown(const AffineSpan& s, int offset) {
  return {__shfl_down_sync(kFullMask, s.c, offset), __shfl_down_sync(kFullMask, s.d, offset)};
}

// Token GAE carries the advantage and the value of the next valid token (the bootstrap of the
// next valid step). A span with no valid token passes both through; this is a select rather
// than multiplying by 1 and adding 0, so that NaNs in tokens the reference never reads cannot
// leak. A span with valid tokens maps adv -> D + C*adv + G*value and sets value to the value
// of its first valid token W.
struct TokenSpan {
  float C, G, D, W;
  bool has;
  __device__ static TokenSpan identity() { return {1.0f, 0.0f, 0.0f, 0.0f, false}; }
};

struct TokenState {
  float adv, value;
};

__device__ TokenSpan combine(const TokenSpan& earlier, const TokenSpan& later) {
  if (!later.has) return earlier;
  if (!earlier.has) return later;
  return {earlier.C * later.C, earlier.C * later.G,
          earlier.D + earlier.C * later.D + earlier.G * later.W, earlier.W, true};
}

__device__ TokenState apply(const TokenSpan& s, const TokenState& next) {
  if (!s.has) return next;
  return {s.D + s.C * next.adv + s.G * next.value, s.W};
}

__device__ TokenSpan shuffleDown(const TokenSpan& s, int offset) {
  return {__shfl_down_sync(kFullMask, s.C, offset), __shfl_down_sync(kFullMask, s.G, offset),
          __shfl_down_sync(kFullMask, s.D, offset), __shfl_down_sync(kFullMask, s.W, offset),
          __shfl_down_sync(kFullMask, static_cast<int>(s.has), offset) != 0};
}

// The carried state of lane 0, for every lane of the warp.
__device__ float fromLane0(float x) { return __shfl_sync(kFullMask, x, 0); }

__device__ TokenState fromLane0(const TokenState& s) {
  return {__shfl_sync(kFullMask, s.adv, 0), __shfl_sync(kFullMask, s.value, 0)};
}

// --- the ops ----------------------------------------------------------------------------------
// A lane is the independent recursion (a column n of [T,N], a row b of [B,T]); t is the step.
// `load` reads step t of a lane and does the step's work that does not depend on the carried
// state; `step` is the rest of the reference loop body, in the reference's order.

struct GaeOp {
  using Args = GaeArgs;
  using Span = AffineSpan;
  using State = float;  // A_{t+1}
  struct In {
    float c, d, v;  // gamma*lambda*carry, delta, V_t
  };
  struct Out {
    float adv, ret;
  };
  static constexpr bool kTimeMajor = true;
  static constexpr const char* kName = "gae";

  __host__ __device__ static int64_t lanes(const Args& a) { return a.N; }
  __host__ __device__ static int64_t steps(const Args& a) { return a.T; }
  __device__ static int64_t index(const Args& a, int64_t n, int64_t t) { return t * a.N + n; }
  __device__ static State boundary(const Args&, int64_t) { return 0.0f; }

  __device__ static In load(const Args& a, int64_t n, int64_t t) {
    const bool last = t == a.T - 1;
    const int64_t i = t * a.N + n;
    const float nextValue = last ? a.nextValuesLast[n] : a.nextValues[i];
    const bool terminated =
        a.terminated != nullptr && (last ? a.terminatedLast[n] : a.terminated[i]) != 0;
    const bool truncated = a.truncated != nullptr && a.truncated[i] != 0;
    const float gamma = a.gammaArray != nullptr
                            ? a.gammaArray[t * a.gammaStrideT + n * a.gammaStrideN]
                            : a.gammaValue;
    const float lambda = a.lambdaArray != nullptr
                             ? a.lambdaArray[t * a.lambdaStrideT + n * a.lambdaStrideN]
                             : a.lambdaValue;
    const float notTerminated = terminated ? 0.0f : 1.0f;
    const float carry = (terminated || truncated) ? 0.0f : 1.0f;
    const float v = a.values[i];
    return {gamma * lambda * carry, a.rewards[i] + gamma * notTerminated * nextValue - v, v};
  }

  __device__ static Span leaf(const Args&, const In& in) { return {in.c, in.d}; }

  __device__ static State step(const Args&, const In& in, State next, Out& out) {
    const float A = in.d + in.c * next;
    out = {A, A + in.v};
    return A;
  }

  __device__ static void store(const Args& a, int64_t i, const Out& out) {
    a.advantages[i] = out.adv;
    a.returns[i] = out.ret;
  }
};

struct TokenGaeOp {
  using Args = TokenGaeArgs;
  using Span = TokenSpan;
  using State = TokenState;
  struct In {
    float r, v;  // zeroed where masked under Premask
    bool valid;  // false only for masked tokens under Skip
  };
  struct Out {
    float adv, ret;
  };
  static constexpr bool kTimeMajor = false;
  static constexpr const char* kName = "tokenGae";

  __host__ __device__ static int64_t lanes(const Args& a) { return a.B; }
  __host__ __device__ static int64_t steps(const Args& a) { return a.T; }
  __device__ static int64_t index(const Args& a, int64_t b, int64_t t) { return b * a.T + t; }
  __device__ static State boundary(const Args& a, int64_t b) {
    return {0.0f, a.lastValues != nullptr ? a.lastValues[b] : 0.0f};
  }

  __device__ static In load(const Args& a, int64_t b, int64_t t) {
    const int64_t i = b * a.T + t;
    const float r = a.rewards[i], v = a.values[i];
    const bool valid =
        a.maskMode == MaskMode::None || a.mask == nullptr || a.mask[i] != 0;
    if (a.maskMode == MaskMode::Premask) return {valid ? r : 0.0f, valid ? v : 0.0f, true};
    return {r, v, valid};
  }

  __device__ static Span leaf(const Args& a, const In& in) {
    if (!in.valid) return Span::identity();
    return {a.gamma * a.lambda, a.gamma, in.r - in.v, in.v, true};
  }

  __device__ static State step(const Args& a, const In& in, State s, Out& out) {
    if (in.valid) {
      s.adv = in.r + a.gamma * s.value - in.v + a.gamma * a.lambda * s.adv;
      s.value = in.v;
    }
    out = {s.adv, s.adv + in.v};
    return s;
  }

  __device__ static void store(const Args& a, int64_t i, const Out& out) {
    a.advantages[i] = out.adv;
    a.returns[i] = out.ret;
  }
};

struct ReturnsOp {
  using Args = DiscountedReturnsArgs;
  using Span = AffineSpan;
  using State = float;  // G_{t+1}
  struct In {
    float r;  // m_t*r_t, by select
  };
  struct Out {
    float ret;
  };
  static constexpr bool kTimeMajor = false;
  static constexpr const char* kName = "discountedReturns";

  __host__ __device__ static int64_t lanes(const Args& a) { return a.B; }
  __host__ __device__ static int64_t steps(const Args& a) { return a.T; }
  __device__ static int64_t index(const Args& a, int64_t b, int64_t t) { return b * a.T + t; }
  __device__ static State boundary(const Args&, int64_t) { return 0.0f; }

  // The reward is read whatever the mask: read only where the mask is set, its load waited for
  // the mask's (a branch on each mask byte, in the PTX), two memory latencies in a row.
  __device__ static In load(const Args& a, int64_t b, int64_t t) {
    const int64_t i = b * a.T + t;
    const float r = a.rewards[i];
    return {(a.mask == nullptr || a.mask[i] != 0) ? r : 0.0f};
  }

  __device__ static Span leaf(const Args& a, const In& in) { return {a.gamma, in.r}; }

  __device__ static State step(const Args& a, const In& in, State next, Out& out) {
    const float G = in.r + a.gamma * next;
    out = {G};
    return G;
  }

  __device__ static void store(const Args& a, int64_t i, const Out& out) { a.returns[i] = out.ret; }
};

// A staged step: its inputs, then (written in place by the thread that runs it) its outputs.
template <class Op>
union Cell {
  typename Op::In in;
  typename Op::Out out;
};

// --- sequential, time-major: one thread per column, coalesced across the warp -----------------

// Steps loaded ahead per thread: the loads of a chunk are independent of the recursion, so
// they are all in flight together instead of one memory latency per step.
constexpr int kPrefetch = 16;
constexpr int kColumnThreads = 256;

// Block firstBlock + blockIdx.x (launchSliced) takes kColumnThreads lanes.
template <class Op>
__global__ void __launch_bounds__(kColumnThreads)
    sequentialColumnsKernel(const typename Op::Args a, int64_t firstBlock) {
  const int64_t lane = (firstBlock + blockIdx.x) * kColumnThreads + threadIdx.x;
  if (lane >= Op::lanes(a)) return;
  typename Op::State state = Op::boundary(a, lane);
  for (int64_t end = Op::steps(a); end > 0; end -= kPrefetch) {
    const int64_t begin = end > kPrefetch ? end - kPrefetch : 0;
    typename Op::In in[kPrefetch];
#pragma unroll
    for (int k = 0; k < kPrefetch; ++k)
      if (begin + k < end) in[k] = Op::load(a, lane, begin + k);
#pragma unroll
    for (int k = kPrefetch - 1; k >= 0; --k) {
      if (begin + k >= end) continue;
      typename Op::Out out;
      state = Op::step(a, in[k], state, out);
      Op::store(a, Op::index(a, lane, begin + k), out);
    }
  }
}

// --- sequential, batch-major: one thread per row, through transposed tiles --------------------
// A thread per row reading its own row would touch 32 lines per warp load. Instead each warp
// owns 32 rows and walks them backwards in [32 rows x 32 steps] tiles: lane j loads step
// t0+j of every row (32 coalesced loads of 128 bytes), the tile is transposed through shared
// memory (pitch 33: conflict-free both ways), each lane runs its row through the tile, and
// the outputs go back the same way.

constexpr int kRowWarps = 2;  // 2 x 32 x 33 cells of up to 12 bytes: 25 KB of shared memory
constexpr int kTileSteps = 32;

// Block firstBlock + blockIdx.x (launchSliced) takes 32 * kRowWarps rows.
template <class Op>
__global__ void __launch_bounds__(32 * kRowWarps) sequentialRowsKernel(const typename Op::Args a, int64_t firstBlock) {
  __shared__ Cell<Op> cells[kRowWarps][32][kTileSteps + 1];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t lanes = Op::lanes(a), steps = Op::steps(a);
  const int64_t row0 = ((firstBlock + blockIdx.x) * kRowWarps + warp) * 32;
  if (row0 >= lanes) return;  // warp-uniform; only __syncwarp follows
  Cell<Op>(*tile)[kTileSteps + 1] = cells[warp];
  const int64_t row = row0 + lane;
  typename Op::State state{};
  if (row < lanes) state = Op::boundary(a, row);

  for (int64_t t0 = (steps - 1) / kTileSteps * kTileSteps; t0 >= 0; t0 -= kTileSteps) {
    const int64_t t = t0 + lane;
#pragma unroll 8
    for (int r = 0; r < 32; ++r)
      if (row0 + r < lanes && t < steps) tile[r][lane].in = Op::load(a, row0 + r, t);
    __syncwarp();
    if (row < lanes) {
      for (int k = kTileSteps - 1; k >= 0; --k) {
        if (t0 + k >= steps) continue;
        typename Op::Out out;
        state = Op::step(a, tile[lane][k].in, state, out);
        tile[lane][k].out = out;
      }
    }
    __syncwarp();
#pragma unroll 8
    for (int r = 0; r < 32; ++r)
      if (row0 + r < lanes && t < steps) Op::store(a, Op::index(a, row0 + r, t), tile[r][lane].out);
    __syncwarp();
  }
}

// --- tile scan --------------------------------------------------------------------------------
// A block of kScanThreads threads owns `width` adjacent lanes (up to 32 adjacent columns of
// time-major GAE, so that each step's loads are contiguous; 1 row of batch-major data) and
// walks a run of tiles backwards in time. A tile is rowsPerTile steps x width lanes, staged in
// shared memory by coalesced loads that are issued one tile ahead, so that they are in flight
// while the block scans the current tile. Thread tid handles lane col = tid % width and the
// `items` consecutive steps of slot tid / width. Per tile:
//   1. each thread composes the spans of its steps;
//   2. a suffix scan over the slots of each lane (shuffles inside a warp, then the warps'
//      totals through shared memory) gives each thread the span of every later step in the
//      tile, which it applies to the carry (the state after the tile) to get its own carry;
//   3. each thread runs the reference step over its own steps from that carry;
//   4. the state at the tile's first step is the carry for the previous tile.
// When there are too few lanes to fill the GPU, time is also cut into segments: a first kernel
// computes each segment's span, and each block of the second derives its segment's carry by
// applying the spans of the later segments to the boundary state.

constexpr int kScanThreads = 256;
constexpr int kScanWarps = kScanThreads / 32;
constexpr int kMaxItems = 8;  // tiles of up to 2048 steps x lanes

// One spare word per 32 cells, so that a thread walking its consecutive items and its
// neighbours doing the same hit different banks.
__host__ __device__ constexpr int padded(int i) { return i + i / 32; }

struct ScanShape {
  int64_t lanes, steps;
  int width, logWidth;  // lanes per tile, a power of two up to 32
  int items;            // consecutive steps per thread
  int rowsPerTile;      // (kScanThreads / width) * items
  int64_t tiles, laneGroups, paddedLanes;
  int64_t segments, tilesPerSegment;
};

template <class Op>
struct ScanShared {
  Cell<Op> cells[padded(kScanThreads * kMaxItems)];
  typename Op::Span warpTotals[kScanWarps][32];
  typename Op::State carry[32];  // per lane of the block: the state after the current tile
};

// Where this thread sits in a tile, and which of its cells are real steps.
struct TileThread {
  int col, slot;
  int64_t lane, t0;
  __device__ TileThread(const ScanShape& s, int64_t lane0, int64_t tileStart)
      : col(threadIdx.x & (s.width - 1)),
        slot(threadIdx.x >> s.logWidth),
        lane(lane0 + col),
        t0(tileStart) {}
  __device__ int row(const ScanShape& s, int k) const { return slot * s.items + k; }
  __device__ int cell(const ScanShape& s, int k) const { return padded(row(s, k) * s.width + col); }
  __device__ bool real(const ScanShape& s, int k) const {
    return lane < s.lanes && t0 + row(s, k) < s.steps;
  }
};

// The tile element that this thread loads and stores (not the ones it computes): element
// i = tid + k*kScanThreads of the tile, step i / width, lane i % width, so that consecutive
// threads touch consecutive addresses.
struct TileElement {
  int i;
  int64_t lane, t;
  bool real;
  __device__ TileElement(const ScanShape& s, int64_t lane0, int64_t t0, int k)
      : i(static_cast<int>(threadIdx.x) + k * kScanThreads),
        lane(lane0 + (i & (s.width - 1))),
        t(t0 + (i >> s.logWidth)),
        real(k < s.items && t < s.steps && lane < s.lanes) {}
};

// One thread's share of a tile's inputs, held in registers between its load and its staging.
template <class Op>
struct TileInputs {
  typename Op::In in[kMaxItems];
};

// Unrolled over kMaxItems so that all of a thread's loads are issued before any is waited for.
template <class Op>
__device__ void loadTile(const typename Op::Args& a, const ScanShape& s, int64_t lane0, int64_t t0,
                         TileInputs<Op>& inputs) {
#pragma unroll
  for (int k = 0; k < kMaxItems; ++k) {
    const TileElement e(s, lane0, t0, k);
    if (e.real) inputs.in[k] = Op::load(a, e.lane, e.t);
  }
}

template <class Op>
__device__ void stageTile(const ScanShape& s, ScanShared<Op>& sh, int64_t lane0, int64_t t0,
                          const TileInputs<Op>& inputs) {
#pragma unroll
  for (int k = 0; k < kMaxItems; ++k) {
    const TileElement e(s, lane0, t0, k);
    if (e.real) sh.cells[padded(e.i)].in = inputs.in[k];
  }
}

template <class Op>
__device__ void storeTile(const typename Op::Args& a, const ScanShape& s, const ScanShared<Op>& sh,
                          int64_t lane0, int64_t t0) {
#pragma unroll
  for (int k = 0; k < kMaxItems; ++k) {
    const TileElement e(s, lane0, t0, k);
    if (e.real) Op::store(a, Op::index(a, e.lane, e.t), sh.cells[padded(e.i)].out);
  }
}

// Runs body(t0) for the tiles [firstTile, endTile) from the last to the first, with each
// tile's inputs staged in sh.cells and the next tile's loads in flight meanwhile.
template <class Op, class Body>
__device__ void walkTiles(const typename Op::Args& a, const ScanShape& s, ScanShared<Op>& sh,
                          int64_t lane0, int64_t firstTile, int64_t endTile, Body body) {
  TileInputs<Op> ahead;
  loadTile(a, s, lane0, (endTile - 1) * s.rowsPerTile, ahead);
  for (int64_t tile = endTile - 1; tile >= firstTile; --tile) {
    const int64_t t0 = tile * s.rowsPerTile;
    __syncthreads();  // the previous tile is done with shared memory
    stageTile(s, sh, lane0, t0, ahead);
    __syncthreads();
    if (tile > firstTile) loadTile(a, s, lane0, t0 - s.rowsPerTile, ahead);
    body(t0);
  }
}

template <class Op>
__device__ typename Op::Span threadSpan(const typename Op::Args& a, const ScanShape& s,
                                        const ScanShared<Op>& sh, const TileThread& me) {
  typename Op::Span span = Op::Span::identity();
  for (int k = s.items - 1; k >= 0; --k)
    if (me.real(s, k)) span = combine(Op::leaf(a, sh.cells[me.cell(s, k)].in), span);
  return span;
}

// Inclusive suffix scan over the lanes of a warp that hold the same column (lane, lane+width,
// ...): afterwards each holds the span from its own steps to the warp's last.
template <class Span>
__device__ Span warpSuffixScan(Span x, int width) {
  const int lane = threadIdx.x % 32;
  for (int offset = width; offset < 32; offset *= 2) {
    const Span later = shuffleDown(x, offset);
    if (lane + offset < 32) x = combine(x, later);
  }
  return x;
}

// Steps 1 and 2 shared by both kernels: returns this thread's inclusive suffix in its warp and
// leaves each warp's total per column in sh.warpTotals.
template <class Op>
__device__ typename Op::Span scanTileSpans(const typename Op::Args& a, const ScanShape& s,
                                           ScanShared<Op>& sh, const TileThread& me) {
  const typename Op::Span inclusive = warpSuffixScan(threadSpan(a, s, sh, me), s.width);
  if (threadIdx.x % 32 < s.width) sh.warpTotals[threadIdx.x / 32][me.col] = inclusive;
  __syncthreads();
  return inclusive;
}

// The span of the staged tile, for the threads with threadIdx.x < width (their lane's).
template <class Op>
__device__ typename Op::Span tileTotal(const typename Op::Args& a, const ScanShape& s,
                                       ScanShared<Op>& sh, int64_t lane0, int64_t t0) {
  const TileThread me(s, lane0, t0);
  scanTileSpans(a, s, sh, me);
  typename Op::Span total = Op::Span::identity();
  for (int w = kScanWarps - 1; w >= 0; --w) total = combine(sh.warpTotals[w][me.col], total);
  return total;
}

// Runs the staged tile from the carry in sh.carry, writes its outputs and leaves the carry
// for the previous tile in sh.carry.
template <class Op>
__device__ void tileApply(const typename Op::Args& a, const ScanShape& s, ScanShared<Op>& sh,
                          int64_t lane0, int64_t t0) {
  using Span = typename Op::Span;
  const TileThread me(s, lane0, t0);
  const Span inclusive = scanTileSpans(a, s, sh, me);
  Span exclusive = shuffleDown(inclusive, s.width);
  if (threadIdx.x % 32 + s.width >= 32) exclusive = Span::identity();

  typename Op::State state = sh.carry[me.col];
  for (int w = kScanWarps - 1; w > static_cast<int>(threadIdx.x / 32); --w)
    state = apply(sh.warpTotals[w][me.col], state);
  state = apply(exclusive, state);
  for (int k = s.items - 1; k >= 0; --k) {
    if (!me.real(s, k)) continue;
    Cell<Op>& cell = sh.cells[me.cell(s, k)];
    typename Op::Out out;
    state = Op::step(a, cell.in, state, out);
    cell.out = out;
  }
  __syncthreads();  // every thread has read sh.carry and written its outputs
  if (me.slot == 0) sh.carry[me.col] = state;
  storeTile(a, s, sh, lane0, t0);
}

__host__ __device__ int64_t firstTileOf(const ScanShape& s, int64_t segment) {
  return segment * s.tilesPerSegment;
}
__host__ __device__ int64_t endTileOf(const ScanShape& s, int64_t segment) {
  const int64_t end = (segment + 1) * s.tilesPerSegment;
  return end < s.tiles ? end : s.tiles;
}

// Grid (laneGroups, segments - 1), x in slices (launchSliced): the span of segment
// blockIdx.y + 1 for each lane of lane group firstGroup + blockIdx.x. Segment 0's is never
// needed: no carry flows out of the first steps.
template <class Op>
__global__ void __launch_bounds__(kScanThreads)
    scanSegmentsKernel(const typename Op::Args a, const ScanShape s, typename Op::Span* totals, int64_t firstGroup) {
  __shared__ ScanShared<Op> sh;
  const int64_t lane0 = (firstGroup + blockIdx.x) * s.width;
  const int64_t segment = blockIdx.y + 1;
  typename Op::Span total = Op::Span::identity();
  walkTiles(a, s, sh, lane0, firstTileOf(s, segment), endTileOf(s, segment),
            [&](int64_t t0) { total = combine(tileTotal(a, s, sh, lane0, t0), total); });
  if (threadIdx.x < s.width) totals[segment * s.paddedLanes + lane0 + threadIdx.x] = total;
}

// Spans of later segments read ahead per round: a carry is up to kMaxSegments - 1 of them,
// and one memory latency per span would dominate a block's time.
constexpr int kCarryPrefetch = 8;

// The state after `segment` for one lane: the boundary state run through every later segment.
template <class Op>
__device__ typename Op::State segmentCarry(const typename Op::Args& a, const ScanShape& s,
                                           const typename Op::Span* totals, int64_t segment,
                                           int64_t lane) {
  typename Op::State state{};
  if (lane < s.lanes) state = Op::boundary(a, lane);
  for (int64_t later = s.segments - 1; later > segment; later -= kCarryPrefetch) {
    typename Op::Span spans[kCarryPrefetch];
#pragma unroll
    for (int j = 0; j < kCarryPrefetch; ++j)
      if (later - j > segment) spans[j] = totals[(later - j) * s.paddedLanes + lane];
#pragma unroll
    for (int j = 0; j < kCarryPrefetch; ++j)
      if (later - j > segment) state = apply(spans[j], state);
  }
  return state;
}

// Grid (laneGroups, segments), x in slices as above: runs segment blockIdx.y of each lane of
// lane group firstGroup + blockIdx.x, writing the outputs.
template <class Op>
__global__ void __launch_bounds__(kScanThreads)
    scanApplyKernel(const typename Op::Args a, const ScanShape s, const typename Op::Span* totals, int64_t firstGroup) {
  __shared__ ScanShared<Op> sh;
  const int64_t lane0 = (firstGroup + blockIdx.x) * s.width;
  const int64_t segment = blockIdx.y;
  if (threadIdx.x < s.width) sh.carry[threadIdx.x] = segmentCarry<Op>(a, s, totals, segment, lane0 + threadIdx.x);
  walkTiles(a, s, sh, lane0, firstTileOf(s, segment), endTileOf(s, segment),
            [&](int64_t t0) { tileApply(a, s, sh, lane0, t0); });
}

// --- warp rows: a warp per row, a scan across its lanes -----------------------------------------
// For thousands of batch-major rows: too few for a thread per row to fill the GPU, too many to
// need a block per row. A warp owns a row and walks it backwards in tiles of 32 x 32 steps:
// the tile is loaded with coalesced loads (step j*32 + lane by lane `lane`, for each j) into
// shared memory, where lane l's 32 consecutive steps lie in one padded row; each lane composes
// the span of its steps, a suffix scan across the lanes gives it the span of every later step
// of the tile, which it applies to the carry, and it runs the reference step over its own
// steps. Only __syncwarp: a warp never waits for another, so every warp of an SM keeps its own
// loads in flight. The rounding differs from the sequential walk as the tile scan's does.

constexpr int kLaneSteps = 32;
constexpr int kWarpTileSteps = 32 * kLaneSteps;
constexpr int kRowScanWarps = 2;  // 2 x 32 x 33 cells of up to 12 bytes: 25 KB of shared memory

// Block firstBlock + blockIdx.x (launchSliced) takes kRowScanWarps rows.
template <class Op>
__global__ void __launch_bounds__(32 * kRowScanWarps)
    warpRowsKernel(const typename Op::Args a, int64_t firstBlock) {
  using Span = typename Op::Span;
  __shared__ Cell<Op> cells[kRowScanWarps][32][kLaneSteps + 1];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row = (firstBlock + blockIdx.x) * kRowScanWarps + warp;
  if (row >= Op::lanes(a)) return;  // warp-uniform; only __syncwarp follows
  Cell<Op>(*tile)[kLaneSteps + 1] = cells[warp];
  const int64_t steps = Op::steps(a);
  typename Op::State carry = Op::boundary(a, row);

  for (int64_t t0 = (steps - 1) / kWarpTileSteps * kWarpTileSteps; t0 >= 0; t0 -= kWarpTileSteps) {
#pragma unroll 8
    for (int j = 0; j < 32; ++j) {
      const int64_t t = t0 + j * 32 + lane;
      if (t < steps) tile[j][lane].in = Op::load(a, row, t);
    }
    __syncwarp();
    const int64_t mine = t0 + lane * kLaneSteps;  // this lane's first step
    Span span = Span::identity();
    for (int k = kLaneSteps - 1; k >= 0; --k)
      if (mine + k < steps) span = combine(Op::leaf(a, tile[lane][k].in), span);
    Span later = shuffleDown(warpSuffixScan(span, 1), 1);
    if (lane == 31) later = Span::identity();
    typename Op::State state = apply(later, carry);
    for (int k = kLaneSteps - 1; k >= 0; --k) {
      if (mine + k >= steps) continue;
      typename Op::Out out;
      state = Op::step(a, tile[lane][k].in, state, out);
      tile[lane][k].out = out;
    }
    carry = fromLane0(state);  // the state at the tile's first step
    __syncwarp();
#pragma unroll 8
    for (int j = 0; j < 32; ++j) {
      const int64_t t = t0 + j * 32 + lane;
      if (t < steps) Op::store(a, Op::index(a, row, t), tile[j][lane].out);
    }
    __syncwarp();
  }
}

// --- choosing and launching -------------------------------------------------------------------

// Sequential from kManyLanes lanes: 16K threads are 4 warps on each of an H100's 132 SMs, each
// warp with a tile or a prefetched chunk of loads in flight, which streams at close to full
// bandwidth; the walk then costs no more than the scan and is bit-identical to the CPU.
// Sequential too when T <= kShortT: the walk is one round of loads, cheaper than the scan's
// block-wide steps. Everything else, the few-long-lanes shapes (a few thousand rows or fewer,
// a long single row, N up to 16K environments), takes the scan.
constexpr int64_t kManyLanes = 16384;
constexpr int64_t kShortT = 32;
// The scan of batch-major ops takes a warp per row (warpRowsKernel) from this many rows: 15
// warps on each of an H100's 132 SMs. Below, a block per row (or per segment of a row). On an
// H200, token GAE [B=4096,T=1024] took 96 us as a block per row and 56 us as a warp per row.
constexpr int64_t kWarpRowLanes = 2048;
// Blocks of the scan: with at least this many lane groups every SM of an H100-class GPU has a
// block and time is not split; with fewer, time is cut into segments until there are about
// twice this many blocks, but no more than kMaxSegments, which bounds the carry work of a block.
constexpr int64_t kBusyBlocks = 128;
constexpr int64_t kMaxSegments = 64;
static_assert(kMaxSegments <= 65535, "segments are gridDim.y");

enum class Algorithm { Sequential, Scan };

Algorithm chooseAlgorithm(int64_t lanes, int64_t steps) {
  const char* forced = std::getenv("RLHF_CUDA_ADVANTAGES");
  if (forced != nullptr && std::strcmp(forced, "sequential") == 0) return Algorithm::Sequential;
  if (forced != nullptr && std::strcmp(forced, "scan") == 0) return Algorithm::Scan;
  return lanes >= kManyLanes || steps <= kShortT ? Algorithm::Sequential : Algorithm::Scan;
}

ScanShape planScan(int64_t lanes, int64_t steps, bool timeMajor) {
  ScanShape s{};
  s.lanes = lanes;
  s.steps = steps;
  s.width = 1;
  s.logWidth = 0;
  while (timeMajor && s.width < 32 && s.width < lanes) {
    s.width *= 2;
    s.logWidth += 1;
  }
  const int slots = kScanThreads / s.width;
  s.items = static_cast<int>(std::min<int64_t>(kMaxItems, ceilDiv(steps, slots)));
  s.rowsPerTile = slots * s.items;
  s.tiles = ceilDiv(steps, s.rowsPerTile);
  s.laneGroups = ceilDiv(lanes, s.width);
  s.paddedLanes = s.laneGroups * s.width;
  int64_t segments = 1;
  if (s.laneGroups < kBusyBlocks)
    segments = std::min({s.tiles, kMaxSegments, ceilDiv(2 * kBusyBlocks, s.laneGroups)});
  s.tilesPerSegment = ceilDiv(s.tiles, segments);
  s.segments = ceilDiv(s.tiles, s.tilesPerSegment);
  return s;
}

template <class Op>
void launchSequential(const typename Op::Args& a, cudaStream_t stream) {
  if constexpr (Op::kTimeMajor) {
    detail::launchSliced(ceilDiv(Op::lanes(a), kColumnThreads), [&](int64_t first, unsigned blocks) {
      sequentialColumnsKernel<Op><<<blocks, kColumnThreads, 0, stream>>>(a, first);
      detail::checkLaunch(Op::kName);
    });
  } else {
    detail::launchSliced(ceilDiv(Op::lanes(a), 32 * kRowWarps), [&](int64_t first, unsigned blocks) {
      sequentialRowsKernel<Op><<<blocks, 32 * kRowWarps, 0, stream>>>(a, first);
      detail::checkLaunch(Op::kName);
    });
  }
}

// Lane groups go to gridDim.x in slices: under RLHF_CUDA_ADVANTAGES=scan a batch-major op of
// more than 2^31 - 1 rows has that many groups (a plain cast of 2^32 + 1 once launched one
// block and left the other rows unwritten).
template <class Op>
void launchScan(const typename Op::Args& a, int device, cudaStream_t stream) {
  if constexpr (!Op::kTimeMajor) {
    if (Op::lanes(a) >= kWarpRowLanes) {
      detail::launchSliced(ceilDiv(Op::lanes(a), kRowScanWarps), [&](int64_t first, unsigned blocks) {
        warpRowsKernel<Op><<<blocks, 32 * kRowScanWarps, 0, stream>>>(a, first);
        detail::checkLaunch(Op::kName);
      });
      return;
    }
  }
  const ScanShape s = planScan(Op::lanes(a), Op::steps(a), Op::kTimeMajor);
  if (s.segments == 1) {
    detail::launchSliced(s.laneGroups, [&](int64_t first, unsigned groups) {
      scanApplyKernel<Op><<<dim3(groups, 1), kScanThreads, 0, stream>>>(a, s, nullptr, first);
      detail::checkLaunch(Op::kName);
    });
    return;
  }
  const size_t bytes = static_cast<size_t>(s.segments * s.paddedLanes) * sizeof(typename Op::Span);
  detail::ScratchLease scratch(device, bytes);
  auto* totals = static_cast<typename Op::Span*>(scratch.data());
  const unsigned segments = static_cast<unsigned>(s.segments);
  // segments > 1 only with fewer than kBusyBlocks lane groups: one slice.
  detail::launchSliced(s.laneGroups, [&](int64_t first, unsigned groups) {
    scanSegmentsKernel<Op><<<dim3(groups, segments - 1), kScanThreads, 0, stream>>>(a, s, totals, first);
    detail::checkLaunch(Op::kName);
    scanApplyKernel<Op><<<dim3(groups, segments), kScanThreads, 0, stream>>>(a, s, totals, first);
    detail::checkLaunch(Op::kName);
  });
}

template <class Op>
void launch(const typename Op::Args& a, int device) {
  const cudaStream_t stream = detail::activate(device);
  if (Op::lanes(a) == 0 || Op::steps(a) == 0) return;
  if (chooseAlgorithm(Op::lanes(a), Op::steps(a)) == Algorithm::Sequential)
    launchSequential<Op>(a, stream);
  else
    launchScan<Op>(a, device, stream);
}

// --- preconditions: a null pointer or a negative size here would fault on the device and
// poison the whole CUDA context, so they are caught on the host ------------------------------

void requireShape(const char* op, int64_t rows, int64_t cols) {
  if (rows < 0 || cols < 0)
    throw KernelError(ErrorKind::Range, std::string(op) + ": negative shape [" +
                                            std::to_string(rows) + "," + std::to_string(cols) + "]");
}

void requirePointer(const void* p, const char* op, const char* name) {
  if (p == nullptr)
    throw KernelError(ErrorKind::Internal, std::string(op) + ": `" + name + "` is a null pointer");
}

}  // namespace

void gae(const GaeArgs& a, int device) {
  requireShape("gae", a.T, a.N);
  if (a.T > 0 && a.N > 0) {
    requirePointer(a.rewards, "gae", "rewards");
    requirePointer(a.values, "gae", "values");
    requirePointer(a.nextValuesLast, "gae", "nextValuesLast");
    if (a.T > 1) requirePointer(a.nextValues, "gae", "nextValues");
    if (a.terminated != nullptr) requirePointer(a.terminatedLast, "gae", "terminatedLast");
    requirePointer(a.advantages, "gae", "advantages");
    requirePointer(a.returns, "gae", "returns");
  }
  launch<GaeOp>(a, device);
}

void tokenGae(const TokenGaeArgs& a, int device) {
  requireShape("tokenGae", a.B, a.T);
  if (a.B > 0 && a.T > 0) {
    requirePointer(a.rewards, "tokenGae", "rewards");
    requirePointer(a.values, "tokenGae", "values");
    if (a.maskMode != MaskMode::None) requirePointer(a.mask, "tokenGae", "mask");
    requirePointer(a.advantages, "tokenGae", "advantages");
    requirePointer(a.returns, "tokenGae", "returns");
  }
  launch<TokenGaeOp>(a, device);
}

void discountedReturns(const DiscountedReturnsArgs& a, int device) {
  requireShape("discountedReturns", a.B, a.T);
  if (a.B > 0 && a.T > 0) {
    requirePointer(a.rewards, "discountedReturns", "rewards");
    requirePointer(a.returns, "discountedReturns", "returns");
  }
  launch<ReturnsOp>(a, device);
}

}  // namespace cuda
}  // namespace rlhf
