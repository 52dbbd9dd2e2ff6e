// Element-wise activations and their backward passes, f32, length `n`.
//   silu_fwd:    y = x·σ(x)
//   silu_bwd:    dx = dy·σ(x)·(1 + x·(1 − σ(x)))
//   relu2_fwd:   y = max(x, 0)²
//   relu2_bwd:   dx = dy·2·max(x, 0)
//   swiglu_fwd:  y = silu(g)·u
//   swiglu_bwd:  dg = dy·u·silu'(g),  du = dy·silu(g)
// Bindings by role: in0..in2 read-only inputs, out0/out1 outputs.

struct Params {
  n: u32,
}

@group(0) @binding(0) var<storage, read> in0: array<f32>;
@group(0) @binding(1) var<storage, read> in1: array<f32>;
@group(0) @binding(2) var<storage, read> in2: array<f32>;
@group(0) @binding(3) var<storage, read_write> out0: array<f32>;
@group(0) @binding(4) var<storage, read_write> out1: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

const WG: u32 = 256u;

// σ(x) = 1 / (1 + e^−x); for very negative x, e^−x overflows to +inf and σ → 0 as it should.
fn sigmoid(x: f32) -> f32 {
  return 1.0 / (1.0 + exp(-x));
}

fn silu_grad(x: f32) -> f32 {
  let s = sigmoid(x);
  return s * (1.0 + x * (1.0 - s));
}

@compute @workgroup_size(WG)
fn silu_fwd(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  for (var i = gid.x; i < params.n; i += groups.x * WG) {
    let x = in0[i];
    out0[i] = x * sigmoid(x);
  }
}

@compute @workgroup_size(WG)
fn silu_bwd(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  for (var i = gid.x; i < params.n; i += groups.x * WG) {
    out0[i] = in1[i] * silu_grad(in0[i]);
  }
}

@compute @workgroup_size(WG)
fn relu2_fwd(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  for (var i = gid.x; i < params.n; i += groups.x * WG) {
    let r = max(in0[i], 0.0);
    out0[i] = r * r;
  }
}

@compute @workgroup_size(WG)
fn relu2_bwd(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  for (var i = gid.x; i < params.n; i += groups.x * WG) {
    out0[i] = in1[i] * 2.0 * max(in0[i], 0.0);
  }
}

// in0 = gate, in1 = up.
@compute @workgroup_size(WG)
fn swiglu_fwd(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  for (var i = gid.x; i < params.n; i += groups.x * WG) {
    let g = in0[i];
    out0[i] = g * sigmoid(g) * in1[i];
  }
}

// in0 = gate, in1 = up, in2 = dy; out0 = d gate, out1 = d up.
@compute @workgroup_size(WG)
fn swiglu_bwd(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  for (var i = gid.x; i < params.n; i += groups.x * WG) {
    let g = in0[i];
    let dy = in2[i];
    out0[i] = dy * in1[i] * silu_grad(g);
    out1[i] = dy * g * sigmoid(g);
  }
}
