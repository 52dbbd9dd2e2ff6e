// Causal multi-head attention (GQA-capable), f32. Layouts: q, out, dq, dout are
// tokens × heads × head_dim; k, v, dk, dv are tokens × kv_heads × head_dim; tokens =
// batch·seq_len and token t sits at position t mod seq_len of its sequence. Query
// head h reads kv head h / (heads / kv_heads). Per row r = t·heads + h:
//   fwd:     s_j = scale·q·k_j (j ≤ pos),  lse = log Σ_j exp(s_j),
//            out = Σ_j exp(s_j − lse)·v_j   (online softmax over chunks of keys)
//   bwd_dq:  D = dout·out,  p_j = exp(s_j − lse),  ds_j = p_j·(dout·v_j − D),
//            dq = scale·Σ_j ds_j·k_j;  saves D per row
//   bwd_dkv: per key row: dv = Σ_(h,i ≥ j) p·dout_i,  dk = scale·Σ_(h,i ≥ j) ds·q_i
// One workgroup per row, no atomics; each invocation owns output dims
// lid, lid + 64, … (head_dim ≤ 256). Keys/queries are staged in chunks of 256
// (small workgroup arrays: on the GL backend naga zero-initializes them element by
// element, and llvmpipe compiles that slowly).

struct Params {
  tokens: u32,
  seq_len: u32,
  heads: u32,
  kv_heads: u32,
  head_dim: u32,
  scale: f32,
}

@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read> o_in: array<f32>;
@group(0) @binding(4) var<storage, read> dout: array<f32>;
@group(0) @binding(5) var<storage, read> lse_in: array<f32>;
@group(0) @binding(6) var<storage, read> delta_in: array<f32>;
@group(0) @binding(7) var<storage, read_write> out0: array<f32>;
@group(0) @binding(8) var<storage, read_write> out1: array<f32>;
@group(0) @binding(9) var<uniform> params: Params;

const WG: u32 = 64u;
const CH: u32 = 256u;
const PER: u32 = 4u; // dims per invocation: head_dim ≤ PER·WG = 256
// #include prelude/workgroup_reduce.wgsl

var<workgroup> chunk_a: array<f32, CH>;
var<workgroup> chunk_b: array<f32, CH>;
// Staged rows as vec4s: element d is row[d / 4][d % 4]; invocation i stages vec4 i.
var<workgroup> row_a: array<vec4f, WG>;
var<workgroup> row_b: array<vec4f, WG>;

// Dot product of the staged row_a with the k row starting at `base`.
fn dot_a(base: u32) -> f32 {
  var s = 0.0;
  for (var d = 0u; d < params.head_dim; d++) {
    s = fma(row_a[d / 4u][d % 4u], k[base + d], s);
  }
  return s;
}

// Elements d0 … d0 + 3 of a row starting at `base` (0 past head_dim), per buffer.
fn q4(base: u32, d0: u32) -> vec4f {
  var r = vec4f();
  for (var c = 0u; c < 4u && d0 + c < params.head_dim; c++) {
    r[c] = q[base + d0 + c];
  }
  return r;
}

fn k4(base: u32, d0: u32) -> vec4f {
  var r = vec4f();
  for (var c = 0u; c < 4u && d0 + c < params.head_dim; c++) {
    r[c] = k[base + d0 + c];
  }
  return r;
}

fn v4(base: u32, d0: u32) -> vec4f {
  var r = vec4f();
  for (var c = 0u; c < 4u && d0 + c < params.head_dim; c++) {
    r[c] = v[base + d0 + c];
  }
  return r;
}

fn dout4(base: u32, d0: u32) -> vec4f {
  var r = vec4f();
  for (var c = 0u; c < 4u && d0 + c < params.head_dim; c++) {
    r[c] = dout[base + d0 + c];
  }
  return r;
}

fn kv_row(t: u32, h: u32) -> u32 {
  let g = h / (params.heads / params.kv_heads);
  return (t * params.kv_heads + g) * params.head_dim;
}

