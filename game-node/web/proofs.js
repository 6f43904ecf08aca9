// Checks a player's signed receipts in the browser, as `game-node verify receipt` does: each
// receipt's Ed25519 signature with the table's published key, the bet's settlement leaf against
// the receipts, the payout formula, the leaf's path to the round's settlement root, the round's
// log leaf and its path to the signed round-log head, and the crash point from the chain.
//
// Ed25519 comes from Web Crypto (SubtleCrypto), which every current engine has (Chromium 137,
// Firefox 129, Safari 17) — but only in a secure context (HTTPS or localhost). We vendor no
// JavaScript Ed25519: a signature checker the server hands out could be made to say yes, and the
// browser's own is audited with the browser. Where it is missing, signatures are reported as not
// checked here (the command-line verifier and tests/settlement/check.py remain). SHA-256 uses Web
// Crypto when present, else the page's own implementation (fairness.js).

import { crashOf, engine, fromHex, sameBytes, toHex } from './fairness.js';

const dec = new TextDecoder('utf-8', { fatal: true });

/** Reads the documented byte layouts: tag, then big-endian fields; refuses trailing bytes. */
class Reader {
  constructor(bytes, tag) {
    this.b = bytes;
    this.i = 0;
    const n = this.take(1)[0];
    const got = new TextDecoder().decode(this.take(n));
    if (got !== tag) throw new Error(`tag ${got}, expected ${tag}`);
  }
  take(n) {
    if (this.i + n > this.b.length) throw new Error('truncated');
    const s = this.b.subarray(this.i, this.i + n);
    this.i += n;
    return s;
  }
  u8() { return this.take(1)[0]; }
  view(n) { const s = this.take(n); return new DataView(s.buffer, s.byteOffset, n); }
  u64() { return this.view(8).getBigUint64(0); }
  i64() { return this.view(8).getBigInt64(0); }
  text() { return dec.decode(this.take(this.view(2).getUint16(0))); }
  hash() { return toHex(this.take(32)); }
  end() { if (this.i !== this.b.length) throw new Error('trailing bytes'); }
}

export function decodeReceipt(bytes) {
  const r = new Reader(bytes, 'crashfleet/receipt/v1');
  const v = {
    kind: { 1: 'bet', 2: 'cash_out', 3: 'auto_cash_out' }[r.u8()], table: r.text(), round: r.u64(),
    bet_id: r.text(), player: r.hash(), stake: r.u64(), auto: r.u64(), at_ms: r.i64(),
    multiplier: r.u64(), payout: r.u64(),
  };
  r.end();
  return v;
}

export function decodeSettlementLeaf(bytes) {
  const r = new Reader(bytes, 'crashfleet/settlement-leaf/v1');
  const v = {
    bet_id: r.text(), player: r.hash(), stake: r.u64(),
    outcome: { 0: 'lost', 1: 'won', 2: 'refunded' }[r.u8()], multiplier: r.u64(), payout: r.u64(),
  };
  r.end();
  return v;
}

export function decodeLogLeaf(bytes) {
  const r = new Reader(bytes, 'crashfleet/log-leaf/v1');
  const v = {
    round: r.u64(), hash: r.hash(), end: { 1: 'crashed', 2: 'voided' }[r.u8()], crash: r.u64(),
    root: r.hash(), bets: r.u64(), wagered: r.u64(), paid: r.u64(),
  };
  r.end();
  return v;
}

export function decodeHead(bytes) {
  const r = new Reader(bytes, 'crashfleet/tree-head/v1');
  const v = { table: r.text(), size: r.u64(), root: r.hash(), timestamp_ms: r.i64() };
  r.end();
  return v;
}

const join = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let i = 0;
  for (const p of parts) { out.set(p, i); i += p.length; }
  return out;
};
const leafHash = (bytes) => engine.sha256(join(Uint8Array.of(0), bytes));
const nodeHash = (l, r) => engine.sha256(join(Uint8Array.of(1), l, r));

