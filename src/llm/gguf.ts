/**
 * A small pure-TypeScript GGUF (v3) reader and writer: enough to read a model's metadata
 * (and a vocab-only GGUF's tokenizer, whose values are kept as raw bytes so they can be copied
 * unchanged) and to write a GGUF with typed metadata and F32/F16 tensors. The test model is
 * built with it (tests/fixtures/tiny-gguf.ts); nothing here loads weights for inference.
 *
 * Layout (little endian; llama.cpp ggml/include/gguf.h, docs/gguf.md):
 *   u32 magic "GGUF" | u32 version | u64 tensor count | u64 metadata count
 *   metadata × { string key | u32 value type | value }
 *   tensors  × { string name | u32 dims | u64 ne[dims] | u32 ggml type | u64 data offset }
 *   padding to `general.alignment` (default 32), then the tensor data, each tensor aligned.
 * A string is a u64 byte length and UTF-8 bytes; an array is u32 element type, u64 count,
 * elements. `ne` is in ggml order: ne[0] varies fastest (the reverse of a numpy shape).
 */

import { closeSync, openSync, readFileSync, writeSync } from 'node:fs';

const GGUF_MAGIC = 'GGUF';
const GGUF_VERSION = 3;
const DEFAULT_GGUF_ALIGNMENT = 32;

/** GGUF metadata value types (wire numbers). */
const GGUF_TYPE = {
  UINT8: 0,
  INT8: 1,
  UINT16: 2,
  INT16: 3,
  UINT32: 4,
  INT32: 5,
  FLOAT32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  UINT64: 10,
  INT64: 11,
  FLOAT64: 12,
} as const;
export type GgufType = (typeof GGUF_TYPE)[keyof typeof GGUF_TYPE];

/** The ggml tensor types this writer supports (wire numbers). */
export const GGML_TYPE = { F32: 0, F16: 1 } as const;
export type GgmlType = (typeof GGML_TYPE)[keyof typeof GGML_TYPE];

const SCALAR_BYTES: Readonly<Partial<Record<GgufType, number>>> = {
  [GGUF_TYPE.UINT8]: 1,
  [GGUF_TYPE.INT8]: 1,
  [GGUF_TYPE.BOOL]: 1,
  [GGUF_TYPE.UINT16]: 2,
  [GGUF_TYPE.INT16]: 2,
  [GGUF_TYPE.UINT32]: 4,
  [GGUF_TYPE.INT32]: 4,
  [GGUF_TYPE.FLOAT32]: 4,
  [GGUF_TYPE.UINT64]: 8,
  [GGUF_TYPE.INT64]: 8,
  [GGUF_TYPE.FLOAT64]: 8,
};

/** An array value, summarised: its element type, length and first elements. */
export interface GgufArraySummary {
  elementType: GgufType;
  count: number;
  head: unknown[];
}

/** How many elements of an array the reader decodes into `head`. */
const ARRAY_HEAD = 16;

export interface GgufKv {
  key: string;
  type: GgufType;
  /** The encoded value (everything after the value type): copied verbatim by the writer. */
  raw: Uint8Array;
  /** Scalars and strings decoded; arrays as a GgufArraySummary. */
  value: unknown;
}

export interface GgufHeader {
  version: number;
  tensorCount: number;
  kvs: GgufKv[];
}

/** Reads a GGUF's header and metadata (not its tensors). Throws on a file that is not GGUF v2+. */
export function readGgufMetadata(filePath: string): GgufHeader {
  const buf = readFileSync(filePath);
  let off = 0;
  const need = (n: number): void => {
    if (off + n > buf.length) throw new Error(`${filePath}: GGUF truncated at byte ${off}`);
  };
  const u32 = (): number => {
    need(4);
    const v = buf.readUInt32LE(off);
    off += 4;
    return v;
  };
  const u64 = (): number => {
    need(8);
    const v = buf.readBigUInt64LE(off);
    off += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`${filePath}: GGUF length ${v} too large`);
    return Number(v);
  };
  const str = (): string => {
    const n = u64();
    need(n);
    const s = buf.toString('utf8', off, off + n);
    off += n;
    return s;
  };
  const value = (type: GgufType): unknown => {
    if (type === GGUF_TYPE.STRING) return str();
    if (type === GGUF_TYPE.ARRAY) {
      const elementType = u32() as GgufType;
      const count = u64();
      const head: unknown[] = [];
      for (let i = 0; i < count; i++) {
        const v = value(elementType);
        if (i < ARRAY_HEAD) head.push(v);
      }
      return { elementType, count, head } satisfies GgufArraySummary;
    }
    const size = SCALAR_BYTES[type];
    if (size === undefined) throw new Error(`${filePath}: unknown GGUF value type ${type}`);
    need(size);
    const at = off;
    off += size;
    switch (type) {
      case GGUF_TYPE.UINT8:
        return buf.readUInt8(at);
      case GGUF_TYPE.INT8:
        return buf.readInt8(at);
      case GGUF_TYPE.BOOL:
        return buf.readUInt8(at) !== 0;
      case GGUF_TYPE.UINT16:
        return buf.readUInt16LE(at);
      case GGUF_TYPE.INT16:
        return buf.readInt16LE(at);
      case GGUF_TYPE.UINT32:
        return buf.readUInt32LE(at);
      case GGUF_TYPE.INT32:
        return buf.readInt32LE(at);
      case GGUF_TYPE.FLOAT32:
        return buf.readFloatLE(at);
      case GGUF_TYPE.UINT64:
        return buf.readBigUInt64LE(at);
      case GGUF_TYPE.INT64:
        return buf.readBigInt64LE(at);
      default:
        return buf.readDoubleLE(at);
    }
  };

  if (buf.length < 24 || buf.toString('latin1', 0, 4) !== GGUF_MAGIC)
    throw new Error(`${filePath}: not a GGUF file`);
  off = 4;
  const version = u32();
  if (version < 2) throw new Error(`${filePath}: GGUF version ${version} is not supported (2 or later)`);
  const tensorCount = u64();
  const kvCount = u64();
  const kvs: GgufKv[] = [];
  for (let i = 0; i < kvCount; i++) {
    const key = str();
    const type = u32() as GgufType;
    const start = off;
    const decoded = value(type);
    kvs.push({ key, type, raw: buf.subarray(start, off), value: decoded });
  }
  return { version, tensorCount, kvs };
}

