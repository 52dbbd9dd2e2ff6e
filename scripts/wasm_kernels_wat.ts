/**
 * Generator of the WebAssembly text (WAT) of ternary-core's CPU kernels.
 *
 * One source yields two modules: `"relaxed"` uses `f32x4.relaxed_madd` and
 * `i16x8.relaxed_dot_i8x16_i7x16_s`; `"portable"` replaces them with
 * `f32x4.mul` + `f32x4.add` and an `i16x8.extmul`-based dot product. The
 * kernels are unrolled over register tiles, which is why this is a generator
 * rather than a hand-written `.wat` file.
 *
 * Besides the matmuls and the ternary kernels, the module holds the
 * element-wise and per-row kernels of a training step (norms, RoPE, softmax
 * and cross-entropy, activations, quantizers, AdamW), written once as loop
 * bodies that serve both the 4-wide pass and the scalar tail.
 *
 * The memory is imported (`env.memory`, shared) so that the TypeScript wrapper
 * owns, grows and could share it with workers. All pointers are byte offsets.
 *
 * @module
 */

/** Which flavour of SIMD a generated module uses. */
export type WasmVariant = "relaxed" | "portable";

/**
 * A register tile of the f32 matmul: `mr` rows × `nr` columns of C held in
 * `mr·nr/4` f32x4 accumulators (`nr` a multiple of 4). WASM SIMD on x64 has
 * 15 allocatable vector registers in V8, so a tile fits when
 * `mr·nr/4 + nr/4 + 1 ≤ 15`.
 */
export interface MatmulTile {
  /** Rows of C per tile (rows of A per packed panel). */
  readonly mr: number;
  /** Columns of C per tile (columns of B per packed panel). */
  readonly nr: number;
}

/**
 * The micro-kernels in the module, each behind its own export
 * `matmul_<mr>x<nr>`; which one runs, and with which cache blocking, is chosen
 * at run time (measured per machine, see src/backend/cpu/matmul_tuning.ts).
 * 2×16 keeps 8 accumulators (enough where FMA latency × pipes ≤ 8); 6×8, 5×8
 * and 3×12 trade B loads for more independent chains.
 */
export const MATMUL_TILES: readonly MatmulTile[] = [
  { mr: 2, nr: 16 },
  { mr: 5, nr: 8 },
  { mr: 6, nr: 8 },
  { mr: 3, nr: 12 },
];
/** Weights per ternary block (16 bytes, 2 bits each). */
export const TERNARY_BLOCK = 64;
/** Ternary blocks accumulated in i16 before widening (64 dots of ≤ 512). */
const TERNARY_CHUNK = 16;
/** Rows of the ternary weight matrix per cache block in the batched kernel. */
const TERNARY_ROW_BLOCK = 64;

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);
const lines = (parts: readonly string[]): string => parts.join("\n");

/** `a·b + c` on f32x4 (`a`, `b`, `c` are WAT expressions). */
function madd(v: WasmVariant, a: string, b: string, c: string): string {
  return v === "relaxed"
    ? `(f32x4.relaxed_madd ${a} ${b} ${c})`
    : `(f32x4.add (f32x4.mul ${a} ${b}) ${c})`;
}

/**
 * i16 lanes holding pairs of products of signed bytes of `x` with the 7-bit
 * bytes of `c` (both local names; the lanes pair differently per variant, but
 * every caller sums all lanes).
 */
function dot(v: WasmVariant, x: string, c: string): string {
  return v === "relaxed"
    ? `(i16x8.relaxed_dot_i8x16_i7x16_s (local.get ${x}) (local.get ${c}))`
    : `(i16x8.add (i16x8.extmul_low_i8x16_s (local.get ${x}) (local.get ${c})) (i16x8.extmul_high_i8x16_s (local.get ${x}) (local.get ${c})))`;
}

const locals = (names: readonly string[], type: string): string =>
  names.map((n) => `(local ${n} ${type})`).join(" ");

/** Sum of the four i32 lanes of local `t`. */
const hsum = (t: string): string =>
  `(i32.add (i32.add (i32x4.extract_lane 0 (local.get ${t})) (i32x4.extract_lane 1 (local.get ${t}))) (i32.add (i32x4.extract_lane 2 (local.get ${t})) (i32x4.extract_lane 3 (local.get ${t}))))`;

/** Name suffix of a tile's functions, e.g. `2x16`. */
const tileName = (t: MatmulTile): string => `${t.mr}x${t.nr}`;

/**
 * Micro-kernel: C[mr×nr] (+)= Apanel·Bpanel over `kcp` (a multiple of 4)
 * steps, the tile of C in `mr·nr/4` f32x4 accumulators. A partial tile
 * (`$mr`/`$nr` below the tile) is spilled to `$tile` and copied element-wise.
 */
function microKernel(v: WasmVariant, t: MatmulTile): string {
  const { mr: MR, nr: NR } = t;
  const NV = NR / 4;
  const acc = (r: number, c: number) => `$c${r}_${c}`;
  const step = (s: number) =>
    lines([
      ...range(NV).map((c) =>
        `(local.set $b${c} (v128.load offset=${
          (s * NR + c * 4) * 4
        } (local.get $pb)))`
      ),
      ...range(MR).flatMap((r) => [
        `(local.set $a (v128.load offset=${
          (s * MR + r) * 16
        } (local.get $pa)))`,
        ...range(NV).map((c) =>
          `(local.set ${acc(r, c)} ${
            madd(
              v,
              "(local.get $a)",
              `(local.get $b${c})`,
              `(local.get ${acc(r, c)})`,
            )
          })`
        ),
      ]),
    ]);
  const all = range(MR).flatMap((r) => range(NV).map((c) => [r, c] as const));
  const row = (r: number) => `(local.get $r${r})`;
  return `
(func $ukr_${
    tileName(t)
  } (param $pa i32) (param $pb i32) (param $kcp i32) (param $c i32)
  (param $ldc i32) (param $mr i32) (param $nr i32) (param $add i32) (param $tile i32)
  (local $end i32) (local $i i32) (local $j i32) (local $p i32) (local $s f32)
  ${locals(range(MR).map((r) => `$r${r}`), "i32")}
  ${locals(["$a", ...range(NV).map((c) => `$b${c}`)], "v128")}
  ${locals(all.map(([r, c]) => acc(r, c)), "v128")}
  (local.set $end (i32.add (local.get $pa) (i32.mul (local.get $kcp) (i32.const ${
    MR * 16
  }))))
  (block $done
    (br_if $done (i32.eqz (local.get $kcp)))
    (loop $k
      ${range(4).map(step).join("\n")}
      (local.set $pa (i32.add (local.get $pa) (i32.const ${64 * MR})))
      (local.set $pb (i32.add (local.get $pb) (i32.const ${16 * NR})))
      (br_if $k (i32.lt_u (local.get $pa) (local.get $end)))))
  (if (i32.and (i32.eq (local.get $mr) (i32.const ${MR})) (i32.eq (local.get $nr) (i32.const ${NR})))
    (then
      (local.set $r0 (local.get $c))
      ${
    range(MR).slice(1).map((r) =>
      `(local.set $r${r} (i32.add (local.get $r${r - 1}) (local.get $ldc)))`
    ).join("\n")
  }
      (if (local.get $add)
        (then
          ${
    all.map(([r, c]) =>
      `(v128.store offset=${c * 16} ${row(r)} (f32x4.add (v128.load offset=${
        c * 16
      } ${row(r)}) (local.get ${acc(r, c)})))`
    ).join("\n")
  })
        (else
          ${
    all.map(([r, c]) =>
      `(v128.store offset=${c * 16} ${row(r)} (local.get ${acc(r, c)}))`
    ).join("\n")
  }))
      (return)))
  ;; Partial tile: spill the accumulators, then copy only the valid elements.
  ${
    all.map(([r, c]) =>
      `(v128.store offset=${
        (r * NR + c * 4) * 4
      } (local.get $tile) (local.get ${acc(r, c)}))`
    ).join("\n")
  }
  (local.set $i (i32.const 0))
  (loop $rows
    (local.set $j (i32.const 0))
    (loop $cols
      (local.set $p (i32.add (local.get $c) (i32.shl (local.get $j) (i32.const 2))))
      (local.set $s (f32.load (i32.add (local.get $tile)
        (i32.shl (i32.add (i32.mul (local.get $i) (i32.const ${NR})) (local.get $j)) (i32.const 2)))))
      (if (local.get $add)
        (then (local.set $s (f32.add (local.get $s) (f32.load (local.get $p))))))
      (f32.store (local.get $p) (local.get $s))
      (local.set $j (i32.add (local.get $j) (i32.const 1)))
      (br_if $cols (i32.lt_u (local.get $j) (local.get $nr))))
    (local.set $c (i32.add (local.get $c) (local.get $ldc)))
    (local.set $i (i32.add (local.get $i) (i32.const 1)))
    (br_if $rows (i32.lt_u (local.get $i) (local.get $mr)))))`;
}

/**
 * Packs `mc` rows × `kc` columns of A (element (i,k) at `src + i·rs + k·cs`)
 * into `mr`-row panels: panel q holds (A[mr·q + r, k])_r for k < kcp, zero
 * past `kc` and past `mc`, each element already splatted to four lanes (16
 * bytes). The micro-kernel then reads A with plain vector loads: measured
 * +11% (geometric mean over the training shapes, same-process A/B, Zen 3)
 * against broadcasting from a 4-byte panel in the kernel's inner loop, which
 * costs load-port throughput once per row and k. Full panels copy `mr` rows
 * per k, unrolled.
 */
function packA(mr: number): string {
  const rowPtr = (r: number) => `$p${r}`;
  return `
(func $packA_${mr} (param $src i32) (param $rs i32) (param $cs i32) (param $kc i32)
  (param $kcp i32) (param $mc i32) (param $dst i32)
  (local $i i32) (local $kk i32) (local $r i32) (local $off i32)
  ${locals(range(mr).map(rowPtr), "i32")}
  (block $end (loop $panels
    (br_if $end (i32.ge_u (local.get $i) (local.get $mc)))
    (local.set $p0 (i32.add (local.get $src) (i32.mul (local.get $i) (local.get $rs))))
    ${
    range(mr).slice(1).map((r) =>
      `(local.set ${rowPtr(r)} (i32.add (local.get ${
        rowPtr(r - 1)
      }) (local.get $rs)))`
    ).join("\n    ")
  }
    (local.set $kk (i32.const 0))
    (if (i32.le_u (i32.add (local.get $i) (i32.const ${mr})) (local.get $mc))
      (then
        (local.set $off (i32.const 0))
        (block $fend (loop $full
          (br_if $fend (i32.ge_u (local.get $kk) (local.get $kc)))
          ${
    range(mr).map((r) =>
      `(v128.store offset=${
        r * 16
      } (local.get $dst) (v128.load32_splat (i32.add (local.get ${
        rowPtr(r)
      }) (local.get $off))))`
    ).join("\n          ")
  }
          (local.set $off (i32.add (local.get $off) (local.get $cs)))
          (local.set $dst (i32.add (local.get $dst) (i32.const ${mr * 16})))
          (local.set $kk (i32.add (local.get $kk) (i32.const 1)))
          (br $full))))
      (else
        ;; Last, partial panel: rows past mc read as zero.
        (block $lend (loop $last
          (br_if $lend (i32.ge_u (local.get $kk) (local.get $kc)))
          (local.set $r (i32.const 0))
          (loop $rows
            (v128.store (local.get $dst) (f32x4.splat
              (if (result f32) (i32.lt_u (i32.add (local.get $i) (local.get $r)) (local.get $mc))
                (then (f32.load (i32.add (i32.add (local.get $p0) (i32.mul (local.get $r) (local.get $rs)))
                  (i32.mul (local.get $kk) (local.get $cs)))))
                (else (f32.const 0)))))
            (local.set $dst (i32.add (local.get $dst) (i32.const 16)))
            (local.set $r (i32.add (local.get $r) (i32.const 1)))
            (br_if $rows (i32.lt_u (local.get $r) (i32.const ${mr}))))
          (local.set $kk (i32.add (local.get $kk) (i32.const 1)))
          (br $last)))))
    (memory.fill (local.get $dst) (i32.const 0)
      (i32.mul (i32.sub (local.get $kcp) (local.get $kc)) (i32.const ${
    mr * 16
  })))
    (local.set $dst (i32.add (local.get $dst)
      (i32.mul (i32.sub (local.get $kcp) (local.get $kc)) (i32.const ${
    mr * 16
  }))))
    (local.set $i (i32.add (local.get $i) (i32.const ${mr})))
    (br $panels))))`;
}

/**
 * Packs `kc` rows × `nc` columns of B (element (k,j) at `src + k·rs + j·cs`)
 * into `nr`-column panels: panel p holds B[k, nr·p .. nr·p + nr − 1] for
 * k < kcp, zero past `kc` and past `nc`.
 */
