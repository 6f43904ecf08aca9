//! The OpenAPI document, generated from the handlers' annotations.

use super::*;

#[derive(OpenApi)]
#[openapi(
    info(title = "crashfleet game-node", description = "Provably fair multiplayer crash game. \
        Amounts are integers in minor units; multipliers integers in hundredths. The WebSocket \
        protocol at /ws is documented in crates/crashfleet-core/src/protocol.rs."),
    paths(players::register, players::login, players::logout, players::me, players::my_bets,
          bets::place_bet, bets::bet, bets::cash_out, rounds::current_round, rounds::rounds, rounds::round,
          rounds::fairness, table::leaderboard, table::stats, table::fleet, table::lobby, table::regions,
          admin::credit, admin::debit, admin::audit, admin::mute, admin::mutes, log::log_head, log::log_proof,
          log::log_consistency, log::bet_proof),
    modifiers(&SecuritySchemes, &CommonResponses),
)]
pub struct ApiDoc;

/// What every operation can answer besides its own statuses: 429 from the per-IP limit (every
/// route under `/api/v1/`) and 500 for a bug; and the `Retry-After` header on every 429 and 503.
pub(super) struct CommonResponses;

impl utoipa::Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::header::HeaderBuilder;
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder, schema};
        let error = |description: &str, retry: bool| {
            let mut r = ResponseBuilder::new().description(description).content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            );
            if retry {
                r = r.header(
                    "Retry-After",
                    HeaderBuilder::new()
                        .schema(schema::Object::with_type(schema::Type::Integer))
                        .description(Some("Seconds to wait before retrying."))
                        .build(),
                );
            }
            r.build()
        };
        for item in openapi.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                let responses = &mut op.responses.responses;
                responses.entry("429".into()).or_insert_with(|| {
                    error(
                        "`rate_limited`: too many requests from this client address (or, for bets \
                         and cash-outs, this player)",
                        true,
                    )
                    .into()
                });
                responses
                    .entry("500".into())
                    .or_insert_with(|| error("`internal`: a bug; logged", false).into());
                for status in ["429", "503"] {
                    if let Some(utoipa::openapi::RefOr::T(r)) = responses.get_mut(status) {
                        *r = error(&r.description, true);
                    }
                }
            }
        }
    }
}

pub(super) struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        for name in ["bearer", "admin"] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

/// The OpenAPI document as pretty JSON (what `docs/openapi.json` holds).
pub fn openapi_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

pub(super) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json()).into_response()
}