@compute @workgroup_size(WG)
fn fwd(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let dim = params.head_dim;
  for (var r = wid.x; r < params.tokens * params.heads; r += groups.x) {
    let t = r / params.heads;
    let h = r % params.heads;
    let pos = t % params.seq_len;
    let seq0 = t - pos;
    row_a[lid.x] = q4(r * dim, 4u * lid.x);
    workgroupBarrier();
    var m = 0.0;
    var l = 0.0;
    var acc = array<f32, PER>(0.0, 0.0, 0.0, 0.0);
    for (var c0 = 0u; c0 <= pos; c0 += CH) {
      let count = min(CH, pos + 1u - c0);
      var local_max = -3.4028235e38;
      for (var j = lid.x; j < count; j += WG) {
        let s = params.scale * dot_a(kv_row(seq0 + c0 + j, h));
        chunk_a[j] = s;
        local_max = max(local_max, s);
      }
      let chunk_max = workgroup_reduce(local_max, lid.x, true);
      var m_new = chunk_max;
      var alpha = 0.0;
      if (c0 > 0u) {
        m_new = max(m, chunk_max);
        alpha = exp(m - m_new);
      }
      var local_sum = 0.0;
      for (var j = lid.x; j < count; j += WG) {
        let p = exp(chunk_a[j] - m_new);
        chunk_a[j] = p;
        local_sum += p;
      }
      l = l * alpha + workgroup_reduce(local_sum, lid.x, false);
      for (var i = 0u; i < PER; i++) {
        let d = lid.x + i * WG;
        if (d < dim) {
          var a = acc[i] * alpha;
          for (var j = 0u; j < count; j++) {
            a = fma(chunk_a[j], v[kv_row(seq0 + c0 + j, h) + d], a);
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
        out0[r * dim + d] = acc[i] / l;
      }
    }
    if (lid.x == 0u) {
      out1[r] = m + log(l);
    }
    workgroupBarrier();
  }
}

@compute @workgroup_size(WG)
fn bwd_dq(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let dim = params.head_dim;
  for (var r = wid.x; r < params.tokens * params.heads; r += groups.x) {
    let t = r / params.heads;
    let h = r % params.heads;
    let pos = t % params.seq_len;
    let seq0 = t - pos;
    row_a[lid.x] = q4(r * dim, 4u * lid.x);
    row_b[lid.x] = dout4(r * dim, 4u * lid.x);
    var part = 0.0;
    for (var d = lid.x; d < dim; d += WG) {
      part = fma(dout[r * dim + d], o_in[r * dim + d], part);
    }
    let delta = workgroup_reduce(part, lid.x, false);
    let lse = lse_in[r];
    var acc = array<f32, PER>(0.0, 0.0, 0.0, 0.0);
    for (var c0 = 0u; c0 <= pos; c0 += CH) {
      let count = min(CH, pos + 1u - c0);
      for (var j = lid.x; j < count; j += WG) {
        let base = kv_row(seq0 + c0 + j, h);
        let p = exp(params.scale * dot_a(base) - lse);
        var dp = 0.0;
        for (var d = 0u; d < dim; d++) {
          dp = fma(row_b[d / 4u][d % 4u], v[base + d], dp);
        }
        chunk_a[j] = p * (dp - delta);
      }
      workgroupBarrier();
      for (var i = 0u; i < PER; i++) {
        let d = lid.x + i * WG;
        if (d < dim) {
          var a = acc[i];
          for (var j = 0u; j < count; j++) {
            a = fma(chunk_a[j], k[kv_row(seq0 + c0 + j, h) + d], a);
          }
          acc[i] = a;
        }
      }
      workgroupBarrier();
    }
    for (var i = 0u; i < PER; i++) {
      let d = lid.x + i * WG;
      if (d < dim) {
        out0[r * dim + d] = params.scale * acc[i];
      }
    }
    if (lid.x == 0u) {
      out1[r] = delta;
    }
    workgroupBarrier();
  }
}

@compute @workgroup_size(WG)
fn bwd_dkv(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let dim = params.head_dim;
  let group = params.heads / params.kv_heads;
  for (var r = wid.x; r < params.tokens * params.kv_heads; r += groups.x) {
    let t = r / params.kv_heads;
    let g = r % params.kv_heads;
    let pos = t % params.seq_len;
    row_a[lid.x] = k4(r * dim, 4u * lid.x);
    row_b[lid.x] = v4(r * dim, 4u * lid.x);
    workgroupBarrier();
    var acc_k = array<f32, PER>(0.0, 0.0, 0.0, 0.0);
    var acc_v = array<f32, PER>(0.0, 0.0, 0.0, 0.0);
    let queries = params.seq_len - pos; // query positions pos … seq_len − 1
    for (var h = g * group; h < (g + 1u) * group; h++) {
      for (var c0 = 0u; c0 < queries; c0 += CH) {
        let count = min(CH, queries - c0);
        for (var i = lid.x; i < count; i += WG) {
          let qr = (t + c0 + i) * params.heads + h;
          var s = 0.0;
          var dp = 0.0;
          for (var d = 0u; d < dim; d++) {
            s = fma(q[qr * dim + d], row_a[d / 4u][d % 4u], s);
            dp = fma(dout[qr * dim + d], row_b[d / 4u][d % 4u], dp);
          }
          let p = exp(params.scale * s - lse_in[qr]);
          chunk_a[i] = p;
          chunk_b[i] = p * (dp - delta_in[qr]);
        }
        workgroupBarrier();
        for (var e = 0u; e < PER; e++) {
          let d = lid.x + e * WG;
          if (d < dim) {
            var ak = acc_k[e];
            var av = acc_v[e];
            for (var i = 0u; i < count; i++) {
              let qi = ((t + c0 + i) * params.heads + h) * dim + d;
              av = fma(chunk_a[i], dout[qi], av);
              ak = fma(chunk_b[i], q[qi], ak);
            }
            acc_k[e] = ak;
            acc_v[e] = av;
          }
        }
        workgroupBarrier();
      }
    }
    for (var e = 0u; e < PER; e++) {
      let d = lid.x + e * WG;
      if (d < dim) {
        out0[r * dim + d] = params.scale * acc_k[e];
        out1[r * dim + d] = acc_v[e];
      }
    }
    workgroupBarrier();
  }
}
