import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import {
  DATATYPES,
  type Datatype,
  ELEMENT_BYTES,
  decodeBytesElements,
  encodeBytesElements,
  fromHalfBits,
  tensorFromJson,
  tensorToJsonData,
  toHalfBits,
  typedView,
} from '../../src/tensor/index.ts';
import { caught } from '../fixtures/assert.ts';

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

/** For each datatype: JSON values that survive exactly, and their little-endian bytes. */
const CASES: Record<Datatype, { data: unknown[]; bytes: string }> = {
  BOOL: { data: [true, false, true], bytes: '010001' },
  UINT8: { data: [0, 128, 255], bytes: '0080ff' },
  UINT16: { data: [0x0102, 65535], bytes: '0201ffff' },
  UINT32: { data: [0x01020304, 4294967295], bytes: '04030201ffffffff' },
  UINT64: { data: [1, Number.MAX_SAFE_INTEGER], bytes: '0100000000000000ffffffffffff1f00' },
  INT8: { data: [-128, 0, 127], bytes: '80007f' },
  INT16: { data: [-32768, 32767], bytes: '0080ff7f' },
  INT32: { data: [-2147483648, -2], bytes: '00000080feffffff' },
  INT64: { data: [-1, Number.MAX_SAFE_INTEGER], bytes: 'ffffffffffffffffffffffffffff1f00' },
  FP16: { data: [1, -2, 0.5, 65504], bytes: '003c00c00038ff7b' },
  FP32: { data: [1.5, -0.25], bytes: '0000c03f000080be' },
  FP64: { data: [1, -2], bytes: '000000000000f03f00000000000000c0' },
  // 'é✓' is 5 bytes of UTF-8: c3 a9, e2 9c 93
  BYTES: { data: ['a', '', 'é✓'], bytes: '0100000061' + '00000000' + '05000000c3a9e29c93' },
};

// ---------------------------------------------------------------- JSON <-> raw

for (const datatype of DATATYPES) {
  test(`tensor json - ${datatype} values round trip through raw little-endian bytes`, () => {
    const { data, bytes } = CASES[datatype];
    const tensor = tensorFromJson('x', datatype, [data.length], data);
    assert.equal(tensor.name, 'x');
    assert.equal(tensor.datatype, datatype);
    assert.deepStrictEqual(tensor.shape, [data.length]);
    assert.equal(hex(tensor.data), bytes);
    if (datatype !== 'BYTES') assert.equal(tensor.data.byteLength, ELEMENT_BYTES[datatype] * data.length);
    assert.deepStrictEqual(tensorToJsonData(tensor), data);
  });
}

test('tensor json - nested and flat data give the same bytes for every datatype', () => {
  for (const datatype of DATATYPES) {
    const flat = [...CASES[datatype].data, ...CASES[datatype].data];
    const half = flat.length / 2;
    const nested = [flat.slice(0, half), flat.slice(half)];
    const a = tensorFromJson('x', datatype, [2, half], flat);
    const b = tensorFromJson('x', datatype, [2, half], nested);
    assert.equal(hex(b.data), hex(a.data), datatype);
    assert.deepStrictEqual(tensorToJsonData(b), flat, datatype);
  }
  const deep = tensorFromJson(
    'x',
    'INT32',
    [2, 2, 1],
    [
      [[1], [2]],
      [[3], [4]],
    ],
  );
  assert.deepStrictEqual(tensorToJsonData(deep), [1, 2, 3, 4]);
});

test('tensor json - a scalar shape [] holds exactly one element', () => {
  assert.deepStrictEqual(tensorToJsonData(tensorFromJson('x', 'FP64', [], [2.5])), [2.5]);
  assert.equal(caught(() => tensorFromJson('x', 'FP64', [], [])).code, 'INVALID_ARGUMENT');
});

test('tensor json - an element count that does not fit the shape is INVALID_ARGUMENT saying both', () => {
  const err = caught(() => tensorFromJson('x', 'FP32', [2, 2], [1, 2, 3]));
  assert.equal(err.code, 'INVALID_ARGUMENT');
  assert.equal(err.message, 'input "x": shape [2,2] needs 4 elements, got 3');
  const extra = caught(() => tensorFromJson('img', 'UINT8', [1], [[1], [2]]));
  assert.equal(extra.message, 'input "img": shape [1] needs 1 elements, got 2');
});

