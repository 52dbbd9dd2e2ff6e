// Batched f32 matmul, register-tiled: C = alpha·op(A)·op(B) (+ C when accumulate ≠ 0).
// Row-major storage. op(A) is M×K (A stored K×M when TRANS_A), op(B) is K×N
// (B stored N×K when TRANS_B). Batch b = workgroup z, offsets b·stride_*.
// Each invocation owns a TM×TN = 8×4 tile of C in registers; no workgroup memory.
// This beats shared-memory tiling on CPU-emulated adapters (llvmpipe), where
// workgroup memory is plain memory and barriers serialize the SIMD lanes.

override TRANS_A: bool = false;
override TRANS_B: bool = false;

struct Params {
  m: u32,
  n: u32,
  k: u32,
  accumulate: u32,
  stride_a: u32,
  stride_b: u32,
  stride_c: u32,
  alpha: f32,
}

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

const TM: u32 = 8u;
const TN: u32 = 4u;

fn a_index(base: u32, row: u32, kk: u32) -> u32 {
  if (TRANS_A) {
    return base + kk * params.m + row;
  }
  return base + row * params.k + kk;
}

fn b_index(base: u32, kk: u32, col: u32) -> u32 {
  if (TRANS_B) {
    return base + col * params.k + kk;
  }
  return base + kk * params.n + col;
}

@compute @workgroup_size(8, 8, 1)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let row0 = gid.y * TM;
  let col0 = gid.x * TN;
  if (row0 >= params.m || col0 >= params.n) {
    return;
  }
  let base_a = gid.z * params.stride_a;
  let base_b = gid.z * params.stride_b;
  let base_c = gid.z * params.stride_c;

  // Out-of-range rows/columns load a clamped (valid) element and are never
  // stored, so the inner loop needs no bounds checks. The eight accumulators are
  // separate variables, not an array: llvmpipe keeps a dynamically indexed array
  // in memory, which cost a third of the speed.
  let last_row = params.m - 1u;
  let r0 = row0;
  let r1 = min(row0 + 1u, last_row);
  let r2 = min(row0 + 2u, last_row);
  let r3 = min(row0 + 3u, last_row);
  let r4 = min(row0 + 4u, last_row);
  let r5 = min(row0 + 5u, last_row);
  let r6 = min(row0 + 6u, last_row);
  let r7 = min(row0 + 7u, last_row);
  let c0 = col0;
  let c1 = min(col0 + 1u, params.n - 1u);
  let c2 = min(col0 + 2u, params.n - 1u);
  let c3 = min(col0 + 3u, params.n - 1u);

  var acc0 = vec4f();
  var acc1 = vec4f();
  var acc2 = vec4f();
  var acc3 = vec4f();
  var acc4 = vec4f();
  var acc5 = vec4f();
  var acc6 = vec4f();
  var acc7 = vec4f();
  for (var kk = 0u; kk < params.k; kk++) {
    let bv = vec4f(
      b[b_index(base_b, kk, c0)],
      b[b_index(base_b, kk, c1)],
      b[b_index(base_b, kk, c2)],
      b[b_index(base_b, kk, c3)],
    );
    acc0 = fma(vec4f(a[a_index(base_a, r0, kk)]), bv, acc0);
    acc1 = fma(vec4f(a[a_index(base_a, r1, kk)]), bv, acc1);
    acc2 = fma(vec4f(a[a_index(base_a, r2, kk)]), bv, acc2);
    acc3 = fma(vec4f(a[a_index(base_a, r3, kk)]), bv, acc3);
    acc4 = fma(vec4f(a[a_index(base_a, r4, kk)]), bv, acc4);
    acc5 = fma(vec4f(a[a_index(base_a, r5, kk)]), bv, acc5);
    acc6 = fma(vec4f(a[a_index(base_a, r6, kk)]), bv, acc6);
    acc7 = fma(vec4f(a[a_index(base_a, r7, kk)]), bv, acc7);
  }

  let acc = array<vec4f, TM>(acc0, acc1, acc2, acc3, acc4, acc5, acc6, acc7);
  for (var i = 0u; i < TM; i++) {
    let row = row0 + i;
    if (row >= params.m) {
      break;
    }
    for (var j = 0u; j < TN; j++) {
      let col = col0 + j;
      if (col < params.n) {
        let idx = base_c + row * params.n + col;
        var v = params.alpha * acc[i][j];
        if (params.accumulate != 0u) {
          v += c[idx];
        }
        c[idx] = v;
      }
    }
  }
}
