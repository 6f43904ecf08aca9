//! The WebSocket wire protocol: every message a client and a node exchange on `/ws`, as documented
//! serde enums in one place (JSON text frames, `{"type": "...", ...}`, snake_case).
//!
//! Contract notes that clients rely on:
//! - All amounts are integers in minor units (1.00 credit = 100); all multipliers are integers in
//!   hundredths (`multiplier_x100 = 250` is 2.50×). No floats carry money.
//! - A round's `hash` and `crash_x100` appear only in `crashed` / `round_voided` and later, never
//!   before the crash (a test watches every message of a round to prove it).
//! - Every server message carries `server_time_ms` (Unix ms of the authoritative clock) where timing
//!   matters, so clients interpolate the curve `m(t) = e^(growth_per_ms · t)` between ticks and load
//!   tools measure delivery lag.
//! - Client commands carry a `request_id` (1–64 printable ASCII characters) that is also the
//!   idempotency key: a retry with the same id returns the first outcome and never moves money twice.

use serde::{Deserialize, Serialize};

/// Largest text frame a client may send. Commands are tiny; anything bigger is abuse.
pub const MAX_CLIENT_FRAME_BYTES: usize = 4 * 1024;

/// The phase of the table's current round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Bets are accepted until `betting_closes_at_ms`.
    Betting,
    /// The multiplier is rising; cash-outs are accepted until the (secret) crash instant.
    Flying,
    /// The round is over; its hash and crash point are public.
    Crashed,
    /// No round is running (paused table, or no leader yet).
    Idle,
}

/// What everyone may know about the current round. Never holds the hash or crash point while the
/// round runs: `crash_x100` and `hash` are `None` until `phase == crashed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoundView {
    pub number: u64,
    pub phase: Phase,
    pub opened_at_ms: i64,
    pub betting_closes_at_ms: i64,
    /// When the multiplier started rising (equals `betting_closes_at_ms`).
    pub started_at_ms: i64,
    /// Set once crashed.
    pub crashed_at_ms: Option<i64>,
    /// Set once crashed.
    pub crash_x100: Option<u64>,
    /// Set once crashed: the round's chain hash, hex.
    pub hash: Option<String>,
}

/// A bet as every player sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BetView {
    pub bet_id: String,
    pub round: u64,
    pub username: String,
    pub stake: i64,
    pub auto_cashout_x100: Option<u64>,
    pub status: BetStatus,
    pub cashout_x100: Option<u64>,
    pub payout: Option<i64>,
}

/// Where a bet stands. Stored and sent as its lower-case name; a bet leaves `open` exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BetStatus {
    /// Accepted and in play.
    Open,
    /// Cashed out (manually or automatically) before the crash and paid.
    Won,
    /// Still in play at the crash.
    Lost,
    /// Its round was voided and the stake returned.
    Refunded,
}

/// Where a round stands. Stored and sent as its lower-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RoundStatus {
    /// Betting or flying: its hash and crash point are still secret.
    Open,
    /// Crashed and settled: its hash and crash point are public.
    Crashed,
    /// Ended without a crash (a leader lost it); every open bet was refunded.
    Voided,
}

macro_rules! named_status {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// The stored and wire name.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }
        }

        impl std::str::FromStr for $ty {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($name => Ok($ty::$variant),)+
                    other => Err(format!(concat!("unknown ", stringify!($ty), " {:?}"), other)),
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named_status!(BetStatus { Open => "open", Won => "won", Lost => "lost", Refunded => "refunded" });
named_status!(RoundStatus { Open => "open", Crashed => "crashed", Voided => "voided" });

/// The logged-in player, as sent to that player only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlayerView {
    pub id: String,
    pub username: String,
    pub balance: i64,
}

/// The table's public fairness commitment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FairnessView {
    /// h(L), published before round 1.
    pub terminating_hash: String,
    pub salt: String,
    pub chain_length: u64,
    pub house_edge_bp: u32,
    pub max_x100: u64,
    /// The table's Ed25519 public key (64 hex digits): every receipt and every round-log head
    /// verifies against it.
    pub signing_key: String,
}

