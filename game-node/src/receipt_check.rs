//! `game-node verify receipt`: checks a player's signed receipts against the table's public data —
//! that the bet was settled as signed, that the round's settlement is in the round log, and that
//! the round's crash point is the chain's — with nothing but the table's public key, the receipts
//! and the proofs the node serves (fetched with `--url`, or from a file saved earlier).
//!
//! The checks, for each bet in the receipts file:
//! 1. every receipt's Ed25519 signature verifies with the table's published key, and all of a
//!    bet's receipts agree on its table, round, player and stake;
//! 2. the settled leaf is that bet: same id, player hash and stake;
//! 3. it was settled as signed: a signed cash-out → won at exactly that multiplier and payout; no
//!    signed cash-out but an auto target at or below the crash point → won at the target; a void →
//!    refunded; otherwise lost (a win without a cash-out receipt in the file is accepted only at or
//!    below the crash point);
//! 4. a win's payout is ⌊stake × multiplier / 100⌋ (or less, when the table's maximum payout caps
//!    it — and then only as the signed receipt says);
//! 5. the leaf is in the round's settlement root, and the round's log leaf — which carries that
//!    root — is in the log, whose head is signed by the table (and consistent with the newest head
//!    when they differ);
//! 6. the round's hash hashes to the published terminating hash, and its crash point is the one
//!    HMAC-SHA256 with the public salt gives.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use crashfleet_core::fairness::{CrashCalculator, parse_hash, verify_commitment};
use crashfleet_core::merkle::{Hash, leaf_hash, verify_consistency, verify_inclusion};
use crashfleet_core::protocol::SignedReceipt;
use crashfleet_core::settlement::{
    LogLeaf, Outcome, Receipt, ReceiptKind, RoundEnd, SettlementLeaf, TreeHead, signing,
};
use serde_json::{Value, json};

/// Check receipts against the table's settlement and round log.
#[derive(clap::Args, Debug, Clone)]
pub struct ReceiptArgs {
    /// A receipt (the `receipt` object of a bet or cash-out answer) or a JSON array of them (what
    /// the game page's "Download" gives).
    #[arg(long, value_name = "FILE")]
    pub receipt: PathBuf,
    /// The table's base URL (`http://host:port`): fetch its public key, log head and each bet's
    /// proof.
    #[arg(long, value_name = "URL", required_unless_present = "proofs")]
    pub url: Option<String>,
    /// The player's session token (bet proofs are served to their owner only).
    #[arg(
        long,
        env = "CRASHFLEET_TOKEN",
        hide_env_values = true,
        requires = "url"
    )]
    pub token: Option<String>,
    /// Check offline against evidence saved earlier with --save-proofs.
    #[arg(long, value_name = "FILE", conflicts_with = "url")]
    pub proofs: Option<PathBuf>,
    /// Save the fetched evidence (public key, fairness, head, proofs) to check offline later.
    #[arg(long, value_name = "FILE", requires = "url")]
    pub save_proofs: Option<PathBuf>,
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub ok: bool,
    pub what: String,
}

fn check(ok: bool, what: impl Into<String>) -> Check {
    Check {
        ok,
        what: what.into(),
    }
}

fn hex32(v: &Value, what: &str) -> anyhow::Result<Hash> {
    let s = v.as_str().with_context(|| format!("{what} is missing"))?;
    parse_hash(s).with_context(|| format!("{what} is not 64 hex digits"))
}

fn hex_bytes(v: &Value, what: &str) -> anyhow::Result<Vec<u8>> {
    let s = v.as_str().with_context(|| format!("{what} is missing"))?;
    hex::decode(s).with_context(|| format!("{what} is not hex"))
}

fn hashes(v: &Value, what: &str) -> anyhow::Result<Vec<Hash>> {
    v.as_array()
        .with_context(|| format!("{what} is not a list"))?
        .iter()
        .map(|h| hex32(h, what))
        .collect()
}

fn u64_of(v: &Value, what: &str) -> anyhow::Result<u64> {
    v.as_u64()
        .with_context(|| format!("{what} is not a non-negative integer"))
}

/// Reads a receipts file: one receipt object or an array of them.
pub fn read_receipts(text: &str) -> anyhow::Result<Vec<SignedReceipt>> {
    let v: Value = serde_json::from_str(text).context("the receipts file is not JSON")?;
    let list = match v {
        Value::Array(items) => items,
        one => vec![one],
    };
    list.into_iter()
        .map(|r| serde_json::from_value(r).context("an entry is not a receipt"))
        .collect()
}