function encodeString(s: string): Buffer {
  const bytes = Buffer.from(s, 'utf8');
  const out = Buffer.alloc(8 + bytes.length);
  out.writeBigUInt64LE(BigInt(bytes.length));
  bytes.copy(out, 8);
  return out;
}

/** Builders of typed metadata entries. */
export const ggufKv = {
  u32(key: string, v: number): GgufKv {
    const raw = Buffer.alloc(4);
    raw.writeUInt32LE(v);
    return { key, type: GGUF_TYPE.UINT32, raw, value: v };
  },
  f32(key: string, v: number): GgufKv {
    const raw = Buffer.alloc(4);
    raw.writeFloatLE(v);
    return { key, type: GGUF_TYPE.FLOAT32, raw, value: v };
  },
  bool(key: string, v: boolean): GgufKv {
    return { key, type: GGUF_TYPE.BOOL, raw: Buffer.from([v ? 1 : 0]), value: v };
  },
  string(key: string, v: string): GgufKv {
    return { key, type: GGUF_TYPE.STRING, raw: encodeString(v), value: v };
  },
};

export interface GgufTensor {
  name: string;
  /** ggml order: ne[0] is the row length. A numpy [rows, cols] matrix is ne [cols, rows]. */
  ne: number[];
  type: GgmlType;
  /** F32: Float32Array; F16: Uint16Array of IEEE half bits. */
  data: Float32Array | Uint16Array;
}

const alignUp = (n: number, to: number): number => Math.ceil(n / to) * to;

/** Writes a GGUF v3 file. */
export function writeGguf(
  filePath: string,
  kvs: readonly GgufKv[],
  tensors: readonly GgufTensor[],
  alignment = DEFAULT_GGUF_ALIGNMENT,
): void {
  const parts: Buffer[] = [];
  const head = Buffer.alloc(24);
  head.write(GGUF_MAGIC, 0, 'latin1');
  head.writeUInt32LE(GGUF_VERSION, 4);
  head.writeBigUInt64LE(BigInt(tensors.length), 8);
  head.writeBigUInt64LE(BigInt(kvs.length), 16);
  parts.push(head);
  for (const kv of kvs) {
    const type = Buffer.alloc(4);
    type.writeUInt32LE(kv.type);
    parts.push(encodeString(kv.key), type, Buffer.from(kv.raw.buffer, kv.raw.byteOffset, kv.raw.byteLength));
  }
  let dataBytes = 0;
  const offsets: number[] = [];
  for (const t of tensors) {
    const elements = t.ne.reduce((a, b) => a * b, 1);
    if (t.data.length !== elements)
      throw new Error(`tensor ${t.name}: ${t.data.length} elements, but ne [${t.ne}] needs ${elements}`);
    dataBytes = alignUp(dataBytes, alignment);
    offsets.push(dataBytes);
    const info = Buffer.alloc(4 + 8 * t.ne.length + 4 + 8);
    let o = info.writeUInt32LE(t.ne.length, 0);
    for (const d of t.ne) o = info.writeBigUInt64LE(BigInt(d), o);
    o = info.writeUInt32LE(t.type, o);
    info.writeBigUInt64LE(BigInt(dataBytes), o);
    parts.push(encodeString(t.name), info);
    dataBytes += t.data.byteLength;
  }

  const fd = openSync(filePath, 'w');
  try {
    let pos = 0;
    const write = (b: Uint8Array): void => {
      writeSync(fd, b);
      pos += b.byteLength;
    };
    const padTo = (to: number): void => {
      if (to > pos) write(Buffer.alloc(to - pos));
    };
    for (const p of parts) write(p);
    padTo(alignUp(pos, alignment));
    const dataStart = pos;
    tensors.forEach((t, i) => {
      padTo(dataStart + offsets[i]!);
      write(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    });
  } finally {
    closeSync(fd);
  }
}
