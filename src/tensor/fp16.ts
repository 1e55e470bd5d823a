/** IEEE 754 half precision <-> number, for FP16 tensors sent as JSON numbers. */

/** Rounds x >= 0 to an integer, ties to even. Exact for the x this file passes (x < 2^12). */
function roundHalfEven(x: number): number {
  const floor = Math.floor(x);
  const rest = x - floor;
  if (rest > 0.5) return floor + 1;
  if (rest < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

/**
 * The half-precision bit pattern nearest to `value`: rounded once, straight from the double
 * (going through float32 first would round twice), ties to even, overflow to ±Infinity,
 * NaN kept.
 */
export function toHalfBits(value: number): number {
  if (Number.isNaN(value)) return 0x7e00;
  const sign = value < 0 || Object.is(value, -0) ? 0x8000 : 0;
  const v = Math.abs(value);
  // 65520 is half-way between the largest half (65504) and the next power: it rounds to even, Infinity
  if (v >= 65520) return sign | 0x7c00;
  if (v < 2 ** -14) return sign | roundHalfEven(v * 2 ** 24); // subnormal (1024 becomes the smallest normal)
  let exp = Math.floor(Math.log2(v));
  if (2 ** exp > v) exp--;
  else if (2 ** (exp + 1) <= v) exp++;
  let mant = roundHalfEven((v / 2 ** exp - 1) * 1024);
  let e = exp + 15;
  if (mant === 1024) {
    mant = 0;
    e++;
  }
  return e >= 31 ? sign | 0x7c00 : sign | (e << 10) | mant;
}

export function fromHalfBits(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >>> 10) & 0x1f;
  const mant = bits & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? Number.NaN : sign * Number.POSITIVE_INFINITY;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}