/** RFC 9162 2.1.3.2: the root an inclusion path leads to, or null. */
export async function rootFromInclusion(leaf, index, size, path) {
  if (index >= size) return null;
  let fn = BigInt(index);
  let sn = BigInt(size) - 1n;
  let r = leaf;
  for (const p of path) {
    if (sn === 0n) return null;
    if (fn & 1n || fn === sn) {
      r = await nodeHash(p, r);
      while (!(fn & 1n) && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
    } else {
      r = await nodeHash(r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  return sn === 0n ? r : null;
}

/** Ed25519 through Web Crypto: true/false, or null when this browser cannot check it here. */
export async function ed25519Verify(keyHex, messageHex, signatureHex) {
  try {
    const key = await crypto.subtle.importKey('raw', fromHex(keyHex), { name: 'Ed25519' }, false, ['verify']);
    return await crypto.subtle.verify({ name: 'Ed25519' }, key, fromHex(signatureHex), fromHex(messageHex));
  } catch {
    return null;
  }
}

const x = (m) => (Number(m) / 100).toFixed(2) + '×';

/**
 * Checks one bet: `receipts` (as stored), `proof` (GET /api/v1/bets/{id}/proof), `fairness`
 * (GET /api/v1/fairness), `head` (GET /api/v1/log/head taken after the proof; when it is newer,
 * `consistency` is GET /api/v1/log/consistency from the proof's log size to the head's).
 * Returns [{ ok: true|false|null, what }] (null: could not be checked in this browser).
 */
export async function checkBet(receipts, proof, fairness, head, consistency) {
  const out = [];
  const add = (ok, what) => out.push({ ok, what });
  const key = fairness.signing_key;
  const signed = [];
  for (const r of receipts) {
    const ok = await ed25519Verify(key, r.message, r.signature);
    let decoded = null;
    try { decoded = decodeReceipt(fromHex(r.message)); } catch (e) { add(false, `a receipt does not decode: ${e.message}`); continue; }
    add(ok, `${decoded.kind.replace(/_/g, '-')} receipt signed by the table's key`);
    if (ok !== false) signed.push(decoded);
  }
  if (signed.length === 0) { add(false, 'no receipt of this bet verifies'); return out; }
  const first = signed[0];
  const cashOut = signed.find((r) => r.kind !== 'bet');
  const auto = signed.map((r) => r.auto).find((a) => a > 0n) || 0n;
  const leafBytes = fromHex(proof.leaf);
  const leaf = decodeSettlementLeaf(leafBytes);
  add(leaf.bet_id === first.bet_id && leaf.player === first.player && leaf.stake === first.stake,
    `the settled leaf is bet ${leaf.bet_id} (player and stake as signed)`);
  const logBytes = fromHex(proof.log.leaf);
  const round = decodeLogLeaf(logBytes);
  add(round.round === first.round, `the log leaf is round ${round.round}`);
  const crash = round.crash;
  if (cashOut) {
    add(leaf.outcome === 'won' && leaf.multiplier === cashOut.multiplier && leaf.payout === cashOut.payout,
      `won at the signed cash-out ${x(cashOut.multiplier)} paying ${cashOut.payout}`);
  } else if (leaf.outcome === 'won') {
    // A void honours the cash-outs accepted before it, so a win may end either kind of round.
    add(leaf.multiplier <= crash && (auto === 0n || leaf.multiplier <= auto),
      `won at ${x(leaf.multiplier)} (crash ${x(crash)})`);
  } else if (round.end === 'voided') {
    add(leaf.outcome === 'refunded' && leaf.payout === leaf.stake, `refunded ${leaf.payout} (the round was voided)`);
  } else {
    const missed = auto > 0n && auto <= crash;
    add(!missed && leaf.outcome === 'lost' && leaf.payout === 0n,
      missed ? `LOST although the auto target ${x(auto)} was reached (crash ${x(crash)})` : `lost: no cash-out signed, crash at ${x(crash)}`);
  }
  if (leaf.outcome === 'won') {
    const full = (leaf.stake * leaf.multiplier) / 100n;
    add(leaf.payout === full || (leaf.payout < full && cashOut && cashOut.payout === leaf.payout),
      `payout ${leaf.payout} = ⌊${leaf.stake} × ${leaf.multiplier} / 100⌋`);
  }
  const settlementRoot = await rootFromInclusion(await leafHash(leafBytes), proof.leaf_index, proof.tree_size, proof.path.map(fromHex));
  add(!!settlementRoot && toHex(settlementRoot) === proof.settlement_root, "the settled leaf is in the round's settlement root");
  add(round.root === proof.settlement_root, "the round's log leaf carries that settlement root");
  const logRoot = await rootFromInclusion(await leafHash(logBytes), proof.log.leaf_index, proof.log.tree_size, proof.log.path.map(fromHex));
  add(!!logRoot && toHex(logRoot) === proof.log.root, `round ${round.round} is in the round log of ${proof.log.tree_size} rounds`);
  const headOk = await ed25519Verify(key, head.message, head.signature);
  const signedHead = decodeHead(fromHex(head.message));
  add(headOk, `the log head (${signedHead.size} rounds) is signed by the table`);
  if (Number(signedHead.size) === proof.log.tree_size) {
    add(signedHead.root === proof.log.root, "the proof's log root is the signed head's");
  } else {
    add(!!consistency && await consistent(proof.log.tree_size, fromHex(proof.log.root), Number(signedHead.size), fromHex(signedHead.root), consistency.path.map(fromHex)),
      `the log of ${proof.log.tree_size} rounds is a prefix of the signed head's ${signedHead.size}`);
  }
  let h = fromHex(round.hash);
  for (let i = 0n; i < round.round; i += 1n) h = await engine.sha256(h);
  add(toHex(h) === fairness.terminating_hash, `round ${round.round}'s hash chains to the published terminating hash`);
  if (round.end === 'crashed') {
    const hmac = await engine.hmac(fairness.salt);
    const { crash: expected } = await crashOf(hmac, fromHex(round.hash), fairness.house_edge_bp, BigInt(fairness.max_x100));
    add(expected === crash, `the crash point ${x(crash)} is the chain's`);
  }
  return out;
}

/** RFC 9162 2.1.4.2. */
async function consistent(oldSize, oldRoot, newSize, newRoot, path) {
  if (oldSize === newSize) return sameBytes(oldRoot, newRoot) && path.length === 0;
  if (oldSize === 0 || oldSize > newSize || path.length === 0) return false;
  let p = path;
  if ((oldSize & (oldSize - 1)) === 0) p = [oldRoot, ...path];
  let fn = BigInt(oldSize - 1);
  let sn = BigInt(newSize - 1);
  while (fn & 1n) { fn >>= 1n; sn >>= 1n; }
  let fr = p[0];
  let sr = p[0];
  for (const c of p.slice(1)) {
    if (sn === 0n) return false;
    if (fn & 1n || fn === sn) {
      fr = await nodeHash(c, fr);
      sr = await nodeHash(c, sr);
      while (!(fn & 1n) && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
    } else {
      sr = await nodeHash(sr, c);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  return sn === 0n && sameBytes(fr, oldRoot) && sameBytes(sr, newRoot);
}
