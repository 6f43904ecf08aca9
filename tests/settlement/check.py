#!/usr/bin/env python3
"""An independent check of a crashfleet table's settlement, from its public API only.

Written from the documented byte formats with nothing of the Rust code: hashlib for SHA-256 and
the RFC 6962 trees, PyNaCl (libsodium, from PyPI) for Ed25519. It

1. verifies the signed round-log head with the table's published key;
2. recomputes a settled round's settlement root from the leaves the node serves, checks each leaf
   against the round's bets and the totals, and the crash point against HMAC-SHA256 with the salt;
3. checks the round's log leaf and its inclusion proof up to the signed head;
4. optionally checks a consistency proof from an earlier log size (--from-size);
5. verifies receipts (--receipts FILE: one receipt or a JSON array) against the same key.

Prints one line per check and exits 0 only when every check passes.

    python3 check.py --url http://127.0.0.1:8080 [--round N] [--from-size S --from-root HEX]
                     [--receipts FILE]
"""

import argparse
import hashlib
import hmac
import json
import struct
import sys
import urllib.request

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

FAILED = []


def check(ok, what):
    print(("ok      " if ok else "FAILED  ") + what)
    if not ok:
        FAILED.append(what)


def get(url, path):
    with urllib.request.urlopen(url.rstrip("/") + path, timeout=20) as r:
        return json.load(r)


# --- RFC 6962 (RFC 9162 section 2.1) -----------------------------------------------------------