/// Checks one bet: its receipts against its proof (`GET /api/v1/bets/{id}/proof`), the table's
/// fairness (`GET /api/v1/fairness`) and a signed log head (`GET /api/v1/log/head`), with the
/// consistency proof from the proof's log size to the head's when they differ.
pub fn check_bet(
    receipts: &[SignedReceipt],
    proof: &Value,
    fairness: &Value,
    head: &Value,
    consistency: Option<&Value>,
) -> anyhow::Result<Vec<Check>> {
    let mut out = Vec::new();
    let key = hex32(&fairness["signing_key"], "the table's signing_key")?;
    // 1. Signatures, and one bet.
    let mut signed: Vec<Receipt> = Vec::new();
    for r in receipts {
        match r.verify(&key) {
            Ok(receipt) => {
                out.push(check(
                    true,
                    format!(
                        "{} receipt signed by the table's key",
                        kind_name(receipt.kind)
                    ),
                ));
                signed.push(receipt);
            }
            Err(e) => out.push(check(false, format!("receipt of bet {}: {e}", r.bet_id))),
        }
    }
    let Some(first) = signed.first().cloned() else {
        out.push(check(false, "no receipt of this bet verifies"));
        return Ok(out);
    };
    let same = signed.iter().all(|r| {
        (&r.table, r.round, &r.bet_id, r.player, r.stake)
            == (
                &first.table,
                first.round,
                &first.bet_id,
                first.player,
                first.stake,
            )
    });
    out.push(check(
        same,
        "the receipts agree on table, round, bet, player and stake",
    ));
    let cash_outs: Vec<&Receipt> = signed
        .iter()
        .filter(|r| r.kind != ReceiptKind::Bet)
        .collect();
    let distinct = cash_outs.iter().all(|c| {
        (c.multiplier_x100, c.payout) == (cash_outs[0].multiplier_x100, cash_outs[0].payout)
    });
    out.push(check(
        distinct,
        "at most one cash-out was signed for the bet",
    ));
    let cash_out = cash_outs.first().copied();
    let auto_target = signed.iter().find_map(|r| r.auto_cashout_x100);

    // 2. The settled leaf is this bet.
    let leaf_bytes = hex_bytes(&proof["leaf"], "the proof's leaf")?;
    let leaf = SettlementLeaf::decode(&leaf_bytes).context("the proof's leaf")?;
    out.push(check(
        (&leaf.bet_id, leaf.player, leaf.stake) == (&first.bet_id, first.player, first.stake),
        format!(
            "the settled leaf is bet {} (player hash and stake {} as signed)",
            leaf.bet_id, leaf.stake
        ),
    ));
    let log_bytes = hex_bytes(&proof["log"]["leaf"], "the proof's log leaf")?;
    let round = LogLeaf::decode(&log_bytes).context("the proof's log leaf")?;
    out.push(check(
        round.round == first.round,
        format!(
            "the log leaf is round {} (the receipts' round {})",
            round.round, first.round
        ),
    ));

    // 3. and 4. Settled as signed; payouts follow the formula.
    let crash = round.crash_x100;
    let formula = |m: u64| (u128::from(leaf.stake) * u128::from(m) / 100) as u64;
    // Each arm records its own check; the value says whether it passed (unused beyond that).
    let _settled_as_signed = match (round.end, leaf.outcome, cash_out) {
        (_, Outcome::Won, Some(c)) => {
            let as_signed =
                (leaf.multiplier_x100, Some(leaf.payout)) == (c.multiplier_x100, c.payout);
            out.push(check(
                as_signed,
                format!(
                    "won at the signed cash-out: {} paying {}",
                    fmt_x100(leaf.multiplier_x100.unwrap_or(0)),
                    leaf.payout
                ),
            ));
            as_signed
        }
        (_, other, Some(c)) => {
            out.push(check(
                false,
                format!(
                    "a cash-out at {} was signed but the bet was settled {other:?}",
                    fmt_x100(c.multiplier_x100.unwrap_or(0))
                ),
            ));
            false
        }
        (RoundEnd::Voided, Outcome::Refunded, None) => {
            let ok = leaf.payout == leaf.stake;
            out.push(check(
                ok,
                format!(
                    "refunded {} of {} (the round was voided)",
                    leaf.payout, leaf.stake
                ),
            ));
            ok
        }
        // A void honours the cash-outs accepted before it, so a win may end either kind of round.
        (_, Outcome::Won, None) => {
            let m = leaf.multiplier_x100.unwrap_or(0);
            let at_target = auto_target.is_none_or(|t| t == m || m < t);
            let ok = m >= 101 && m <= crash && at_target;
            out.push(check(
                ok,
                if auto_target == Some(m) {
                    format!(
                        "won at its auto-cash-out target {} (crash {})",
                        fmt_x100(m),
                        fmt_x100(crash)
                    )
                } else {
                    format!(
                        "won at {} (crash {}; no cash-out receipt in the file)",
                        fmt_x100(m),
                        fmt_x100(crash)
                    )
                },
            ));
            ok
        }
        (RoundEnd::Crashed, Outcome::Lost, None) => {
            let missed_auto = auto_target.is_some_and(|t| t <= crash);
            out.push(check(
                !missed_auto && leaf.payout == 0,
                match auto_target {
                    Some(t) if t <= crash => format!(
                        "LOST although the auto-cash-out target {} was reached (crash {})",
                        fmt_x100(t),
                        fmt_x100(crash)
                    ),
                    _ => format!("lost: no cash-out signed, crash at {}", fmt_x100(crash)),
                },
            ));
            !missed_auto
        }
        (end, outcome, None) => {
            out.push(check(
                false,
                format!("settled {outcome:?} in a round that ended {end:?}"),
            ));
            false
        }
    };
    if leaf.outcome == Outcome::Won {
        let m = leaf.multiplier_x100.unwrap_or(0);
        let full = formula(m);
        let capped_as_signed = cash_out.is_some_and(|c| c.payout == Some(leaf.payout));
        out.push(check(
            leaf.payout == full || (leaf.payout < full && capped_as_signed),
            format!(
                "payout {} = ⌊{} × {} / 100⌋ = {full}{}",
                leaf.payout,
                leaf.stake,
                m,
                if leaf.payout < full {
                    " (capped at the table's maximum payout)"
                } else {
                    ""
                }
            ),
        ));
        if round.end == RoundEnd::Crashed {
            out.push(check(
                m <= crash,
                format!(
                    "cashed out at or below the crash point ({})",
                    fmt_x100(crash)
                ),
            ));
        }
    }

    // 5. In the settlement root, the root in the log, the log signed.
    let settlement_root = hex32(&proof["settlement_root"], "the proof's settlement_root")?;
    out.push(check(
        verify_inclusion(
            &settlement_root,
            u64_of(&proof["tree_size"], "tree_size")?,
            u64_of(&proof["leaf_index"], "leaf_index")?,
            &leaf_hash(&leaf_bytes),
            &hashes(&proof["path"], "path")?,
        ),
        "the settled leaf is in the round's settlement root",
    ));
    out.push(check(
        round.settlement_root == settlement_root,
        "the round's log leaf carries that settlement root",
    ));
    let log_size = u64_of(&proof["log"]["tree_size"], "log tree_size")?;
    let log_root = hex32(&proof["log"]["root"], "log root")?;
    out.push(check(
        verify_inclusion(
            &log_root,
            log_size,
            u64_of(&proof["log"]["leaf_index"], "log leaf_index")?,
            &leaf_hash(&log_bytes),
            &hashes(&proof["log"]["path"], "log path")?,
        ),
        format!(
            "round {} is in the round log of {log_size} rounds",
            round.round
        ),
    ));
    let head_message = hex_bytes(&head["message"], "the head's message")?;
    let head_signature: [u8; 64] = hex_bytes(&head["signature"], "the head's signature")?
        .try_into()
        .ok()
        .context("the head's signature is not 64 bytes")?;
    let signed_head = TreeHead::decode(&head_message).context("the head's message")?;
    out.push(check(
        signing::verify(&key, &head_message, &head_signature) && signed_head.table == first.table,
        format!(
            "the log head ({} rounds) is signed by the table",
            signed_head.size
        ),
    ));
    if signed_head.size == log_size {
        out.push(check(
            signed_head.root == log_root,
            "the proof's log root is the signed head's",
        ));
    } else {
        let proven = consistency
            .map(|c| hashes(&c["path"], "consistency path"))
            .transpose()?
            .is_some_and(|path| {
                verify_consistency(
                    &log_root,
                    log_size,
                    &signed_head.root,
                    signed_head.size,
                    &path,
                )
            });
        out.push(check(
            proven,
            format!(
                "the log of {log_size} rounds is a prefix of the signed head's {} (consistency proof)",
                signed_head.size
            ),
        ));
    }

    // 6. The round's crash point from the chain.
    let terminating = hex32(&fairness["terminating_hash"], "terminating_hash")?;
    out.push(check(
        verify_commitment(&round.round_hash, &terminating, round.round),
        format!(
            "round {}'s hash, hashed {} times, gives the published terminating hash",
            round.round, round.round
        ),
    ));
    let calculator = CrashCalculator::new(
        fairness["salt"].as_str().context("salt is missing")?,
        u32::try_from(u64_of(&fairness["house_edge_bp"], "house_edge_bp")?)
            .context("house_edge_bp")?,
        u64_of(&fairness["max_x100"], "max_x100")?,
    )?;
    if round.end == RoundEnd::Crashed {
        let expected = calculator.crash_x100(&round.round_hash);
        out.push(check(
            expected == crash,
            format!(
                "the crash point {} is the chain's ({})",
                fmt_x100(crash),
                fmt_x100(expected)
            ),
        ));
    }
    Ok(out)
}