test('tensor json - a wrong element type names its flat index, the value and what was expected', () => {
  const fp = caught(() => tensorFromJson('x', 'FP32', [3], [1, 2, '3']));
  assert.equal(fp.code, 'INVALID_ARGUMENT');
  assert.equal(fp.message, 'input "x": element 2 is "3", expected a number for FP32');
  const nested = caught(() =>
    tensorFromJson(
      'x',
      'FP64',
      [2, 2],
      [
        [1, 2],
        [3, null],
      ],
    ),
  );
  assert.match(nested.message, /element 3 is null, expected a number for FP64/);
  const bool = caught(() => tensorFromJson('mask', 'BOOL', [2], [true, 1]));
  assert.equal(bool.message, 'input "mask": element 1 is 1, expected true or false for BOOL');
  const text = caught(() => tensorFromJson('t', 'BYTES', [2], ['ok', 5]));
  assert.equal(text.message, 'input "t": element 1 is 5, expected a string for BYTES');
  const half = caught(() => tensorFromJson('h', 'FP16', [1], [{}]));
  assert.match(half.message, /element 0 is \{\}, expected a number for FP16/);
  const int = caught(() => tensorFromJson('i', 'INT32', [2], [1, 1.5]));
  assert.match(
    int.message,
    /element 1 is 1\.5, expected an integer in \[-2147483648, 2147483647\] for INT32/,
  );
});

test('tensor json - INT8 and UINT8 reject values just outside their range and accept the bounds', () => {
  assert.deepStrictEqual(tensorToJsonData(tensorFromJson('x', 'INT8', [2], [-128, 127])), [-128, 127]);
  assert.deepStrictEqual(tensorToJsonData(tensorFromJson('x', 'UINT8', [2], [0, 255])), [0, 255]);
  for (const [datatype, value, range] of [
    ['INT8', 128, '[-128, 127]'],
    ['INT8', -129, '[-128, 127]'],
    ['UINT8', 256, '[0, 255]'],
    ['UINT8', -1, '[0, 255]'],
  ] as const) {
    const err = caught(() => tensorFromJson('x', datatype, [2], [0, value]));
    assert.equal(err.code, 'INVALID_ARGUMENT');
    assert.equal(
      err.message,
      `input "x": element 1 is ${value}, expected an integer in ${range} for ${datatype}`,
    );
  }
});

test('tensor json - other integer types reject values outside their range', () => {
  const cases: [Datatype, number][] = [
    ['UINT16', 65536],
    ['INT16', -32769],
    ['UINT32', 2 ** 32],
    ['INT32', 2 ** 31],
    ['UINT64', -1],
    ['INT64', 2 ** 53],
  ];
  for (const [datatype, value] of cases) {
    const err = caught(() => tensorFromJson('x', datatype, [1], [value]));
    assert.match(err.message, new RegExp(`element 0 is ${value}, expected an integer in .* for ${datatype}`));
  }
});

test('tensor json - INT64 and UINT64 are written as 64-bit integers', () => {
  const values = [-1, 0, Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER, 123456789012];
  const t = tensorFromJson('ids', 'INT64', [values.length], values);
  assert.equal(t.data.byteLength, 8 * values.length);
  const copy = new Uint8Array(t.data);
  assert.deepStrictEqual(Array.from(new BigInt64Array(copy.buffer)), values.map(BigInt));
  assert.deepStrictEqual(tensorToJsonData(t), values);
  const u = tensorFromJson('ids', 'UINT64', [2], [0, Number.MAX_SAFE_INTEGER]);
  assert.deepStrictEqual(Array.from(new BigUint64Array(new Uint8Array(u.data).buffer)), [
    0n,
    BigInt(Number.MAX_SAFE_INTEGER),
  ]);
});

