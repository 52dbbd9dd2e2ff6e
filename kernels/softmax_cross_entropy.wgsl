// Softmax cross-entropy with probabilities, an ignore index and label smoothing (Backend.crossEntropy):
// logits z are rows × vocab, targets i32 (a row whose target is `ignore` is not counted), smoothing ε.
//   fwd:    per row (one workgroup), lse = max + log Σ exp(z − max), probs = exp(z − lse),
//           nll = lse − z_y, loss = (1 − ε)·nll + ε·(lse − mean(z)) into row_stats[2r], [2r + 1];
//           ignored rows get probs 0 and (0, 0)
//   finish: losses = (Σ loss, Σ nll)·inv_count  (inv_count = 1 / counted rows, 0 when none)
//   bwd:    dz += k·(probs − (1 − ε)·[c = y] − ε/vocab) on counted rows (k = scale / counted rows)

struct Params {
  rows: u32,
  vocab: u32,
  ignore: i32,
  smoothing: f32,
  inv_count: f32,
  k: f32,
}

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> targets: array<i32>;
@group(0) @binding(2) var<storage, read> probs_in: array<f32>;
@group(0) @binding(3) var<storage, read_write> out0: array<f32>;
@group(0) @binding(4) var<storage, read_write> row_stats: array<f32>;
@group(0) @binding(5) var<storage, read_write> losses: array<f32>;
@group(0) @binding(6) var<uniform> params: Params;

const WG: u32 = 256u;
// #include prelude/workgroup_reduce.wgsl

// Ignored rows reduce too: a branch on a storage value would not be uniform.
@compute @workgroup_size(WG)
fn fwd(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let v = params.vocab;
  for (var row = wid.x; row < params.rows; row += groups.x) {
    let base = row * v;
    var m = -3.4028235e38;
    for (var j = lid.x; j < v; j += WG) {
      m = max(m, logits[base + j]);
    }
    let row_max = workgroup_reduce2(vec2f(m, 0.0), lid.x, true).x;
    var acc = vec2f();
    for (var j = lid.x; j < v; j += WG) {
      let z = logits[base + j];
      acc += vec2f(exp(z - row_max), z);
    }
    let sums = workgroup_reduce2(acc, lid.x, false);
    let lse = row_max + log(sums.x);
    let y = targets[row];
    let counted = y != params.ignore;
    for (var j = lid.x; j < v; j += WG) {
      out0[base + j] = select(0.0, exp(logits[base + j] - lse), counted);
    }
    if (lid.x == 0u) {
      var loss = 0.0;
      var nll = 0.0;
      if (counted) {
        nll = lse - logits[base + u32(y)];
        loss = (1.0 - params.smoothing) * nll + params.smoothing * (lse - sums.y / f32(v));
      }
      row_stats[2u * row] = loss;
      row_stats[2u * row + 1u] = nll;
    }
  }
}

@compute @workgroup_size(WG)
fn finish(@builtin(local_invocation_id) lid: vec3u) {
  var acc = vec2f();
  for (var r = lid.x; r < params.rows; r += WG) {
    acc += vec2f(row_stats[2u * r], row_stats[2u * r + 1u]);
  }
  let total = workgroup_reduce2(acc, lid.x, false);
  if (lid.x == 0u) {
    losses[0] = total.x * params.inv_count;
    losses[1] = total.y * params.inv_count;
  }
}

@compute @workgroup_size(WG)
fn bwd(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let v = params.vocab;
  let n = params.rows * v;
  let uniform_q = params.smoothing / f32(v);
  for (var i = gid.x; i < n; i += groups.x * WG) {
    let y = targets[i / v];
    if (y != params.ignore) {
      let q = select(0.0, 1.0 - params.smoothing, u32(y) == i % v) + uniform_q;
      out0[i] = fma(params.k, probs_in[i] - q, out0[i]);
    }
  }
}
