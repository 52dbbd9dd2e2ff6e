// Inference linears (no autograd), as the CPU runtime computes them.
//   quantize: per-token absmax int8 activations (one workgroup per row):
//     s = 127 / max(max_j |x_j|, eps) (WGSL division: within 2.5 ulp; exact
//     on llvmpipe),
//     q_j = clamp(round(x_j·s), −128, 127) rounded half to even on the exact
//     product x_j·s (as the CPU's f64 act_quant), packed four to a u32
//     (pack4xI8, rows zero-padded to kpad = a multiple of 64); per row
//     stats = [1/s', Σ q] with 1/s' = max(max_j |q_j| / s, eps) / 127: the step
//     the CPU reads back from its fake-quantized q / s.
//   ternary: out[t, r] = f32(Σ_j c_rj·q_tj − Σ_j q_tj) · (γ · 1/s'_t), with
//     c = w + 1 the 2-bit codes of packTernaryRows (per row blocks of 64
//     weights in 16 bytes, byte i holding weight 16j + i in bits 2j..2j+1):
//     u32 word i of a row holds, in (word >> 2j) & 0x03030303, the codes of
//     the 4 activations of q word 16·(i / 4) + 4j + i % 4. Integer sums, so
//     exactly the CPU's result.
//   dense: out[t, r] = Σ_j wf[r, j]·x[t, j] (f32; eightbit and f16 linears,
//     the LM head).
// ternary/dense: a workgroup computes ROWS output features × TT tokens, LANES
// invocations per feature striding over its words, summed by a tree.

struct Params {
  rows: u32,
  n: u32,
  k: u32,
  kw: u32,
  scale: f32,
  eps: f32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read> wf: array<f32>;
@group(0) @binding(3) var<storage, read> xq: array<u32>;
@group(0) @binding(4) var<storage, read> xs: array<f32>;
@group(0) @binding(5) var<storage, read_write> q_out: array<u32>;
@group(0) @binding(6) var<storage, read_write> s_out: array<f32>;
@group(0) @binding(7) var<storage, read_write> out: array<f32>;
@group(0) @binding(8) var<uniform> params: Params;

const WG: u32 = 256u;
const ROWS: u32 = 8u;
const LANES: u32 = 32u;
const TT: u32 = 4u;
// #include prelude/workgroup_reduce.wgsl

var<workgroup> red_i: array<i32, 1024>; // TT · WG
var<workgroup> red_x: array<f32, 1024>;

// round(v·s) half to even on the exact product: a tie of the f32 product is
// broken by the sign of its rounding error.
fn round_exact(v: f32, s: f32) -> f32 {
  let p = v * s;
  let f = floor(p);
  if (p - f == 0.5) {
    let e = fma(v, s, -p);
    if (e > 0.0) {
      return f + 1.0;
    }
    if (e < 0.0) {
      return f;
    }
  }
  return round(p);
}

fn code(v: f32, s: f32) -> i32 {
  return i32(clamp(round_exact(v, s), -128.0, 127.0));
}

@compute @workgroup_size(WG)
fn quantize(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let k = params.k;
  let words = params.kw;
  for (var row = wid.x; row < params.rows; row += groups.x) {
    let base = row * k;
    var m = 0.0;
    for (var j = lid.x; j < k; j += WG) {
      m = max(m, abs(x[base + j]));
    }
    let mx = workgroup_max(m, lid.x);
    let s = 127.0 / max(mx, params.eps);
    var sum = 0.0;
    for (var i = lid.x; i < words; i += WG) {
      var c = vec4i(0);
      for (var b = 0u; b < 4u; b++) {
        let j = 4u * i + b;
        if (j < k) {
          c[b] = code(x[base + j], s);
        }
      }
      q_out[row * words + i] = pack4xI8(c);
      sum += f32(c.x + c.y + c.z + c.w);
    }
    let total = workgroup_sum(sum, lid.x);
    if (lid.x == 0u) {
      let qmax = abs(f32(code(mx, s)));
      s_out[2u * row] = max(qmax / s, params.eps) / 127.0;
      s_out[2u * row + 1u] = total;
    }
  }
}

@compute @workgroup_size(WG)
fn ternary(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let r = wid.x * ROWS + lid.x / LANES;
  let lane = lid.x % LANES;
  let t0 = wid.y * TT;
  let kw = params.kw;
  var acc = array<i32, TT>(0, 0, 0, 0);
  if (r < params.n) {
    for (var i = lane; i < kw; i += LANES) {
      let word = w[r * kw + i];
      let xb = (i / 4u) * 16u + i % 4u;
      let c0 = word & 0x03030303u;
      let c1 = (word >> 2u) & 0x03030303u;
      let c2 = (word >> 4u) & 0x03030303u;
      let c3 = (word >> 6u) & 0x03030303u;
      for (var tt = 0u; tt < TT; tt++) {
        let t = t0 + tt;
        if (t < params.rows) {
          let xo = t * 4u * kw + xb;
          acc[tt] += dot4I8Packed(xq[xo], c0) + dot4I8Packed(xq[xo + 4u], c1) +
            dot4I8Packed(xq[xo + 8u], c2) + dot4I8Packed(xq[xo + 12u], c3);
        }
      }
    }
  }
  for (var tt = 0u; tt < TT; tt++) {
    red_i[tt * WG + lid.x] = acc[tt];
  }
  workgroupBarrier();
  for (var s = LANES / 2u; s > 0u; s >>= 1u) {
    if (lane < s) {
      for (var tt = 0u; tt < TT; tt++) {
        red_i[tt * WG + lid.x] += red_i[tt * WG + lid.x + s];
      }
    }
    workgroupBarrier();
  }
  if (lane == 0u && r < params.n) {
    for (var tt = 0u; tt < TT; tt++) {
      let t = t0 + tt;
      if (t < params.rows) {
        let dot = red_i[tt * WG + lid.x] - i32(xs[2u * t + 1u]);
        out[t * params.n + r] = f32(dot) * (params.scale * xs[2u * t]);
      }
    }
  }
}

@compute @workgroup_size(WG)
fn dense(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let r = wid.x * ROWS + lid.x / LANES;
  let lane = lid.x % LANES;
  let t0 = wid.y * TT;
  let k = params.k;
  var acc = array<f32, TT>(0.0, 0.0, 0.0, 0.0);
  if (r < params.n) {
    for (var j = lane; j < k; j += LANES) {
      let v = wf[r * k + j];
      for (var tt = 0u; tt < TT; tt++) {
        let t = t0 + tt;
        if (t < params.rows) {
          acc[tt] = fma(v, x[t * k + j], acc[tt]);
        }
      }
    }
  }
  for (var tt = 0u; tt < TT; tt++) {
    red_x[tt * WG + lid.x] = acc[tt];
  }
  workgroupBarrier();
  for (var s = LANES / 2u; s > 0u; s >>= 1u) {
    if (lane < s) {
      for (var tt = 0u; tt < TT; tt++) {
        red_x[tt * WG + lid.x] += red_x[tt * WG + lid.x + s];
      }
    }
    workgroupBarrier();
  }
  if (lane == 0u && r < params.n) {
    for (var tt = 0u; tt < TT; tt++) {
      let t = t0 + tt;
      if (t < params.rows) {
        out[t * params.n + r] = red_x[tt * WG + lid.x];
      }
    }
  }
}