def leaf_hash(data):
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def mth(hashes):
    """The Merkle tree hash of a list of leaf hashes."""
    n = len(hashes)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashes[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return node_hash(mth(hashes[:k]), mth(hashes[k:]))


def root_from_inclusion(leaf, index, size, path):
    """RFC 9162 2.1.3.2."""
    if index >= size:
        return None
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def verify_consistency(old_size, old_root, new_size, new_root, path):
    """RFC 9162 2.1.4.2."""
    if old_size == new_size:
        return old_root == new_root and not path
    if old_size == 0 or old_size > new_size or not path:
        return False
    if old_size & (old_size - 1) == 0:
        path = [old_root] + path
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


# --- the byte formats ---------------------------------------------------------------------------


class Reader:
    def __init__(self, data, tag):
        self.d, self.i = data, 0
        n = self.take(1)[0]
        got = self.take(n).decode("ascii")
        if got != tag:
            raise ValueError(f"tag {got!r}, expected {tag!r}")

    def take(self, n):
        if self.i + n > len(self.d):
            raise ValueError("truncated")
        b = self.d[self.i : self.i + n]
        self.i += n
        return b

    def u8(self):
        return self.take(1)[0]

    def u64(self):
        return struct.unpack(">Q", self.take(8))[0]

    def i64(self):
        return struct.unpack(">q", self.take(8))[0]

    def text(self):
        (n,) = struct.unpack(">H", self.take(2))
        return self.take(n).decode("utf-8")

    def hash(self):
        return self.take(32)

    def end(self):
        if self.i != len(self.d):
            raise ValueError("trailing bytes")


def decode_receipt(b):
    r = Reader(b, "crashfleet/receipt/v1")
    v = dict(kind={1: "bet", 2: "cash_out", 3: "auto_cash_out"}[r.u8()], table=r.text(),
             round=r.u64(), bet_id=r.text(), player_hash=r.hash().hex(), stake=r.u64(),
             auto_cashout_x100=r.u64() or None, at_ms=r.i64(), multiplier_x100=r.u64() or None,
             payout=r.u64())
    r.end()
    if v["kind"] == "bet":
        v["payout"] = None
    return v


def decode_settlement_leaf(b):
    r = Reader(b, "crashfleet/settlement-leaf/v1")
    v = dict(bet_id=r.text(), player_hash=r.hash().hex(), stake=r.u64(),
             outcome={0: "lost", 1: "won", 2: "refunded"}[r.u8()], multiplier_x100=r.u64() or None,
             payout=r.u64())
    r.end()
    return v


def decode_log_leaf(b):
    r = Reader(b, "crashfleet/log-leaf/v1")
    v = dict(round=r.u64(), hash=r.hash().hex(), end={1: "crashed", 2: "voided"}[r.u8()],
             crash_x100=r.u64(), settlement_root=r.hash().hex(), bets=r.u64(), wagered=r.u64(),
             paid=r.u64())
    r.end()
    return v


def decode_head(b):
    r = Reader(b, "crashfleet/tree-head/v1")
    v = dict(table=r.text(), size=r.u64(), root=r.hash().hex(), timestamp_ms=r.i64())
    r.end()
    return v


def verified(key, message_hex, signature_hex):
    try:
        key.verify(bytes.fromhex(message_hex), bytes.fromhex(signature_hex))
        return True
    except (BadSignatureError, ValueError):
        return False


def crash_x100(salt, round_hash, edge_bp, max_x100):
    r = int(hmac.new(salt.encode(), round_hash, hashlib.sha256).hexdigest()[:13], 16)
    return min(max_x100, max(100, (10000 - edge_bp) * 2**52 // ((2**52 - r) * 100)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--round", type=int, help="the settled round to check (default: the newest)")
    ap.add_argument("--from-size", type=int, help="with --from-root: an earlier signed head's size, to check the log only grew since")
    ap.add_argument("--from-root", help="the earlier signed head's root (hex)")
    ap.add_argument("--receipts", help="a receipt or a JSON array of receipts to verify")
    a = ap.parse_args()
    if bool(a.from_size) != bool(a.from_root):
        ap.error("--from-size and --from-root go together")

    fairness = get(a.url, "/api/v1/fairness")
    key = VerifyKey(bytes.fromhex(fairness["signing_key"]))
    head = get(a.url, "/api/v1/log/head")
    check(verified(key, head["message"], head["signature"]), "the log head is signed by the table's key")
    signed = decode_head(bytes.fromhex(head["message"]))
    check((signed["size"], signed["root"]) == (head["size"], head["root"]),
          f"the signed head says {signed['size']} rounds, root {signed['root'][:16]}…")
    if signed["size"] == 0:
        check(False, "the log is empty: no settled round to check")
        return

    n = a.round or signed["size"]
    detail = get(a.url, f"/api/v1/rounds/{n}")
    leaves = [bytes.fromhex(x) for x in detail["leaves"]]
    root = mth([leaf_hash(x) for x in leaves]).hex()
    check(root == detail["settlement_root"], f"round {n}: recomputed settlement root {root[:16]}… = the stored one")
    decoded = [decode_settlement_leaf(x) for x in leaves]
    check([d["bet_id"] for d in decoded] == sorted((d["bet_id"] for d in decoded), key=lambda s: s.encode()),
          f"round {n}: leaves in bet-id order")
    check((len(decoded), sum(d["stake"] for d in decoded), sum(d["payout"] for d in decoded))
          == (detail["bets_count"], detail["wagered"], detail["paid"]),
          f"round {n}: {detail['bets_count']} bets, wagered {detail['wagered']}, paid {detail['paid']}")
    bets = {b["bet_id"]: b for b in detail["bets"]}
    same = all(
        d["bet_id"] in bets
        and (d["stake"], d["outcome"], d["payout"]) == (bets[d["bet_id"]]["stake"], bets[d["bet_id"]]["status"], bets[d["bet_id"]]["payout"])
        and (d["outcome"] != "won" or d["multiplier_x100"] == bets[d["bet_id"]]["cashout_x100"])
        for d in decoded
    ) and len(bets) == len(decoded)
    check(same, f"round {n}: every leaf is one of the round's bets as listed")
    wins = all(d["payout"] <= d["stake"] * d["multiplier_x100"] // 100 for d in decoded if d["outcome"] == "won")
    check(wins, f"round {n}: every win pays at most floor(stake x multiplier / 100)")

    proof = get(a.url, f"/api/v1/log/proof?round={n}&size={signed['size']}")
    log_leaf = bytes.fromhex(proof["leaf"])
    logged = decode_log_leaf(log_leaf)
    check((logged["round"], logged["hash"], logged["crash_x100"], logged["settlement_root"])
          == (n, detail["round"]["hash"], detail["round"]["crash_x100"], detail["settlement_root"]),
          f"round {n}: the log leaf holds the round's hash, crash point and settlement root")
    got = root_from_inclusion(leaf_hash(log_leaf), proof["leaf_index"], proof["tree_size"],
                              [bytes.fromhex(p) for p in proof["path"]])
    check(got is not None and got.hex() == signed["root"], f"round {n} is in the signed log of {signed['size']} rounds")
    if logged["end"] == "crashed":
        expected = crash_x100(fairness["salt"], bytes.fromhex(logged["hash"]), fairness["house_edge_bp"], fairness["max_x100"])
        check(expected == logged["crash_x100"], f"round {n}: crash point {logged['crash_x100'] / 100:.2f}x from HMAC-SHA256(salt, hash)")
    h = bytes.fromhex(logged["hash"])
    for _ in range(n):
        h = hashlib.sha256(h).digest()
    check(h.hex() == fairness["terminating_hash"], f"round {n}: its hash chains to the published terminating hash")

    if a.from_size:
        old_root = bytes.fromhex(a.from_root)
        cons = get(a.url, f"/api/v1/log/consistency?from={a.from_size}&to={signed['size']}")
        check(verify_consistency(a.from_size, old_root, signed["size"], bytes.fromhex(signed["root"]),
                                 [bytes.fromhex(p) for p in cons["path"]]),
              f"the log of {a.from_size} rounds is a prefix of the signed log of {signed['size']}")

    if a.receipts:
        with open(a.receipts) as f:
            receipts = json.load(f)
        for r in receipts if isinstance(receipts, list) else [receipts]:
            ok = verified(key, r["message"], r["signature"])
            fields = decode_receipt(bytes.fromhex(r["message"])) if ok else {}
            shown = {k: r.get(k) for k in fields}
            check(ok and fields == shown, f"receipt {r.get('kind')} of bet {r.get('bet_id')}: signed, and its fields are the signed bytes")

    print("every check passed" if not FAILED else f"{len(FAILED)} checks FAILED")


if __name__ == "__main__":
    main()
    sys.exit(1 if FAILED else 0)