fn kind_name(kind: ReceiptKind) -> &'static str {
    match kind {
        ReceiptKind::Bet => "bet",
        ReceiptKind::CashOut => "cash-out",
        ReceiptKind::AutoCashOut => "auto-cash-out",
    }
}

fn fmt_x100(x: u64) -> String {
    crashfleet_core::fairness::format_x100(x)
}

/// Fetches everything `check_bet` needs from `url`, for the bets `ids`: `{fairness, head, proofs:
/// {bet id: proof}, consistency: {bet id: proof}}`.
pub async fn fetch_evidence(
    url: &str,
    token: Option<&str>,
    ids: &[String],
) -> anyhow::Result<Value> {
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(20))
        .build()?;
    let base = url.trim_end_matches('/');
    let get = |path: String, auth: bool| {
        let mut req = http.get(format!("{base}{path}"));
        if let (true, Some(t)) = (auth, token) {
            req = req.bearer_auth(t);
        }
        async move {
            let resp = req.send().await.with_context(|| format!("GET {path}"))?;
            let status = resp.status();
            let body: Value = resp
                .json()
                .await
                .with_context(|| format!("GET {path}: not JSON"))?;
            if !status.is_success() {
                bail!("GET {path}: {status}: {body}");
            }
            Ok(body)
        }
    };
    let fairness = get("/api/v1/fairness".into(), false).await?;
    let mut proofs = serde_json::Map::new();
    for id in ids {
        proofs.insert(
            id.clone(),
            get(format!("/api/v1/bets/{id}/proof"), true).await?,
        );
    }
    // The head after the proofs: it covers every round they do.
    let head = get("/api/v1/log/head".into(), false).await?;
    let size = head["size"].as_u64().unwrap_or(0);
    let mut consistency = serde_json::Map::new();
    for (id, proof) in &proofs {
        let from = proof["log"]["tree_size"].as_u64().unwrap_or(0);
        if from > 0 && from < size {
            consistency.insert(
                id.clone(),
                get(
                    format!("/api/v1/log/consistency?from={from}&to={size}"),
                    false,
                )
                .await?,
            );
        }
    }
    Ok(json!({"fairness": fairness, "head": head, "proofs": proofs, "consistency": consistency}))
}

