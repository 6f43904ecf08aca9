//! The embedded pages and their scripts and styles.

use super::*;

macro_rules! asset {
    ($name:ident, $file:literal, $mime:literal) => {
        pub(super) async fn $name() -> Response {
            (
                [
                    (header::CONTENT_TYPE, $mime),
                    (header::CACHE_CONTROL, "no-cache"),
                ],
                include_str!(concat!("../../web/", $file)),
            )
                .into_response()
        }
    };
}
asset!(app_js, "app.js", "text/javascript; charset=utf-8");
asset!(verify_js, "verify.js", "text/javascript; charset=utf-8");
asset!(style_css, "style.css", "text/css; charset=utf-8");

/// The player-facing text of every error code (`window.CRASHFLEET_ERROR_TEXT`), built from the
/// error table the node answers with, so the page cannot drift from the codes.
pub(super) async fn errors_js() -> Response {
    static JS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let js = JS.get_or_init(|| {
        let table: serde_json::Map<String, serde_json::Value> = crate::error::PLAYER_TEXT
            .iter()
            .map(|(code, text)| (code.to_string(), serde_json::Value::from(*text)))
            .collect();
        format!(
            "window.CRASHFLEET_ERROR_TEXT = Object.freeze({});\n",
            serde_json::Value::Object(table)
        )
    });
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        js.as_str(),
    )
        .into_response()
}

pub(super) async fn index() -> Html<&'static str> {
    Html(include_str!("../../web/index.html"))
}

pub(super) async fn verify_page() -> Html<&'static str> {
    Html(include_str!("../../web/verify.html"))
}