function packB(nr: number): string {
  const NV = nr / 4;
  const rowBytes = nr * 4;
  return `
(func $packB_${nr} (param $src i32) (param $rs i32) (param $cs i32) (param $kc i32)
  (param $kcp i32) (param $nc i32) (param $dst i32)
  (local $j i32) (local $nr i32) (local $kk i32) (local $jj i32) (local $p i32) (local $q i32) (local $c0 i32)
  (local $r0 v128) (local $r1 v128) (local $r2 v128) (local $r3 v128)
  (local $t0 v128) (local $t1 v128) (local $t2 v128) (local $t3 v128)
  (block $end (loop $panels
    (br_if $end (i32.ge_u (local.get $j) (local.get $nc)))
    (local.set $nr (i32.sub (local.get $nc) (local.get $j)))
    (if (i32.gt_u (local.get $nr) (i32.const ${nr})) (then (local.set $nr (i32.const ${nr}))))
    (local.set $p (i32.add (local.get $src) (i32.mul (local.get $j) (local.get $cs))))
    (if (i32.and (i32.eq (local.get $cs) (i32.const 4)) (i32.eq (local.get $nr) (i32.const ${nr})))
      (then
        ;; Full panel of rows contiguous in j: vector copies per k.
        (local.set $q (local.get $dst))
        (local.set $kk (i32.const 0))
        (block $vend (loop $vec
          (br_if $vend (i32.ge_u (local.get $kk) (local.get $kc)))
          ${
    range(NV).map((c) =>
      `(v128.store offset=${c * 16} (local.get $q) (v128.load offset=${
        c * 16
      } (local.get $p)))`
    ).join("\n          ")
  }
          (local.set $p (i32.add (local.get $p) (local.get $rs)))
          (local.set $q (i32.add (local.get $q) (i32.const ${rowBytes})))
          (local.set $kk (i32.add (local.get $kk) (i32.const 1)))
          (br $vec)))
        (memory.fill (local.get $q) (i32.const 0)
          (i32.mul (i32.sub (local.get $kcp) (local.get $kc)) (i32.const ${rowBytes}))))
      (else (if (i32.and (i32.eq (local.get $rs) (i32.const 4)) (i32.eq (local.get $nr) (i32.const ${nr})))
      (then
        ;; Full panel of B stored transposed (columns contiguous in k):
        ;; 4×4 blocks transposed in registers, then the k tail element-wise.
        (local.set $jj (i32.const 0))
        (block $tjend (loop $tcols
          (br_if $tjend (i32.ge_u (local.get $jj) (i32.const ${nr})))
          (local.set $c0 (i32.add (local.get $p) (i32.mul (local.get $jj) (local.get $cs))))
          (local.set $q (i32.add (local.get $dst) (i32.shl (local.get $jj) (i32.const 2))))
          (local.set $kk (i32.const 0))
          (block $tkend (loop $tks
            (br_if $tkend (i32.gt_u (i32.add (local.get $kk) (i32.const 4)) (local.get $kc)))
            (local.set $r0 (v128.load (local.get $c0)))
            (local.set $r1 (v128.load (i32.add (local.get $c0) (local.get $cs))))
            (local.set $r2 (v128.load (i32.add (local.get $c0) (i32.shl (local.get $cs) (i32.const 1)))))
            (local.set $r3 (v128.load (i32.add (local.get $c0) (i32.mul (local.get $cs) (i32.const 3)))))
            (local.set $t0 (i8x16.shuffle 0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23 (local.get $r0) (local.get $r1)))
            (local.set $t1 (i8x16.shuffle 0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23 (local.get $r2) (local.get $r3)))
            (local.set $t2 (i8x16.shuffle 8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31 (local.get $r0) (local.get $r1)))
            (local.set $t3 (i8x16.shuffle 8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31 (local.get $r2) (local.get $r3)))
            (v128.store (local.get $q)
              (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $t0) (local.get $t1)))
            (v128.store offset=${rowBytes} (local.get $q)
              (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $t0) (local.get $t1)))
            (v128.store offset=${2 * rowBytes} (local.get $q)
              (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $t2) (local.get $t3)))
            (v128.store offset=${3 * rowBytes} (local.get $q)
              (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $t2) (local.get $t3)))
            (local.set $c0 (i32.add (local.get $c0) (i32.const 16)))
            (local.set $q (i32.add (local.get $q) (i32.const ${4 * rowBytes})))
            (local.set $kk (i32.add (local.get $kk) (i32.const 4)))
            (br $tks)))
          (block $tsend (loop $tsca
            (br_if $tsend (i32.ge_u (local.get $kk) (local.get $kc)))
            (f32.store (local.get $q) (f32.load (local.get $c0)))
            (f32.store offset=4 (local.get $q) (f32.load (i32.add (local.get $c0) (local.get $cs))))
            (f32.store offset=8 (local.get $q) (f32.load (i32.add (local.get $c0) (i32.shl (local.get $cs) (i32.const 1)))))
            (f32.store offset=12 (local.get $q) (f32.load (i32.add (local.get $c0) (i32.mul (local.get $cs) (i32.const 3)))))
            (local.set $c0 (i32.add (local.get $c0) (i32.const 4)))
            (local.set $q (i32.add (local.get $q) (i32.const ${rowBytes})))
            (local.set $kk (i32.add (local.get $kk) (i32.const 1)))
            (br $tsca)))
          (local.set $jj (i32.add (local.get $jj) (i32.const 4)))
          (br $tcols)))
        (memory.fill (i32.add (local.get $dst) (i32.mul (local.get $kc) (i32.const ${rowBytes}))) (i32.const 0)
          (i32.mul (i32.sub (local.get $kcp) (local.get $kc)) (i32.const ${rowBytes}))))
      (else
        ;; Any other layout: zero the panel, then copy column by column.
        (memory.fill (local.get $dst) (i32.const 0) (i32.mul (local.get $kcp) (i32.const ${rowBytes})))
        (local.set $jj (i32.const 0))
        (block $cend (loop $cols
          (br_if $cend (i32.ge_u (local.get $jj) (local.get $nr)))
          (local.set $q (i32.add (local.get $dst) (i32.shl (local.get $jj) (i32.const 2))))
          (local.set $kk (i32.const 0))
          (block $kend (loop $ks
            (br_if $kend (i32.ge_u (local.get $kk) (local.get $kc)))
            (f32.store (local.get $q)
              (f32.load (i32.add (local.get $p) (i32.mul (local.get $kk) (local.get $rs)))))
            (local.set $q (i32.add (local.get $q) (i32.const ${rowBytes})))
            (local.set $kk (i32.add (local.get $kk) (i32.const 1)))
            (br $ks)))
          (local.set $p (i32.add (local.get $p) (local.get $cs)))
          (local.set $jj (i32.add (local.get $jj) (i32.const 1)))
          (br $cols)))))))
    (local.set $dst (i32.add (local.get $dst) (i32.mul (local.get $kcp) (i32.const ${rowBytes}))))
    (local.set $j (i32.add (local.get $j) (i32.const ${nr})))
    (br $panels))))`;
}

/**
 * C[M,N] (+)= op(A)·op(B) on one tile shape, with the cache blocking given
 * at run time: `$mcb` rows of A (a multiple of mr), `$kcb` depth (a multiple
 * of 4) and `$ncb` columns of B (a multiple of nr) per packed block. Flags bit
 * 0: A is stored K×M (transposed), bit 1: B is stored N×K, bit 2: accumulate
 * into C, bit 3: B is already packed (by `pack_b_<nr>` with the same blocking;
 * the pool's threads share one packing). Leading dimensions in elements. The
 * workspace `$work` holds the spill tile (mr·nr floats), the packed A block
 * (4·mcb·kcb floats: splatted) and the packed B block (ncb·kcb), in that order.
 */
function matmul(t: MatmulTile): string {
  const { mr: MR, nr: NR } = t;
  return `
(func (export "matmul_${
    tileName(t)
  }") (param $a i32) (param $b i32) (param $c i32)
  (param $m i32) (param $n i32) (param $k i32)
  (param $lda i32) (param $ldb i32) (param $ldc i32) (param $flags i32) (param $work i32)
  (param $mcb i32) (param $kcb i32) (param $ncb i32)
  (local $rsA i32) (local $csA i32) (local $rsB i32) (local $csB i32)
  (local $tile i32) (local $pA i32) (local $pB i32)
  (local $jc i32) (local $nc i32) (local $pc i32) (local $kc i32) (local $kcp i32)
  (local $ic i32) (local $mc i32) (local $jr i32) (local $ir i32) (local $add i32)
  (local $mr i32) (local $nr i32) (local $pBw i32) (local $kp i32) (local $ncp i32)
  (if (i32.or (i32.eqz (local.get $m)) (i32.eqz (local.get $n))) (then (return)))
  (local.set $tile (local.get $work))
  (local.set $pA (i32.add (local.get $work) (i32.const ${MR * NR * 4})))
  (local.set $pBw (i32.add (local.get $pA) (i32.shl (i32.mul (local.get $mcb) (local.get $kcb)) (i32.const 4))))
  (local.set $kp (i32.and (i32.add (local.get $k) (i32.const 3)) (i32.const -4)))
  (if (i32.and (local.get $flags) (i32.const 1))
    (then (local.set $rsA (i32.const 4)) (local.set $csA (i32.shl (local.get $lda) (i32.const 2))))
    (else (local.set $rsA (i32.shl (local.get $lda) (i32.const 2))) (local.set $csA (i32.const 4))))
  (if (i32.and (local.get $flags) (i32.const 2))
    (then (local.set $rsB (i32.const 4)) (local.set $csB (i32.shl (local.get $ldb) (i32.const 2))))
    (else (local.set $rsB (i32.shl (local.get $ldb) (i32.const 2))) (local.set $csB (i32.const 4))))
  (local.set $ldc (i32.shl (local.get $ldc) (i32.const 2)))
  (loop $jloop
    (local.set $nc (i32.sub (local.get $n) (local.get $jc)))
    (if (i32.gt_u (local.get $nc) (local.get $ncb)) (then (local.set $nc (local.get $ncb))))
    (local.set $ncp (i32.mul (i32.div_u (i32.add (local.get $nc) (i32.const ${
    NR - 1
  })) (i32.const ${NR})) (i32.const ${NR})))
    (local.set $pc (i32.const 0))
    ;; Runs at least once so that K = 0 still writes C = 0 (or leaves C += 0).
    (loop $ploop
      (local.set $kc (i32.sub (local.get $k) (local.get $pc)))
      (if (i32.gt_u (local.get $kc) (local.get $kcb)) (then (local.set $kc (local.get $kcb))))
      (local.set $kcp (i32.and (i32.add (local.get $kc) (i32.const 3)) (i32.const -4)))
      (if (i32.and (local.get $flags) (i32.const 8))
        (then (local.set $pB (i32.add (local.get $b) (i32.shl (i32.add
          (i32.mul (local.get $jc) (local.get $kp)) (i32.mul (local.get $pc) (local.get $ncp))) (i32.const 2)))))
        (else
          (local.set $pB (local.get $pBw))
          (call $packB_${NR}
            (i32.add (local.get $b) (i32.add (i32.mul (local.get $pc) (local.get $rsB))
              (i32.mul (local.get $jc) (local.get $csB))))
            (local.get $rsB) (local.get $csB) (local.get $kc) (local.get $kcp) (local.get $nc) (local.get $pB))))
      (local.set $add (i32.or (i32.ne (i32.and (local.get $flags) (i32.const 4)) (i32.const 0))
        (i32.ne (local.get $pc) (i32.const 0))))
      (local.set $ic (i32.const 0))
      (loop $iloop
        (local.set $mc (i32.sub (local.get $m) (local.get $ic)))
        (if (i32.gt_u (local.get $mc) (local.get $mcb)) (then (local.set $mc (local.get $mcb))))
        (call $packA_${MR}
          (i32.add (local.get $a) (i32.add (i32.mul (local.get $ic) (local.get $rsA))
            (i32.mul (local.get $pc) (local.get $csA))))
          (local.get $rsA) (local.get $csA) (local.get $kc) (local.get $kcp) (local.get $mc) (local.get $pA))
        (local.set $jr (i32.const 0))
        (loop $jrloop
          (local.set $nr (i32.sub (local.get $nc) (local.get $jr)))
          (if (i32.gt_u (local.get $nr) (i32.const ${NR})) (then (local.set $nr (i32.const ${NR}))))
          (local.set $ir (i32.const 0))
          (loop $irloop
            (local.set $mr (i32.sub (local.get $mc) (local.get $ir)))
            (if (i32.gt_u (local.get $mr) (i32.const ${MR})) (then (local.set $mr (i32.const ${MR}))))
            (call $ukr_${tileName(t)}
              (i32.add (local.get $pA) (i32.mul (local.get $ir) (i32.shl (local.get $kcp) (i32.const 4))))
              (i32.add (local.get $pB) (i32.mul (local.get $jr) (i32.shl (local.get $kcp) (i32.const 2))))
              (local.get $kcp)
              (i32.add (local.get $c) (i32.add
                (i32.mul (i32.add (local.get $ic) (local.get $ir)) (local.get $ldc))
                (i32.shl (i32.add (local.get $jc) (local.get $jr)) (i32.const 2))))
              (local.get $ldc) (local.get $mr) (local.get $nr) (local.get $add) (local.get $tile))
            (local.set $ir (i32.add (local.get $ir) (i32.const ${MR})))
            (br_if $irloop (i32.lt_u (local.get $ir) (local.get $mc))))
          (local.set $jr (i32.add (local.get $jr) (i32.const ${NR})))
          (br_if $jrloop (i32.lt_u (local.get $jr) (local.get $nc))))
        (local.set $ic (i32.add (local.get $ic) (local.get $mcb)))
        (br_if $iloop (i32.lt_u (local.get $ic) (local.get $m))))
      (local.set $pc (i32.add (local.get $pc) (local.get $kcb)))
      (br_if $ploop (i32.lt_u (local.get $pc) (local.get $k))))
    (local.set $jc (i32.add (local.get $jc) (local.get $ncb)))
    (br_if $jloop (i32.lt_u (local.get $jc) (local.get $n)))))`;
}

/**
 * All of op(B) (K×N) packed as the drivers pack it block by block, for a
 * driver called with flag 8: column block `jc` (`ncb` wide, its width
 * padded to whole panels as `ncp`) at float `jc·kp`, its depth block `pc` at
 * `pc·ncp` after that (`kp`: K rounded up to 4). Flag bit 1: B is stored N×K.
 */
function packBAll(nr: number): string {
  return `
(func (export "pack_b_${nr}") (param $b i32) (param $ldb i32) (param $flags i32)
  (param $n i32) (param $k i32) (param $kcb i32) (param $ncb i32) (param $dst i32)
  (local $rsB i32) (local $csB i32) (local $jc i32) (local $nc i32) (local $ncp i32)
  (local $pc i32) (local $kc i32) (local $kp i32)
  (if (i32.and (local.get $flags) (i32.const 2))
    (then (local.set $rsB (i32.const 4)) (local.set $csB (i32.shl (local.get $ldb) (i32.const 2))))
    (else (local.set $rsB (i32.shl (local.get $ldb) (i32.const 2))) (local.set $csB (i32.const 4))))
  (local.set $kp (i32.and (i32.add (local.get $k) (i32.const 3)) (i32.const -4)))
  (block $jend (loop $jloop
    (br_if $jend (i32.ge_u (local.get $jc) (local.get $n)))
    (local.set $nc (i32.sub (local.get $n) (local.get $jc)))
    (if (i32.gt_u (local.get $nc) (local.get $ncb)) (then (local.set $nc (local.get $ncb))))
    (local.set $ncp (i32.mul (i32.div_u (i32.add (local.get $nc) (i32.const ${
    nr - 1
  })) (i32.const ${nr})) (i32.const ${nr})))
    (local.set $pc (i32.const 0))
    (block $pend (loop $ploop
      (br_if $pend (i32.ge_u (local.get $pc) (local.get $k)))
      (local.set $kc (i32.sub (local.get $k) (local.get $pc)))
      (if (i32.gt_u (local.get $kc) (local.get $kcb)) (then (local.set $kc (local.get $kcb))))
      (call $packB_${nr}
        (i32.add (local.get $b) (i32.add (i32.mul (local.get $pc) (local.get $rsB))
          (i32.mul (local.get $jc) (local.get $csB))))
        (local.get $rsB) (local.get $csB) (local.get $kc)
        (i32.and (i32.add (local.get $kc) (i32.const 3)) (i32.const -4)) (local.get $nc)
        (i32.add (local.get $dst) (i32.shl (i32.add (i32.mul (local.get $jc) (local.get $kp))
          (i32.mul (local.get $pc) (local.get $ncp))) (i32.const 2))))
      (local.set $pc (i32.add (local.get $pc) (local.get $kcb)))
      (br $ploop)))
    (local.set $jc (i32.add (local.get $jc) (local.get $ncb)))
    (br $jloop))))`;
}

/** Every tile's micro-kernel, A and B packers (shared by tile width/height) and driver. */
function matmulKernels(v: WasmVariant): string {
  const mrs = [...new Set(MATMUL_TILES.map((t) => t.mr))];
  const nrs = [...new Set(MATMUL_TILES.map((t) => t.nr))];
  return lines([
    ...MATMUL_TILES.map((t) => microKernel(v, t)),
    ...mrs.map(packA),
    ...nrs.map(packB),
    ...nrs.map(packBAll),
    ...MATMUL_TILES.map(matmul),
  ]);
}

/**
 * Shared parts of {@link matvec} and {@link matvecF16}, for rows `rows` of a
 * pass starting at row `$i`: the row pointers `$w{r}` (`$rowb` bytes a row;
 * a short last pass clamps them to the last row), the horizontal sums of the
 * two accumulators into `$f{r}`, and the stores of the rows that exist
 * (added to `y` with `$accumulate`).
 */
const matvecRowPointers = (rows: readonly number[]): string =>
  rows.map((r) =>
    `(local.set $w${r} (i32.add (local.get $w) (i32.mul (local.get $rowb)
        (select (i32.add (local.get $i) (i32.const ${r})) (i32.sub (local.get $n) (i32.const 1))
          (i32.lt_u (i32.add (local.get $i) (i32.const ${r})) (local.get $n))))))`
  ).join("\n");

