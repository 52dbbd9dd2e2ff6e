// Batched f32 matmul, workgroup-shared-memory tiled: C = alpha·op(A)·op(B) (+ C when
// accumulate ≠ 0). Same layout and parameters as matmul_register.wgsl.
// A 16×16 workgroup computes a 64×64 tile of C; each invocation owns 4×4 outputs
// at rows ly + 16·i and columns lx + 16·j, so neighbouring invocations touch
// neighbouring addresses (coalesced global loads and stores). K advances in
// slices of 16 staged through workgroup memory: fast on real GPUs.
// The tiles hold vec4s (the four rows or columns one invocation needs), so a
// thread reads them with one load, and the arrays have 256 elements, not 1024:
// on the GL backend naga zero-initializes workgroup arrays element by element and
// llvmpipe took ~20 s to compile 1024-element ones.

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

const TILE: u32 = 64u;
const BK: u32 = 16u;
const WG: u32 = 16u;

// tile_a[kk·16 + ly] = op(A) rows ly, ly + 16, ly + 32, ly + 48 at k0 + kk;
// tile_b[kk·16 + lx] = op(B) columns lx, lx + 16, lx + 32, lx + 48 at k0 + kk.
var<workgroup> tile_a: array<vec4f, 256>;
var<workgroup> tile_b: array<vec4f, 256>;

fn load_a(base: u32, row: u32, kk: u32) -> f32 {
  if (row >= params.m || kk >= params.k) {
    return 0.0;
  }
  if (TRANS_A) {
    return a[base + kk * params.m + row];
  }
  return a[base + row * params.k + kk];
}

fn load_b(base: u32, kk: u32, col: u32) -> f32 {
  if (col >= params.n || kk >= params.k) {
    return 0.0;
  }
  if (TRANS_B) {
    return b[base + col * params.k + kk];
  }
  return b[base + kk * params.n + col];
}

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let tile_m = wid.y * TILE;
  let tile_n = wid.x * TILE;
  let base_a = wid.z * params.stride_a;
  let base_b = wid.z * params.stride_b;
  let base_c = wid.z * params.stride_c;
  let tid = lid.y * WG + lid.x;
  // Which vec4 of each tile this invocation stages, ordered so that neighbouring
  // invocations read neighbouring addresses of the stored matrix.
  var a_kk = tid % BK;
  var a_r = tid / BK;
  if (TRANS_A) {
    a_kk = tid / WG;
    a_r = tid % WG;
  }
  var b_kk = tid / WG;
  var b_c = tid % WG;
  if (TRANS_B) {
    b_kk = tid % BK;
    b_c = tid / BK;
  }

  var acc0 = vec4f();
  var acc1 = vec4f();
  var acc2 = vec4f();
  var acc3 = vec4f();
  for (var k0 = 0u; k0 < params.k; k0 += BK) {
    let ka = k0 + a_kk;
    let ra = tile_m + a_r;
    tile_a[a_kk * WG + a_r] = vec4f(
      load_a(base_a, ra, ka),
      load_a(base_a, ra + 16u, ka),
      load_a(base_a, ra + 32u, ka),
      load_a(base_a, ra + 48u, ka),
    );
    let kb = k0 + b_kk;
    let cb = tile_n + b_c;
    tile_b[b_kk * WG + b_c] = vec4f(
      load_b(base_b, kb, cb),
      load_b(base_b, kb, cb + 16u),
      load_b(base_b, kb, cb + 32u),
      load_b(base_b, kb, cb + 48u),
    );
    workgroupBarrier();

    for (var kk = 0u; kk < BK; kk++) {
      let av = tile_a[kk * WG + lid.y];
      let bv = tile_b[kk * WG + lid.x];
      acc0 = fma(vec4f(av.x), bv, acc0);
      acc1 = fma(vec4f(av.y), bv, acc1);
      acc2 = fma(vec4f(av.z), bv, acc2);
      acc3 = fma(vec4f(av.w), bv, acc3);
    }
    workgroupBarrier();
  }

  let acc = array<vec4f, 4>(acc0, acc1, acc2, acc3);
  for (var i = 0u; i < 4u; i++) {
    let row = tile_m + lid.y + WG * i;
    for (var j = 0u; j < 4u; j++) {
      let col = tile_n + lid.x + WG * j;
      if (row < params.m && col < params.n) {
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