/// What a receipt attests, as its wire name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ReceiptKindView {
    Bet,
    CashOut,
    AutoCashOut,
}

/// A signed receipt of one accepted money decision: `message` is the hex of the canonical bytes
/// (tag `crashfleet/receipt/v1`, then kind, table, round, bet id, player hash, stake, auto target,
/// server time, multiplier and payout, as documented in `crashfleet_core::settlement`), and
/// `signature` the table key's plain Ed25519 signature over exactly those bytes. The other fields
/// are the same values decoded, for display; a verifier trusts only `message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignedReceipt {
    /// Hex of the signed bytes.
    pub message: String,
    /// Hex of the 64-byte Ed25519 signature.
    pub signature: String,
    pub kind: ReceiptKindView,
    pub table: String,
    pub round: u64,
    pub bet_id: String,
    /// SHA-256 of `crashfleet/player/v1`, a zero byte and the player's id, hex.
    pub player_hash: String,
    pub stake: u64,
    pub auto_cashout_x100: Option<u64>,
    pub at_ms: i64,
    /// Cash-outs only.
    pub multiplier_x100: Option<u64>,
    /// Cash-outs only.
    pub payout: Option<u64>,
}

impl SignedReceipt {
    /// Signs `receipt` with the table's key.
    pub fn sign(
        receipt: &crate::settlement::Receipt,
        key: &crate::settlement::signing::SigningKey,
    ) -> SignedReceipt {
        use crate::settlement::ReceiptKind;
        let message = receipt.encode();
        SignedReceipt {
            signature: hex::encode(key.sign(&message)),
            message: hex::encode(message),
            kind: match receipt.kind {
                ReceiptKind::Bet => ReceiptKindView::Bet,
                ReceiptKind::CashOut => ReceiptKindView::CashOut,
                ReceiptKind::AutoCashOut => ReceiptKindView::AutoCashOut,
            },
            table: receipt.table.clone(),
            round: receipt.round,
            bet_id: receipt.bet_id.clone(),
            player_hash: hex::encode(receipt.player),
            stake: receipt.stake,
            auto_cashout_x100: receipt.auto_cashout_x100,
            at_ms: receipt.at_ms,
            multiplier_x100: receipt.multiplier_x100,
            payout: receipt.payout,
        }
    }

    /// Checks the signature against `public_key` and decodes the signed bytes: the receipt as it
    /// was signed (the decoded fields beside `message` are not looked at).
    pub fn verify(&self, public_key: &[u8; 32]) -> Result<crate::settlement::Receipt, String> {
        let message =
            hex::decode(&self.message).map_err(|e| format!("receipt message is not hex: {e}"))?;
        let signature: [u8; 64] = hex::decode(&self.signature)
            .ok()
            .and_then(|s| s.try_into().ok())
            .ok_or("receipt signature is not 64 bytes of hex")?;
        if !crate::settlement::signing::verify(public_key, &message, &signature) {
            return Err("the receipt's signature does not verify with the table's key".into());
        }
        crate::settlement::Receipt::decode(&message).map_err(|e| e.to_string())
    }
}

/// One live node of a table, as its heartbeat reports it (`GET /api/v1/fleet`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeInfo {
    pub node_id: String,
    pub region: String,
    pub connections: usize,
    pub version: String,
    /// Where players reach this node's table (`--public-url`), ending in `/`.
    #[serde(default)]
    pub public_url: Option<String>,
}

/// One live table (`GET /api/v1/lobby`): its phase and multiplier now and its players online.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LobbyTable {
    pub table: String,
    pub region: String,
    pub phase: Phase,
    pub round: Option<u64>,
    pub multiplier_x100: Option<u64>,
    pub players_online: usize,
    /// Live nodes serving the table.
    pub nodes: usize,
    /// Where players reach the table (its nodes' `--public-url`), ending in `/`; `null` when no
    /// node advertises one.
    pub public_url: Option<String>,
}

