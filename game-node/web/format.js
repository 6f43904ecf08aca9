// Formatting and exact parsing of money and multipliers, shared by the game page and the verifier.
//
// Money rules: amounts are integers in minor units (100 = 1.00 credit) and multipliers integers in
// hundredths (250 = 2.50×). Typed amounts are parsed as decimal strings, never multiplied as
// floats. Nothing here touches the DOM, so Node runs these functions in the unit tests as they are.

export const pad2 = (n) => String(n).padStart(2, '0');
export const groupInt = (n) => n.toLocaleString('en-US');

/** Minor units → "1,234.56". Integer arithmetic only. */
export function formatCredits(minor) {
  const v = Math.trunc(Number(minor));
  const abs = Math.abs(v);
  return (v < 0 ? '-' : '') + groupInt(Math.floor(abs / 100)) + '.' + pad2(abs % 100);
}

/** Minor units → "+0.01" / "-1.00" / "0.00". */
export function formatSigned(minor) {
  return (minor > 0 ? '+' : '') + formatCredits(minor);
}

/**
 * Hundredths → "2.59×". Takes a number or a BigInt: the verifier computes crash points as BigInt
 * and a table's cap can exceed 2^53.
 */
export function formatMult(x100) {
  const v = typeof x100 === 'bigint' ? x100 : BigInt(Math.trunc(Number(x100)));
  return groupInt(v / 100n) + '.' + pad2(Number(v % 100n)) + '×';
}

/** Basis points → "1.00% (100 bp)". */
export function formatBp(bp) {
  return Math.floor(bp / 100) + '.' + pad2(bp % 100) + '% (' + bp + ' bp)';
}

/** Minor units → "2.59" (for inputs: no grouping, no sign). */
export function plainAmount(minor) {
  return Math.floor(minor / 100) + '.' + pad2(minor % 100);
}

/**
 * A decimal string with at most two decimals ("1", "1.5", "1.00", ".5") → integer hundredths,
 * or null. Parsed digit by digit with BigInt: "0.29" is 29, never 28.999….
 */
export function parseHundredths(text) {
  const s = String(text).trim();
  const m = /^(\d*)(?:\.(\d{0,2}))?$/.exec(s);
  if (!m || (m[1] === '' && (m[2] === undefined || m[2] === ''))) return null;
  const value = BigInt(m[1] || '0') * 100n + BigInt((m[2] || '').padEnd(2, '0'));
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) return null;
  return Number(value);
}

/** floor(stake × x100 / 100), exactly: the payout the node computes for a cash-out. */
export function payoutOf(stake, x100) {
  return Number((BigInt(stake) * BigInt(x100)) / 100n);
}

/** "0123456789abcdef…" → "01234567…abcdef" for tables; short strings stay whole. */
export function shortHash(h) {
  return h && h.length > 16 ? h.slice(0, 8) + '…' + h.slice(-6) : (h || '');
}

/** The colour class of a crash point: void (no crash point), low (< 2×), mid (< 10×), high. */
export function pillClass(x100) {
  if (x100 == null) return 'void';
  const v = Number(x100);
  if (v < 200) return 'low';
  if (v < 1000) return 'mid';
  return 'high';
}

/** 1–64 printable ASCII characters; also the idempotency key of the command. */
export function newRequestId() {
  const bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  return 'web-' + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}
