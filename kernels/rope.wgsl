// Rotary position embedding over x = (tokens·heads) × head_dim rows, out of place.
// Token t of a sequence sits at position p = pos_offset + t mod seq_len; its head
// rows are t·heads … t·heads + heads − 1. Pair i < rot_dim/2 rotates by angle
// p·θ_i with cos/sin from a host table: table[p·half_rot + i] = cos,
// table[max_pos·half_rot + p·half_rot + i] = sin (θ_i = base^(−2i/rot_dim), exact in f64).
// Pairs: NEOX (interleaved = 0) rotates (i, i + half_rot); interleaved (GPT-J) (2i, 2i + 1).
//   forward: (a, b) → (a·cos − b·sin, a·sin + b·cos)
//   inverse (backward, the transpose of the rotation): sin → −sin.
// Dimensions ≥ rot_dim are copied unchanged.

struct Params {
  rows: u32,
  head_dim: u32,
  rot_dim: u32,
  heads: u32,
  seq_len: u32,
  pos_offset: u32,
  max_pos: u32,
  interleaved: u32,
  inverse: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> table: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let n = params.rows * params.head_dim;
  let half_rot = params.rot_dim / 2u;
  for (var e = gid.x; e < n; e += groups.x * WG) {
    let row = e / params.head_dim;
    let j = e % params.head_dim;
    if (j >= params.rot_dim) {
      out[e] = x[e];
      continue;
    }
    var i: u32;
    var first: bool;
    var partner: u32;
    if (params.interleaved != 0u) {
      i = j / 2u;
      first = (j & 1u) == 0u;
      partner = j ^ 1u;
    } else {
      first = j < half_rot;
      i = select(j - half_rot, j, first);
      partner = select(j - half_rot, j + half_rot, first);
    }
    let pos = params.pos_offset + (row / params.heads) % params.seq_len;
    let cs = table[pos * half_rot + i];
    var sn = table[params.max_pos * half_rot + pos * half_rot + i];
    if (params.inverse != 0u) {
      sn = -sn;
    }
    let base = row * params.head_dim;
    let v = x[e];
    let p = x[base + partner];
    if (first) {
      out[e] = v * cs - p * sn;
    } else {
      out[e] = v * cs + p * sn;
    }
  }
}
