/**
 * IEEE 754 binary16 ("f16", ggml's `ggml_half`) conversion; the implementation
 * lives in `src/backend/f16.ts`, below both the formats here and the backend's
 * f16 fake-quantizer.
 *
 * @module
 */
export {
  f16BitsToF32,
  f16BitsToF32Array,
  f32ArrayToF16Bits,
  f32ToF16Bits,
  roundToF16,
} from "../backend/f16.ts";
