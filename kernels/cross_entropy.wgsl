// Softmax cross-entropy over rows of logits z (rows × vocab), with label smoothing ε.
// Target q = (1 − ε)·onehot(label) + ε/vocab. A label outside [0, vocab) marks the
// row as ignored: loss 0 and gradient 0.
//   fwd: lse = log Σ exp(z);  loss = lse − (1 − ε)·z_label − (ε/vocab)·Σ z   (per row)
//   bwd: dz = grad_scale·(exp(z − lse) − q)

struct Params {
  rows: u32,
  vocab: u32,
  smoothing: f32,
  grad_scale: f32,
}

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> labels: array<i32>;
@group(0) @binding(2) var<storage, read> lse_in: array<f32>;
@group(0) @binding(3) var<storage, read_write> out0: array<f32>;
@group(0) @binding(4) var<storage, read_write> lse_out: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

const WG: u32 = 256u;
var<workgroup> red: array<f32, WG>;

// Workgroup tree reduction (sum or max); reached by every invocation.
fn workgroup_reduce(v: f32, lane: u32, is_max: bool) -> f32 {
  red[lane] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lane < s) {
      if (is_max) {
        red[lane] = max(red[lane], red[lane + s]);
      } else {
        red[lane] += red[lane + s];
      }
    }
    workgroupBarrier();
  }
  let total = red[0];
  workgroupBarrier();
  return total;
}

fn label_of(row: u32) -> i32 {
  let l = labels[row];
  if (l < 0 || u32(l) >= params.vocab) {
    return -1;
  }
  return l;
}

@compute @workgroup_size(WG)
fn fwd(
  @builtin(local_invocation_id) lid: vec3u,
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) groups: vec3u,
) {
  let v = params.vocab;
  for (var row = wid.x; row < params.rows; row += groups.x) {
    let base = row * v;
    var m = -3.4028235e38;
    for (var j = lid.x; j < v; j += WG) {
      m = max(m, logits[base + j]);
    }
    let row_max = workgroup_reduce(m, lid.x, true);
    var se = 0.0;
    var sz = 0.0;
    for (var j = lid.x; j < v; j += WG) {
      let z = logits[base + j];
      se += exp(z - row_max);
      sz += z;
    }
    let sum_exp = workgroup_reduce(se, lid.x, false);
    let sum_z = workgroup_reduce(sz, lid.x, false);
    if (lid.x == 0u) {
      let lse = row_max + log(sum_exp);
      let l = label_of(row);
      var loss = 0.0;
      if (l >= 0) {
        loss = lse - (1.0 - params.smoothing) * logits[base + u32(l)]
          - params.smoothing / f32(v) * sum_z;
      }
      out0[row] = loss;
      lse_out[row] = lse;
    }
  }
}

@compute @workgroup_size(WG)
fn bwd(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let v = params.vocab;
  let n = params.rows * v;
  let uniform_q = params.smoothing / f32(v);
  for (var i = gid.x; i < n; i += groups.x * WG) {
    let row = i / v;
    let l = label_of(row);
    var g = 0.0;
    if (l >= 0) {
      var q = uniform_q;
      if (u32(l) == i % v) {
        q += 1.0 - params.smoothing;
      }
      g = params.grad_scale * (exp(logits[i] - lse_in[row]) - q);
    }
    out0[i] = g;
  }
}
