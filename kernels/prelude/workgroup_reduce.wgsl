// Workgroup tree reductions, prepended by scripts/build_kernels.ts to the kernels that
// `#include` it. WG is the including module's workgroup size (a power of two). Every
// invocation of the workgroup must make the call (uniform control flow); each call ends
// with a barrier, so calls may follow one another. Tree order keeps the f32 rounding
// error of a sum ~log2(WG)·ε.

var<workgroup> red_f32: array<f32, WG>;
var<workgroup> red_vec2: array<vec2f, WG>;

// Max (is_max) or sum of v over the workgroup; lane is the local invocation index.
fn workgroup_reduce(v: f32, lane: u32, is_max: bool) -> f32 {
  red_f32[lane] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lane < s) {
      if (is_max) {
        red_f32[lane] = max(red_f32[lane], red_f32[lane + s]);
      } else {
        red_f32[lane] += red_f32[lane + s];
      }
    }
    workgroupBarrier();
  }
  let total = red_f32[0];
  workgroupBarrier();
  return total;
}

// Component-wise max (is_max) or sum of two values over the workgroup.
fn workgroup_reduce2(v: vec2f, lane: u32, is_max: bool) -> vec2f {
  red_vec2[lane] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lane < s) {
      if (is_max) {
        red_vec2[lane] = max(red_vec2[lane], red_vec2[lane + s]);
      } else {
        red_vec2[lane] += red_vec2[lane + s];
      }
    }
    workgroupBarrier();
  }
  let total = red_vec2[0];
  workgroupBarrier();
  return total;
}

fn workgroup_sum(v: f32, lane: u32) -> f32 {
  return workgroup_reduce(v, lane, false);
}

fn workgroup_max(v: f32, lane: u32) -> f32 {
  return workgroup_reduce(v, lane, true);
}

fn workgroup_sum2(v: vec2f, lane: u32) -> vec2f {
  return workgroup_reduce2(v, lane, false);
}
