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

/// Every operation states its refusals with the error schema, and every 429 and 503 names the
/// `Retry-After` header the node sends with it.
#[test]
fn every_operation_documents_its_errors_with_the_error_schema() {
    let doc: serde_json::Value =
        serde_json::from_str(&game_node::api::openapi_json()).expect("valid JSON");
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= 17);
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("operations") {
            let responses = op["responses"].as_object().expect("responses");
            for must in ["429", "500"] {
                assert!(responses.contains_key(must), "{method} {path} lacks {must}");
            }
            for (status, r) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        r["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
                if status == "429" || status == "503" {
                    assert!(
                        r["headers"].get("Retry-After").is_some(),
                        "{method} {path} {status} names Retry-After"
                    );
                }
            }
            if op.get("security").is_some() {
                assert!(responses.contains_key("401"), "{method} {path} lacks 401");
            }
        }
    }
}