/// Runs `game-node verify receipt`; `Ok(false)` when a check fails.
pub fn run(args: &ReceiptArgs, out: &mut dyn Write) -> anyhow::Result<bool> {
    let text = std::fs::read_to_string(&args.receipt)
        .with_context(|| format!("cannot read {}", args.receipt.display()))?;
    let receipts = read_receipts(&text)?;
    if receipts.is_empty() {
        bail!("{} holds no receipts", args.receipt.display());
    }
    let mut by_bet: BTreeMap<String, Vec<SignedReceipt>> = BTreeMap::new();
    for r in receipts {
        by_bet.entry(r.bet_id.clone()).or_default().push(r);
    }
    let ids: Vec<String> = by_bet.keys().cloned().collect();
    let evidence = match (&args.url, &args.proofs) {
        (Some(url), _) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let e = rt.block_on(fetch_evidence(url, args.token.as_deref(), &ids))?;
            if let Some(path) = &args.save_proofs {
                std::fs::write(path, serde_json::to_string_pretty(&e)? + "\n")
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            e
        }
        (None, Some(path)) => serde_json::from_str(
            &std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?,
        )
        .with_context(|| format!("{} is not JSON", path.display()))?,
        (None, None) => bail!("give --url (online) or --proofs (offline)"),
    };
    let mut all_ok = true;
    for (id, receipts) in &by_bet {
        writeln!(out, "bet {id}")?;
        let proof = evidence["proofs"]
            .get(id)
            .with_context(|| format!("no proof of bet {id} in the evidence"))?;
        let checks = check_bet(
            receipts,
            proof,
            &evidence["fairness"],
            &evidence["head"],
            evidence["consistency"].get(id),
        )?;
        for c in &checks {
            writeln!(
                out,
                "  {}  {}",
                if c.ok { "ok    " } else { "FAILED" },
                c.what
            )?;
            all_ok &= c.ok;
        }
    }
    writeln!(
        out,
        "{}",
        if all_ok {
            "every check passed: each bet was settled as signed, in a round the log holds"
        } else {
            "SOME CHECKS FAILED: the table did not settle these bets as it signed, or its proofs do not hold"
        }
    )?;
    Ok(all_ok)
}

