// RMSNorm over the rows of x (rows × dim), one workgroup per row (grid-stride over rows).
//   fwd:    r = 1 / sqrt(mean(x²) + eps);  y = x·r·w;  saves r per row.
//   bwd_dx: dx_j = r·w_j·dy_j − r³·x_j·(1/dim)·Σ_i dy_i·w_i·x_i
//   bwd_dw: dw_j (+)= Σ_rows dy_j·x_j·r   (one invocation per column, no atomics)

struct Params {
  rows: u32,
  dim: u32,
  eps: f32,
  accumulate: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read> rms_in: array<f32>;
@group(0) @binding(4) var<storage, read_write> out0: array<f32>;
@group(0) @binding(5) var<storage, read_write> rms_out: array<f32>;
@group(0) @binding(6) var<uniform> params: Params;

const WG: u32 = 128u;
// #include prelude/workgroup_reduce.wgsl

@compute @workgroup_size(WG)
fn fwd(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  for (var row = wid.x; row < params.rows; row += groups.x) {
    let base = row * params.dim;
    var s = 0.0;
    for (var j = lid.x; j < params.dim; j += WG) {
      let v = x[base + j];
      s = fma(v, v, s);
    }
    let r = inverseSqrt(workgroup_sum(s, lid.x) / f32(params.dim) + params.eps);
    for (var j = lid.x; j < params.dim; j += WG) {
      out0[base + j] = x[base + j] * r * w[j];
    }
    if (lid.x == 0u) {
      rms_out[row] = r;
    }
  }
}

@compute @workgroup_size(WG)
fn bwd_dx(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  for (var row = wid.x; row < params.rows; row += groups.x) {
    let base = row * params.dim;
    let r = rms_in[row];
    var s = 0.0;
    for (var j = lid.x; j < params.dim; j += WG) {
      s = fma(dy[base + j] * w[j], x[base + j], s);
    }
    let c = workgroup_sum(s, lid.x) / f32(params.dim) * r * r * r;
    for (var j = lid.x; j < params.dim; j += WG) {
      out0[base + j] = r * w[j] * dy[base + j] - c * x[base + j];
    }
  }
}

@compute @workgroup_size(WG)
fn bwd_dw(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  for (var j = gid.x; j < params.dim; j += groups.x * WG) {
    var s = 0.0;
    for (var row = 0u; row < params.rows; row++) {
      let idx = row * params.dim + j;
      s = fma(dy[idx] * x[idx], rms_in[row], s);
    }
    if (params.accumulate != 0u) {
      s += out0[j];
    }
    out0[j] = s;
  }
}