/** See {@link matvecRowPointers}. */
const matvecRowSums = (rows: readonly number[]): string =>
  rows.map((r) =>
    `(local.set $sum (f32x4.add (local.get $s${r}a) (local.get $s${r}b)))
      (local.set $f${r} (f32.add
        (f32.add (f32x4.extract_lane 0 (local.get $sum)) (f32x4.extract_lane 1 (local.get $sum)))
        (f32.add (f32x4.extract_lane 2 (local.get $sum)) (f32x4.extract_lane 3 (local.get $sum)))))`
  ).join("\n");

/** See {@link matvecRowPointers}. */
const matvecStore = (rows: readonly number[]): string =>
  rows.map((r) =>
    `(if (i32.lt_u (i32.add (local.get $i) (i32.const ${r})) (local.get $n)) (then
        (if (local.get $accumulate) (then
          (local.set $f${r} (f32.add (local.get $f${r}) (f32.load offset=${
      r * 4
    } (local.get $y))))))
        (f32.store offset=${r * 4} (local.get $y) (local.get $f${r}))))`
  ).join("\n");

/**
 * The 8-column SIMD loop of {@link matvec} and {@link matvecF16}: `$x0`,
 * `$x1` from `x0`, `x1`, then `perRow(r)` for each row (which advances its
 * row pointer).
 */
const matvecVectorLoop = (
  rows: readonly number[],
  x0: string,
  x1: string,
  perRow: (r: number) => string,
): string => `
    (block $vend (loop $vec
      (br_if $vend (i32.ge_u (local.get $kk) (local.get $k8)))
      (local.set $x0 ${x0})
      (local.set $x1 ${x1})
      ${rows.map(perRow).join("\n")}
      (local.set $xp (i32.add (local.get $xp) (i32.const 32)))
      (local.set $kk (i32.add (local.get $kk) (i32.const 8)))
      (br $vec)))`;

/**
 * The loop over groups of rows shared by {@link matvec} and
 * {@link matvecF16}: row pointers, zeroed accumulators, `vector` (the SIMD
 * columns), the horizontal sums, the scalar tail (`$t` = `scalarX`, each row
 * adding `scalarTerm(r)` and stepping `wBytes`) and the stores.
 */
function matvecRowGroups(
  rows: readonly number[],
  accs: readonly string[],
  vector: string,
  scalarX: string,
  scalarTerm: (r: number) => string,
  wBytes: number,
): string {
  const R = rows.length;
  return `
  (block $end (loop $rowsloop
    (br_if $end (i32.ge_u (local.get $i) (local.get $n)))
    ;; The last group of rows may be short: clamp its row pointers to the last row.
    ${matvecRowPointers(rows)}
    ${accs.map((a) => `(local.set ${a} (v128.const i64x2 0 0))`).join(" ")}
    (local.set $xp (local.get $x))
    (local.set $kk (i32.const 0))
    ${vector}
    ${matvecRowSums(rows)}
    (block $send (loop $sca
      (br_if $send (i32.ge_u (local.get $kk) (local.get $k)))
      (local.set $t ${scalarX})
      ${
    rows.map((r) =>
      `(local.set $f${r} (f32.add (local.get $f${r}) ${scalarTerm(r)}))
      (local.set $w${r} (i32.add (local.get $w${r}) (i32.const ${wBytes})))`
    ).join("\n")
  }
      (local.set $xp (i32.add (local.get $xp) (i32.const 4)))
      (local.set $kk (i32.add (local.get $kk) (i32.const 1)))
      (br $sca)))
    ${matvecStore(rows)}
    (local.set $y (i32.add (local.get $y) (i32.const ${R * 4})))
    (local.set $i (i32.add (local.get $i) (i32.const ${R})))
    (br $rowsloop)))`;
}

/**
 * y[n] (+)= Σ_k W[n,k]·x[k] for row-major W (leading dimension `ldw`
 * elements), four rows per pass with two accumulators per row.
 */
function matvec(v: WasmVariant): string {
  const R = 4;
  const rows = range(R);
  const accs = rows.flatMap((r) => [`$s${r}a`, `$s${r}b`]);
  const vector = matvecVectorLoop(
    rows,
    "(v128.load (local.get $xp))",
    "(v128.load offset=16 (local.get $xp))",
    (r) =>
      `(local.set $s${r}a ${
        madd(
          v,
          `(v128.load (local.get $w${r}))`,
          "(local.get $x0)",
          `(local.get $s${r}a)`,
        )
      })
      (local.set $s${r}b ${
        madd(
          v,
          `(v128.load offset=16 (local.get $w${r}))`,
          "(local.get $x1)",
          `(local.get $s${r}b)`,
        )
      })
      (local.set $w${r} (i32.add (local.get $w${r}) (i32.const 32)))`,
  );
  return `
(func $matvec (export "matvec") (param $w i32) (param $n i32) (param $k i32) (param $ldw i32)
  (param $x i32) (param $y i32) (param $accumulate i32)
  (local $i i32) (local $kk i32) (local $k8 i32) (local $rowb i32) (local $xp i32) (local $t f32)
  ${locals(rows.map((r) => `$w${r}`), "i32")} ${
    locals(rows.map((r) => `$f${r}`), "f32")
  }
  (local $x0 v128) (local $x1 v128) (local $sum v128)
  ${locals(accs, "v128")}
  (local.set $rowb (i32.shl (local.get $ldw) (i32.const 2)))
  (local.set $k8 (i32.and (local.get $k) (i32.const -8)))${
    matvecRowGroups(
      rows,
      accs,
      vector,
      "(f32.load (local.get $xp))",
      (r) => `(f32.mul (f32.load (local.get $w${r})) (local.get $t))`,
      4,
    )
  })`;
}

/** `0x8FFFE000` as a signed i32: the sign bit, and exponent and mantissa of an f16 shifted left by 13. */
const HALF_MASK = 0x8fffe000 | 0;
/** 2^112 (the f16 → f32 exponent bias difference, 127 − 15). */
const TWO_112 = "0x1p+112";

/**
 * y[n] (+)= Σ_k W[n,k]·x[k] for row-major f16 W (leading dimension `ldw`
 * elements, 2 bytes each, finite values) and f32 x, y, summed in the order of
 * {@link matvec}: the result equals `matvec` on the widened matrix bit for
 * bit, from half the bytes.
 *
 * An f16 value h, sign-extended to i32, becomes the f32 `w·2^−112` as
 * `(h << 13) & 0x8FFFE000` (exact, also for subnormals). When every
 * |x| < 2^16 the kernel multiplies these by `x·2^112` (exact too): each
 * product is the real `w·x`, so it rounds, and every sum after it, as the
 * f32 path's. Otherwise each weight is first rescaled by 2^112 (slower).
 */
function matvecF16(v: WasmVariant): string {
  const R = 4;
  const rows = range(R);
  const accs = rows.flatMap((r) => [`$s${r}a`, `$s${r}b`]);
  // The f32 words' low halves are h << 13, their high halves h >> 3 (sign
  // replicated) with bits 12–14 cleared; interleaved by two shuffles.
  const lo =
    "(i8x16.shuffle 0 1 16 17 2 3 18 19 4 5 20 21 6 7 22 23 (local.get $l) (local.get $u))";
  const hi =
    "(i8x16.shuffle 8 9 24 25 10 11 26 27 12 13 28 29 14 15 30 31 (local.get $l) (local.get $u))";
  const vecLoop = (fast: boolean) =>
    matvecVectorLoop(
      rows,
      fast
        ? "(f32x4.mul (v128.load (local.get $xp)) (local.get $big))"
        : "(v128.load (local.get $xp))",
      fast
        ? "(f32x4.mul (v128.load offset=16 (local.get $xp)) (local.get $big))"
        : "(v128.load offset=16 (local.get $xp))",
      (r) => {
        const wl = fast ? lo : `(f32x4.mul ${lo} (local.get $big))`;
        const wh = fast ? hi : `(f32x4.mul ${hi} (local.get $big))`;
        return `(local.set $h (v128.load (local.get $w${r})))
      (local.set $l (i16x8.shl (local.get $h) (i32.const 13)))
      (local.set $u (v128.and (i16x8.shr_s (local.get $h) (i32.const 3)) (local.get $mask16)))
      (local.set $s${r}a ${
          madd(v, wl, "(local.get $x0)", `(local.get $s${r}a)`)
        })
      (local.set $s${r}b ${
          madd(v, wh, "(local.get $x1)", `(local.get $s${r}b)`)
        })
      (local.set $w${r} (i32.add (local.get $w${r}) (i32.const 16)))`;
      },
    );
  return `
(func (export "matvec_f16") (param $w i32) (param $n i32) (param $k i32) (param $ldw i32)
  (param $x i32) (param $y i32) (param $accumulate i32)
  (local $i i32) (local $kk i32) (local $k8 i32) (local $rowb i32) (local $xp i32) (local $t f32)
  (local $m f32) (local $fast i32) (local $xs f32) (local $ws f32)
  ${locals(rows.map((r) => `$w${r}`), "i32")} ${
    locals(rows.map((r) => `$f${r}`), "f32")
  }
  (local $x0 v128) (local $x1 v128) (local $sum v128) (local $h v128)
  (local $mask16 v128) (local $big v128) (local $l v128) (local $u v128)
  ${locals(accs, "v128")}
  (local.set $mask16 (v128.const i16x8 ${
    range(8).map(() => "0x8fff").join(" ")
  }))
  (local.set $big (v128.const f32x4 ${TWO_112} ${TWO_112} ${TWO_112} ${TWO_112}))
  ;; max |x| (a NaN leaves $fast 0: the slow path then propagates it as matvec does)
  (local.set $m (f32.const 0))
  (local.set $kk (i32.const 0))
  (block $mend (loop $mloop
    (br_if $mend (i32.ge_u (local.get $kk) (local.get $k)))
    (local.set $m (f32.max (local.get $m)
      (f32.abs (f32.load (i32.add (local.get $x) (i32.shl (local.get $kk) (i32.const 2)))))))
    (local.set $kk (i32.add (local.get $kk) (i32.const 1)))
    (br $mloop)))
  (local.set $fast (f32.lt (local.get $m) (f32.const 65536)))
  ;; the scalar tail's factors: x·2^112 (fast) or w·2^112 (slow)
  (local.set $xs (select (f32.const ${TWO_112}) (f32.const 1) (local.get $fast)))
  (local.set $ws (select (f32.const 1) (f32.const ${TWO_112}) (local.get $fast)))
  (local.set $rowb (i32.shl (local.get $ldw) (i32.const 1)))
  (local.set $k8 (i32.and (local.get $k) (i32.const -8)))${
    matvecRowGroups(
      rows,
      accs,
      `(if (local.get $fast) (then ${vecLoop(true)}) (else ${vecLoop(false)}))`,
      "(f32.mul (f32.load (local.get $xp)) (local.get $xs))",
      (r) =>
        `(f32.mul (f32.mul (f32.reinterpret_i32
        (i32.and (i32.shl (i32.load16_s (local.get $w${r})) (i32.const 13)) (i32.const ${HALF_MASK})))
        (local.get $ws)) (local.get $t))`,
      2,
    )
  })`;
}

/**
 * Tile of the int8 × int8 matmul: R weight rows (`ldw` bytes apart) × T
 * tokens (`ldx` bytes apart), `kpad` (a multiple of 16) columns. Both operands
 * are sign-extended to i16 and multiplied by `i32x4.dot_i16x8_s`: exact i32
 * sums in both variants (the relaxed i8 × i7 dot needs one operand in
 * [0, 127], which int8 weights are not).
 * out[t][r] = f32(Σ c·x) · (scales[r] · invs[t]).
 */
function int8Tile(R: number, T: number): string {
  const rows = range(R);
  const toks = range(T);
  const acc = (r: number, t: number) => `$a${r}_${t}`;
  const pairs = rows.flatMap((r) => toks.map((t) => [r, t] as const));
  return `
(func $i8mm_${R}_${T} (param $w i32) (param $ldw i32) (param $x i32) (param $ldx i32)
  (param $kpad i32) (param $scales i32) (param $invs i32) (param $out i32) (param $ldo i32)
  (local $kk i32) (local $v v128) (local $wl v128) (local $wh v128) (local $t v128)
  ${locals(rows.map((r) => `$w${r}`), "i32")} ${
    locals(toks.map((t) => `$x${t}`), "i32")
  }
  ${locals(toks.flatMap((t) => [`$xl${t}`, `$xh${t}`]), "v128")}
  ${locals(pairs.map(([r, t]) => acc(r, t)), "v128")}
  ${
    rows.map((r) =>
      `(local.set $w${r} (i32.add (local.get $w) (i32.mul (local.get $ldw) (i32.const ${r}))))`
    ).join(" ")
  }
  ${
    toks.map((t) =>
      `(local.set $x${t} (i32.add (local.get $x) (i32.mul (local.get $ldx) (i32.const ${t}))))`
    ).join(" ")
  }
  (block $done
    (br_if $done (i32.eqz (local.get $kpad)))
    (loop $blk
      ${
    toks.map((t) =>
      `(local.set $v (v128.load (i32.add (local.get $x${t}) (local.get $kk))))
      (local.set $xl${t} (i16x8.extend_low_i8x16_s (local.get $v)))
      (local.set $xh${t} (i16x8.extend_high_i8x16_s (local.get $v)))`
    ).join("\n")
  }
      ${
    rows.map((r) =>
      lines([
        `(local.set $v (v128.load (i32.add (local.get $w${r}) (local.get $kk))))`,
        `(local.set $wl (i16x8.extend_low_i8x16_s (local.get $v)))`,
        `(local.set $wh (i16x8.extend_high_i8x16_s (local.get $v)))`,
        ...toks.map((t) =>
          `(local.set ${acc(r, t)} (i32x4.add (local.get ${
            acc(r, t)
          }) (i32x4.add
            (i32x4.dot_i16x8_s (local.get $wl) (local.get $xl${t}))
            (i32x4.dot_i16x8_s (local.get $wh) (local.get $xh${t})))))`
        ),
      ])
    ).join("\n")
  }
      (local.set $kk (i32.add (local.get $kk) (i32.const 16)))
      (br_if $blk (i32.lt_u (local.get $kk) (local.get $kpad)))))
  ${
    pairs.map(([r, t]) =>
      `(local.set $t (local.get ${acc(r, t)}))
  (f32.store offset=${
        r * 4
      } (i32.add (local.get $out) (i32.mul (local.get $ldo) (i32.const ${t})))
    (f32.mul (f32.convert_i32_s ${hsum("$t")})
      (f32.mul (f32.load offset=${
        r * 4
      } (local.get $scales)) (f32.load offset=${t * 4} (local.get $invs)))))`
    ).join("\n")
  })`;
}

/** Rows per int8 tile (for any token group: the accumulators stay ≤ 8). */
const INT8_ROWS = 4;
/** Tokens per int8 token group. */
const INT8_TOKENS = 2;

/** Tile shapes of the int8 kernel, in table order after the ternary ones: (R, T) then (1, T). */
const int8Tiles = (): [number, number][] => [
  ...range(INT8_TOKENS).map((t): [number, number] => [INT8_ROWS, t + 1]),
  ...range(INT8_TOKENS).map((t): [number, number] => [1, t + 1]),
];

/**
 * The int8 × int8 matmul driver: row blocks, then token groups of ≤ 2, then
 * tiles of 4 rows and single rows; `tableBase` is the table index of the
 * first int8 tile.
 */
