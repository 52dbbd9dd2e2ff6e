/**
 * GPU memory for the WebGPU backend: storage buffers pooled by size class, transient
 * uniform buffers tied to one command encoder, submission, and read-back.
 *
 * A training step records all its dispatches into one `GPUCommandEncoder`, then
 * either {@link BufferPool.submit}s it or, at the very end, {@link BufferPool.readBack}s
 * the few values it needs (loss, gradient norm), which appends the copies to the same
 * encoder so the whole step is one submit.
 *
 * @module
 */

// Usage of every pooled storage buffer: STORAGE | COPY_SRC | COPY_DST (literal so
// that importing this module needs no WebGPU globals).
const STORAGE_USAGE = 0x80 | 0x4 | 0x8;

/** One region of a buffer to read back: `length` f32 values from element `offset`. */
export interface ReadRequest {
  /** The buffer to read (needs COPY_SRC, which pooled buffers have). */
  readonly buffer: GPUBuffer;
  /** Number of 4-byte elements. */
  readonly length: number;
  /** First element (default 0). */
  readonly offset?: number;
}

/** Counts for tests and diagnostics. */
export interface BufferPoolStats {
  /** Storage buffers handed out and not yet released. */
  readonly inUse: number;
  /** Released storage buffers waiting for reuse. */
  readonly free: number;
  /** Bytes of all storage buffers the pool owns (in use + free). */
  readonly bytes: number;
}

const MIN_CLASS = 256;

/**
 * Size class of a request: the smallest of 2^k and 1.5·2^k (k ≥ 8) that holds
 * `byteLength`, so at most a third of a buffer is wasted.
 */
export function sizeClass(byteLength: number): number {
  if (!Number.isFinite(byteLength) || byteLength < 0) {
    throw new Error(
      `byteLength must be a finite number ≥ 0, got ${byteLength}`,
    );
  }
  let size = MIN_CLASS;
  while (size < byteLength) {
    const mid = size + size / 2;
    if (mid >= byteLength) return mid;
    size *= 2;
  }
  return size;
}

/**
 * Storage buffers pooled by {@link sizeClass}, plus per-encoder uniform buffers.
 *
 * Contract: release a buffer only after the encoders that use it are submitted —
 * a re-acquired buffer may be written with `queue.writeBuffer`, which runs before
 * any later submit.
 */
export class BufferPool {
  /** The device the buffers live on. */
  readonly device: GPUDevice;
  readonly #free = new Map<number, GPUBuffer[]>();
  readonly #inUse = new Set<GPUBuffer>();
  readonly #transient = new WeakMap<GPUCommandEncoder, GPUBuffer[]>();
  readonly #staging: GPUBuffer[] = [];
  #bytes = 0;

  /** A pool on `device`; call {@link BufferPool.destroy} when done. */
  constructor(device: GPUDevice) {
    this.device = device;
  }

  /** A storage buffer of at least `byteLength` bytes (contents undefined). */
  acquire(byteLength: number): GPUBuffer {
    const size = sizeClass(byteLength);
    const buffer = this.#free.get(size)?.pop() ??
      this.#create(size);
    this.#inUse.add(buffer);
    return buffer;
  }

  /** A storage buffer holding a copy of `data` (written before the next submit). */
  upload(
    data:
      | Float32Array<ArrayBuffer>
      | Int32Array<ArrayBuffer>
      | Uint32Array<ArrayBuffer>,
  ): GPUBuffer {
    const buffer = this.acquire(data.byteLength);
    this.device.queue.writeBuffer(buffer, 0, data);
    return buffer;
  }

  /** Returns a buffer from {@link BufferPool.acquire} to the pool. */
  release(buffer: GPUBuffer): void {
    if (!this.#inUse.delete(buffer)) {
      throw new Error(
        "buffer was not acquired from this pool or is already released",
      );
    }
    const list = this.#free.get(buffer.size);
    if (list === undefined) this.#free.set(buffer.size, [buffer]);
    else list.push(buffer);
  }

