//! The table chat in process (standalone): the history, the per-player rate windows and the mutes
//! in one mutex, and every accepted line published on the node's bus while that mutex is held, so
//! the history's order is the order sockets saw. A restart forgets all three (a standalone node is
//! one process; a fleet keeps them in Redis, see `fleet::chat`).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use async_trait::async_trait;
use crashfleet_core::chat::{HISTORY, HISTORY_TTL_MS, PER_WINDOW, WINDOW_MS};
use tokio::sync::Mutex;

use crate::error::{Error, Result};
use crate::ports::{Bus, ChatRoom, Clock, Mute};
use crate::protocol::{ChatLine, ServerMessage};

/// Rate windows kept before expired ones are dropped: a map this size is a few hundred KiB, and
/// only players who posted in the last window stay in it.
const PRUNE_AT: usize = 4_096;

/// The chat event of a line, as sockets get it.
pub fn event(line: &ChatLine) -> ServerMessage {
    ServerMessage::Chat {
        username: line.username.clone(),
        text: line.text.clone(),
        at_ms: line.at_ms,
    }
}

/// Seconds until a rate window that started at `start_ms` ends, at least one.
pub fn retry_after_secs(start_ms: i64, now_ms: i64) -> u64 {
    let left = (start_ms + WINDOW_MS - now_ms).max(0) as u64;
    left.div_ceil(1_000).max(1)
}

pub struct LocalChat {
    bus: Arc<dyn Bus>,
    clock: Arc<dyn Clock>,
    room: Mutex<Room>,
}

#[derive(Default)]
struct Room {
    history: VecDeque<ChatLine>,
    /// username → (window start, messages in it).
    windows: HashMap<String, (i64, u32)>,
    /// username → muted until.
    mutes: HashMap<String, i64>,
}

impl LocalChat {
    pub fn new(bus: Arc<dyn Bus>, clock: Arc<dyn Clock>) -> LocalChat {
        LocalChat {
            bus,
            clock,
            room: Mutex::new(Room::default()),
        }
    }
}

#[async_trait]
impl ChatRoom for LocalChat {
    async fn post(&self, line: &ChatLine) -> Result<()> {
        let now = self.clock.now_ms();
        let mut room = self.room.lock().await;
        if let Some(&until) = room.mutes.get(&line.username)
            && until > now
        {
            return Err(Error::Muted { until_ms: until });
        }
        if room.windows.len() >= PRUNE_AT {
            room.windows
                .retain(|_, (start, _)| now - *start < WINDOW_MS);
        }
        let window = room
            .windows
            .entry(line.username.clone())
            .or_insert((now, 0));
        if now - window.0 >= WINDOW_MS {
            *window = (now, 0);
        }
        if window.1 >= PER_WINDOW {
            return Err(Error::ChatThrottled {
                retry_after_secs: retry_after_secs(window.0, now),
            });
        }
        window.1 += 1;
        self.bus.publish(&event(line)).await?;
        room.history.push_back(line.clone());
        while room.history.len() > HISTORY {
            room.history.pop_front();
        }
        Ok(())
    }

    async fn recent(&self) -> Result<Vec<ChatLine>> {
        let oldest = self.clock.now_ms() - HISTORY_TTL_MS;
        let room = self.room.lock().await;
        Ok(room
            .history
            .iter()
            .filter(|l| l.at_ms >= oldest)
            .cloned()
            .collect())
    }

    async fn mute(&self, username: &str, until_ms: i64) -> Result<()> {
        let now = self.clock.now_ms();
        let mut room = self.room.lock().await;
        room.mutes.retain(|_, until| *until > now);
        if until_ms > now {
            room.mutes.insert(username.to_string(), until_ms);
        } else {
            room.mutes.remove(username);
        }
        Ok(())
    }

    async fn mutes(&self) -> Result<Vec<Mute>> {
        let now = self.clock.now_ms();
        let room = self.room.lock().await;
        let mut list: Vec<Mute> = room
            .mutes
            .iter()
            .filter(|(_, until)| **until > now)
            .map(|(username, until)| Mute {
                username: username.clone(),
                until_ms: *until,
            })
            .collect();
        list.sort_by(|a, b| a.username.cmp(&b.username));
        Ok(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::TokioClock;
    use crate::standalone::LocalBus;

    fn line(user: &str, text: &str, at_ms: i64) -> ChatLine {
        ChatLine {
            username: user.into(),
            text: text.into(),
            at_ms,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn lines_go_out_in_order_the_rate_window_and_mutes_refuse_and_history_is_bounded() {
        let bus: Arc<dyn Bus> = Arc::new(LocalBus::new());
        let mut events = bus.subscribe();
        let clock = Arc::new(TokioClock::starting_at(1_000_000));
        let chat = LocalChat::new(bus, clock.clone());
        for n in 0..PER_WINDOW {
            chat.post(&line("ann", &format!("m{n}"), clock.now_ms()))
                .await
                .expect("within the limit");
        }
        let refused = chat
            .post(&line("ann", "one too many", clock.now_ms()))
            .await;
        assert_eq!(
            refused,
            Err(Error::ChatThrottled {
                retry_after_secs: 10
            })
        );
        // Another player has a window of their own.
        chat.post(&line("bob", "hi ann", clock.now_ms()))
            .await
            .expect("bob");
        for n in 0..PER_WINDOW {
            let e = events.recv().await.expect("published");
            assert!(e.json.contains(&format!("\"text\":\"m{n}\"")), "{}", e.json);
        }
        assert!(events.recv().await.expect("bob's").json.contains("hi ann"));
        // The window ends: ann may post again.
        tokio::time::advance(std::time::Duration::from_millis(WINDOW_MS as u64)).await;
        chat.post(&line("ann", "back", clock.now_ms()))
            .await
            .expect("a new window");

        chat.mute("bob", clock.now_ms() + 60_000)
            .await
            .expect("mute");
        assert!(matches!(
            chat.post(&line("bob", "x", clock.now_ms())).await,
            Err(Error::Muted { .. })
        ));
        assert_eq!(chat.mutes().await.expect("mutes").len(), 1);
        chat.mute("bob", 0).await.expect("unmute");
        assert!(chat.mutes().await.expect("mutes").is_empty());
        chat.post(&line("bob", "free", clock.now_ms()))
            .await
            .expect("unmuted");

        let texts: Vec<String> = chat
            .recent()
            .await
            .expect("recent")
            .into_iter()
            .map(|l| l.text)
            .collect();
        assert_eq!(
            texts,
            ["m0", "m1", "m2", "m3", "m4", "hi ann", "back", "free"]
        );

        // The history holds the latest HISTORY lines, and none older than a day.
        for n in 0..(HISTORY as i64 + 10) {
            tokio::time::advance(std::time::Duration::from_millis(WINDOW_MS as u64)).await;
            chat.post(&line("cat", &format!("c{n}"), clock.now_ms()))
                .await
                .expect("one per window");
        }
        let recent = chat.recent().await.expect("recent");
        assert_eq!(recent.len(), HISTORY);
        assert_eq!(recent[0].text, "c10");
        tokio::time::advance(std::time::Duration::from_millis(HISTORY_TTL_MS as u64 + 1)).await;
        assert!(chat.recent().await.expect("recent").is_empty());
    }
}
