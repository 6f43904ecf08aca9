//! The table: leaderboard, stats, the fleet and the lobby.

use super::*;

#[utoipa::path(get, path = "/api/v1/leaderboard", tag = "table", params(LimitQuery),
    responses(
        (status = 200, description = "players by profit", body = [LeaderboardRow]),
        (status = 400, description = "`bad_request`: `limit` outside 1-500 or not an integer", body = ErrorBody),
        (status = 503, description = "`unavailable`: the ledger (or, in a fleet, Redis) cannot be reached; nothing moved", body = ErrorBody)))]
pub(super) async fn leaderboard(
    State(s): State<Arc<AppState>>,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> ApiResult<Json<Vec<LeaderboardRow>>> {
    Ok(Json(s.game.ledger.leaderboard(limit(q.limit, 20)?).await?))
}

#[utoipa::path(get, path = "/api/v1/stats", tag = "table", responses(
        (status = 200, description = "table statistics", body = TableStats),
        (status = 503, description = "`unavailable`: the ledger (or, in a fleet, Redis) cannot be reached; nothing moved", body = ErrorBody)))]
pub(super) async fn stats(State(s): State<Arc<AppState>>) -> ApiResult<Json<TableStats>> {
    Ok(Json(s.game.ledger.stats(&s.game.table.id).await?))
}

#[utoipa::path(get, path = "/api/v1/fleet", tag = "table", responses(
        (status = 200, description = "the fleet: leader, term, live nodes", body = FleetBody),
        (status = 503, description = "`unavailable`: the ledger (or, in a fleet, Redis) cannot be reached; nothing moved", body = ErrorBody)))]
pub(super) async fn fleet(State(s): State<Arc<AppState>>) -> ApiResult<Json<FleetBody>> {
    let (leader, nodes) = s.fleet.fleet().await?;
    let term = match &leader {
        Some(l) => l.term,
        // Between leaders: the newest term the ledger recorded.
        None => s.game.ledger.current_term(&s.game.table.id).await?,
    };
    Ok(Json(FleetBody {
        table: s.game.table.id.clone(),
        leader: leader.map(|l| l.node_id),
        term,
        nodes,
    }))
}

#[utoipa::path(get, path = "/api/v1/lobby", tag = "table", responses(
        (status = 200, description = "every live table", body = LobbyBody),
        (status = 503, description = "`unavailable`: the ledger (or, in a fleet, Redis) cannot be reached; nothing moved", body = ErrorBody)))]
pub(super) async fn lobby(State(s): State<Arc<AppState>>) -> ApiResult<Json<LobbyBody>> {
    Ok(Json(LobbyBody {
        tables: s.fleet.lobby().await?,
    }))
}

#[utoipa::path(get, path = "/api/v1/regions", tag = "table", responses(
        (status = 200, description = "every region with live tables: its tables, nodes and players online", body = RegionsBody),
        (status = 503, description = "`unavailable`: Redis (in a fleet) cannot be reached", body = ErrorBody)))]
pub(super) async fn regions(State(s): State<Arc<AppState>>) -> ApiResult<Json<RegionsBody>> {
    Ok(Json(RegionsBody {
        regions: crate::protocol::RegionSummary::of(&s.fleet.lobby().await?),
    }))
}