  /**
   * A uniform buffer holding `data`, alive until {@link BufferPool.submit} of
   * `encoder` (destroyed right after; WebGPU keeps it until the GPU is done).
   */
  uniform(encoder: GPUCommandEncoder, data: ArrayBuffer): GPUBuffer {
    const size = Math.max(16, Math.ceil(data.byteLength / 16) * 16);
    const buffer = this.device.createBuffer({
      size,
      usage: GPUBufferUsage.UNIFORM,
      mappedAtCreation: true,
    });
    new Uint8Array(buffer.getMappedRange()).set(new Uint8Array(data));
    buffer.unmap();
    const list = this.#transient.get(encoder);
    if (list === undefined) this.#transient.set(encoder, [buffer]);
    else list.push(buffer);
    return buffer;
  }

  /** Finishes and submits `encoder`, then frees its uniform buffers. */
  submit(encoder: GPUCommandEncoder): void {
    this.device.queue.submit([encoder.finish()]);
    for (const buffer of this.#transient.get(encoder) ?? []) buffer.destroy();
    this.#transient.delete(encoder);
  }

  /**
   * Appends copies of `requests` to `encoder`, submits it, and resolves with the
   * values once the GPU is done. Meant for the end of a step: it waits for the queue.
   */
  async readBack(
    encoder: GPUCommandEncoder,
    requests: readonly ReadRequest[],
  ): Promise<Float32Array[]> {
    let total = 0;
    const starts = requests.map((r, i) => {
      const offset = r.offset ?? 0;
      if (!Number.isInteger(r.length) || r.length < 0) {
        throw new Error(
          `requests[${i}].length must be an integer ≥ 0, got ${r.length}`,
        );
      }
      if (
        !Number.isInteger(offset) || offset < 0 ||
        (offset + r.length) * 4 > r.buffer.size
      ) {
        throw new Error(
          `requests[${i}] reads elements [${offset}, ${
            offset + r.length
          }) of a ` +
            `${r.buffer.size}-byte buffer`,
        );
      }
      const start = total;
      total += r.length;
      return start;
    });
    const staging = this.#takeStaging(Math.max(total * 4, 4));
    requests.forEach((r, i) => {
      if (r.length > 0) {
        encoder.copyBufferToBuffer(
          r.buffer,
          (r.offset ?? 0) * 4,
          staging,
          starts[i] * 4,
          r.length * 4,
        );
      }
    });
    this.submit(encoder);
    try {
      await staging.mapAsync(GPUMapMode.READ, 0, staging.size);
      const all = new Float32Array(staging.getMappedRange(0, staging.size));
      const out = requests.map((r, i) =>
        all.slice(starts[i], starts[i] + r.length)
      );
      staging.unmap();
      this.#staging.push(staging);
      return out;
    } catch (cause) {
      staging.destroy();
      throw cause;
    }
  }

  /** Pool occupancy. */
  stats(): BufferPoolStats {
    let free = 0;
    for (const list of this.#free.values()) free += list.length;
    return { inUse: this.#inUse.size, free, bytes: this.#bytes };
  }

  /** Destroys every buffer the pool owns, in use or free. */
  destroy(): void {
    for (const buffer of this.#inUse) buffer.destroy();
    for (const list of this.#free.values()) for (const b of list) b.destroy();
    for (const buffer of this.#staging) buffer.destroy();
    this.#inUse.clear();
    this.#free.clear();
    this.#staging.length = 0;
    this.#bytes = 0;
  }

  #create(size: number): GPUBuffer {
    this.#bytes += size;
    return this.device.createBuffer({ size, usage: STORAGE_USAGE });
  }

  // Staging buffers are reused by size class too; one is never shared between two
  // read-backs in flight because it leaves the list until it is unmapped.
  #takeStaging(byteLength: number): GPUBuffer {
    const size = sizeClass(byteLength);
    const i = this.#staging.findIndex((b) => b.size === size);
    if (i >= 0) return this.#staging.splice(i, 1)[0];
    return this.device.createBuffer({
      size,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
  }
}
