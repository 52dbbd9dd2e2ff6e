/**
 * A small seeded random number generator whose whole state can be saved and
 * restored, so that a resumed run draws exactly the numbers the interrupted run
 * would have drawn.
 *
 * @module
 */

/** The state of a {@link Rng}: four unsigned 32-bit integers, not all zero. */
export type RngState = readonly [number, number, number, number];

const TWO_32 = 4294967296;

const rotl = (x: number, k: number): number => (x << k) | (x >>> (32 - k));

/**
 * SplitMix32 step: spreads a 32-bit seed into well-mixed words
 * (`z = (s += 0x9e3779b9); z = (z ^ z>>>16)·0x85ebca6b; z = (z ^ z>>>13)·0xc2b2ae35; z ^ z>>>16`).
 */
const splitMix32 = (s: number): [number, number] => {
  const next = (s + 0x9e3779b9) >>> 0;
  let z = next;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return [next, (z ^ (z >>> 16)) >>> 0];
};

/**
 * xoshiro128** (Blackman & Vigna): 128 bits of state, period 2^128 − 1.
 * Output `rotl(s1·5, 7)·9`; update `t = s1<<9; s2 ^= s0; s3 ^= s1; s1 ^= s2;
 * s0 ^= s3; s2 ^= t; s3 = rotl(s3, 11)`.
 */
export class Rng {
  private s0 = 0;
  private s1 = 0;
  private s2 = 0;
  private s3 = 0;

  /**
   * Seeds the state from an integer seed through SplitMix32 (only the low 32
   * bits of the seed matter).
   */
  constructor(seed: number) {
    if (!Number.isSafeInteger(seed)) {
      throw new Error(`seed must be a safe integer, got ${seed}`);
    }
    let s = (seed % TWO_32 + TWO_32) % TWO_32;
    const word = (): number => {
      const [next, out] = splitMix32(s);
      s = next;
      return out;
    };
    this.setState([word(), word(), word(), word()]);
  }

  /** A copy of the state, as plain numbers (JSON-serializable). */
  getState(): RngState {
    return [this.s0 >>> 0, this.s1 >>> 0, this.s2 >>> 0, this.s3 >>> 0];
  }

  /** Replaces the state; throws if it is not four u32 values, not all zero. */
  setState(state: RngState): void {
    const words: unknown = state;
    if (
      !Array.isArray(words) || words.length !== 4 ||
      !words.every((w) => Number.isInteger(w) && w >= 0 && w < TWO_32)
    ) {
      throw new Error(
        `state must be four unsigned 32-bit integers, got ${
          JSON.stringify(state)
        }`,
      );
    }
    if (state.every((w) => w === 0)) {
      throw new Error("state must not be all zero (xoshiro's fixed point)");
    }
    [this.s0, this.s1, this.s2, this.s3] = [
      state[0] | 0,
      state[1] | 0,
      state[2] | 0,
      state[3] | 0,
    ];
  }

  /** The next unsigned 32-bit integer. */
  nextU32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9) >>> 0;
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** A float in [0, 1) with 53 random bits: `(a>>>5 · 2^26 + b>>>6) / 2^53`. */
  nextFloat(): number {
    const a = this.nextU32() >>> 5;
    const b = this.nextU32() >>> 6;
    return (a * 67108864 + b) / 9007199254740992;
  }

  /**
   * A uniform integer in [0, n), without modulo bias: draws are rejected above
   * the largest multiple of n below 2^32.
   */
  nextInt(n: number): number {
    if (!Number.isInteger(n) || n < 1 || n > TWO_32) {
      throw new Error(`n must be an integer in [1, 2^32], got ${n}`);
    }
    const limit = TWO_32 - (TWO_32 % n);
    let r = this.nextU32();
    while (r >= limit) r = this.nextU32();
    return r % n;
  }

  /** Shuffles `a` in place (Fisher–Yates, i from the end) and returns it. */
  shuffle<T extends { length: number; [i: number]: number }>(a: T): T {
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.nextInt(i + 1);
      const tmp = a[i];
      a[i] = a[j];
      a[j] = tmp;
    }
    return a;
  }
}
