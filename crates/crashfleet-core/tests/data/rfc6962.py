#!/usr/bin/env python3
"""Known answers for crashfleet's RFC 6962 Merkle trees, computed outside the Rust code.

An independent implementation of RFC 6962 §2.1 (hashlib only: MTH, PATH, PROOF) first reproduces
the Certificate Transparency project's published test vectors (the eight test leaves, their roots
for every size, and its sample inclusion and consistency proofs), then writes, for those leaves,
the root of every prefix, the inclusion proof of every leaf in every tree size and the consistency
proof of every pair of sizes, plus the roots of a 1,000-leaf tree, to rfc6962.json beside this
script. crates/crashfleet-core/tests/rfc6962.rs checks the Rust trees against that file and that
this script still writes it byte for byte.

    python3 crates/crashfleet-core/tests/data/rfc6962.py          # rewrite rfc6962.json
    python3 crates/crashfleet-core/tests/data/rfc6962.py --print  # write it to stdout
"""
import hashlib
import json
import os
import sys


def sha(b):
    return hashlib.sha256(b).digest()


def leaf_hash(leaf):
    return sha(b"\x00" + leaf)


def node_hash(left, right):
    return sha(b"\x01" + left + right)


def k_of(n):
    """The largest power of two smaller than n (n >= 2)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(d):
    if not d:
        return sha(b"")
    if len(d) == 1:
        return leaf_hash(d[0])
    k = k_of(len(d))
    return node_hash(mth(d[:k]), mth(d[k:]))


def path(m, d):
    if len(d) <= 1:
        return []
    k = k_of(len(d))
    if m < k:
        return path(m, d[:k]) + [mth(d[k:])]
    return path(m - k, d[k:]) + [mth(d[:k])]


def subproof(m, d, b):
    n = len(d)
    if m == n:
        return [] if b else [mth(d)]
    k = k_of(n)
    if m <= k:
        return subproof(m, d[:k], b) + [mth(d[k:])]
    return subproof(m - k, d[k:], False) + [mth(d[:k])]


def proof(m, d):
    return subproof(m, d, True)


# The Certificate Transparency project's test leaves and published answers.
CT_LEAVES = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
             "606162636465666768696a6b6c6d6e6f"]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
# (leaf index, tree size, path)
CT_INCLUSION = [
    (0, 1, []),
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]
# (old size, new size, proof)
CT_CONSISTENCY = [
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]


def hexes(hs):
    return [h.hex() for h in hs]


def main():
    leaves = [bytes.fromhex(x) for x in CT_LEAVES]
    # This implementation must first agree with the published answers.
    assert mth([]).hex() == CT_EMPTY
    for size, root in enumerate(CT_ROOTS, start=1):
        assert mth(leaves[:size]).hex() == root, f"root of {size}"
    for index, size, want in CT_INCLUSION:
        assert hexes(path(index, leaves[:size])) == want, f"path {index}/{size}"
    for old, new, want in CT_CONSISTENCY:
        assert hexes(proof(old, leaves[:new])) == want, f"proof {old}->{new}"

    big = [i.to_bytes(8, "big") for i in range(1000)]
    out = {
        "about": "RFC 6962 known answers; written by rfc6962.py (hashlib), which first reproduces "
                 "the Certificate Transparency test vectors",
        "leaves": CT_LEAVES,
        "roots": [mth(leaves[:n]).hex() for n in range(len(leaves) + 1)],
        "inclusion": [
            {"index": i, "size": n, "path": hexes(path(i, leaves[:n]))}
            for n in range(1, len(leaves) + 1) for i in range(n)
        ],
        "consistency": [
            {"old": m, "new": n, "proof": hexes(proof(m, leaves[:n]))}
            for n in range(1, len(leaves) + 1) for m in range(1, n + 1)
        ],
        "big": {
            "leaves": "the 1,000 leaves are i as 8 big-endian bytes, i = 0..999",
            "roots": {str(n): mth(big[:n]).hex() for n in (1, 2, 3, 100, 511, 512, 513, 999, 1000)},
            "inclusion": [
                {"index": i, "size": n, "path": hexes(path(i, big[:n]))}
                for i, n in ((0, 1000), (511, 1000), (512, 1000), (999, 1000), (500, 513))
            ],
            "consistency": [
                {"old": m, "new": n, "proof": hexes(proof(m, big[:n]))}
                for m, n in ((1, 1000), (511, 512), (512, 1000), (513, 999), (999, 1000))
            ],
        },
    }
    text = json.dumps(out, indent=1) + "\n"
    if "--print" in sys.argv[1:]:
        sys.stdout.write(text)
    else:
        with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "rfc6962.json"), "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