const int8Matmul = (tableBase: number): string => `
(func (export "i8matmul") (param $w i32) (param $n i32) (param $kpad i32)
  (param $x i32) (param $ldx i32) (param $tokens i32) (param $scales i32) (param $invs i32)
  (param $out i32) (param $ldo i32)
  (local $r0 i32) (local $rend i32) (local $t0 i32) (local $tg i32) (local $r i32)
  (local.set $ldo (i32.shl (local.get $ldo) (i32.const 2)))
  (block $end (loop $rblocks
    (br_if $end (i32.ge_u (local.get $r0) (local.get $n)))
    (local.set $rend (i32.add (local.get $r0) (i32.const ${TERNARY_ROW_BLOCK})))
    (if (i32.gt_u (local.get $rend) (local.get $n)) (then (local.set $rend (local.get $n))))
    (local.set $t0 (i32.const 0))
    (block $tend (loop $tgroups
      (br_if $tend (i32.ge_u (local.get $t0) (local.get $tokens)))
      (local.set $tg (i32.sub (local.get $tokens) (local.get $t0)))
      (if (i32.gt_u (local.get $tg) (i32.const ${INT8_TOKENS})) (then (local.set $tg (i32.const ${INT8_TOKENS}))))
      (local.set $r (local.get $r0))
      (block $rtend (loop $rtiles
        (br_if $rtend (i32.gt_u (i32.add (local.get $r) (i32.const ${INT8_ROWS})) (local.get $rend)))
        (call_indirect (type $i8tile_t)
          (i32.add (local.get $w) (i32.mul (local.get $r) (local.get $kpad))) (local.get $kpad)
          (i32.add (local.get $x) (i32.mul (local.get $t0) (local.get $ldx))) (local.get $ldx)
          (local.get $kpad)
          (i32.add (local.get $scales) (i32.shl (local.get $r) (i32.const 2)))
          (i32.add (local.get $invs) (i32.shl (local.get $t0) (i32.const 2)))
          (i32.add (local.get $out) (i32.add (i32.mul (local.get $t0) (local.get $ldo))
            (i32.shl (local.get $r) (i32.const 2))))
          (local.get $ldo)
          (i32.add (local.get $tg) (i32.const ${tableBase - 1})))
        (local.set $r (i32.add (local.get $r) (i32.const ${INT8_ROWS})))
        (br $rtiles)))
      (block $r1end (loop $r1tiles
        (br_if $r1end (i32.ge_u (local.get $r) (local.get $rend)))
        (call_indirect (type $i8tile_t)
          (i32.add (local.get $w) (i32.mul (local.get $r) (local.get $kpad))) (local.get $kpad)
          (i32.add (local.get $x) (i32.mul (local.get $t0) (local.get $ldx))) (local.get $ldx)
          (local.get $kpad)
          (i32.add (local.get $scales) (i32.shl (local.get $r) (i32.const 2)))
          (i32.add (local.get $invs) (i32.shl (local.get $t0) (i32.const 2)))
          (i32.add (local.get $out) (i32.add (i32.mul (local.get $t0) (local.get $ldo))
            (i32.shl (local.get $r) (i32.const 2))))
          (local.get $ldo)
          (i32.add (local.get $tg) (i32.const ${tableBase + INT8_TOKENS - 1})))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $r1tiles)))
      (local.set $t0 (i32.add (local.get $t0) (i32.const ${INT8_TOKENS})))
      (br $tgroups)))
    (local.set $r0 (local.get $rend))
    (br $rblocks))))`;

/**
 * Attention of `T` new queries of one sequence over its KV cache, one query
 * at a time (the decode path): query r (`q + r·qRow` floats, `H` heads of `D`)
 * sees cache rows `[0, min(pos0 + r + 1, ctx))`; per head h (kv head
 * h / group) the scores are a {@link matvec} over the head-major keys
 * (`[Hkv, ctx, D]`), scaled, softmaxed, and the output a matvec over the
 * transposed values (`[Hkv·D, ctx]`). The same kernel calls as one host call
 * per head would make, in one call; `S` holds `ctx` floats of scores.
 */
const attendSession = `
(func (export "attend_session") (param $q i32) (param $k i32) (param $vt i32) (param $out i32)
  (param $T i32) (param $H i32) (param $group i32) (param $D i32) (param $ctx i32) (param $pos0 i32)
  (param $qRow i32) (param $S i32) (param $scale f32) (param $stats i32)
  (local $r i32) (local $h i32) (local $g i32) (local $seen i32) (local $qh i32)
  (block $rend (loop $rows
    (br_if $rend (i32.ge_u (local.get $r) (local.get $T)))
    (local.set $seen (i32.add (i32.add (local.get $pos0) (local.get $r)) (i32.const 1)))
    (if (i32.gt_u (local.get $seen) (local.get $ctx)) (then (local.set $seen (local.get $ctx))))
    (local.set $h (i32.const 0))
    (block $hend (loop $heads
      (br_if $hend (i32.ge_u (local.get $h) (local.get $H)))
      (local.set $g (i32.div_u (local.get $h) (local.get $group)))
      (local.set $qh (i32.shl (i32.add (i32.mul (local.get $r) (local.get $qRow))
        (i32.mul (local.get $h) (local.get $D))) (i32.const 2)))
      (call $matvec
        (i32.add (local.get $k) (i32.shl (i32.mul (i32.mul (local.get $g) (local.get $ctx)) (local.get $D)) (i32.const 2)))
        (local.get $seen) (local.get $D) (local.get $D)
        (i32.add (local.get $q) (local.get $qh)) (local.get $S) (i32.const 0))
      (call $axmb_f32 (local.get $S) (local.get $S) (local.get $scale) (f32.const 0) (i32.const 0) (local.get $seen))
      (call $softmax_row (local.get $S) (local.get $S) (local.get $seen) (local.get $stats))
      (call $matvec
        (i32.add (local.get $vt) (i32.shl (i32.mul (i32.mul (local.get $g) (local.get $D)) (local.get $ctx)) (i32.const 2)))
        (local.get $D) (local.get $seen) (local.get $ctx)
        (local.get $S) (i32.add (local.get $out) (local.get $qh)) (i32.const 0))
      (local.set $h (i32.add (local.get $h) (i32.const 1)))
      (br $heads)))
    (local.set $r (i32.add (local.get $r) (i32.const 1)))
    (br $rows))))`;

/** Byte indices of an `i8x16.shuffle` picking the i32 lanes `idx` (0–7). */
const lanes32 = (idx: readonly number[]): string =>
  idx.flatMap((i) => range(4).map((b) => 4 * i + b)).join(" ");

/**
 * `[ΣA, ΣB, ΣC, ΣD]` of four i32x4 expressions: two transposing
 * interleaves and adds instead of 4 extracts and 3 adds per sum.
 */
function sum4([a, b, c, d]: readonly string[]): string {
  const pair = (x: string, y: string) =>
    `(i32x4.add (i8x16.shuffle ${
      lanes32([0, 4, 1, 5])
    } ${x} ${y}) (i8x16.shuffle ${lanes32([2, 6, 3, 7])} ${x} ${y}))`;
  return `(local.set $lo ${pair(a, b)}) (local.set $hi ${pair(c, d)})
  (i32x4.add (i8x16.shuffle ${
    lanes32([0, 1, 4, 5])
  } (local.get $lo) (local.get $hi))
    (i8x16.shuffle ${lanes32([2, 3, 6, 7])} (local.get $lo) (local.get $hi)))`;
}

/**
 * WAT: a v128 of the 4-byte per-token entries at `ptr` for the tokens of the
 * four lanes (t₀ ≤ t ≤ t₀ + 3), reading no entry past the last one named.
 */
function perToken(ptr: string, toks: readonly number[]): string {
  const t0 = toks[0], span = Math.max(...toks) - t0;
  const at = `offset=${4 * t0} (local.get ${ptr})`;
  if (span === 0) return `(v128.load32_splat ${at})`;
  const load = span === 3
    ? `(v128.load ${at})`
    : span === 2
    ? `(v128.load32_lane offset=${
      4 * t0 + 8
    } 2 (local.get ${ptr}) (v128.load64_zero ${at}))`
    : `(v128.load64_zero ${at})`;
  const idx = toks.map((t) => t - t0);
  return idx.every((i, l) => i === l)
    ? load
    : `(i8x16.shuffle ${lanes32(idx)} ${load} (v128.const i64x2 0 0))`;
}

/**
 * Epilogue of a ternary tile for up to four outputs `(r, t)`, whose exact
 * sums Σ c·x are the lanes of `$q<q>`: per lane (Σ c·x − Σ x) ·
 * (wscale · invs[t]) in f32x4 (the scalar expression, lane by lane), stored
 * as one, two or four adjacent floats per token.
 */
function ternaryStore(
  quad: readonly (readonly [number, number])[],
  q: number,
): string {
  const toks = range(4).map((i) => quad[Math.min(i, quad.length - 1)][1]);
  const value = `(f32x4.mul
    (f32x4.convert_i32x4_s (i32x4.sub (local.get $q${q}) ${
    perToken("$sums", toks)
  }))
    (f32x4.mul (f32x4.splat (local.get $wscale)) ${perToken("$invs", toks)}))`;
  const stores: string[] = [];
  for (let i = 0; i < quad.length;) {
    const [r, t] = quad[i];
    let len = 1;
    while (
      i + len < quad.length && quad[i + len][1] === t &&
      quad[i + len][0] === r + len
    ) len++;
    const at = t === 0
      ? "(local.get $out)"
      : `(i32.add (local.get $out) (i32.mul (local.get $ldo) (i32.const ${t})))`;
    const off = `offset=${r * 4}`;
    if (len >= 4) stores.push(`(v128.store ${off} ${at} (local.get $f))`);
    else if (len >= 2 && i % 2 === 0) {
      stores.push(`(v128.store64_lane ${off} ${i / 2} ${at} (local.get $f))`);
      len = 2;
    } else {
      stores.push(`(v128.store32_lane ${off} ${i} ${at} (local.get $f))`);
      len = 1;
    }
    i += len;
  }
  return `(local.set $f ${value})
  ${stores.join("\n  ")}`;
}

/**
 * Tiles of the ternary matmul: `nt` consecutive tiles of R weight rows × T
 * tokens (one call per row block and token group, so the call and the
 * token-side setup are paid once, not per tile). Weight rows are `rb` bytes
 * apart (blocks of 64 weights in 16 bytes, byte i bits 2j..2j+1 = weight
 * 16j+i, codes 0..2), token rows of int8 activations `ldx` bytes apart.
 * out[t][r] = (Σ c·x − Σ x) · (wscale · invs[t]); the sums are reduced four
 * outputs per vector ({@link sum4}) and stored by {@link ternaryStore}.
 */
function ternaryTile(v: WasmVariant, R: number, T: number): string {
  const rows = range(R);
  const toks = range(T);
  const acc = (r: number, t: number) => `$a${r}_${t}`;
  const pairs = rows.flatMap((r) => toks.map((t) => [r, t] as const));
  // Outputs token-major (rows adjacent in memory), four per vector.
  const byToken = toks.flatMap((t) => rows.map((r) => [r, t] as const));
  const quads = range(Math.ceil(byToken.length / 4)).map((q) =>
    byToken.slice(4 * q, 4 * q + 4)
  );
  const code = (r: number, j: number) =>
    j === 0
      ? `(v128.and (local.get $r${r}) (local.get $m3))`
      : `(v128.and (i16x8.shr_u (local.get $r${r}) (i32.const ${
        2 * j
      })) (local.get $m3))`;
  return `
(func $tmm_${R}_${T} (param $w i32) (param $rb i32) (param $x i32) (param $ldx i32)
  (param $nb i32) (param $sums i32) (param $invs i32) (param $wscale f32) (param $out i32) (param $ldo i32)
  (param $nt i32)
  (local $wo i32) (local $xo i32) (local $cend i32) (local $wend i32)
  (local $m3 v128) (local $xv v128) (local $lo v128) (local $hi v128) (local $f v128)
  ${locals(rows.map((r) => `$w${r}`), "i32")} ${
    locals(toks.map((t) => `$x${t}`), "i32")
  }
  ${locals(rows.map((r) => `$r${r}`), "v128")} ${
    locals(rows.map((r) => `$c${r}`), "v128")
  }
  ${locals(pairs.map(([r, t]) => acc(r, t)), "v128")}
  ${locals(quads.map((_, q) => `$q${q}`), "v128")}
  (local.set $m3 (v128.const i8x16 ${range(16).map(() => "3").join(" ")}))
  ${
    toks.map((t) =>
      `(local.set $x${t} (i32.add (local.get $x) (i32.mul (local.get $ldx) (i32.const ${t}))))`
    ).join(" ")
  }
  (local.set $wend (i32.shl (local.get $nb) (i32.const 4)))
  (block $tilesdone (loop $tiles
  (br_if $tilesdone (i32.eqz (local.get $nt)))
  ${
    rows.map((r) =>
      `(local.set $w${r} (i32.add (local.get $w) (i32.mul (local.get $rb) (i32.const ${r}))))`
    ).join(" ")
  }
  (local.set $wo (i32.const 0))
  (local.set $xo (i32.const 0))
  ${quads.map((_, q) => `(local.set $q${q} (v128.const i64x2 0 0))`).join(" ")}
  (block $done
    (br_if $done (i32.eqz (local.get $wend)))
    (loop $chunk
      ;; i16 lanes gain at most 4·2·128·2 per block: widen every ${TERNARY_CHUNK} blocks.
      (local.set $cend (i32.add (local.get $wo) (i32.const ${
    TERNARY_CHUNK * 16
  })))
      (if (i32.gt_u (local.get $cend) (local.get $wend)) (then (local.set $cend (local.get $wend))))
      ${
    pairs.map(([r, t]) => `(local.set ${acc(r, t)} (v128.const i64x2 0 0))`)
      .join(" ")
  }
      (loop $blk
        ${
    rows.map((r) =>
      `(local.set $r${r} (v128.load (i32.add (local.get $w${r}) (local.get $wo))))`
    ).join("\n")
  }
        ${
    range(4).map((j) =>
      lines([
        ...rows.map((r) => `(local.set $c${r} ${code(r, j)})`),
        ...toks.flatMap((t) => [
          `(local.set $xv (v128.load offset=${
            j * 16
          } (i32.add (local.get $x${t}) (local.get $xo))))`,
          ...rows.map((r) =>
            `(local.set ${acc(r, t)} (i16x8.add (local.get ${acc(r, t)}) ${
              dot(v, "$xv", `$c${r}`)
            }))`
          ),
        ]),
      ])
    ).join("\n")
  }
        (local.set $wo (i32.add (local.get $wo) (i32.const 16)))
        (local.set $xo (i32.add (local.get $xo) (i32.const 64)))
        (br_if $blk (i32.lt_u (local.get $wo) (local.get $cend))))
      ${
    quads.map((quad, q) =>
      `(local.set $q${q} (i32x4.add (local.get $q${q}) ${
        sum4(
          range(4).map((i) =>
            i < quad.length
              ? `(i32x4.extadd_pairwise_i16x8_s (local.get ${
                acc(quad[i][0], quad[i][1])
              }))`
              : "(v128.const i64x2 0 0)"
          ),
        )
      }))`
    ).join("\n")
  }
      (br_if $chunk (i32.lt_u (local.get $wo) (local.get $wend)))))
  ${quads.map((quad, q) => ternaryStore(quad, q)).join("\n")}
  (local.set $w (i32.add (local.get $w) (i32.mul (local.get $rb) (i32.const ${R}))))
  (local.set $out (i32.add (local.get $out) (i32.const ${4 * R})))
  (local.set $nt (i32.sub (local.get $nt) (i32.const 1)))
  (br $tiles))))`;
}

/** Rows per ternary tile for a group of `tokens` tokens. */
const ternaryRows = (tokens: number): number => (tokens === 1 ? 4 : 2);

