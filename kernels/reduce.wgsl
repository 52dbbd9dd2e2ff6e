// Two-pass, atomics-free reduction of one f32 tensor of length n to a scalar:
//   out[out_index] = (accumulate ? out[out_index] : 0) + scale·Σ f(x_i),
//   f = |x| (mode 0: absmean with scale = 1/n) or x² (mode 1: sum of squares).
// Pass `partial` (≤ 256 workgroups) writes one sum per workgroup; pass `finish`
// (one workgroup) sums those. Tree order keeps the f32 rounding error ~log2(n)·ε.

struct Params {
  n: u32,
  mode: u32,
  groups: u32,
  out_index: u32,
  scale: f32,
  accumulate: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> partials: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

const WG: u32 = 256u;
// #include prelude/workgroup_reduce.wgsl

@compute @workgroup_size(WG)
fn partial(@builtin(global_invocation_id) gid: vec3u, @builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  var s = 0.0;
  for (var i = gid.x; i < params.n; i += groups.x * WG) {
    let v = x[i];
    if (params.mode == 0u) {
      s += abs(v);
    } else {
      s = fma(v, v, s);
    }
  }
  let total = workgroup_sum(s, lid.x);
  if (lid.x == 0u) {
    partials[wid.x] = total;
  }
}

@compute @workgroup_size(WG)
fn finish(@builtin(local_invocation_id) lid: vec3u) {
  var s = 0.0;
  for (var i = lid.x; i < params.groups; i += WG) {
    s += partials[i];
  }
  let total = workgroup_sum(s, lid.x) * params.scale;
  if (lid.x == 0u) {
    var v = total;
    if (params.accumulate != 0u) {
      v += out[params.out_index];
    }
    out[params.out_index] = v;
  }
}
