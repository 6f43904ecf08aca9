//! Command-line arguments of `crashfleet-load`, and their validation (bounded counts, loopback
//! targets only).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// How bets and cash-outs reach the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Via {
    /// `POST /api/v1/bets` and `…/cashout` over pooled HTTP/1.1 connections.
    Rest,
    /// `bet` and `cash_out` commands over the players' own WebSocket connections.
    Ws,
}

impl Via {
    pub fn name(self) -> &'static str {
        match self {
            Via::Rest => "rest",
            Via::Ws => "ws",
        }
    }
}

/// Load generator for crashfleet game nodes: registers players, opens WebSocket connections spread
/// over the nodes, places bets and cash-outs at a fixed offered rate (open loop: requests leave on
/// schedule whether or not earlier ones were answered, and latency is measured from the scheduled
/// instant, so a slow server cannot hide its queueing), and reports latencies from HDR histograms,
/// tick delivery lag, errors by code and the nodes' memory per connection.
///
/// Targets must be on this machine (loopback addresses or `localhost`). Bets go out only while a
/// betting window is open; `--bet-rate` is the rate during those windows. For high rates start the
/// nodes with `--rate-limit-ip 0 --rate-limit-player 0` and enough `--bets-per-player`.
#[derive(Parser, Debug, Clone)]
#[command(name = "crashfleet-load", version, about, long_about)]
pub struct LoadArgs {
    /// A node's base URL, e.g. http://127.0.0.1:8080. Repeat for every node of a fleet: connections,
    /// registrations and requests are spread over them round-robin.
    #[arg(long = "url", required = true, value_name = "URL")]
    pub urls: Vec<String>,

    /// WebSocket connections to hold open (spread over the URLs), each authenticated as a player.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=200_000))]
    pub connections: u64,

    /// Bets per second offered while a betting window is open (0: no bets, connections only).
    #[arg(long, default_value_t = 100.0, value_parser = parse_rate)]
    pub bet_rate: f64,

    /// How long to run after the connections are open, e.g. 20s, 5m, 1h (at most 24h).
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Stop earlier, after this many rounds have crashed.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub rounds: Option<u64>,

    /// Players to register (bets rotate over them).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub players: u64,

    /// Bets one player may place per round: the node's `--bets-per-player`. The generator never
    /// offers a player more; bets it could not place are reported as `bets_unplaced`.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub bets_per_player: u32,

    /// Send bets and cash-outs over REST or over the players' WebSocket connections.
    #[arg(long, value_enum, default_value_t = Via::Rest)]
    pub via: Via,

    /// Stake of every bet, minor units.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(i64).range(1..=1_000_000_000))]
    pub stake: i64,

    /// Share of bets placed with an auto-cash-out target (1.10x–5.00x); the others are cashed out
    /// by hand at a random target (1.05x–3.00x) while the round flies.
    #[arg(long, default_value_t = 0.5, value_parser = parse_ratio)]
    pub auto_ratio: f64,

    /// Every connection sends a `ping` this often (0s: never).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub ping_interval: Duration,

    /// Admin token of the nodes: with `--credit`, tops up every player before the run.
    #[arg(long, env = "CRASHFLEET_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Credit each player with this many minor units (needs `--admin-token`).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..=1_000_000_000_000))]
    pub credit: i64,

    /// Connections opened at once during the ramp.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub connect_concurrency: u64,

    /// Process id of a node on this machine whose CPU time (from /proc) the report divides by the
    /// operations of the run. Repeat for every node of a fleet (and its Redis and PostgreSQL, to
    /// count them in).
    #[arg(long = "node-pid", value_name = "PID")]
    pub node_pids: Vec<u32>,

    /// Process id of an event relay on this machine (a fleet's Redis) whose CPU time the report
    /// gives apart from the nodes', per event relayed (`relay_us_per_event`). Repeatable.
    #[arg(long = "relay-pid", value_name = "PID")]
    pub relay_pids: Vec<u32>,

    /// Write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// No progress bar, even on a terminal.
    #[arg(long)]
    pub quiet: bool,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (examples: 500ms, 20s, 5m, 1h)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!("`{s}`: unknown unit `{unit}` (use ms, s, m or h)"));
        }
    };
    if !secs.is_finite() || !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("`{s}` is out of range (0 to 24h)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let r: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if !r.is_finite() || !(0.0..=100_000.0).contains(&r) {
        return Err(format!("`{s}` is out of range (0 to 100000 per second)"));
    }
    Ok(r)
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    let r: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if !r.is_finite() || !(0.0..=1.0).contains(&r) {
        return Err(format!("`{s}` is out of range (0 to 1)"));
    }
    Ok(r)
}

/// A validated target: its HTTP base and WebSocket URL.
#[derive(Debug, Clone)]
pub struct Target {
    pub base: String,
    pub ws: String,
}

/// Checks every `--url`: plain HTTP to a loopback address. This tool generates heavy traffic and
/// must never be pointed at somebody else's machine by accident.
pub fn targets(urls: &[String]) -> Result<Vec<Target>, String> {
    urls.iter()
        .map(|raw| {
            let u = reqwest::Url::parse(raw).map_err(|e| format!("--url {raw}: {e}"))?;
            if u.scheme() != "http" {
                return Err(format!(
                    "--url {raw}: only http:// targets are supported (the node's plain port on this machine)"
                ));
            }
            let loopback = match u.host() {
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
                Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
                None => false,
            };
            if !loopback {
                return Err(format!(
                    "--url {raw}: not a loopback address; crashfleet-load only targets nodes on this machine (127.0.0.0/8, ::1, localhost)"
                ));
            }
            let base = raw.trim_end_matches('/').to_string();
            let ws = format!("ws{}/ws", &base["http".len()..]);
            Ok(Target { base, ws })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("25h").is_err());
        assert!(parse_duration("3 weeks").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn only_loopback_http_targets() {
        let ok = targets(&[
            "http://127.0.0.1:8080/".into(),
            "http://localhost:1".into(),
            "http://[::1]:2".into(),
            "http://127.3.4.5:3".into(),
        ])
        .expect("loopback targets");
        assert_eq!(ok[0].base, "http://127.0.0.1:8080");
        assert_eq!(ok[0].ws, "ws://127.0.0.1:8080/ws");
        for bad in [
            "http://10.0.0.1:8080",
            "http://example.com",
            "https://127.0.0.1:8443",
            "http://192.168.1.1",
            "not a url",
        ] {
            assert!(targets(&[bad.into()]).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn rates_are_bounded() {
        assert!(parse_rate("3000").is_ok());
        assert!(parse_rate("1e9").is_err());
        assert!(parse_rate("NaN").is_err());
        assert!(parse_ratio("1.5").is_err());
    }
}
