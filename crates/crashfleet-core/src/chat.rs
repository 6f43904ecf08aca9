//! The table chat's rules, shared by every node: what a message may contain, how many a player may
//! send, and how much history a new socket is shown. Storage and relay are the node's business
//! (in process when standalone, Redis in a fleet); the limits below are the same for both.

use crate::error::{Error, Result};

/// Longest message, in characters (Unicode scalar values) after cleaning: a chat line, not a post.
pub const MAX_CHARS: usize = 200;

/// Messages a new socket gets in its snapshot, and the most any node keeps: enough to see what
/// the table is talking about, small enough that a snapshot stays a few KiB.
pub const HISTORY: usize = 50;

/// History older than this is neither kept nor shown: the fleet's list expires this long after
/// its newest message, and a standalone node drops older lines from its snapshot. A day covers a
/// player coming back to the table the same evening without keeping players' words for longer.
pub const HISTORY_TTL_MS: i64 = 24 * 60 * 60 * 1000;

/// The per-player rate limit: at most [`PER_WINDOW`] messages per [`WINDOW_MS`] (a fixed window
/// per player; a fleet counts it in Redis, so every node of the table shares it). Five messages in
/// ten seconds is faster than anyone types a conversation and slow enough that one player cannot
/// scroll everyone else's words out of the 50-line history in under 100 s.
pub const WINDOW_MS: i64 = 10_000;
pub const PER_WINDOW: u32 = 5;

/// The longest mute an admin may set: 30 days (longer is a ban, which is an account matter).
pub const MAX_MUTE_MINUTES: u64 = 30 * 24 * 60;

/// Cleans a player's message for display as plain text: control characters (C0, DEL, C1) and
/// the invisible bidirectional-override and byte-order marks (which can make a line read
/// differently than it is) are removed, any run of whitespace becomes one space, and the ends are
/// trimmed. The result must hold 1 to [`MAX_CHARS`] characters. Markup is *not* escaped here:
/// the text is data, and every client renders it as text (the page never parses it as HTML).
pub fn clean(text: &str) -> Result<String> {
    let mut out = String::with_capacity(text.len().min(MAX_CHARS * 4));
    let mut chars = 0usize;
    let mut pending_space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            pending_space = !out.is_empty();
            continue;
        }
        if c.is_control() || invisible(c) {
            continue;
        }
        if pending_space {
            out.push(' ');
            chars += 1;
            pending_space = false;
        }
        out.push(c);
        chars += 1;
        if chars > MAX_CHARS {
            return Err(Error::BadRequest(format!(
                "chat messages are at most {MAX_CHARS} characters"
            )));
        }
    }
    if out.is_empty() {
        return Err(Error::BadRequest("a chat message needs some text".into()));
    }
    Ok(out)
}

/// Characters that change how the text around them is laid out without showing themselves:
/// the bidirectional embeddings, overrides, isolates and marks, and the byte-order mark.
fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_invisible_marks_go_whitespace_folds_and_markup_stays_text() {
        assert_eq!(
            clean("  hi\tthere\r\n\n you ").as_deref(),
            Ok("hi there you")
        );
        assert_eq!(
            clean("a\u{0}b\u{7}c\u{1b}[31md\u{7f}e\u{85}").as_deref(),
            Ok("abc[31mde")
        );
        assert_eq!(
            clean("evil\u{202E}txt.exe\u{2066}\u{FEFF}").as_deref(),
            Ok("eviltxt.exe")
        );
        assert_eq!(
            clean("<img src=x onerror=alert(1)>").as_deref(),
            Ok("<img src=x onerror=alert(1)>"),
            "markup is kept as text; clients never parse it"
        );
        // An emoji sequence joined by U+200D keeps its joiner.
        assert_eq!(clean("👩\u{200D}🚀").as_deref(), Ok("👩\u{200D}🚀"));
    }

    #[test]
    fn empty_and_overlong_messages_are_refused() {
        for empty in ["", "   ", "\u{0}\u{1}", "\u{202E}\n"] {
            assert_eq!(
                clean(empty).map_err(|e| e.code()),
                Err("bad_request"),
                "{empty:?}"
            );
        }
        let longest = "é".repeat(MAX_CHARS);
        assert_eq!(clean(&longest).as_deref(), Ok(longest.as_str()));
        assert!(clean(&format!("{longest}x")).is_err());
        // Whitespace that folds away does not count against the limit.
        assert!(clean(&format!("{}{}", " ".repeat(5000), "a".repeat(MAX_CHARS))).is_ok());
    }
}
