// Ternary (BitNet b1.58) fake-quantization of a weight tensor with λ blending:
//   q = clamp(round(w / (γ + eps)), −1, 1),  out = (1 − λ)·w + λ·q·γ
// (the blend w + λ·(q·γ − w) in steBlend's form, exact at λ = 0 and λ = 1)
// γ = mean |W| is read from gamma[0] (written on the GPU by reduce.wgsl, mode 0),
// so no read-back is needed. λ = 1 is the hard quantizer, λ = 0 the identity.
// round() is round-half-to-even, as in PyTorch.

struct Params {
  n: u32,
  lambda: f32,
  eps: f32,
}

@group(0) @binding(0) var<storage, read> w: array<f32>;
@group(0) @binding(1) var<storage, read> gamma: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let g = gamma[0];
  let inv = 1.0 / (g + params.eps);
  for (var i = gid.x; i < params.n; i += groups.x * WG) {
    let v = w[i];
    let q = clamp(round(v * inv), -1.0, 1.0);
    out[i] = (1.0 - params.lambda) * v + params.lambda * (q * g);
  }
}
