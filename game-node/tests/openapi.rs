//! The checked-in OpenAPI document (`docs/openapi.json`) must match what the code generates.
//! Regenerate with `cargo run -p game-node -- openapi > docs/openapi.json`.

#[test]
fn checked_in_openapi_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
    let generated = game_node::api::openapi_json() + "\n";
    if std::env::var("UPDATE_OPENAPI").is_ok_and(|v| v == "1") {
        std::fs::write(path, &generated).expect("write docs/openapi.json");
    }
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "docs/openapi.json is out of date: run `cargo run -p game-node -- openapi > docs/openapi.json`"
    );
    let doc: serde_json::Value = serde_json::from_str(&generated).expect("valid JSON");
    for p in [
        "/api/v1/bets",
        "/api/v1/rounds",
        "/api/v1/fairness",
        "/api/v1/admin/audit",
        "/api/v1/fleet",
        "/api/v1/lobby",
    ] {
        assert!(doc["paths"].get(p).is_some(), "{p} is documented");
    }
}