/** WAT expression: the rows per tile for the token group size in local `$tg`. */
const rowsForGroup = [2, 3, 4].reduce(
  (e, t) =>
    `(select (i32.const ${
      ternaryRows(t)
    }) ${e} (i32.eq (local.get $tg) (i32.const ${t})))`,
  `(i32.const ${ternaryRows(1)})`,
);

/**
 * A call of the tile function at table index `kind` (see `ternaryTiles`)
 * for `tiles` tiles from row `$r`, token `$t0`, in the driver below.
 */
const tileCall = (tiles: string, kind: string): string => `
      (call_indirect (type $tile_t)
          (i32.add (local.get $w) (i32.mul (local.get $r) (local.get $rb))) (local.get $rb)
          (i32.add (local.get $x) (i32.mul (local.get $t0) (local.get $ldx))) (local.get $ldx)
          (local.get $nb)
          (i32.add (local.get $sums) (i32.shl (local.get $t0) (i32.const 2)))
          (i32.add (local.get $invs) (i32.shl (local.get $t0) (i32.const 2)))
          (local.get $wscale)
          (i32.add (local.get $out) (i32.add (i32.mul (local.get $t0) (local.get $ldo))
            (i32.shl (local.get $r) (i32.const 2))))
          (local.get $ldo)
          ${tiles}
          ${kind})`;

/**
 * The ternary matmul driver: row blocks, then token groups of ≤ 4, then one
 * call for the block's tiles of {@link ternaryRows} rows and one for its
 * remaining single rows.
 */
const ternaryMatmul = `
(func (export "tmatmul") (param $w i32) (param $n i32) (param $kpad i32)
  (param $x i32) (param $ldx i32) (param $tokens i32) (param $sums i32) (param $invs i32)
  (param $wscale f32) (param $out i32) (param $ldo i32)
  (local $rb i32) (local $nb i32) (local $r0 i32) (local $rend i32) (local $t0 i32)
  (local $tg i32) (local $r i32) (local $rt i32) (local $nt i32)
  (local.set $rb (i32.shr_u (local.get $kpad) (i32.const 2)))
  (local.set $nb (i32.shr_u (local.get $kpad) (i32.const 6)))
  (local.set $ldo (i32.shl (local.get $ldo) (i32.const 2)))
  (block $end (loop $rblocks
    (br_if $end (i32.ge_u (local.get $r0) (local.get $n)))
    (local.set $rend (i32.add (local.get $r0) (i32.const ${TERNARY_ROW_BLOCK})))
    (if (i32.gt_u (local.get $rend) (local.get $n)) (then (local.set $rend (local.get $n))))
    (local.set $t0 (i32.const 0))
    (block $tend (loop $tgroups
      (br_if $tend (i32.ge_u (local.get $t0) (local.get $tokens)))
      (local.set $tg (i32.sub (local.get $tokens) (local.get $t0)))
      (if (i32.gt_u (local.get $tg) (i32.const 4)) (then (local.set $tg (i32.const 4))))
      (local.set $rt ${rowsForGroup})
      (local.set $r (local.get $r0))
      (local.set $nt (i32.div_u (i32.sub (local.get $rend) (local.get $r0)) (local.get $rt)))
      ${tileCall("(local.get $nt)", "(i32.sub (local.get $tg) (i32.const 1))")}
      (local.set $r (i32.add (local.get $r0) (i32.mul (local.get $nt) (local.get $rt))))
      ${
  tileCall(
    "(i32.sub (local.get $rend) (local.get $r))",
    "(i32.add (local.get $tg) (i32.const 3))",
  )
}
      (local.set $t0 (i32.add (local.get $t0) (i32.const 4)))
      (br $tgroups)))
    (local.set $r0 (local.get $rend))
    (br $rblocks))))`;

/**
 * Per-row int8 quantization: s = 127 / max(max|x|, eps), q = clamp(round(x·s)),
 * round half to even; writes q (zero-padded to `kpad` bytes per row), 1/s as
 * max/127 and Σ q (over the padded row, i32).
 */
function quantize(v: WasmVariant): string {
  // In range after rounding (|x·s| ≤ 127), where both truncations agree.
  const truncS = v === "relaxed"
    ? "i32x4.relaxed_trunc_f32x4_s"
    : "i32x4.trunc_sat_f32x4_s";
  return `
(func (export "quantize_rows") (param $x i32) (param $rows i32) (param $k i32) (param $ldx i32)
  (param $out i32) (param $kpad i32) (param $invs i32) (param $sums i32) (param $eps f32)
  (local $i i32) (local $kk i32) (local $k16 i32) (local $k4 i32) (local $xp i32) (local $op i32)
  (local $m f32) (local $s f32) (local $q i32) (local $sum i32)
  (local $mv v128) (local $sv v128) (local $acc v128) (local $q8 v128)
  (local $mv0 v128) (local $mv1 v128) (local $mv2 v128) (local $mv3 v128)
  (local.set $k16 (i32.and (local.get $k) (i32.const -16)))
  (local.set $k4 (i32.and (local.get $k) (i32.const -4)))
  (local.set $ldx (i32.shl (local.get $ldx) (i32.const 2)))
  (block $end (loop $rowsloop
    (br_if $end (i32.ge_u (local.get $i) (local.get $rows)))
    (local.set $xp (i32.add (local.get $x) (i32.mul (local.get $i) (local.get $ldx))))
    (local.set $op (i32.add (local.get $out) (i32.mul (local.get $i) (local.get $kpad))))
    ;; absmax: four chains of pmax (one instruction each; NaN handling is not needed)
    ${
    range(4).map((c) => `(local.set $mv${c} (v128.const i64x2 0 0))`).join(" ")
  }
    (local.set $kk (i32.const 0))
    (block $m16end (loop $m16loop
      (br_if $m16end (i32.ge_u (local.get $kk) (local.get $k16)))
      ${
    range(4).map((c) =>
      `(local.set $mv${c} (f32x4.pmax (local.get $mv${c}) (f32x4.abs (v128.load offset=${
        16 * c
      } (i32.add (local.get $xp) (i32.shl (local.get $kk) (i32.const 2)))))))`
    ).join("\n")
  }
      (local.set $kk (i32.add (local.get $kk) (i32.const 16)))
      (br $m16loop)))
    (block $mend (loop $mloop
      (br_if $mend (i32.ge_u (local.get $kk) (local.get $k4)))
      (local.set $mv0 (f32x4.pmax (local.get $mv0)
        (f32x4.abs (v128.load (i32.add (local.get $xp) (i32.shl (local.get $kk) (i32.const 2)))))))
      (local.set $kk (i32.add (local.get $kk) (i32.const 4)))
      (br $mloop)))
    (local.set $mv (f32x4.pmax (f32x4.pmax (local.get $mv0) (local.get $mv1))
      (f32x4.pmax (local.get $mv2) (local.get $mv3))))
    (local.set $m (f32.max (f32.max (f32x4.extract_lane 0 (local.get $mv)) (f32x4.extract_lane 1 (local.get $mv)))
      (f32.max (f32x4.extract_lane 2 (local.get $mv)) (f32x4.extract_lane 3 (local.get $mv)))))
    (block $rend (loop $rloop
      (br_if $rend (i32.ge_u (local.get $kk) (local.get $k)))
      (local.set $m (f32.max (local.get $m)
        (f32.abs (f32.load (i32.add (local.get $xp) (i32.shl (local.get $kk) (i32.const 2)))))))
      (local.set $kk (i32.add (local.get $kk) (i32.const 1)))
      (br $rloop)))
    (local.set $m (f32.max (local.get $m) (local.get $eps)))
    (local.set $s (f32.div (f32.const 127) (local.get $m)))
    (f32.store (i32.add (local.get $invs) (i32.shl (local.get $i) (i32.const 2)))
      (f32.div (local.get $m) (f32.const 127)))
    (local.set $sv (f32x4.splat (local.get $s)))
    ;; quantize 16 at a time; the saturating narrows clamp to [-128, 127]
    (local.set $acc (v128.const i64x2 0 0))
    (local.set $kk (i32.const 0))
    (block $qend (loop $qloop
      (br_if $qend (i32.ge_u (local.get $kk) (local.get $k16)))
      (local.set $q8 (i8x16.narrow_i16x8_s
        (i16x8.narrow_i32x4_s
          (${truncS} (f32x4.nearest (f32x4.mul (local.get $sv)
            (v128.load (i32.add (local.get $xp) (i32.shl (local.get $kk) (i32.const 2)))))))
          (${truncS} (f32x4.nearest (f32x4.mul (local.get $sv)
            (v128.load offset=16 (i32.add (local.get $xp) (i32.shl (local.get $kk) (i32.const 2))))))))
        (i16x8.narrow_i32x4_s
          (${truncS} (f32x4.nearest (f32x4.mul (local.get $sv)
            (v128.load offset=32 (i32.add (local.get $xp) (i32.shl (local.get $kk) (i32.const 2)))))))
          (${truncS} (f32x4.nearest (f32x4.mul (local.get $sv)
            (v128.load offset=48 (i32.add (local.get $xp) (i32.shl (local.get $kk) (i32.const 2))))))))))
      (v128.store (i32.add (local.get $op) (local.get $kk)) (local.get $q8))
      (local.set $acc (i32x4.add (local.get $acc)
        (i32x4.extadd_pairwise_i16x8_s (i16x8.extadd_pairwise_i8x16_s (local.get $q8)))))
      (local.set $kk (i32.add (local.get $kk) (i32.const 16)))
      (br $qloop)))
    (local.set $sum ${hsum("$acc")})
    (block $send (loop $sloop
      (br_if $send (i32.ge_u (local.get $kk) (local.get $k)))
      (local.set $q (i32.trunc_sat_f32_s (f32.nearest (f32.mul (local.get $s)
        (f32.load (i32.add (local.get $xp) (i32.shl (local.get $kk) (i32.const 2))))))))
      (if (i32.gt_s (local.get $q) (i32.const 127)) (then (local.set $q (i32.const 127))))
      (if (i32.lt_s (local.get $q) (i32.const -128)) (then (local.set $q (i32.const -128))))
      (i32.store8 (i32.add (local.get $op) (local.get $kk)) (local.get $q))
      (local.set $sum (i32.add (local.get $sum) (local.get $q)))
      (local.set $kk (i32.add (local.get $kk) (i32.const 1)))
      (br $sloop)))
    (memory.fill (i32.add (local.get $op) (local.get $k)) (i32.const 0)
      (i32.sub (local.get $kpad) (local.get $k)))
    (i32.store (i32.add (local.get $sums) (i32.shl (local.get $i) (i32.const 2))) (local.get $sum))
    (local.set $i (i32.add (local.get $i) (i32.const 1)))
    (br $rowsloop))))`;
}

/**
 * Ternarizes and packs f32 rows: code = clamp(round(w·inv), −1, 1) + 1 (round
 * half to even), in the layout of the ternary kernels; the tail block of a
 * row is padded with code 1 (weight 0).
 */
function packTernary(v: WasmVariant): string {
  const truncS = v === "relaxed"
    ? "i32x4.relaxed_trunc_f32x4_s"
    : "i32x4.trunc_sat_f32x4_s";
  // Codes 0..2 of four f32x4 (16 weights) at byte offset `off` from $sp.
  const quad = (off: number) =>
    `(${truncS} (f32x4.add (local.get $one) (f32x4.pmin (local.get $one) (f32x4.pmax (local.get $neg)
      (f32x4.nearest (f32x4.mul (local.get $iv) (v128.load offset=${off} (local.get $sp))))))))`;
  const group = (j: number) =>
    `(i8x16.narrow_i16x8_s
      (i16x8.narrow_i32x4_s ${quad(64 * j)} ${quad(64 * j + 16)})
      (i16x8.narrow_i32x4_s ${quad(64 * j + 32)} ${quad(64 * j + 48)}))`;
  return `
(func (export "pack_ternary") (param $src i32) (param $rows i32) (param $cols i32) (param $ld i32)
  (param $inv f32) (param $dst i32)
  (local $r i32) (local $rb i32) (local $full i32) (local $sp i32) (local $dp i32) (local $dend i32)
  (local $kk i32) (local $byte i32) (local $shift i32) (local $q f32)
  (local $iv v128) (local $one v128) (local $neg v128)
  (local.set $rb (i32.shr_u (i32.and (i32.add (local.get $cols) (i32.const 63)) (i32.const -64)) (i32.const 2)))
  (local.set $full (i32.shr_u (local.get $cols) (i32.const 6)))
  (local.set $ld (i32.shl (local.get $ld) (i32.const 2)))
  (local.set $iv (f32x4.splat (local.get $inv)))
  (local.set $one (f32x4.splat (f32.const 1)))
  (local.set $neg (f32x4.splat (f32.const -1)))
  (block $end (loop $rowsloop
    (br_if $end (i32.ge_u (local.get $r) (local.get $rows)))
    (local.set $sp (i32.add (local.get $src) (i32.mul (local.get $r) (local.get $ld))))
    (local.set $dp (i32.add (local.get $dst) (i32.mul (local.get $r) (local.get $rb))))
    (local.set $dend (i32.add (local.get $dp) (i32.shl (local.get $full) (i32.const 4))))
    (block $bend (loop $blocks
      (br_if $bend (i32.ge_u (local.get $dp) (local.get $dend)))
      ;; group j holds weights 16j..16j+15 and goes to bits 2j..2j+1 (codes ≤ 2: no carry)
      (v128.store (local.get $dp) (v128.or (v128.or ${group(0)}
        (i16x8.shl ${group(1)} (i32.const 2)))
        (v128.or (i16x8.shl ${group(2)} (i32.const 4)) (i16x8.shl ${
    group(3)
  } (i32.const 6)))))
      (local.set $sp (i32.add (local.get $sp) (i32.const 256)))
      (local.set $dp (i32.add (local.get $dp) (i32.const 16)))
      (br $blocks)))
    ;; tail block: start from all codes 1, then set the weights present
    (if (i32.lt_u (i32.shl (local.get $full) (i32.const 6)) (local.get $cols))
      (then
        (memory.fill (local.get $dp) (i32.const 0x55) (i32.const 16))
        (local.set $kk (i32.const 0))
        (block $tend (loop $tail
          (br_if $tend (i32.ge_u (i32.add (i32.shl (local.get $full) (i32.const 6)) (local.get $kk))
            (local.get $cols)))
          (local.set $q (f32.min (f32.const 1) (f32.max (f32.const -1)
            (f32.nearest (f32.mul (local.get $inv) (f32.load (local.get $sp)))))))
          (local.set $byte (i32.add (local.get $dp) (i32.and (local.get $kk) (i32.const 15))))
          (local.set $shift (i32.shl (i32.shr_u (local.get $kk) (i32.const 4)) (i32.const 1)))
          (i32.store8 (local.get $byte) (i32.or
            (i32.and (i32.load8_u (local.get $byte)) (i32.xor (i32.shl (i32.const 3) (local.get $shift)) (i32.const -1)))
            (i32.shl (i32.add (i32.trunc_sat_f32_s (local.get $q)) (i32.const 1)) (local.get $shift))))
          (local.set $sp (i32.add (local.get $sp) (i32.const 4)))
          (local.set $kk (i32.add (local.get $kk) (i32.const 1)))
          (br $tail)))))
    (local.set $r (i32.add (local.get $r) (i32.const 1)))
    (br $rowsloop))))`;
}

/**
 * The one magnitude of ternary weights `w` (n f32): every |w| is 0 or a, and
 * the result is a (0 when all are 0), or −1 when two nonzero magnitudes
 * differ or a weight is NaN. One pass: the max of |w| and the min of the
 * nonzero |w| (`pmax`/`pmin`: one instruction each, NaN found apart)
 * must agree.
 */
