// Weight fake-quantization of the non-absmean modes, blended as steBlend: out = (1 − λ)·w + λ·Q(w).
// γ = mean|W| is read from stats[0] (written by reduce.wgsl, mode 0), so no read-back is needed.
//   apply, mode 1 (dynamic-threshold ternary): Δ = 0.7·γ, Q = sign(w)·stats[1] if |w| > Δ else 0
//   apply, mode 2 (binary): Q = γ if w ≥ 0 else −γ  (sign(±0) = +1)
//   apply, mode 3 (f16): Q = w rounded to the nearest f16, ties to even; |w| ≥ 65520 gives ±inf
//   kept_partial + kept_finish: stats[1] = mean{|w| : |w| > Δ} (0 when nothing is kept), two
//     atomics-free passes (≤ 256 workgroups write sums and counts, one workgroup adds them)
//   eightbit (one workgroup per row of rows × cols): s = min(max(max|w_row|, eps) / 127, max_step),
//     Q = clamp(round(w / s), −127, 127)·s
// round() is half-to-even.

struct Params {
  n: u32,
  rows: u32,
  cols: u32,
  mode: u32,
  lambda: f32,
  eps: f32,
  max_step: f32,
  groups: u32,
}

struct Kept {
  sum: f32,
  count: u32,
}

@group(0) @binding(0) var<storage, read> w: array<f32>;
@group(0) @binding(1) var<storage, read_write> stats: array<f32>;
@group(0) @binding(2) var<storage, read_write> partials: array<Kept>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

const WG: u32 = 256u;
// #include prelude/workgroup_reduce.wgsl

var<workgroup> red_kept: array<Kept, WG>;

// Sums of the kept magnitudes and counts over the workgroup (u32 counts stay exact).
fn workgroup_kept(v: Kept, lane: u32) -> Kept {
  red_kept[lane] = v;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (lane < k) {
      red_kept[lane] = Kept(
        red_kept[lane].sum + red_kept[lane + k].sum,
        red_kept[lane].count + red_kept[lane + k].count,
      );
    }
    workgroupBarrier();
  }
  let total = red_kept[0];
  workgroupBarrier();
  return total;
}

fn blend(v: f32, q: f32) -> f32 {
  return (1.0 - params.lambda) * v + params.lambda * q;
}

// Round-to-nearest-even to f16 precision by bit manipulation (the rounding of
// pack2x16float is implementation-defined).
fn round_f16(x: f32) -> f32 {
  let bits = bitcast<u32>(x);
  let sign = bits & 0x80000000u;
  let a = bits & 0x7fffffffu;
  if (a >= 0x7f800000u) {
    return x; // ±inf, NaN
  }
  if (a >= 0x477ff000u) {
    return bitcast<f32>(sign | 0x7f800000u); // ≥ 65520: the tie above 65504 rounds to inf
  }
  if (a < 0x38800000u) {
    // Below 2^-14 the f16 quantum is 2^-24; the scalings by 2^±24 are exact.
    let r = round(bitcast<f32>(a) * 16777216.0) * 5.9604644775390625e-8;
    return bitcast<f32>(sign | bitcast<u32>(r));
  }
  // Keep 10 of the 23 mantissa bits: add half an f16 ulp minus one, plus the kept lsb (ties to
  // even); a carry rounds up into the exponent.
  let lsb = (a >> 13u) & 1u;
  return bitcast<f32>(sign | ((a + 0xfffu + lsb) & 0xffffe000u));
}

@compute @workgroup_size(WG)
fn apply(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let gamma = stats[0];
  let delta = 0.7 * gamma;
  let kept_scale = stats[1];
  for (var i = gid.x; i < params.n; i += groups.x * WG) {
    let v = w[i];
    var q: f32;
    if (params.mode == 1u) {
      q = select(0.0, select(kept_scale, -kept_scale, v < 0.0), abs(v) > delta);
    } else if (params.mode == 2u) {
      q = select(-gamma, gamma, v >= 0.0);
    } else {
      q = round_f16(v);
    }
    out[i] = blend(v, q);
  }
}

@compute @workgroup_size(WG)
fn kept_partial(@builtin(global_invocation_id) gid: vec3u, @builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let delta = 0.7 * stats[0];
  var s = 0.0;
  var c = 0u;
  for (var i = gid.x; i < params.n; i += groups.x * WG) {
    let a = abs(w[i]);
    if (a > delta) {
      s += a;
      c += 1u;
    }
  }
  let kept = workgroup_kept(Kept(s, c), lid.x);
  if (lid.x == 0u) {
    partials[wid.x] = kept;
  }
}

@compute @workgroup_size(WG)
fn kept_finish(@builtin(local_invocation_id) lid: vec3u) {
  var s = 0.0;
  var c = 0u;
  for (var i = lid.x; i < params.groups; i += WG) {
    s += partials[i].sum;
    c += partials[i].count;
  }
  let kept = workgroup_kept(Kept(s, c), lid.x);
  if (lid.x == 0u) {
    stats[1] = select(kept.sum / f32(kept.count), 0.0, kept.count == 0u);
  }
}

@compute @workgroup_size(WG)
fn eightbit(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  for (var row = wid.x; row < params.rows; row += groups.x) {
    let base = row * params.cols;
    var m = 0.0;
    for (var j = lid.x; j < params.cols; j += WG) {
      m = max(m, abs(w[base + j]));
    }
    let s = min(max(workgroup_max(m, lid.x), params.eps) / 127.0, params.max_step);
    for (var j = lid.x; j < params.cols; j += WG) {
      let v = w[base + j];
      out[base + j] = blend(v, clamp(round(v / s), -127.0, 127.0) * s);
    }
  }
}
