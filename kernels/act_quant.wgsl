// Per-token (per-row) int8 absmax fake-quantization of activations with λ blending:
//   s = 127 / max(max_j |x_j|, eps),  xq = clamp(round(x·s), −128, 127),
//   out = (1 − λ)·x + λ·xq / s   (steBlend's form: exact at λ = 0 and λ = 1)
// One workgroup per row (grid-stride over rows). round() is half-to-even.

struct Params {
  rows: u32,
  dim: u32,
  lambda: f32,
  eps: f32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

const WG: u32 = 128u;
// #include prelude/workgroup_reduce.wgsl

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  for (var row = wid.x; row < params.rows; row += groups.x) {
    let base = row * params.dim;
    var m = 0.0;
    for (var j = lid.x; j < params.dim; j += WG) {
      m = max(m, abs(x[base + j]));
    }
    let s = 127.0 / max(workgroup_max(m, lid.x), params.eps);
    for (var j = lid.x; j < params.dim; j += WG) {
      let v = x[base + j];
      let q = clamp(round(v * s), -128.0, 127.0);
      out[base + j] = (1.0 - params.lambda) * v + params.lambda * (q / s);
    }
  }
}