function ternaryScale(): string {
  return `
(func (export "ternary_scale") (param $w i32) (param $n i32) (result f32)
  ${ROW_LOCALS} ${SCRATCH} (local $hi f32) (local $lo f32)
  (local.set $t0 (v128.const i64x2 0 0))
  (local.set $t1 ${f4(Infinity)})
  (local.set $t2 (v128.const i64x2 0 0))
  ${
    rowLoop(get("$n"), (a) =>
      lines([
        set("$r0", `(f32x4.abs ${a.ld("$w")})`),
        set("$t0", `(f32x4.pmax ${get("$t0")} ${get("$r0")})`),
        set(
          "$t1",
          `(f32x4.pmin ${get("$t1")} (v128.bitselect ${f4(Infinity)} ${
            get("$r0")
          } (f32x4.eq ${get("$r0")} (v128.const i64x2 0 0))))`,
        ),
        set(
          "$t2",
          `(v128.or ${get("$t2")} (f32x4.ne ${get("$r0")} ${get("$r0")}))`,
        ),
      ]))
  }
  (local.set $hi ${hmaxF("$t0")})
  (local.set $lo (f32.min (f32.min (f32x4.extract_lane 0 (local.get $t1)) (f32x4.extract_lane 1 (local.get $t1)))
    (f32.min (f32x4.extract_lane 2 (local.get $t1)) (f32x4.extract_lane 3 (local.get $t1)))))
  (select (local.get $hi) (f32.const -1)
    (i32.and (i32.eqz (v128.any_true (local.get $t2)))
      (i32.or (f32.eq (local.get $hi) (f32.const 0)) (f32.eq (local.get $hi) (local.get $lo))))))`;
}

/** Twelve independent FMA chains with no memory traffic: 96 flops per iteration. */
function fmaProbe(v: WasmVariant): string {
  const chains = range(12);
  return `
(func (export "fma_probe") (param $iters i32) (result f32)
  (local $a v128) (local $b v128) (local $s v128)
  ${locals(chains.map((c) => `$p${c}`), "v128")}
  (local.set $a (f32x4.splat (f32.const 0.999)))
  (local.set $b (f32x4.splat (f32.const 0.001)))
  (block $end (loop $l
    (br_if $end (i32.eqz (local.get $iters)))
    ${
    chains.map((c) =>
      `(local.set $p${c} ${
        madd(v, `(local.get $p${c})`, "(local.get $a)", "(local.get $b)")
      })`
    ).join("\n")
  }
    (local.set $iters (i32.sub (local.get $iters) (i32.const 1)))
    (br $l)))
  (local.set $s (local.get $p0))
  ${
    chains.slice(1).map((c) =>
      `(local.set $s (f32x4.add (local.get $s) (local.get $p${c})))`
    ).join(" ")
  }
  (f32x4.extract_lane 0 (local.get $s)))`;
}

// ------------------------------------------------------------------------
// Element-wise and per-row kernels of training (the non-matmul work of a step).

const get = (n: string): string => `(local.get ${n})`;
const set = (n: string, e: string): string => `(local.set ${n} ${e})`;
const i32c = (x: number): string => `(i32.const ${x})`;

/** A WAT f32 literal (`inf` for ±Infinity). */
function f32lit(x: number): string {
  if (x === Infinity) return "inf";
  if (x === -Infinity) return "-inf";
  return String(x);
}

/** An f32x4 constant with all lanes `x`. */
const f4 = (x: number): string =>
  `(v128.const f32x4 ${range(4).map(() => f32lit(x)).join(" ")})`;

/** An f64x2 constant with both lanes `x`. */
const d2 = (x: number): string =>
  `(v128.const f64x2 ${f32lit(x)} ${f32lit(x)})`;

/** Keeps lane 0 of an f32x4 and zeroes the others (scalar tails of reductions). */
const LANE0 = "(v128.const i32x4 -1 0 0 0)";

/** Where {@link hoistConsts} declares and sets a function's constants: after its locals. */
const CONSTS = ";;@consts";

/**
 * Moves every distinct `v128.const` of a function into a local set once at
 * entry (the function marks the place with {@link CONSTS}): V8 rebuilds a
 * v128 constant with several instructions at each use, which inside a loop
 * made the exp-based kernels ~3× slower.
 */
function hoistConsts(func: string): string {
  if (!func.includes(CONSTS)) return func;
  const names = new Map<string, string>();
  const body = func.replace(/\(v128\.const [^()]*\)/g, (c) => {
    let n = names.get(c);
    if (n === undefined) names.set(c, n = `$k${names.size}`);
    return get(n);
  });
  const decl = [...names.values()].map((n) => `(local ${n} v128)`).join(" ");
  const init = [...names].map(([c, n]) => set(n, c)).join("\n  ");
  return body.replace(CONSTS, `${decl}\n  ${init}`);
}

/** f32x4 → i32x4 truncation toward zero (relaxed: NaN lanes are unspecified). */
const truncF32x4 = (v: WasmVariant): string =>
  v === "relaxed" ? "i32x4.relaxed_trunc_f32x4_s" : "i32x4.trunc_sat_f32x4_s";

/** Lower clamp of {@link expF32x4}: below it e^x is taken as 0 (it is < 2^−126). */
const EXP_LO = -87.33654022216797;
/** Upper clamp of {@link expF32x4}: e^x saturates at e^88 ≈ 1.65e38. */
const EXP_HI = 88;
const LOG2E = 1.4426950408889634;
/** ln 2 split so that `n · LN2_HI` is exact for |n| ≤ 127 (Cody–Waite). */
const LN2_HI = 0.693359375;
const LN2_LO = -2.12194440e-4;
/** Cephes `expf` minimax coefficients of `(e^r − 1 − r) / r²` on |r| ≤ ln2/2. */
const EXP_POLY = [
  1.9875691500e-4,
  1.3981999507e-3,
  8.3334519073e-3,
  4.1665795894e-2,
  1.6666665459e-1,
  5.0000001201e-1,
];

/**
 * Statements setting v128 local `dst` to `e^x` lane-wise (x an f32x4
 * expression): `n = round(x·log2 e)`, `r = x − n·ln 2` (Cody–Waite),
 * `e^r ≈ 1 + r + r²·P(r)` (Cephes `expf`, ≈ 1 ulp), times `2^n` built in the
 * exponent bits. x is clamped to [EXP_LO, EXP_HI]; below EXP_LO the result is
 * 0; NaN stays NaN. Uses the locals `$e0`…`$e3`.
 */
function expF32x4(v: WasmVariant, dst: string, x: string): string {
  const poly = EXP_POLY.slice(1).reduce(
    (acc, c) => madd(v, acc, get("$e0"), f4(c)),
    f4(EXP_POLY[0]),
  );
  return lines([
    set("$e3", x),
    set(
      "$e0",
      `(f32x4.pmin (f32x4.pmax ${get("$e3")} ${f4(EXP_LO)}) ${f4(EXP_HI)})`,
    ),
    set("$e1", `(f32x4.nearest (f32x4.mul ${get("$e0")} ${f4(LOG2E)}))`),
    set("$e0", madd(v, get("$e1"), f4(-LN2_HI), get("$e0"))),
    set("$e0", madd(v, get("$e1"), f4(-LN2_LO), get("$e0"))),
    set("$e2", poly),
    set(
      "$e2",
      madd(
        v,
        get("$e2"),
        `(f32x4.mul ${get("$e0")} ${get("$e0")})`,
        `(f32x4.add ${get("$e0")} ${f4(1)})`,
      ),
    ),
    set(
      "$e1",
      `(i32x4.shl (i32x4.add (${truncF32x4(v)} ${
        get("$e1")
      }) (v128.const i32x4 127 127 127 127)) (i32.const 23))`,
    ),
    set(
      dst,
      `(v128.andnot (f32x4.mul ${get("$e2")} ${get("$e1")}) (f32x4.lt ${
        get("$e3")
      } ${f4(EXP_LO)}))`,
    ),
  ]);
}

/** The v128 scratch locals every generated loop body may use. */
const SCRATCH = locals(
  ["$r0", "$r1", "$r2", "$t0", "$t1", "$t2", "$t3", "$e0", "$e1", "$e2", "$e3"],
  "v128",
);

/**
 * How a loop body addresses element j of a row: in the vector pass `ld`
 * loads four elements and `st` stores four; in the scalar tail `ld` splats
 * one element to all lanes and `st` stores lane 0, so one body serves both.
 * `red` masks a value before it is added into a lane-wise sum (lane 0 only in
 * the tail, where all lanes hold the same element).
 */
interface Access {
  readonly ld: (base: string) => string;
  readonly st: (base: string, value: string) => string;
  readonly red: (value: string) => string;
}

const VEC: Access = {
  ld: (b) => `(v128.load (i32.add ${get(b)} ${get("$j")}))`,
  st: (b, x) => `(v128.store (i32.add ${get(b)} ${get("$j")}) ${x})`,
  red: (x) => x,
};
const TAIL: Access = {
  ld: (b) => `(v128.load32_splat (i32.add ${get(b)} ${get("$j")}))`,
  st: (b, x) =>
    `(f32.store (i32.add ${get(b)} ${get("$j")}) (f32x4.extract_lane 0 ${x}))`,
  red: (x) => `(v128.and ${x} ${LANE0})`,
};

/**
 * A loop over the f32 elements `[0, len)` of a row: byte offset `$j` steps by
 * 16 while four elements remain, then by 4. `body` is instantiated for both.
 * Needs the i32 locals `$j`, `$jend`, `$j16`.
 */
function rowLoop(len: string, body: (a: Access) => string): string {
  return lines([
    set("$jend", `(i32.shl ${len} (i32.const 2))`),
    set("$j16", `(i32.and ${get("$jend")} (i32.const -16))`),
    set("$j", i32c(0)),
    `(block $vd (loop $vl
      (br_if $vd (i32.ge_u ${get("$j")} ${get("$j16")}))
      ${body(VEC)}
      (local.set $j (i32.add ${get("$j")} (i32.const 16)))
      (br $vl)))`,
    `(block $sd (loop $sl
      (br_if $sd (i32.ge_u ${get("$j")} ${get("$jend")}))
      ${body(TAIL)}
      (local.set $j (i32.add ${get("$j")} (i32.const 4)))
      (br $sl)))`,
  ]);
}

const ROW_LOCALS = locals(["$j", "$jend", "$j16"], "i32");

/** Sum of the four f32 lanes of an f32x4 expression held in local `x`. */
const hsumF = (x: string): string =>
  `(f32.add (f32.add (f32x4.extract_lane 0 ${get(x)}) (f32x4.extract_lane 1 ${
    get(x)
  })) (f32.add (f32x4.extract_lane 2 ${get(x)}) (f32x4.extract_lane 3 ${
    get(x)
  })))`;
/** Max of the four f32 lanes (NaN-propagating). */
const hmaxF = (x: string): string =>
  `(f32.max (f32.max (f32x4.extract_lane 0 ${get(x)}) (f32x4.extract_lane 1 ${
    get(x)
  })) (f32.max (f32x4.extract_lane 2 ${get(x)}) (f32x4.extract_lane 3 ${
    get(x)
  })))`;
/** Sum of the two f64 lanes. */
const hsumD = (x: string): string =>
  `(f64.add (f64x2.extract_lane 0 ${get(x)}) (f64x2.extract_lane 1 ${get(x)}))`;
/** The low two f32 lanes of an f32x4, as f64x2. */
const promoteLo = (x: string): string => `(f64x2.promote_low_f32x4 ${x})`;
/** The high two f32 lanes of an f32x4 (a local), as f64x2. */
const promoteHi = (x: string): string =>
  `(f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 ${
    get(x)
  } ${get(x)}))`;
/** f32x4 of two f64x2 (low lanes from `lo`, high from `hi`), each rounded to f32. */
const demote2 = (lo: string, hi: string): string =>
  `(i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (f32x4.demote_f64x2_zero ${lo}) (f32x4.demote_f64x2_zero ${hi}))`;

/**
 * An element-wise kernel over `n` f32 elements: `params` are the pointer
 * parameters (byte offsets) followed by the scalars, `body` computes the
 * outputs into locals from the {@link Access} of the pass.
 */
function mapKernel(
  name: string,
  params: string,
  init: string,
  extraLocals: string,
  body: (a: Access) => string,
): string {
  return `
(func $${name} (export "${name}") ${params} (param $n i32)
  ${ROW_LOCALS} ${SCRATCH} ${extraLocals} ${CONSTS}
  ${init}
  ${rowLoop(get("$n"), body)})`;
}

/**
 * The previous value of output `o` in a kernel with an `$acc` parameter: `o`
 * itself when accumulating, else 0 (so the kernel overwrites an output whose
 * zeros were never written).
 */
const prev = (a: Access, o: string): string =>
  `(select (result v128) ${a.ld(o)} ${f4(0)} (local.get $acc))`;

/** The element-wise kernels (fill, add, products, clamp, activations). */
function elementwiseKernels(v: WasmVariant): string {
  const sig = (x: string) =>
    // σ(x) = 1 / (1 + e^(−x)) into $r1 (x a v128 expression; clobbers $e*).
    lines([
      expF32x4(v, "$r1", `(f32x4.neg ${x})`),
      set("$r1", `(f32x4.div ${f4(1)} (f32x4.add ${f4(1)} ${get("$r1")}))`),
    ]);
  return lines([
    mapKernel(
      "fill_f32",
      "(param $o i32) (param $value f32)",
      set("$t3", "(f32x4.splat (local.get $value))"),
      "",
      (a) => a.st("$o", get("$t3")),
    ),
    mapKernel(
      "add_f32",
      "(param $a i32) (param $b i32) (param $o i32)",
      "",
      "",
      (a) => a.st("$o", `(f32x4.add ${a.ld("$a")} ${a.ld("$b")})`),
    ),
    mapKernel(
      "mul_f32",
      "(param $a i32) (param $b i32) (param $o i32)",
      "",
      "",
      (a) => a.st("$o", `(f32x4.mul ${a.ld("$a")} ${a.ld("$b")})`),
    ),
    mapKernel(
      "mul_acc_f32",
      "(param $a i32) (param $b i32) (param $o i32) (param $acc i32)",
      "",
      "",
      (a) => a.st("$o", madd(v, a.ld("$a"), a.ld("$b"), prev(a, "$o"))),
    ),
    mapKernel(
      "axmb_f32",
      "(param $x i32) (param $o i32) (param $s f32) (param $c f32) (param $acc i32)",
      lines([
        set("$t2", "(f32x4.splat (local.get $s))"),
        set("$t3", "(f32x4.splat (local.get $c))"),
      ]),
      "",
      (a) =>
        a.st(
          "$o",
          madd(
            v,
            get("$t2"),
            `(f32x4.sub ${a.ld("$x")} ${get("$t3")})`,
            prev(a, "$o"),
          ),
        ),
    ),
    mapKernel(
      "clamp_f32",
      "(param $o i32) (param $limit f32)",
      lines([
        set("$t2", "(f32x4.splat (local.get $limit))"),
        set("$t3", "(f32x4.neg (local.get $t2))"),
      ]),
      "",
      (a) =>
        a.st(
          "$o",
          `(f32x4.pmax (f32x4.pmin ${a.ld("$o")} ${get("$t2")}) ${get("$t3")})`,
        ),
    ),
    mapKernel(
      "silu_f32",
      "(param $x i32) (param $o i32)",
      "",
      "",
      (a) =>
        lines([
          set("$r0", a.ld("$x")),
          sig(get("$r0")),
          a.st("$o", `(f32x4.mul ${get("$r0")} ${get("$r1")})`),
        ]),
    ),
    mapKernel(
      "silu_bwd_f32",
      "(param $dy i32) (param $x i32) (param $dx i32) (param $acc i32)",
      "",
      "",
      (a) =>
        lines([
          set("$r0", a.ld("$x")),
          sig(get("$r0")),
          // dx += dy · σ · (1 + x·(1 − σ))
          set(
            "$r2",
            madd(
              v,
              get("$r0"),
              `(f32x4.sub ${f4(1)} ${get("$r1")})`,
              f4(1),
            ),
          ),
          a.st(
            "$dx",
            madd(
              v,
              `(f32x4.mul ${a.ld("$dy")} ${get("$r1")})`,
              get("$r2"),
              prev(a, "$dx"),
            ),
          ),
        ]),
    ),
    mapKernel(
      "relu2_f32",
      "(param $x i32) (param $o i32)",
      "",
      "",
      (a) =>
        lines([
          set("$r0", `(f32x4.pmax ${a.ld("$x")} ${f4(0)})`),
          a.st("$o", `(f32x4.mul ${get("$r0")} ${get("$r0")})`),
        ]),
    ),
    mapKernel(
      "relu2_bwd_f32",
      "(param $dy i32) (param $x i32) (param $dx i32) (param $acc i32)",
      "",
      "",
      (a) =>
        a.st(
          "$dx",
          madd(
            v,
            `(f32x4.mul ${a.ld("$dy")} ${f4(2)})`,
            `(f32x4.pmax ${a.ld("$x")} ${f4(0)})`,
            prev(a, "$dx"),
          ),
        ),
    ),
  ]);
}

