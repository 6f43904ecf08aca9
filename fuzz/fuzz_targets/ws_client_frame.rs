//! A WebSocket client frame, as `ws.rs` handles it before any state is touched: JSON into
//! `ClientMessage` (unknown fields and types refused), then the checks every command passes —
//! request-id/idempotency key, stake and auto target against the table's rules, and the player
//! name/password rules of the REST bodies. None may panic; whatever parses must re-serialise to a
//! message that parses to the same value.
#![no_main]

use game_node::engine::{Rules, validate_bet};
use game_node::protocol::ClientMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.len() > game_node::protocol::MAX_CLIENT_FRAME_BYTES {
        return; // the socket refuses bigger frames before parsing
    }
    let rules = Rules {
        min_stake: 10,
        max_stake: 1_000_000,
        max_payout: 100_000_000,
        bets_per_player: 2,
        max_x100: 100_000_000,
        betting_ms: 5_000,
        pause_ms: 3_000,
    };
    // The REST bodies' string rules take the same untrusted text.
    let _ = game_node::auth::validate_username(text);
    let _ = game_node::auth::validate_password(text);
    let Ok(msg) = serde_json::from_str::<ClientMessage>(text) else {
        return;
    };
    match &msg {
        ClientMessage::Bet {
            request_id,
            stake,
            auto_cashout_x100,
        } => {
            let _ = game_node::service::check_key(request_id);
            let _ = validate_bet(&rules, *stake, *auto_cashout_x100);
        }
        ClientMessage::CashOut { request_id, bet_id } => {
            let _ = game_node::service::check_key(request_id);
            let _ = game_node::service::check_key(bet_id);
        }
        ClientMessage::Auth { .. } | ClientMessage::Ping { .. } => {}
    }
    let again = serde_json::to_string(&msg).expect("a parsed message serialises");
    let back: ClientMessage = serde_json::from_str(&again).expect("and parses back");
    assert_eq!(back, msg);
});