/// One region of the lobby (`GET /api/v1/regions`): its live tables, nodes and players online.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegionSummary {
    pub region: String,
    pub tables: usize,
    pub nodes: usize,
    pub players_online: usize,
}

impl RegionSummary {
    /// Regions of a lobby listing, sorted by name.
    pub fn of(tables: &[LobbyTable]) -> Vec<RegionSummary> {
        let mut by: std::collections::BTreeMap<&str, RegionSummary> = Default::default();
        for t in tables {
            let r = by.entry(&t.region).or_insert_with(|| RegionSummary {
                region: t.region.clone(),
                tables: 0,
                nodes: 0,
                players_online: 0,
            });
            r.tables += 1;
            r.nodes += t.nodes;
            r.players_online += t.players_online;
        }
        by.into_values().collect()
    }
}

/// One line of the table chat, as every player sees it: the poster's username, the cleaned text
/// (plain text, never markup; see `crashfleet_core::chat::clean`) and the server time it was
/// accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatLine {
    pub username: String,
    pub text: String,
    pub at_ms: i64,
}

/// Messages a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// Authenticate this socket, as its first frame (what the page does: tokens stay out of URLs);
    /// `/ws?token=` is kept for tools.
    Auth { token: String },
    /// Place a bet in the current betting window.
    Bet {
        request_id: String,
        stake: i64,
        #[serde(default)]
        auto_cashout_x100: Option<u64>,
    },
    /// Cash out one of your open bets now.
    CashOut { request_id: String, bet_id: String },
    /// Say something in the table chat (logged-in players only). Accepted silently: the line
    /// comes back to every socket of the table, this one included, as a `chat` event. Refused
    /// with an `error`: `unauthorized`, `bad_request` (empty or over 200 characters after
    /// cleaning), `chat_rate_limited` (over 5 messages per 10 s), `muted`.
    Chat { text: String },
    /// Keep-alive and clock probe; answered with `pong`.
    Ping {
        #[serde(default)]
        nonce: u64,
    },
}