test('tensor json - BYTES elements are UTF-8 with a 4-byte little-endian length each', () => {
  const strings = ['hello', '', 'héllo ✓ 日本 🚀'];
  const t = tensorFromJson('s', 'BYTES', [3], strings);
  const elements = decodeBytesElements(t.data);
  assert.deepStrictEqual(
    elements.map((e) => Buffer.from(e).toString('utf8')),
    strings,
  );
  assert.equal(elements[2]!.byteLength, Buffer.byteLength(strings[2]!, 'utf8'));
  assert.equal(t.data.byteLength, 3 * 4 + strings.reduce((n, s) => n + Buffer.byteLength(s), 0));
  assert.deepStrictEqual(tensorToJsonData(t), strings);
});

test('tensor json - any JSON numbers round trip exactly for FP64 and as float32 for FP32', () => {
  fc.assert(
    fc.property(fc.array(fc.double({ noNaN: true }), { maxLength: 20 }), (values) => {
      const t = tensorFromJson('x', 'FP64', [values.length], values);
      assert.deepStrictEqual(tensorToJsonData(t), values);
      const f = tensorFromJson('x', 'FP32', [values.length], values);
      assert.deepStrictEqual(tensorToJsonData(f), Array.from(Float32Array.from(values)));
    }),
    { numRuns: 200 },
  );
});

test('tensor json - FP16 data is stored as half bits and read back as their value', () => {
  const t = tensorFromJson('x', 'FP16', [4], [1, 1e6, -1e-9, 0.1]);
  assert.deepStrictEqual(tensorToJsonData(t), [1, Number.POSITIVE_INFINITY, -0, fromHalfBits(0x2e66)]);
});

// ---------------------------------------------------------------- FP16

test('fp16 - representable values convert exactly both ways', () => {
  const exact: [number, number][] = [
    [0, 0x0000],
    [-0, 0x8000],
    [1, 0x3c00],
    [-2, 0xc000],
    [0.5, 0x3800],
    [65504, 0x7bff],
    [-65504, 0xfbff],
    [2 ** -24, 0x0001],
    [1023 * 2 ** -24, 0x03ff],
    [2 ** -14, 0x0400],
    [1 + 2 ** -10, 0x3c01],
    [Number.POSITIVE_INFINITY, 0x7c00],
    [Number.NEGATIVE_INFINITY, 0xfc00],
  ];
  for (const [value, bits] of exact) {
    assert.equal(toHalfBits(value), bits, `toHalfBits(${value})`);
    assert.ok(Object.is(fromHalfBits(bits), value), `fromHalfBits(0x${bits.toString(16)})`);
  }
});

test('fp16 - NaN stays NaN', () => {
  const bits = toHalfBits(Number.NaN);
  assert.equal(bits & 0x7c00, 0x7c00);
  assert.notEqual(bits & 0x03ff, 0);
  assert.ok(Number.isNaN(fromHalfBits(bits)));
  assert.ok(Number.isNaN(fromHalfBits(0x7c01)));
  assert.ok(Number.isNaN(fromHalfBits(0xfe00)));
});

test('fp16 - every non-NaN bit pattern survives fromHalfBits then toHalfBits', () => {
  for (let bits = 0; bits <= 0xffff; bits++) {
    const value = fromHalfBits(bits);
    if (Number.isNaN(value)) continue;
    if (toHalfBits(value) !== bits)
      assert.fail(`0x${bits.toString(16)} -> ${value} -> 0x${toHalfBits(value).toString(16)}`);
  }
});

test('fp16 - ties round to the even neighbour, everything else to the nearest', () => {
  const cases: [number, number][] = [
    // halfway between 0x3c00 and 0x3c01: down to the even one
    [1 + 2 ** -11, 0x3c00],
    // halfway between 0x3c01 and 0x3c02: up to the even one
    [1 + 3 * 2 ** -11, 0x3c02],
    // just above / below halfway
    [1 + 2 ** -11 + 2 ** -20, 0x3c01],
    [1 + 2 ** -11 - 2 ** -20, 0x3c00],
    // subnormals: halfway between 0 and the smallest subnormal goes to 0, 1.5 units to 2
    [2 ** -25, 0x0000],
    [3 * 2 ** -25, 0x0002],
    [2 ** -25 + 2 ** -35, 0x0001],
    [2 ** -26, 0x0000],
    [-(2 ** -26), 0x8000],
    // 65520 is halfway between 65504 and the next step (65536), which overflows
    [65520, 0x7c00],
    [65519, 0x7bff],
    [1e6, 0x7c00],
    [-1e6, 0xfc00],
    // rounding the largest subnormal up reaches the smallest normal
    [1023.5 * 2 ** -24, 0x0400],
  ];
  for (const [value, bits] of cases) {
    assert.equal(toHalfBits(value).toString(16), bits.toString(16), `toHalfBits(${value})`);
  }
});

