//! CPU time of processes on this machine, from `/proc/<pid>/stat`: the node(s) under load and the
//! generator itself, so a run reports what each operation cost on each side (the generator must
//! stay far below the node, or it measures itself).

use serde::Serialize;

/// Clock ticks per second of `utime`/`stime` in `/proc/<pid>/stat`: Linux reports them in
/// USER_HZ, which the kernel's ABI fixes at 100 on every architecture it exports it for.
const USER_HZ: f64 = 100.0;

/// User + system CPU seconds used so far by every thread of `pid` (`None` if it is gone or this
/// is not Linux).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

/// The generator's own CPU seconds.
pub fn own_cpu_seconds() -> Option<f64> {
    cpu_seconds(std::process::id())
}

/// `utime + stime` of a `/proc/<pid>/stat` line. The command name (field 2) is in parentheses and
/// may contain spaces and parentheses itself: the fields are counted after the *last* `)`.
fn parse_stat(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// CPU readings at the start of the measured phase.
pub struct CpuMark {
    nodes: Vec<(u32, Option<f64>)>,
    relays: Vec<(u32, Option<f64>)>,
    own: Option<f64>,
    at: std::time::Instant,
}

impl CpuMark {
    pub fn now(node_pids: &[u32], relay_pids: &[u32]) -> CpuMark {
        let mark = |pids: &[u32]| pids.iter().map(|&p| (p, cpu_seconds(p))).collect();
        CpuMark {
            nodes: mark(node_pids),
            relays: mark(relay_pids),
            own: own_cpu_seconds(),
            at: std::time::Instant::now(),
        }
    }

    /// What was used since the mark, divided by the operations done in between: `requests`
    /// answered bets and cash-outs, `messages` WebSocket messages delivered to the generator over
    /// `connections` sockets (so `messages / connections` events went through the relay).
    pub fn report(&self, requests: u64, messages: u64, connections: u64) -> CpuReport {
        let wall_s = self.at.elapsed().as_secs_f64();
        let used = |marks: &[(u32, Option<f64>)]| {
            (!marks.is_empty()).then_some(()).and_then(|()| {
                marks
                    .iter()
                    .map(|&(pid, before)| Some(cpu_seconds(pid)? - before?))
                    .sum::<Option<f64>>()
            })
        };
        let node_cpu_s = used(&self.nodes);
        let relay_cpu_s = used(&self.relays);
        let events = messages.checked_div(connections).unwrap_or(0);
        let load_cpu_s = own_cpu_seconds().zip(self.own).map(|(a, b)| a - b);
        let per =
            |cpu: Option<f64>, n: u64| cpu.filter(|_| n > 0).map(|c| round2(c * 1e6 / n as f64));
        CpuReport {
            wall_s: round2(wall_s),
            node_cpu_s: node_cpu_s.map(round2),
            load_cpu_s: load_cpu_s.map(round2),
            node_cores: node_cpu_s.map(|c| round2(c / wall_s)),
            load_cores: load_cpu_s.map(|c| round2(c / wall_s)),
            requests,
            messages,
            node_us_per_request: per(node_cpu_s, requests),
            load_us_per_request: per(load_cpu_s, requests),
            node_us_per_message: per(node_cpu_s, messages),
            load_us_per_message: per(load_cpu_s, messages),
            relay_cpu_s: relay_cpu_s.map(round2),
            relay_cores: relay_cpu_s.map(|c| round2(c / wall_s)),
            events,
            relay_us_per_event: per(relay_cpu_s, events),
        }
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// CPU used during the measured phase (after the connections opened, until the schedule stopped).
/// The per-operation figures divide all CPU by one kind of operation: they are meaningful for a run
/// that does mostly that (bets and cash-outs with few sockets; or ticks to many sockets with no
/// bets), and an upper bound otherwise.
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct CpuReport {
    pub wall_s: f64,
    /// Summed over the `--node-pid` processes (null without them).
    pub node_cpu_s: Option<f64>,
    pub load_cpu_s: Option<f64>,
    /// CPU seconds per wall second: 1.0 is one core busy all the time.
    pub node_cores: Option<f64>,
    pub load_cores: Option<f64>,
    /// Bets and cash-outs answered (accepted or refused by the game's rules).
    pub requests: u64,
    /// WebSocket messages received by the generator.
    pub messages: u64,
    pub node_us_per_request: Option<f64>,
    pub load_us_per_request: Option<f64>,
    pub node_us_per_message: Option<f64>,
    pub load_us_per_message: Option<f64>,
    /// Summed over the `--relay-pid` processes (a fleet's Redis; null without them).
    pub relay_cpu_s: Option<f64>,
    pub relay_cores: Option<f64>,
    /// Events each socket received on average (`messages / connections`): what every node's one
    /// relay subscription carried.
    pub events: u64,
    /// Relay CPU divided by `events`: an upper bound, as it includes the relay's background
    /// work (a fleet's Redis also serves renewals, heartbeats and presence).
    pub relay_us_per_event: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_are_read_after_the_last_parenthesis() {
        let line = "4242 (game (node) x) S 1 4242 4242 0 -1 4194560 1043 0 0 0 250 75 0 0 20 0 9 0 \
                    100 200000 3000 18446744073709551615";
        assert_eq!(parse_stat(line), Some(3.25));
        assert_eq!(parse_stat("4242 (short) S 1"), None);
    }

    #[test]
    fn this_process_uses_some_cpu() {
        let before = own_cpu_seconds().expect("/proc/self/stat");
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(60) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        assert!(x != 1);
        let after = own_cpu_seconds().expect("/proc/self/stat");
        assert!(after > before, "{before} → {after}");
    }
}
