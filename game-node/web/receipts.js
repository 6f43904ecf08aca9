// The player's signed receipts, kept in this browser (localStorage), so they outlive the page, the
// session and the server's goodwill: each one is the table's Ed25519 signature over the canonical
// bytes of an accepted bet or cash-out, which the player can later check against the round's
// settlement (the verifier page, or `game-node verify receipt`).
//
// Stored as the node sent them ({message, signature, kind, table, round, bet_id, ...}), newest
// first, one entry per signed message (a retry's receipt is the first one, byte for byte), at
// most RECEIPTS_KEEP of them: about 600 bytes each, so ~300 KB of the origin's 5 MB.

const KEY = 'crashfleet.receipts';
export const RECEIPTS_KEEP = 500;

function isReceipt(r) {
  return !!r && typeof r.message === 'string' && typeof r.signature === 'string' &&
    /^[0-9a-f]+$/.test(r.message) && /^[0-9a-f]{128}$/.test(r.signature);
}

/** Every stored receipt, newest first (entries that are not receipts are dropped). */
export function loadReceipts() {
  try {
    const list = JSON.parse(localStorage.getItem(KEY) || '[]');
    return Array.isArray(list) ? list.filter(isReceipt) : [];
  } catch {
    return [];
  }
}

/** Keeps `receipt` (once); returns the stored list. Storage errors (full, disabled) are ignored:
 *  the receipt is still in the answer the page showed. */
export function saveReceipt(receipt) {
  const list = loadReceipts();
  if (!isReceipt(receipt) || list.some((r) => r.message === receipt.message)) return list;
  list.unshift(receipt);
  list.length = Math.min(list.length, RECEIPTS_KEEP);
  try {
    localStorage.setItem(KEY, JSON.stringify(list));
  } catch {
    // Quota exceeded or storage disabled: nothing more to do here.
  }
  return list;
}

/** The stored receipts as a JSON document to download (`game-node verify receipt` reads it). */
export function receiptsBlob() {
  return new Blob([JSON.stringify(loadReceipts(), null, 2) + '\n'], { type: 'application/json' });
}
