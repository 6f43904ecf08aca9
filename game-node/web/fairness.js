// The fairness math, exactly as the node computes it, for the verifier page and the unit tests.
// It trusts nothing the server says: every crash point is recomputed here from the revealed hash.
//
// Scheme:
//   chain:  h(i+1) = SHA-256(h(i)) over the raw 32 bytes; round k uses h(L-k), so SHA-256 of a
//           round's hash is the previous round's hash and k hashes of round k's hash give h(L).
//   r:      top 52 bits (first 13 hex digits) of HMAC-SHA256(key = salt as UTF-8, msg = raw hash)
//   crash:  max(100, floor((10000 - edge_bp) * 2^52 / ((2^52 - r) * 100))), capped at max_x100,
//           in exact BigInt arithmetic.
//
// Web Crypto does the hashing where the browser offers it (HTTPS or localhost); on plain HTTP
// from another host it is missing, so a small SHA-256 written here takes over, with equal results.

const TWO_52 = 1n << 52n;
/** A round hash, a salt-free commitment or any other SHA-256 value, as the API prints it. */
export const HEX64 = /^[0-9a-f]{64}$/;
const enc = new TextEncoder();

/** crash_x100 before the table cap, exactly, for a 52-bit r and an edge in basis points. */
export function crashX100FromR(r, edgeBp) {
  const rr = BigInt(r);
  const edge = BigInt(edgeBp);
  const x = ((10000n - edge) * TWO_52) / ((TWO_52 - rr) * 100n);
  return x < 100n ? 100n : x;
}

export function capped(x100, maxX100) {
  const cap = BigInt(maxX100);
  return x100 > cap ? cap : x100;
}

export function toHex(bytes) {
  let s = '';
  for (const b of bytes) s += b.toString(16).padStart(2, '0');
  return s;
}
export function fromHex(hex) {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i += 1) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}
export function sameBytes(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i += 1) if (a[i] !== b[i]) return false;
  return true;
}

// ------------------------------------------------------------------------------------------
// SHA-256 in plain JS (FIPS 180-4), for browsers without Web Crypto. The round constants are
// derived as the standard defines them (fractional parts of square and cube roots of primes);
// the tests check this engine against Web Crypto and the published known answers.

const PRIMES = [];
for (let n = 2; PRIMES.length < 64; n += 1) {
  if (PRIMES.every((p) => n % p !== 0)) PRIMES.push(n);
}
const frac32 = (x) => Math.floor((x - Math.floor(x)) * 2 ** 32) >>> 0;
const K = Uint32Array.from(PRIMES, (p) => frac32(Math.cbrt(p)));
const H0 = Uint32Array.from(PRIMES.slice(0, 8), (p) => frac32(Math.sqrt(p)));
const rotr = (x, n) => (x >>> n) | (x << (32 - n));

export function sha256Js(data) {
  const len = data.length;
  const total = ((len + 9 + 63) >> 6) << 6;
  const buf = new Uint8Array(total);
  buf.set(data);
  buf[len] = 0x80;
  const dv = new DataView(buf.buffer);
  dv.setUint32(total - 8, Math.floor(len / 2 ** 29));
  dv.setUint32(total - 4, (len * 8) >>> 0);
  const H = Uint32Array.from(H0);
  const w = new Uint32Array(64);
  for (let off = 0; off < total; off += 64) {
    for (let i = 0; i < 16; i += 1) w[i] = dv.getUint32(off + 4 * i);
    for (let i = 16; i < 64; i += 1) {
      const a = w[i - 15];
      const b = w[i - 2];
      const s0 = rotr(a, 7) ^ rotr(a, 18) ^ (a >>> 3);
      const s1 = rotr(b, 17) ^ rotr(b, 19) ^ (b >>> 10);
      w[i] = (w[i - 16] + s0 + w[i - 7] + s1) | 0;
    }
    let [a, b, c, d, e, f, g, h] = H;
    for (let i = 0; i < 64; i += 1) {
      const S1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
      const ch = (e & f) ^ (~e & g);
      const t1 = (h + S1 + ch + K[i] + w[i]) | 0;
      const S0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
      const maj = (a & b) ^ (a & c) ^ (b & c);
      const t2 = (S0 + maj) | 0;
      h = g;
      g = f;
      f = e;
      e = (d + t1) | 0;
      d = c;
      c = b;
      b = a;
      a = (t1 + t2) | 0;
    }
    H[0] += a; H[1] += b; H[2] += c; H[3] += d;
    H[4] += e; H[5] += f; H[6] += g; H[7] += h;
  }
  const out = new Uint8Array(32);
  const odv = new DataView(out.buffer);
  for (let i = 0; i < 8; i += 1) odv.setUint32(4 * i, H[i]);
  return out;
}

/** HMAC (RFC 2104) over sha256Js with a 64-byte block. */
export function hmacJs(keyBytes) {
  let key = keyBytes.length > 64 ? sha256Js(keyBytes) : keyBytes;
  const block = new Uint8Array(64);
  block.set(key);
  key = block;
  const ipad = key.map((b) => b ^ 0x36);
  const opad = key.map((b) => b ^ 0x5c);
  return (msg) => {
    const inner = new Uint8Array(64 + msg.length);
    inner.set(ipad);
    inner.set(msg, 64);
    const ih = sha256Js(inner);
    const outer = new Uint8Array(64 + 32);
    outer.set(opad);
    outer.set(ih, 64);
    return sha256Js(outer);
  };
}

export const engines = {
  webcrypto: {
    label: 'Web Crypto',
    available: () => !!(globalThis.crypto && globalThis.crypto.subtle),
    sha256: async (bytes) => new Uint8Array(await crypto.subtle.digest('SHA-256', bytes)),
    hmac: async (salt) => {
      const key = await crypto.subtle.importKey('raw', enc.encode(salt), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
      return async (msg) => new Uint8Array(await crypto.subtle.sign('HMAC', key, msg));
    },
  },
  js: {
    label: 'the page’s own SHA-256 (Web Crypto needs HTTPS)',
    available: () => true,
    sha256: async (bytes) => sha256Js(bytes),
    hmac: async (salt) => {
      const f = hmacJs(enc.encode(salt));
      return async (msg) => f(msg);
    },
  },
};
/** Web Crypto where the browser offers it, else the page's own SHA-256. */
export const engine = engines.webcrypto.available() ? engines.webcrypto : engines.js;
export const engineName = () => (engine === engines.js ? 'js' : 'webcrypto');

/** crash_x100 (BigInt, capped) of one round hash, with its r, using the given HMAC function. */
export async function crashOf(hmac, hashBytes, edgeBp, maxX100) {
  const mac = toHex(await hmac(hashBytes));
  const r = BigInt('0x' + mac.slice(0, 13));
  return { r, hmac: mac, crash: capped(crashX100FromR(r, edgeBp), maxX100) };
}

/** For tests and curious readers: the same functions the page uses, on either engine. */
export async function crashForHash(hashHex, salt, edgeBp, maxX100, engineKey) {
  const e = engines[engineKey || engineName()];
  const hmac = await e.hmac(salt);
  const { crash } = await crashOf(hmac, fromHex(hashHex.toLowerCase()), edgeBp, maxX100 == null ? 2n ** 63n : maxX100);
  return Number(crash) <= Number.MAX_SAFE_INTEGER ? Number(crash) : crash.toString();
}
export async function sha256Hex(hex, engineKey) {
  const e = engines[engineKey || engineName()];
  return toHex(await e.sha256(fromHex(hex)));
}