/// Messages a node sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// First message on every connection: the whole picture.
    Snapshot {
        table: String,
        server_time_ms: i64,
        round: Option<RoundView>,
        /// Growth of the curve per millisecond: `m(t) = e^(growth_per_ms · t)`, for drawing only;
        /// the node's integer multiplier is authoritative.
        growth_per_ms: f64,
        tick_interval_ms: u64,
        /// Bets of the current round: the latest `SNAPSHOT_BETS` and always the player's own, so
        /// a busy round's snapshot stays small (a round may hold tens of thousands).
        bets: Vec<BetView>,
        /// How many bets the current round holds in all, and their stakes' sum (minor units).
        bets_total: u64,
        bets_wagered: i64,
        /// Latest finished rounds, newest first.
        history: Vec<RoundView>,
        fairness: FairnessView,
        you: Option<PlayerView>,
        /// The table chat's latest lines (at most 50, none older than a day), oldest first.
        #[serde(default)]
        chat: Vec<ChatLine>,
    },
    RoundOpen {
        round: u64,
        opened_at_ms: i64,
        betting_closes_at_ms: i64,
        server_time_ms: i64,
    },
    Flying {
        round: u64,
        started_at_ms: i64,
        server_time_ms: i64,
    },
    Tick {
        round: u64,
        multiplier_x100: u64,
        elapsed_ms: u64,
        server_time_ms: i64,
    },
    Crashed {
        round: u64,
        crash_x100: u64,
        hash: String,
        crashed_at_ms: i64,
        next_round_at_ms: i64,
        server_time_ms: i64,
    },
    /// A round that could not finish (its leader died before it could be decided): every stake refunded.
    RoundVoided {
        round: u64,
        reason: String,
        server_time_ms: i64,
    },
    /// A round's settlement is committed (after `crashed` or `round_voided`): the hex root of the
    /// RFC 6962 tree over one leaf per bet, the bet count, and the totals staked and paid back.
    Settled {
        round: u64,
        settlement_root: String,
        bets_count: u64,
        wagered: u64,
        paid: u64,
    },
    /// Bets placed on the round since the last such message (batched every 100 ms, at most 500
    /// per message; the bettor's own confirmation is `bet_accepted` or the REST answer, at once).
    BetsPlaced {
        round: u64,
        bets: Vec<BetView>,
    },
    CashedOut {
        round: u64,
        bet_id: String,
        username: String,
        multiplier_x100: u64,
        payout: i64,
        /// True when an auto-cash-out target triggered it.
        auto: bool,
    },
    /// Your balance changed (sent to that player only).
    Balance {
        balance: i64,
    },
    /// Reply to your `auth`.
    Authenticated {
        you: PlayerView,
    },
    /// Reply to your `bet`, with its signed receipt.
    BetAccepted {
        request_id: String,
        bet: BetView,
        receipt: SignedReceipt,
    },
    /// Reply to your `cash_out`, with its signed receipt.
    CashOutAccepted {
        request_id: String,
        bet_id: String,
        multiplier_x100: u64,
        payout: i64,
        receipt: SignedReceipt,
    },
    /// Your bet was cashed out at its auto target (sent to its owner only; everyone gets
    /// `cashed_out`), with the signed receipt of that cash-out.
    AutoCashOut {
        round: u64,
        bet_id: String,
        multiplier_x100: u64,
        payout: i64,
        receipt: SignedReceipt,
    },
    Pong {
        nonce: u64,
        server_time_ms: i64,
    },
    /// A line of the table chat, to every socket of the table on every node, in one order.
    Chat {
        username: String,
        text: String,
        at_ms: i64,
    },
    /// A refused command or a bad frame. `code` is stable (the same codes as the REST API).
    Error {
        request_id: Option<String>,
        code: String,
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_keep_their_stored_and_wire_names() {
        for s in [
            BetStatus::Open,
            BetStatus::Won,
            BetStatus::Lost,
            BetStatus::Refunded,
        ] {
            assert_eq!(s.as_str().parse::<BetStatus>(), Ok(s));
            assert_eq!(serde_json::to_string(&s).expect("json"), format!("\"{s}\""));
        }
        for s in [RoundStatus::Open, RoundStatus::Crashed, RoundStatus::Voided] {
            assert_eq!(s.as_str().parse::<RoundStatus>(), Ok(s));
            assert_eq!(serde_json::to_string(&s).expect("json"), format!("\"{s}\""));
        }
        assert!("Won".parse::<BetStatus>().is_err() && "".parse::<RoundStatus>().is_err());
    }

    #[test]
    fn client_messages_parse_from_documented_json() {
        let m: ClientMessage = serde_json::from_str(
            r#"{"type":"bet","request_id":"a1","stake":100,"auto_cashout_x100":200}"#,
        )
        .expect("bet parses");
        assert_eq!(
            m,
            ClientMessage::Bet {
                request_id: "a1".into(),
                stake: 100,
                auto_cashout_x100: Some(200)
            }
        );
        let m: ClientMessage =
            serde_json::from_str(r#"{"type":"cash_out","request_id":"b","bet_id":"x"}"#)
                .expect("cash_out parses");
        assert!(matches!(m, ClientMessage::CashOut { .. }));
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"bet","stake":"1"}"#).is_err());
        assert!(
            serde_json::from_str::<ClientMessage>(r#"{"type":"ping","nonce":1,"x":2}"#).is_err(),
            "unknown fields are refused, not ignored"
        );
    }

    #[test]
    fn server_messages_are_tagged_snake_case() {
        let s = serde_json::to_string(&ServerMessage::Pong {
            nonce: 7,
            server_time_ms: 5,
        })
        .expect("serialises");
        assert_eq!(s, r#"{"type":"pong","nonce":7,"server_time_ms":5}"#);
    }
}