#[cfg(test)]
mod tests {
    //! The settlement rules, each on a one-bet round built here: what passes and what must fail.

    use crashfleet_core::fairness::{Chain, to_hex};
    use crashfleet_core::merkle::Tree;
    use crashfleet_core::settlement::{player_hash, signing::SigningKey};

    use super::*;

    const SALT: &str = "salt";
    const STAKE: u64 = 1_000;

    struct Table {
        key: SigningKey,
        chain: Chain,
        calculator: CrashCalculator,
    }

    impl Table {
        fn new() -> Table {
            Table {
                key: SigningKey::from_seed(&[4; 32]),
                chain: Chain::new([9; 32], 50).expect("chain"),
                calculator: CrashCalculator::new(SALT, 100, 100_000_000).expect("calculator"),
            }
        }

        /// The first round of the chain that crashes in `range` (×100), and its crash point.
        fn round_crashing(&self, range: std::ops::Range<u64>) -> (u64, u64) {
            (1..=50)
                .map(|n| {
                    let h = self.chain.round_hash(n).expect("hash");
                    (n, self.calculator.crash_x100(&h))
                })
                .find(|(_, c)| range.contains(c))
                .expect("a round in range")
        }

        fn receipt(
            &self,
            kind: ReceiptKind,
            round: u64,
            auto: Option<u64>,
            m: Option<u64>,
        ) -> SignedReceipt {
            SignedReceipt::sign(
                &Receipt {
                    kind,
                    table: "main".into(),
                    round,
                    bet_id: "bet-1".into(),
                    player: player_hash("p1"),
                    stake: STAKE,
                    auto_cashout_x100: auto,
                    at_ms: 1,
                    multiplier_x100: m,
                    payout: m.map(|m| STAKE * m / 100),
                },
                &self.key,
            )
        }

        /// The evidence of round `round` settling bet-1 as `outcome`, next to another bet, in a
        /// log of `round` rounds: (proof, fairness, head).
        fn evidence(
            &self,
            round: u64,
            end: RoundEnd,
            outcome: Outcome,
            m: Option<u64>,
            payout: u64,
        ) -> (Value, Value, Value) {
            let leaf = SettlementLeaf {
                bet_id: "bet-1".into(),
                player: player_hash("p1"),
                stake: STAKE,
                outcome,
                multiplier_x100: m,
                payout,
            };
            let other = SettlementLeaf {
                bet_id: "bet-2".into(),
                player: player_hash("p2"),
                stake: 5,
                outcome: Outcome::Lost,
                multiplier_x100: None,
                payout: 0,
            };
            let settlement = Tree::from_leaves([leaf.encode(), other.encode()]);
            let hash = self.chain.round_hash(round).expect("hash");
            let logged = LogLeaf {
                round,
                round_hash: hash,
                end,
                crash_x100: self.calculator.crash_x100(&hash),
                settlement_root: settlement.root(),
                bets: 2,
                wagered: STAKE + 5,
                paid: payout,
            };
            // Earlier rounds' leaves do not matter to this check: any bytes.
            let mut log = Tree::from_leaves((1..round).map(u64::to_be_bytes));
            log.push(&logged.encode());
            let hex_path = |p: Vec<Hash>| p.iter().map(hex::encode).collect::<Vec<_>>();
            let proof = json!({
                "leaf": hex::encode(leaf.encode()), "leaf_index": 0, "tree_size": 2,
                "path": hex_path(settlement.inclusion_proof(0, 2).expect("path")),
                "settlement_root": hex::encode(settlement.root()),
                "log": {"leaf": hex::encode(logged.encode()), "leaf_index": round - 1,
                        "tree_size": round, "root": hex::encode(log.root()),
                        "path": hex_path(log.inclusion_proof(round - 1, round).expect("path"))},
            });
            let head = TreeHead {
                table: "main".into(),
                size: round,
                root: log.root(),
                timestamp_ms: 5,
            }
            .encode();
            let head = json!({"message": hex::encode(&head),
                              "signature": hex::encode(self.key.sign(&head))});
            let fairness = json!({"signing_key": hex::encode(self.key.public_key()),
                                  "terminating_hash": to_hex(&self.chain.terminating_hash()),
                                  "salt": SALT, "house_edge_bp": 100, "max_x100": 100_000_000});
            (proof, fairness, head)
        }
    }

