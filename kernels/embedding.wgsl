// Embedding lookup and its gradient, table is vocab × dim, row-major.
//   gather:      out[t, c] = table[ids[t], c]   (0 for an id ≥ vocab)
//   scatter_add: dtable[v, c] += Σ_{t : ids[t] = v} dout[t, c]
// The scatter needs no float atomics: the host groups token positions by id
// (counting sort, O(tokens + vocab)) into `index` = [rows (u) | offsets (u + 1) |
// order (tokens)], and one invocation per (distinct id, column) sums its run.

struct Params {
  tokens: u32,
  dim: u32,
  vocab: u32,
  unique: u32,
}

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

const WG: u32 = 256u;

// src = table, ids = token ids, dst = out (tokens × dim).
@compute @workgroup_size(WG)
fn gather(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let n = params.tokens * params.dim;
  for (var i = gid.x; i < n; i += groups.x * WG) {
    let id = ids[i / params.dim];
    var v = 0.0;
    if (id < params.vocab) {
      v = src[id * params.dim + i % params.dim];
    }
    dst[i] = v;
  }
}

// src = dout (tokens × dim), ids = grouped index (see above), dst = dtable.
@compute @workgroup_size(WG)
fn scatter_add(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let u = params.unique;
  let n = u * params.dim;
  for (var i = gid.x; i < n; i += groups.x * WG) {
    let r = i / params.dim;
    let c = i % params.dim;
    let start = ids[u + r];
    let end = ids[u + r + 1u];
    var s = 0.0;
    for (var j = start; j < end; j++) {
      s += src[ids[2u * u + 1u + j] * params.dim + c];
    }
    let idx = ids[r] * params.dim + c;
    dst[idx] += s;
  }
}