/** Reductions and quantizers computed in f64, so they match the TypeScript quantizers bit for bit. */
function f64Kernels(_v: WasmVariant): string {
  // (m > 0 lanes of an f64x2 compare) → i32x4 masks of four elements.
  const narrow = (lo: string, hi: string) =>
    `(i8x16.shuffle 0 1 2 3 8 9 10 11 16 17 18 19 24 25 26 27 ${lo} ${hi})`;
  // Σ f(x) (squared when `square`) in f64: exact products, f64 partial sums.
  const reduce = (
    name: string,
    f: (x: string) => string,
    square: boolean,
  ) => {
    const sq = (x: string) => square ? `(f64x2.mul ${x} ${x})` : x;
    return `
(func (export "${name}") (param $p i32) (param $n i32) (result f64)
  ${ROW_LOCALS} ${SCRATCH}
  ${CONSTS}
  ${
      rowLoop(get("$n"), (a) =>
        lines([
          set("$r0", a.red(f(a.ld("$p")))),
          set("$t0", `(f64x2.add ${get("$t0")} ${sq(promoteLo(get("$r0")))})`),
          set("$t1", `(f64x2.add ${get("$t1")} ${sq(promoteHi("$r0"))})`),
        ]))
    }
  (f64.add ${hsumD("$t0")} ${hsumD("$t1")}))`;
  };
  const abssum = reduce("abs_sum_f64", (x) => `(f32x4.abs ${x})`, false);
  const sumsq = reduce("sum_sq_f64", (x) => x, true);
  return lines([
    abssum,
    sumsq,
    // o = (w/d > ½ ? γ : w/d < −½ ? −γ : 0), the quotient in f64 as absmeanTernary.
    mapKernel(
      "ternary_fq",
      "(param $w i32) (param $o i32) (param $gamma f32) (param $d f64)",
      lines([
        set("$t2", "(f64x2.splat (local.get $d))"),
        set("$t3", "(f32x4.splat (local.get $gamma))"),
      ]),
      "",
      (a) =>
        lines([
          set("$r0", a.ld("$w")),
          set("$r1", `(f64x2.div ${promoteLo(get("$r0"))} ${get("$t2")})`),
          set("$r2", `(f64x2.div ${promoteHi("$r0")} ${get("$t2")})`),
          a.st(
            "$o",
            `(v128.or
              (v128.and ${
              narrow(
                `(f64x2.gt ${get("$r1")} ${d2(0.5)})`,
                `(f64x2.gt ${get("$r2")} ${d2(0.5)})`,
              )
            } ${get("$t3")})
              (v128.and ${
              narrow(
                `(f64x2.lt ${get("$r1")} ${d2(-0.5)})`,
                `(f64x2.lt ${get("$r2")} ${d2(-0.5)})`,
              )
            } (f32x4.neg ${get("$t3")})))`,
          ),
        ]),
    ),
    // o = fround(keep·x + λ·o) in f64 (the STE blend of src/core/ste.ts).
    mapKernel(
      "blend_f64",
      "(param $x i32) (param $o i32) (param $keep f64) (param $lambda f64)",
      lines([
        set("$t2", "(f64x2.splat (local.get $keep))"),
        set("$t3", "(f64x2.splat (local.get $lambda))"),
      ]),
      "",
      (a) =>
        lines([
          set("$r0", a.ld("$x")),
          set("$r1", a.ld("$o")),
          a.st(
            "$o",
            demote2(
              `(f64x2.add (f64x2.mul ${get("$t2")} ${
                promoteLo(get("$r0"))
              }) (f64x2.mul ${get("$t3")} ${promoteLo(get("$r1"))}))`,
              `(f64x2.add (f64x2.mul ${get("$t2")} ${
                promoteHi("$r0")
              }) (f64x2.mul ${get("$t3")} ${promoteHi("$r1")}))`,
            ),
          ),
        ]),
    ),
    adamwKernel(),
    actQuantKernel(),
  ]);
}

/**
 * AdamW in PyTorch's order, every intermediate in f64 and every stored value
 * rounded to f32 where `adamwStep` stores it: `g ← fround(g·clip)` (only with
 * `doClip`), `p ← fround(p·decay)`, `m ← fround(β1·m + (1−β1)·g)`,
 * `v ← fround(β2·v + ((1−β2)·g)·g)`, `p ← fround(p − (η·m) / (√v / c2 + ε))`.
 */
function adamwKernel(): string {
  const both = (f: (p: (l: string) => string) => string) =>
    demote2(f((l) => promoteLo(get(l))), f((l) => promoteHi(l)));
  // The f64 parameters, each splat once into a local `$S<name>`.
  const scalars = [
    "clip",
    "decay",
    "b1",
    "ob1",
    "b2",
    "ob2",
    "stepSize",
    "c2",
    "eps",
  ];
  const S = (n: string) => get(`$S${n.slice(1)}`);
  return mapKernel(
    "adamw_f64",
    `(param $p i32) (param $g i32) (param $m i32) (param $v i32)
     (param $clip f64) (param $doClip i32) (param $decay f64) (param $b1 f64) (param $ob1 f64)
     (param $b2 f64) (param $ob2 f64) (param $stepSize f64) (param $c2 f64) (param $eps f64)`,
    scalars.map((n) => set(`$S${n}`, `(f64x2.splat (local.get $${n}))`))
      .join("\n"),
    locals(scalars.map((n) => `$S${n}`), "v128"),
    (a) =>
      lines([
        set("$r0", a.ld("$g")),
        `(if (local.get $doClip) (then
          ${set("$r0", both((h) => `(f64x2.mul ${h("$r0")} ${S("$clip")})`))}
          ${a.st("$g", get("$r0"))}))`,
        set("$t0", a.ld("$p")),
        set("$t0", both((h) => `(f64x2.mul ${h("$t0")} ${S("$decay")})`)),
        set("$t1", a.ld("$m")),
        set(
          "$t1",
          both((h) =>
            `(f64x2.add (f64x2.mul ${S("$b1")} ${h("$t1")}) (f64x2.mul ${
              S("$ob1")
            } ${h("$r0")}))`
          ),
        ),
        set("$t2", a.ld("$v")),
        set(
          "$t2",
          both((h) =>
            `(f64x2.add (f64x2.mul ${S("$b2")} ${
              h("$t2")
            }) (f64x2.mul (f64x2.mul ${S("$ob2")} ${h("$r0")}) ${h("$r0")}))`
          ),
        ),
        a.st("$m", get("$t1")),
        a.st("$v", get("$t2")),
        a.st(
          "$p",
          both((h) =>
            `(f64x2.sub ${h("$t0")} (f64x2.div (f64x2.mul ${S("$stepSize")} ${
              h("$t1")
            }) (f64x2.add (f64x2.div (f64x2.sqrt ${h("$t2")}) ${S("$c2")}) ${
              S("$eps")
            })))`
          ),
        ),
      ]),
  );
}

/**
 * Per-token int8 fake quantization (λ = 1) of `rows` rows of `cols`: per row
 * `s = fround(127 / max(max|x|, 1e-5))` in f64, `q = clamp(roundHalfEven(x·s),
 * −128, 127)` on the exact f64 product, `o = fround(q / s)`. Returns 1 (and
 * stops) at the first row holding NaN or ±∞, else 0.
 */
function actQuantKernel(): string {
  return `
(func (export "act_quant") (param $x i32) (param $o i32) (param $rows i32) (param $cols i32) (result i32)
  ${ROW_LOCALS} ${SCRATCH} (local $r i32) (local $xp i32) (local $op i32) (local $m f32) (local $s f32)
  ${CONSTS}
  (block $end (loop $rowsloop
    (br_if $end (i32.ge_u (local.get $r) (local.get $rows)))
    (local.set $xp (i32.add (local.get $x) (i32.mul (local.get $r) (i32.shl (local.get $cols) (i32.const 2)))))
    (local.set $op (i32.add (local.get $o) (i32.mul (local.get $r) (i32.shl (local.get $cols) (i32.const 2)))))
    ;; absmax by pmax (one instruction; f32x4.max's NaN handling costs ~8 in a
    ;; dependency chain), NaN flagged apart in $t3; ∞ survives pmax.
    (local.set $t0 (v128.const i64x2 0 0))
    (local.set $t3 (v128.const i64x2 0 0))
    ${
    rowLoop(get("$cols"), (a) =>
      lines([
        set("$r0", a.ld("$xp")),
        set("$t0", `(f32x4.pmax ${get("$t0")} (f32x4.abs ${get("$r0")}))`),
        set(
          "$t3",
          `(v128.or ${get("$t3")} (f32x4.ne ${get("$r0")} ${get("$r0")}))`,
        ),
      ]))
  }
    (local.set $m ${hmaxF("$t0")})
    (if (i32.or (v128.any_true (local.get $t3)) (f32.eq (local.get $m) (f32.const inf)))
      (then (return (i32.const 1))))
    (local.set $s (f32.demote_f64 (f64.div (f64.const 127)
      (f64.max (f64.promote_f32 (local.get $m)) (f64.const 1e-5)))))
    (local.set $t1 (f64x2.splat (f64.promote_f32 (local.get $s))))
    (local.set $t2 (f32x4.splat (local.get $s)))
    ${
    rowLoop(get("$cols"), (a) =>
      lines([
        set("$r0", a.ld("$xp")),
        set(
          "$r1",
          `(f64x2.pmax (f64x2.pmin (f64x2.nearest (f64x2.mul ${
            promoteLo(get("$r0"))
          } ${get("$t1")})) ${d2(127)}) ${d2(-128)})`,
        ),
        set(
          "$r2",
          `(f64x2.pmax (f64x2.pmin (f64x2.nearest (f64x2.mul ${
            promoteHi("$r0")
          } ${get("$t1")})) ${d2(127)}) ${d2(-128)})`,
        ),
        a.st(
          "$op",
          `(f32x4.div ${demote2(get("$r1"), get("$r2"))} ${get("$t2")})`,
        ),
      ]))
  }
    (local.set $r (i32.add (local.get $r) (i32.const 1)))
    (br $rowsloop)))
  (i32.const 0))`;
}

/** `local = base + r · len · 4` (the byte address of row r). */
const rowAddr = (local: string, base: string, r: string, len: string) =>
  set(
    local,
    `(i32.add ${get(base)} (i32.mul ${get(r)} (i32.shl ${
      get(len)
    } (i32.const 2))))`,
  );

/** A loop over rows `$r` in `[0, rows)`. */
const forRows = (rows: string, body: string): string => `
  (local.set $r (i32.const 0))
  (block $rend (loop $rloop
    (br_if $rend (i32.ge_u (local.get $r) ${rows}))
    ${body}
    (local.set $r (i32.add (local.get $r) (i32.const 1)))
    (br $rloop)))`;

/** RMSNorm forward and backward (f32 SIMD; the per-row scalars in f64). */
function normKernels(v: WasmVariant): string {
  const fwd = `
(func (export "rmsnorm_fwd") (param $x i32) (param $g i32) (param $o i32) (param $rstd i32)
  (param $rows i32) (param $dim i32) (param $eps f64)
  ${ROW_LOCALS} ${SCRATCH} (local $r i32) (local $xp i32) (local $op i32) (local $rs f64)
  ${CONSTS}
  ${
    forRows(
      get("$rows"),
      lines([
        rowAddr("$xp", "$x", "$r", "$dim"),
        rowAddr("$op", "$o", "$r", "$dim"),
        set("$t0", "(v128.const i64x2 0 0)"),
        rowLoop(get("$dim"), (a) =>
          lines([
            set("$r0", a.red(a.ld("$xp"))),
            set("$t0", madd(v, get("$r0"), get("$r0"), get("$t0"))),
          ])),
        set(
          "$rs",
          `(f64.div (f64.const 1) (f64.sqrt (f64.add (f64.div (f64.promote_f32 ${
            hsumF("$t0")
          }) (f64.convert_i32_u (local.get $dim))) (local.get $eps))))`,
        ),
        `(f32.store (i32.add (local.get $rstd) (i32.shl (local.get $r) (i32.const 2))) (f32.demote_f64 (local.get $rs)))`,
        set("$t1", "(f32x4.splat (f32.demote_f64 (local.get $rs)))"),
        rowLoop(get("$dim"), (a) =>
          a.st(
            "$op",
            `(f32x4.mul (f32x4.mul ${a.ld("$xp")} ${get("$t1")}) ${
              a.ld("$g")
            })`,
          )),
      ]),
    )
  })`;
  const bwd = `
(func (export "rmsnorm_bwd") (param $dy i32) (param $x i32) (param $g i32) (param $rstd i32)
  (param $dx i32) (param $dg i32) (param $rows i32) (param $dim i32) (param $acc i32)
  ${ROW_LOCALS} ${SCRATCH} (local $r i32) (local $xp i32) (local $dyp i32) (local $dxp i32)
  (local $rs f64) (local $c f64)
  ${CONSTS}
  ${
    forRows(
      get("$rows"),
      lines([
        rowAddr("$xp", "$x", "$r", "$dim"),
        rowAddr("$dyp", "$dy", "$r", "$dim"),
        rowAddr("$dxp", "$dx", "$r", "$dim"),
        set(
          "$rs",
          `(f64.promote_f32 (f32.load (i32.add (local.get $rstd) (i32.shl (local.get $r) (i32.const 2)))))`,
        ),
        set("$t0", "(v128.const i64x2 0 0)"),
        rowLoop(get("$dim"), (a) =>
          set(
            "$t0",
            `(f32x4.add ${get("$t0")} ${
              a.red(
                `(f32x4.mul (f32x4.mul ${a.ld("$dyp")} ${a.ld("$g")}) ${
                  a.ld("$xp")
                })`,
              )
            })`,
          )),
        // c = r³ · Σ dy·g·x / dim
        set(
          "$c",
          `(f64.div (f64.mul (f64.mul (f64.mul (local.get $rs) (local.get $rs)) (local.get $rs))
        (f64.promote_f32 ${
            hsumF("$t0")
          })) (f64.convert_i32_u (local.get $dim)))`,
        ),
        set("$t1", "(f32x4.splat (f32.demote_f64 (local.get $rs)))"),
        set("$t2", "(f32x4.splat (f32.demote_f64 (local.get $c)))"),
        rowLoop(get("$dim"), (a) =>
          lines([
            set("$r0", a.ld("$dyp")),
            set("$r1", a.ld("$xp")),
            a.st(
              "$dg",
              madd(
                v,
                `(f32x4.mul ${get("$r0")} ${get("$r1")})`,
                get("$t1"),
                a.ld("$dg"),
              ),
            ),
            a.st(
              "$dxp",
              `(f32x4.add ${prev(a, "$dxp")} (f32x4.sub (f32x4.mul (f32x4.mul ${
                get("$t1")
              } ${a.ld("$g")}) ${get("$r0")}) (f32x4.mul ${get("$t2")} ${
                get("$r1")
              })))`,
            ),
          ])),
      ]),
    )
  })`;
  return lines([fwd, bwd]);
}

