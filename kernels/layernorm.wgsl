// LayerNorm over the rows of x (rows × dim), one workgroup per row (grid-stride over rows).
//   fwd:     μ = mean(x), r = 1 / sqrt(mean((x − μ)²) + eps), y = (x − μ)·r·w + b; saves μ and r
//   bwd_dx:  x̂ = (x − μ)·r, d = dy·w:  dx += r·(d − mean(d) − x̂·mean(d·x̂))
//   bwd_dwb: dw_j += Σ_rows dy_j·x̂_j,  db_j += Σ_rows dy_j  (one invocation per column, no atomics)
// The backward passes add into their outputs (the Backend convention).

struct Params {
  rows: u32,
  dim: u32,
  eps: f32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<storage, read> mean_in: array<f32>;
@group(0) @binding(5) var<storage, read> rstd_in: array<f32>;
@group(0) @binding(6) var<storage, read_write> out0: array<f32>;
@group(0) @binding(7) var<storage, read_write> out1: array<f32>;
@group(0) @binding(8) var<storage, read_write> out2: array<f32>;
@group(0) @binding(9) var<uniform> params: Params;

const WG: u32 = 128u;
// #include prelude/workgroup_reduce.wgsl

@compute @workgroup_size(WG)
fn fwd(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let dim = params.dim;
  for (var row = wid.x; row < params.rows; row += groups.x) {
    let base = row * dim;
    var s = 0.0;
    for (var j = lid.x; j < dim; j += WG) {
      s += x[base + j];
    }
    let mu = workgroup_sum2(vec2f(s, 0.0), lid.x).x / f32(dim);
    var ss = 0.0;
    for (var j = lid.x; j < dim; j += WG) {
      let c = x[base + j] - mu;
      ss = fma(c, c, ss);
    }
    let r = 1.0 / sqrt(workgroup_sum2(vec2f(ss, 0.0), lid.x).x / f32(dim) + params.eps);
    for (var j = lid.x; j < dim; j += WG) {
      out0[base + j] = (x[base + j] - mu) * r * w[j] + b[j];
    }
    if (lid.x == 0u) {
      out1[row] = mu;
      out2[row] = r;
    }
  }
}

@compute @workgroup_size(WG)
fn bwd_dx(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let dim = params.dim;
  for (var row = wid.x; row < params.rows; row += groups.x) {
    let base = row * dim;
    let mu = mean_in[row];
    let r = rstd_in[row];
    var acc = vec2f();
    for (var j = lid.x; j < dim; j += WG) {
      let d = dy[base + j] * w[j];
      acc += vec2f(d, d * (x[base + j] - mu) * r);
    }
    let means = workgroup_sum2(acc, lid.x) / f32(dim);
    for (var j = lid.x; j < dim; j += WG) {
      let xhat = (x[base + j] - mu) * r;
      let d = dy[base + j] * w[j];
      out0[base + j] += r * (d - means.x - xhat * means.y);
    }
  }
}

@compute @workgroup_size(WG)
fn bwd_dwb(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let dim = params.dim;
  for (var j = gid.x; j < dim; j += groups.x * WG) {
    var sw = 0.0;
    var sb = 0.0;
    for (var row = 0u; row < params.rows; row++) {
      let g = dy[row * dim + j];
      sw = fma(g, (x[row * dim + j] - mean_in[row]) * rstd_in[row], sw);
      sb += g;
    }
    out1[j] += sw;
    out2[j] += sb;
  }
}