/** Nearest half to a finite value, ties to even, by search over the ordered positive halves. */
function referenceHalfBits(value: number): number {
  const sign = value < 0 || Object.is(value, -0) ? 0x8000 : 0;
  const x = Math.abs(value);
  if (x >= 65520) return sign | 0x7c00;
  let lo = 0;
  let hi = 0x7bff;
  while (hi - lo > 1) {
    const mid = (lo + hi) >>> 1;
    if (fromHalfBits(mid) <= x) lo = mid;
    else hi = mid;
  }
  const dLo = x - fromHalfBits(lo);
  const dHi = fromHalfBits(hi) - x;
  const pick = dLo < dHi ? lo : dHi < dLo ? hi : lo % 2 === 0 ? lo : hi;
  return sign | pick;
}

test('fp16 - toHalfBits agrees with a reference for every float32 value', () => {
  fc.assert(
    fc.property(fc.float({ noNaN: true, noDefaultInfinity: true }), (value) => {
      assert.equal(toHalfBits(value), referenceHalfBits(value));
    }),
    { numRuns: 2000 },
  );
});

test('fp16 - toHalfBits rounds a double once, not via float32', () => {
  // each is just below or above a half-way point, but float32 rounds it onto the tie
  assert.equal(toHalfBits(65519.99999), 0x7bff);
  assert.equal(toHalfBits(1 + 2 ** -11 + 2 ** -40), 0x3c01);
  assert.equal(toHalfBits(2 ** -25 + 2 ** -60), 0x0001);
});

// ---------------------------------------------------------------- BYTES elements

test('bytes elements - encode then decode gives the same elements', () => {
  fc.assert(
    fc.property(fc.array(fc.uint8Array({ maxLength: 40 }), { maxLength: 10 }), (elements) => {
      const encoded = encodeBytesElements(elements);
      assert.equal(
        encoded.byteLength,
        elements.reduce((n, e) => n + 4 + e.byteLength, 0),
      );
      const decoded = decodeBytesElements(encoded);
      assert.deepStrictEqual(decoded.map(hex), elements.map(hex));
    }),
    { numRuns: 200 },
  );
});

test('bytes elements - decoding reads a view at any offset and returns views, not copies', () => {
  const encoded = encodeBytesElements([Uint8Array.of(1, 2, 3), Uint8Array.of(4)]);
  const backing = new Uint8Array(encoded.byteLength + 5).fill(0xff);
  backing.set(encoded, 3);
  const view = backing.subarray(3, 3 + encoded.byteLength);
  const [a, b] = decodeBytesElements(view);
  assert.equal(hex(a!), '010203');
  assert.equal(hex(b!), '04');
  assert.equal(a!.buffer, backing.buffer);
  assert.equal(a!.byteOffset, 3 + 4);
});

test('bytes elements - a buffer cut inside a length prefix is a typed error', () => {
  const encoded = encodeBytesElements([Uint8Array.of(7, 7)]);
  const err = caught(() => decodeBytesElements(Buffer.concat([encoded, Uint8Array.of(1, 0)]), 'output "y"'));
  assert.equal(err.code, 'INVALID_ARGUMENT');
  assert.equal(err.message, `output "y": BYTES data ends inside an element's length prefix`);
});

test('bytes elements - a buffer cut inside an element says how much is missing', () => {
  const encoded = encodeBytesElements([Uint8Array.of(1), Uint8Array.of(1, 2, 3, 4, 5)]);
  const err = caught(() => decodeBytesElements(encoded.subarray(0, encoded.byteLength - 3)));
  assert.equal(err.code, 'INVALID_ARGUMENT');
  assert.equal(err.message, 'tensor: BYTES element 1 says 5 bytes but only 2 remain');
});

