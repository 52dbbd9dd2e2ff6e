// Global-norm gradient clipping factor, computed on the GPU from the summed squares
// of all gradients (reduce.wgsl, mode 1) so the optimizer needs no read-back:
//   scale = min(1, max_norm / (sqrt(sumsq[0]) + 1e-6))   (1 when max_norm ≤ 0)
// The norm itself goes to scale[1] for logging at the end of the step.

struct Params {
  max_norm: f32,
}

@group(0) @binding(0) var<storage, read> sumsq: array<f32>;
@group(0) @binding(1) var<storage, read_write> scale: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(1)
fn main() {
  let norm = sqrt(sumsq[0]);
  var s = 1.0;
  if (params.max_norm > 0.0) {
    s = min(1.0, params.max_norm / (norm + 1e-6));
  }
  scale[0] = s;
  scale[1] = norm;
}