    fn failures(checks: &[Check]) -> Vec<&str> {
        checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.what.as_str())
            .collect()
    }

    #[test]
    fn what_was_signed_is_what_must_be_settled() {
        let t = Table::new();
        let (round, crash) = t.round_crashing(200..5_000);
        let bet = t.receipt(ReceiptKind::Bet, round, Some(150), None);
        let run = |receipts: &[SignedReceipt], outcome, m, payout| {
            let (proof, fairness, head) = t.evidence(round, RoundEnd::Crashed, outcome, m, payout);
            check_bet(receipts, &proof, &fairness, &head, None).expect("checks")
        };
        // The auto target (1.50x) was reached: won there is right, lost is not.
        let ok = run(std::slice::from_ref(&bet), Outcome::Won, Some(150), 1_500);
        assert!(failures(&ok).is_empty(), "{ok:#?}");
        let lost = run(std::slice::from_ref(&bet), Outcome::Lost, None, 0);
        assert!(
            failures(&lost)
                .iter()
                .any(|f| f.contains("auto-cash-out target")),
            "{lost:#?}"
        );
        // A signed manual cash-out at 1.20x must be paid exactly as signed.
        let out = t.receipt(ReceiptKind::CashOut, round, Some(150), Some(120));
        let paid = run(&[bet.clone(), out.clone()], Outcome::Won, Some(120), 1_200);
        assert!(failures(&paid).is_empty(), "{paid:#?}");
        let short = run(&[bet.clone(), out.clone()], Outcome::Won, Some(120), 1_100);
        assert!(
            !failures(&short).is_empty(),
            "a short payout passed: {short:#?}"
        );
        let dropped = run(&[bet.clone(), out], Outcome::Lost, None, 0);
        assert!(
            !failures(&dropped).is_empty(),
            "a dropped cash-out passed: {dropped:#?}"
        );
        // A win above the crash point is impossible.
        let above = run(
            std::slice::from_ref(&bet),
            Outcome::Won,
            Some(crash + 1),
            STAKE * (crash + 1) / 100,
        );
        assert!(!failures(&above).is_empty(), "{above:#?}");
        // A receipt signed by another key proves nothing.
        let mut other = Table::new();
        other.key = SigningKey::from_seed(&[5; 32]);
        let forged = other.receipt(ReceiptKind::Bet, round, Some(150), None);
        let f = run(&[forged], Outcome::Won, Some(150), 1_500);
        assert!(
            f.iter()
                .any(|c| !c.ok && c.what.contains("does not verify")),
            "{f:#?}"
        );
    }

    #[test]
    fn a_void_refunds_unless_a_cash_out_was_accepted_first() {
        let t = Table::new();
        let (round, _) = t.round_crashing(200..5_000);
        let bet = t.receipt(ReceiptKind::Bet, round, None, None);
        let run = |outcome, m, payout| {
            let (proof, fairness, head) = t.evidence(round, RoundEnd::Voided, outcome, m, payout);
            check_bet(std::slice::from_ref(&bet), &proof, &fairness, &head, None).expect("checks")
        };
        assert!(failures(&run(Outcome::Refunded, None, STAKE)).is_empty());
        assert!(!failures(&run(Outcome::Refunded, None, STAKE - 1)).is_empty());
        assert!(!failures(&run(Outcome::Lost, None, 0)).is_empty());
        assert!(failures(&run(Outcome::Won, Some(130), 1_300)).is_empty());
    }
}
