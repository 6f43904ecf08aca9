//! A WebSocket client frame, as `ws.rs` handles it before any state is touched: JSON into
//! `ClientMessage` (unknown fields and types refused), then the checks every command passes —
//! request-id/idempotency key, stake and auto target against the table's rules, and the player
//! name/password rules of the REST bodies, and a chat line's cleaning. None may panic; whatever parses must re-serialise to a
//! message that parses to the same value.
#![no_main]

use clap::Parser;
use game_node::config::ServeConfig;
use game_node::engine::{Rules, validate_bet};
use game_node::protocol::ClientMessage;
use libfuzzer_sys::fuzz_target;

#[derive(Parser)]
struct Serve {
    #[command(flatten)]
    cfg: ServeConfig,
}

fn rules() -> Rules {
    static RULES: std::sync::OnceLock<Rules> = std::sync::OnceLock::new();
    RULES
        .get_or_init(|| Serve::parse_from(["serve"]).cfg.rules())
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.len() > game_node::protocol::MAX_CLIENT_FRAME_BYTES {
        return; // the socket refuses bigger frames before parsing
    }
    // The rules of a node started with every default (`game-node serve`).
    let rules = rules();
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
            let _ = game_node::game::check_key(request_id);
            let _ = validate_bet(&rules, *stake, *auto_cashout_x100);
        }
        ClientMessage::CashOut { request_id, bet_id } => {
            let _ = game_node::game::check_key(request_id);
            let _ = game_node::game::check_key(bet_id);
        }
        // A chat line is cleaned to plain text: within the length limit, no control or
        // invisible layout characters, no whitespace at the ends, and cleaning it again
        // changes nothing.
        ClientMessage::Chat { text } => {
            if let Ok(clean) = crashfleet_core::chat::clean(text) {
                assert!(!clean.is_empty());
                assert!(clean.chars().count() <= crashfleet_core::chat::MAX_CHARS);
                assert!(!clean.chars().any(char::is_control), "{clean:?}");
                assert_eq!(clean.trim(), clean);
                assert_eq!(
                    crashfleet_core::chat::clean(&clean).as_deref(),
                    Ok(clean.as_str())
                );
            }
        }
        ClientMessage::Auth { .. } | ClientMessage::Ping { .. } => {}
    }
    let again = serde_json::to_string(&msg).expect("a parsed message serialises");
    let back: ClientMessage = serde_json::from_str(&again).expect("and parses back");
    assert_eq!(back, msg);
});