test('bytes elements - every cut that is not an element boundary is rejected', () => {
  fc.assert(
    fc.property(fc.array(fc.uint8Array({ maxLength: 12 }), { minLength: 1, maxLength: 5 }), (elements) => {
      const encoded = encodeBytesElements(elements);
      const boundaries = new Set<number>([0]);
      let at = 0;
      for (const e of elements) {
        at += 4 + e.byteLength;
        boundaries.add(at);
      }
      for (let cut = 0; cut < encoded.byteLength; cut++) {
        const part = encoded.subarray(0, cut);
        if (boundaries.has(cut)) assert.doesNotThrow(() => decodeBytesElements(part));
        else assert.equal(caught(() => decodeBytesElements(part)).code, 'INVALID_ARGUMENT');
      }
    }),
    { numRuns: 100 },
  );
});

test('tensor json - BYTES output with a broken layout names the output', () => {
  const err = caught(() =>
    tensorToJsonData({ name: 'text', datatype: 'BYTES', shape: [1], data: Uint8Array.of(9, 0, 0, 0, 1) }),
  );
  assert.equal(err.code, 'INVALID_ARGUMENT');
  assert.match(err.message, /^output "text": BYTES element 0 says 9 bytes but only 1 remain/);
});

// ---------------------------------------------------------------- typedView

test('typedView - aligned bytes are viewed in place, without a copy', () => {
  const buffer = new ArrayBuffer(24);
  new Float32Array(buffer, 4, 2).set([1.5, -3]);
  const bytes = new Uint8Array(buffer, 4, 8);
  const view = typedView('FP32', bytes);
  assert.ok(view instanceof Float32Array);
  assert.equal(view.buffer, buffer);
  assert.equal(view.byteOffset, 4);
  assert.deepStrictEqual(Array.from(view), [1.5, -3]);
  bytes.fill(0);
  assert.deepStrictEqual(Array.from(view), [0, 0], 'a view sees later writes');
});

test('typedView - unaligned bytes are copied into an aligned array with equal values', () => {
  const values = Float64Array.of(Math.PI, -1e300, 5);
  const backing = new Uint8Array(values.byteLength + 3);
  backing.set(new Uint8Array(values.buffer), 3);
  const bytes = backing.subarray(3);
  const view = typedView('FP64', bytes);
  assert.ok(view instanceof Float64Array);
  assert.notEqual(view.buffer, backing.buffer);
  assert.deepStrictEqual(Array.from(view), Array.from(values));

  // 4 is aligned for FP32 but not for FP64 or INT64
  const ints = BigInt64Array.of(-5n, 6n);
  const padded = new Uint8Array(ints.byteLength + 4);
  padded.set(new Uint8Array(ints.buffer), 4);
  const big = typedView('INT64', padded.subarray(4));
  assert.ok(big instanceof BigInt64Array);
  assert.notEqual(big.buffer, padded.buffer);
  assert.deepStrictEqual(Array.from(big), [-5n, 6n]);
});

test('typedView - each datatype gets its own typed array, FP16 as uint16 bits and BOOL as bytes', () => {
  const expected: Record<Exclude<Datatype, 'BYTES'>, string> = {
    BOOL: 'Uint8Array',
    UINT8: 'Uint8Array',
    UINT16: 'Uint16Array',
    UINT32: 'Uint32Array',
    UINT64: 'BigUint64Array',
    INT8: 'Int8Array',
    INT16: 'Int16Array',
    INT32: 'Int32Array',
    INT64: 'BigInt64Array',
    FP16: 'Uint16Array',
    FP32: 'Float32Array',
    FP64: 'Float64Array',
  };
  for (const [datatype, name] of Object.entries(expected) as [Exclude<Datatype, 'BYTES'>, string][]) {
    const view = typedView(datatype, new Uint8Array(16));
    assert.equal(view.constructor.name, name, datatype);
    assert.equal(view.length, 16 / ELEMENT_BYTES[datatype], datatype);
  }
});
