// Element-wise arithmetic on f32 vectors of length `n`.
//   add:   out = a + b
//   axpy:  y += alpha * x          (in place: y is bound read-write)
//   scale: out = alpha * a
//   fill, clamp_abs, mul, mul_acc: see below
// Grid-stride loops: the host caps the workgroup count, so any n fits.

struct Params {
  n: u32,
  alpha: f32,
}

@group(0) @binding(0) var<storage, read> in0: array<f32>;
@group(0) @binding(1) var<storage, read> in1: array<f32>;
@group(0) @binding(2) var<storage, read_write> out0: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn add(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  for (var i = gid.x; i < params.n; i += groups.x * WG) {
    out0[i] = in0[i] + in1[i];
  }
}

@compute @workgroup_size(WG)
fn axpy(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  for (var i = gid.x; i < params.n; i += groups.x * WG) {
    out0[i] = fma(params.alpha, in0[i], out0[i]);
  }
}

@compute @workgroup_size(WG)
fn scale(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  for (var i = gid.x; i < params.n; i += groups.x * WG) {
    out0[i] = params.alpha * in0[i];
  }
}

// fill:      out = alpha                        (every element)
// clamp_abs: out = clamp(out, −alpha, alpha)    (in place: latent-weight clipping)
// mul:       out = a ⊙ b
// mul_acc:   out += a ⊙ b                       (in place: the backward of mul)

@compute @workgroup_size(WG)
fn fill(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  for (var i = gid.x; i < params.n; i += groups.x * WG) {
    out0[i] = params.alpha;
  }
}

@compute @workgroup_size(WG)
fn clamp_abs(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  for (var i = gid.x; i < params.n; i += groups.x * WG) {
    out0[i] = max(min(out0[i], params.alpha), -params.alpha);
  }
}

@compute @workgroup_size(WG)
fn mul(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  for (var i = gid.x; i < params.n; i += groups.x * WG) {
    out0[i] = in0[i] * in1[i];
  }
}

@compute @workgroup_size(WG)
fn mul_acc(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  for (var i = gid.x; i < params.n; i += groups.x * WG) {
    out0[i] = fma(in0[i], in1[i], out0[i]);
  }
}
