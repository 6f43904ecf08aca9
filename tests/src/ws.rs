//! A player's WebSocket in tests, typed by the protocol itself: [`Socket::send`] takes a
//! [`ClientMessage`], [`Socket::next`] returns a [`ServerMessage`] (a frame that does not parse
//! fails the test: the node only ever sends protocol messages), and [`Socket::expect`] skips to
//! the first message a test is waiting for.

use std::time::Duration;

use crashfleet_core::protocol::{ClientMessage, ServerMessage};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

/// How long a test waits for the next message (rounds are seconds long; two shared cores).
pub const NEXT_WITHIN: Duration = Duration::from_secs(30);

pub type Stream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One open WebSocket to a node's `/ws`.
pub struct Socket {
    pub stream: Stream,
}

impl Socket {
    /// Connects to `url` (`ws://host:port/ws`, with `?token=` when the test wants it).
    pub async fn connect(url: &str) -> Socket {
        let (stream, _) = tokio_tungstenite::connect_async(url)
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"));
        Socket { stream }
    }

    /// Connects and authenticates with a first `auth` frame, as the page does.
    pub async fn connect_as(url: &str, token: &str) -> Socket {
        let mut s = Socket::connect(url).await;
        s.send(&ClientMessage::Auth {
            token: token.to_string(),
        })
        .await;
        s
    }

    pub async fn send(&mut self, msg: &ClientMessage) {
        let text = serde_json::to_string(msg).expect("a client message serialises");
        self.send_text(&text).await;
    }

    /// A raw text frame (bad-input tests send what no client type can express).
    pub async fn send_text(&mut self, text: &str) {
        self.stream
            .send(Message::text(text))
            .await
            .expect("send a frame");
    }

    /// The next text frame as JSON, within [`NEXT_WITHIN`].
    pub async fn next_value(&mut self) -> Value {
        loop {
            let m = tokio::time::timeout(NEXT_WITHIN, self.stream.next())
                .await
                .expect("a message in time")
                .expect("socket open")
                .expect("frame");
            if let Message::Text(t) = m {
                return serde_json::from_str(&t).expect("the node sends JSON");
            }
        }
    }

    /// The next message, typed.
    pub async fn next(&mut self) -> ServerMessage {
        let v = self.next_value().await;
        serde_json::from_value(v.clone())
            .unwrap_or_else(|e| panic!("not a protocol message ({e}): {v}"))
    }

    /// Skips messages until `pick` returns something, and returns that.
    pub async fn expect<T>(&mut self, mut pick: impl FnMut(ServerMessage) -> Option<T>) -> T {
        loop {
            if let Some(t) = pick(self.next().await) {
                return t;
            }
        }
    }

    /// Skips messages until one of JSON `type` `ty` arrives, and returns it.
    pub async fn expect_type(&mut self, ty: &str) -> Value {
        loop {
            let v = self.next_value().await;
            if v["type"] == ty {
                return v;
            }
        }
    }
}
