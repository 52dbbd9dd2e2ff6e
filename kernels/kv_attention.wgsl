// Attention of new tokens over a session's preallocated KV cache (inference).
// The caches are head-major, [kv_heads, ctx, head_dim]; new rows are
// [tokens, kv_heads·head_dim]; q and out are [tokens, heads·head_dim]. Query
// head h reads kv head h / (heads / kv_heads).
//   store:  cache row (slot0 + t) mod ctx of kv head g ← src[t, g, :]
//   attend: query t (at position pos0 + t) sees cache rows [0, min(pos0 + t + 1, ctx)),
//           its predecessors and itself (a full ring: every row; attention is
//           order-free, positions live in RoPE), s_j = scale·q·k_j,
//           out = Σ_j softmax(s)_j·v_j (online softmax over chunks of keys).
// attend: one workgroup per (token, head); invocation i owns dims i, i + 64, …
// (head_dim ≤ 256).

struct Params {
  tokens: u32,
  heads: u32,
  kv_heads: u32,
  head_dim: u32,
  ctx: u32,
  pos0: u32,
  slot0: u32,
  scale: f32,
}

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k_cache: array<f32>;
@group(0) @binding(3) var<storage, read> v_cache: array<f32>;
@group(0) @binding(4) var<storage, read_write> cache: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<uniform> params: Params;

const WG: u32 = 64u;
const CH: u32 = 256u;
const PER: u32 = 4u;
// #include prelude/workgroup_reduce.wgsl

var<workgroup> chunk: array<f32, CH>;
var<workgroup> qrow: array<f32, 256>;

@compute @workgroup_size(256)
fn store(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let dim = params.head_dim;
  let row = params.kv_heads * dim;
  let n = params.tokens * row;
  for (var i = gid.x; i < n; i += groups.x * 256u) {
    let t = i / row;
    let g = (i % row) / dim;
    let d = i % dim;
    let slot = (params.slot0 + t) % params.ctx;
    cache[(g * params.ctx + slot) * dim + d] = src[i];
  }
}

@compute @workgroup_size(WG)
fn attend(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let dim = params.head_dim;
  let group = params.heads / params.kv_heads;
  for (var r = wid.x; r < params.tokens * params.heads; r += groups.x) {
    let t = r / params.heads;
    let h = r % params.heads;
    let kv0 = (h / group) * params.ctx * dim;
    let seen = min(params.pos0 + t + 1u, params.ctx);
    for (var d = lid.x; d < dim; d += WG) {
      qrow[d] = q[r * dim + d];
    }
    workgroupBarrier();
    var m = 0.0;
    var l = 0.0;
    var acc = array<f32, PER>(0.0, 0.0, 0.0, 0.0);
    for (var c0 = 0u; c0 < seen; c0 += CH) {
      let count = min(CH, seen - c0);
      var local_max = -3.4028235e38;
      for (var j = lid.x; j < count; j += WG) {
        let base = kv0 + (c0 + j) * dim;
        var s = 0.0;
        for (var d = 0u; d < dim; d++) {
          s = fma(qrow[d], k_cache[base + d], s);
        }
        s *= params.scale;
        chunk[j] = s;
        local_max = max(local_max, s);
      }
      let chunk_max = workgroup_max(local_max, lid.x);
      var m_new = chunk_max;
      var alpha = 0.0;
      if (c0 > 0u) {
        m_new = max(m, chunk_max);
        alpha = exp(m - m_new);
      }
      var local_sum = 0.0;
      for (var j = lid.x; j < count; j += WG) {
        let p = exp(chunk[j] - m_new);
        chunk[j] = p;
        local_sum += p;
      }
      l = l * alpha + workgroup_sum(local_sum, lid.x);
      for (var i = 0u; i < PER; i++) {
        let d = lid.x + i * WG;
        if (d < dim) {
          var a = acc[i] * alpha;
          for (var j = 0u; j < count; j++) {
            a = fma(chunk[j], v_cache[kv0 + (c0 + j) * dim + d], a);
          }
          acc[i] = a;
        }
      }
      m = m_new;
      workgroupBarrier();
    }
    for (var i = 0u; i < PER; i++) {
      let d = lid.x + i * WG;
      if (d < dim) {
        out[r * dim + d] = acc[i] / l;
      }
    }
    workgroupBarrier();
  }
}