/** Softmax kernels: one row of the cross-entropy, and the causal rows of attention. */
function softmaxKernels(v: WasmVariant): string {
  // p = e^(x − max) / Σ; stats (f64) = [max, Σ e^(x − max), Σ x].
  const row = `
(func $softmax_row (export "softmax_row") (param $x i32) (param $p i32) (param $n i32) (param $stats i32)
  ${ROW_LOCALS} ${SCRATCH} (local $m f32) (local $sum f64)
  ${CONSTS}
  (local.set $t0 ${f4(-Infinity)})
  ${
    rowLoop(get("$n"), (a) =>
      lines([
        set("$r0", a.ld("$x")),
        set("$t0", `(f32x4.pmax ${get("$t0")} ${get("$r0")})`),
        set("$r0", a.red(get("$r0"))),
        set("$t1", `(f64x2.add ${get("$t1")} ${promoteLo(get("$r0"))})`),
        set("$t2", `(f64x2.add ${get("$t2")} ${promoteHi("$r0")})`),
      ]))
  }
  (local.set $m ${hmaxF("$t0")})
  (f64.store offset=16 (local.get $stats) (f64.add ${hsumD("$t1")} ${
    hsumD("$t2")
  }))
  (local.set $t3 (f32x4.splat (local.get $m)))
  (local.set $t1 (v128.const i64x2 0 0))
  (local.set $t2 (v128.const i64x2 0 0))
  ${
    rowLoop(get("$n"), (a) =>
      lines([
        expF32x4(v, "$r1", `(f32x4.sub ${a.ld("$x")} ${get("$t3")})`),
        a.st("$p", get("$r1")),
        set("$r1", a.red(get("$r1"))),
        set("$t1", `(f64x2.add ${get("$t1")} ${promoteLo(get("$r1"))})`),
        set("$t2", `(f64x2.add ${get("$t2")} ${promoteHi("$r1")})`),
      ]))
  }
  (local.set $sum (f64.add ${hsumD("$t1")} ${hsumD("$t2")}))
  (local.set $t3 (f32x4.splat (f32.demote_f64 (f64.div (f64.const 1) (local.get $sum)))))
  ${
    rowLoop(get("$n"), (a) =>
      a.st("$p", `(f32x4.mul ${a.ld("$p")} ${get("$t3")})`))
  }
  (f64.store (local.get $stats) (f64.promote_f32 (local.get $m)))
  (f64.store offset=8 (local.get $stats) (local.get $sum)))`;
  // Row r of [rows, T] is query position t = r mod T: p_u = softmax_u(scale·s_u) for u ≤ t, 0 after.
  const causal = `
(func (export "softmax_causal") (param $s i32) (param $rows i32) (param $T i32) (param $scale f32)
  ${ROW_LOCALS} ${SCRATCH} (local $r i32) (local $sp i32) (local $len i32)
  ${CONSTS}
  (local.set $t3 (f32x4.splat (local.get $scale)))
  ${
    forRows(
      get("$rows"),
      lines([
        rowAddr("$sp", "$s", "$r", "$T"),
        set(
          "$len",
          "(i32.add (i32.rem_u (local.get $r) (local.get $T)) (i32.const 1))",
        ),
        set("$t0", f4(-Infinity)),
        rowLoop(get("$len"), (a) =>
          set(
            "$t0",
            `(f32x4.pmax ${get("$t0")} (f32x4.mul ${a.ld("$sp")} ${
              get("$t3")
            }))`,
          )),
        set("$t2", `(f32x4.splat ${hmaxF("$t0")})`),
        set("$t1", "(v128.const i64x2 0 0)"),
        rowLoop(get("$len"), (a) =>
          lines([
            expF32x4(
              v,
              "$r1",
              `(f32x4.sub (f32x4.mul ${a.ld("$sp")} ${get("$t3")}) ${
                get("$t2")
              })`,
            ),
            a.st("$sp", get("$r1")),
            set("$t1", `(f32x4.add ${get("$t1")} ${a.red(get("$r1"))})`),
          ])),
        set("$t2", `(f32x4.splat (f32.div (f32.const 1) ${hsumF("$t1")}))`),
        rowLoop(
          get("$len"),
          (a) => a.st("$sp", `(f32x4.mul ${a.ld("$sp")} ${get("$t2")})`),
        ),
        `(memory.fill (i32.add (local.get $sp) (i32.shl (local.get $len) (i32.const 2))) (i32.const 0)
      (i32.shl (i32.sub (local.get $T) (local.get $len)) (i32.const 2)))`,
      ]),
    )
  })`;
  // Row r is position t = r mod T: dS_u = P_u·(dP_u − Σ_{u'≤t} P_u'·dP_u')·scale
  // for u ≤ t and 0 after, in place of dP (whose entries past t are never read).
  const causalBwd = `
(func (export "softmax_bwd") (param $p i32) (param $dp i32) (param $rows i32) (param $T i32) (param $scale f32)
  ${ROW_LOCALS} ${SCRATCH} (local $r i32) (local $pp i32) (local $dpp i32) (local $len i32)
  ${CONSTS}
  (local.set $t3 (f32x4.splat (local.get $scale)))
  ${
    forRows(
      get("$rows"),
      lines([
        rowAddr("$pp", "$p", "$r", "$T"),
        rowAddr("$dpp", "$dp", "$r", "$T"),
        set(
          "$len",
          "(i32.add (i32.rem_u (local.get $r) (local.get $T)) (i32.const 1))",
        ),
        set("$t0", "(v128.const i64x2 0 0)"),
        rowLoop(get("$len"), (a) =>
          set(
            "$t0",
            `(f32x4.add ${get("$t0")} ${
              a.red(`(f32x4.mul ${a.ld("$pp")} ${a.ld("$dpp")})`)
            })`,
          )),
        set("$t2", `(f32x4.splat ${hsumF("$t0")})`),
        rowLoop(get("$len"), (a) =>
          a.st(
            "$dpp",
            `(f32x4.mul (f32x4.mul ${a.ld("$pp")} (f32x4.sub ${a.ld("$dpp")} ${
              get("$t2")
            })) ${get("$t3")})`,
          )),
        `(memory.fill (i32.add (local.get $dpp) (i32.shl (local.get $len) (i32.const 2))) (i32.const 0)
      (i32.shl (i32.sub (local.get $T) (local.get $len)) (i32.const 2)))`,
      ]),
    )
  })`;
  return lines([row, causal, causalBwd]);
}

/**
 * RoPE with per-position tables C, S of `hd` entries (S signed: the rotation
 * is `y_j = x_j·C_j + x_partner(j)·S_j`; backward passes −S). `neox`: partner
 * of j is j ± hd/2; else j xor 1. `acc`: add into o instead of storing.
 */
function ropeKernel(v: WasmVariant): string {
  const out = (a: Access, o: string, y: string) =>
    a.st(
      o,
      `(select (result v128) (f32x4.add ${y} ${
        a.ld(o)
      }) ${y} (local.get $acc))`,
    );
  // In the vector pass the partners of four interleaved elements are a lane swap.
  const partner = (a: Access, base: string) =>
    a === VEC
      ? `(i8x16.shuffle 4 5 6 7 0 1 2 3 12 13 14 15 8 9 10 11 ${a.ld(base)} ${
        a.ld(base)
      })`
      : `(v128.load32_splat (i32.add ${get(base)} (i32.xor ${
        get("$j")
      } (i32.const 4))))`;
  return `
(func (export "rope") (param $x i32) (param $o i32) (param $rows i32) (param $T i32)
  (param $heads i32) (param $hd i32) (param $cos i32) (param $sin i32) (param $neox i32) (param $acc i32)
  ${ROW_LOCALS} ${SCRATCH} (local $r i32) (local $h i32) (local $half i32)
  (local $xp i32) (local $op i32) (local $cp i32) (local $sp i32)
  (local $xp2 i32) (local $op2 i32) (local $cp2 i32) (local $sp2 i32)
  ${CONSTS}
  (local.set $half (i32.shr_u (local.get $hd) (i32.const 1)))
  ${
    forRows(
      get("$rows"),
      lines([
        set(
          "$cp",
          `(i32.add (local.get $cos) (i32.mul (i32.rem_u (local.get $r) (local.get $T)) (i32.shl (local.get $hd) (i32.const 2))))`,
        ),
        set(
          "$sp",
          `(i32.add (local.get $sin) (i32.mul (i32.rem_u (local.get $r) (local.get $T)) (i32.shl (local.get $hd) (i32.const 2))))`,
        ),
        set(
          "$cp2",
          `(i32.add (local.get $cp) (i32.shl (local.get $half) (i32.const 2)))`,
        ),
        set(
          "$sp2",
          `(i32.add (local.get $sp) (i32.shl (local.get $half) (i32.const 2)))`,
        ),
        set("$h", i32c(0)),
        `(block $hend (loop $hloop
      (br_if $hend (i32.ge_u (local.get $h) (local.get $heads)))
      ${
          set(
            "$xp",
            `(i32.add (local.get $x) (i32.shl (i32.mul (i32.add (i32.mul (local.get $r) (local.get $heads)) (local.get $h)) (local.get $hd)) (i32.const 2)))`,
          )
        }
      ${
          set(
            "$op",
            `(i32.add (local.get $o) (i32.sub (local.get $xp) (local.get $x)))`,
          )
        }
      ${
          set(
            "$xp2",
            `(i32.add (local.get $xp) (i32.shl (local.get $half) (i32.const 2)))`,
          )
        }
      ${
          set(
            "$op2",
            `(i32.add (local.get $op) (i32.shl (local.get $half) (i32.const 2)))`,
          )
        }
      (if (local.get $neox)
        (then
          ${
          rowLoop(get("$half"), (a) =>
            lines([
              set("$r0", a.ld("$xp")),
              set("$r1", a.ld("$xp2")),
              set(
                "$r2",
                madd(
                  v,
                  get("$r1"),
                  a.ld("$sp"),
                  `(f32x4.mul ${get("$r0")} ${a.ld("$cp")})`,
                ),
              ),
              set(
                "$t0",
                madd(
                  v,
                  get("$r0"),
                  a.ld("$sp2"),
                  `(f32x4.mul ${get("$r1")} ${a.ld("$cp2")})`,
                ),
              ),
              out(a, "$op", get("$r2")),
              out(a, "$op2", get("$t0")),
            ]))
        })
        (else
          ${
          rowLoop(get("$hd"), (a) =>
            lines([
              set(
                "$r0",
                madd(
                  v,
                  partner(a, "$xp"),
                  a.ld("$sp"),
                  `(f32x4.mul ${a.ld("$xp")} ${a.ld("$cp")})`,
                ),
              ),
              out(a, "$op", get("$r0")),
            ]))
        }))
      (local.set $h (i32.add (local.get $h) (i32.const 1)))
      (br $hloop)))`,
      ]),
    )
  })`;
}

/** Embedding gather and scatter-add of rows picked by i32 ids (ids checked by the caller). */
const embeddingKernels = `
(func (export "gather_rows") (param $table i32) (param $ids i32) (param $o i32) (param $n i32) (param $dim i32)
  (local $r i32) (local $bytes i32)
  (local.set $bytes (i32.shl (local.get $dim) (i32.const 2)))
  ${
  forRows(
    get("$n"),
    `(memory.copy
      (i32.add (local.get $o) (i32.mul (local.get $r) (local.get $bytes)))
      (i32.add (local.get $table) (i32.mul (i32.load (i32.add (local.get $ids) (i32.shl (local.get $r) (i32.const 2)))) (local.get $bytes)))
      (local.get $bytes))`,
  )
})
(func (export "scatter_add_rows") (param $dy i32) (param $ids i32) (param $dt i32) (param $n i32) (param $dim i32)
  ${ROW_LOCALS} ${SCRATCH} (local $r i32) (local $dyp i32) (local $tp i32)
  ${CONSTS}
  ${
  forRows(
    get("$n"),
    lines([
      rowAddr("$dyp", "$dy", "$r", "$dim"),
      set(
        "$tp",
        `(i32.add (local.get $dt) (i32.mul (i32.load (i32.add (local.get $ids) (i32.shl (local.get $r) (i32.const 2)))) (i32.shl (local.get $dim) (i32.const 2))))`,
      ),
      rowLoop(
        get("$dim"),
        (a) => a.st("$tp", `(f32x4.add ${a.ld("$tp")} ${a.ld("$dyp")})`),
      ),
    ]),
  )
})
(func (export "zero_bytes") (param $p i32) (param $bytes i32)
  (memory.fill (local.get $p) (i32.const 0) (local.get $bytes)))`;

/** Every kernel of this section, constants hoisted function by function. */
function trainingKernels(v: WasmVariant): string {
  return lines([
    elementwiseKernels(v),
    f64Kernels(v),
    normKernels(v),
    softmaxKernels(v),
    ropeKernel(v),
    embeddingKernels,
  ]).split(/(?=\n\(func )/).map(hoistConsts).join("");
}

/** Tile shapes of the ternary kernel, in table order: (R, T) then (1, T). */
const ternaryTiles = (): [number, number][] => [
  ...[1, 2, 3, 4].map((t): [number, number] => [ternaryRows(t), t]),
  ...[1, 2, 3, 4].map((t): [number, number] => [1, t]),
];

/** The complete WAT text of the kernel module for one variant. */
export function kernelsWat(variant: WasmVariant): string {
  const tiles = ternaryTiles();
  const i8 = int8Tiles();
  return `;; GENERATED by scripts/wasm_kernels_wat.ts (${variant} SIMD). Do not edit.
(module
  (import "env" "memory" (memory 1 65536 shared))
  (type $tile_t (func (param i32 i32 i32 i32 i32 i32 i32 f32 i32 i32 i32)))
  (type $i8tile_t (func (param i32 i32 i32 i32 i32 i32 i32 i32 i32)))
  (table ${tiles.length + i8.length} funcref)
  (elem (i32.const 0) ${
    [
      ...tiles.map(([r, t]) => `$tmm_${r}_${t}`),
      ...i8.map(([r, t]) => `$i8mm_${r}_${t}`),
    ].join(" ")
  })
${matmulKernels(variant)}
${matvec(variant)}
${matvecF16(variant)}
${attendSession}
${tiles.map(([r, t]) => ternaryTile(variant, r, t)).join("\n")}
${ternaryMatmul}
${i8.map(([r, t]) => int8Tile(r, t)).join("\n")}
${int8Matmul(tiles.length)}
${quantize(variant)}
${packTernary(variant)}
${ternaryScale()}
${fmaProbe(variant)}
${trainingKernels(variant)}
)
`;
}
