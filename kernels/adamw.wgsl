// AdamW (decoupled weight decay, PyTorch semantics) on one parameter tensor:
//   g  = grad · gscale[0]                (global-norm clip factor, see grad_clip.wgsl)
//   p ← p·(1 − lr·wd)                    (decay)
//   m ← β1·m + (1 − β1)·g,   v ← β2·v + (1 − β2)·g²
//   p ← p − step_size · m / (sqrt(v) / bc2_sqrt + eps)
// with step_size = lr / (1 − β1^t) and bc2_sqrt = sqrt(1 − β2^t) for step t ≥ 1,
// computed by the host in f64: WGSL's pow() may err by 2^-21 absolute in log2, which
// is a 3e-4 relative error in 1 − β2^t at t = 1.

struct Params {
  n: u32,
  step_size: f32,
  bc2_sqrt: f32,
  beta1: f32,
  beta2: f32,
  eps: f32,
  decay: f32,
}

@group(0) @binding(0) var<storage, read> grad: array<f32>;
@group(0) @binding(1) var<storage, read> gscale: array<f32>;
@group(0) @binding(2) var<storage, read_write> param: array<f32>;
@group(0) @binding(3) var<storage, read_write> m1: array<f32>;
@group(0) @binding(4) var<storage, read_write> m2: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let s = gscale[0];
  for (var i = gid.x; i < params.n; i += groups.x * WG) {
    let g = grad[i] * s;
    let m = fma(params.beta1, m1[i], (1.0 - params.beta1) * g);
    let v = fma(params.beta2, m2[i], (1.0 - params.beta2) * g * g);
    m1[i] = m;
    m2[i] = v;
    param[i] = param[i] * params.decay - params.step_size * m / (sqrt(v) / params.bc2_sqrt + params.eps);
  }
}
