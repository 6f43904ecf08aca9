//! The table's pods, summarised for its `PodsReady` condition: pure, so every reason a pod can
//! be stuck for is unit-tested without a kubelet.
//!
//! A Deployment's status says only how many replicas are ready; a platform team looking at
//! `kubectl describe ct` wants to know *why* the others are not (a crash loop, an image that
//! cannot be pulled, no node to run on) without hunting for the pods.

use k8s_openapi::api::core::v1::Pod;

/// Container waiting reasons that will not clear by themselves: the pod needs a fix (image,
/// configuration, a crash at start), not patience. These make the table `Degraded`.
const FAILING: &[&str] = &[
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// How the table's pods are doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodsHealth {
    /// Every (non-terminating) pod is ready, and there is at least one.
    pub ready: bool,
    /// Some pod is stuck in a way that needs a fix ([`FAILING`] reasons): the table is degraded.
    pub failing: bool,
    /// CamelCase: `AllReady`, `NoPods`, a container's waiting reason (`CrashLoopBackOff`, ...),
    /// `Unschedulable`, `ContainersNotReady` or `Pending`.
    pub reason: String,
    /// For people: how many pods are ready, and the worst pod's name and story.
    pub message: String,
}

/// One pod's problem, ranked so the condition shows the one most worth a look.
struct Problem {
    rank: u8,
    reason: String,
    detail: String,
}

fn problem(pod: &Pod) -> Option<Problem> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let status = pod.status.as_ref();
    let conditions = status.and_then(|s| s.conditions.as_ref());
    let condition = |t: &str| conditions.into_iter().flatten().find(|c| c.type_ == t);
    if condition("Ready").is_some_and(|c| c.status == "True") {
        return None;
    }
    let containers = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .chain(
            status
                .and_then(|s| s.init_container_statuses.as_ref())
                .into_iter()
                .flatten(),
        );
    let mut worst: Option<Problem> = None;
    for c in containers {
        let waiting = c.state.as_ref().and_then(|s| s.waiting.as_ref());
        let Some(reason) = waiting.and_then(|w| w.reason.clone()) else {
            continue;
        };
        let mut detail = format!("pod {name}: container {} {reason}", c.name);
        if let Some(m) = waiting
            .and_then(|w| w.message.as_ref())
            .filter(|m| !m.is_empty())
        {
            detail.push_str(&format!(": {m}"));
        }
        if let Some(t) = c.last_state.as_ref().and_then(|s| s.terminated.as_ref()) {
            detail.push_str(&format!(
                " (last exit {}{}, {} restarts)",
                t.exit_code,
                t.reason
                    .as_ref()
                    .map(|r| format!(" {r}"))
                    .unwrap_or_default(),
                c.restart_count
            ));
        }
        let rank = if FAILING.contains(&reason.as_str()) {
            3
        } else {
            1
        };
        if worst.as_ref().is_none_or(|w| rank > w.rank) {
            worst = Some(Problem {
                rank,
                reason,
                detail,
            });
        }
    }
    if let Some(w) = worst {
        return Some(w);
    }
    if let Some(c) = condition("PodScheduled").filter(|c| c.status == "False") {
        let reason = c.reason.clone().unwrap_or_else(|| "Unschedulable".into());
        return Some(Problem {
            rank: 2,
            detail: format!(
                "pod {name}: {reason}: {}",
                c.message.clone().unwrap_or_default()
            ),
            reason,
        });
    }
    let running = status.and_then(|s| s.phase.as_deref()) == Some("Running");
    Some(if running {
        Problem {
            rank: 1,
            reason: "ContainersNotReady".into(),
            detail: format!("pod {name}: running, not ready (its /readyz answers 503)"),
        }
    } else {
        Problem {
            rank: 0,
            reason: "Pending".into(),
            detail: format!("pod {name}: starting"),
        }
    })
}

/// Summarises the table's pods (those its Deployment's selector matches). Pods being deleted
/// (a rollout's old ones) are left out: they are on their way out, not stuck.
pub fn pods_health(pods: &[Pod]) -> PodsHealth {
    let live: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    if live.is_empty() {
        return PodsHealth {
            ready: false,
            failing: false,
            reason: "NoPods".into(),
            message: "no pods yet".into(),
        };
    }
    let problems: Vec<Problem> = live.iter().filter_map(|p| problem(p)).collect();
    let ready = live.len() - problems.len();
    let count = format!("{ready}/{} pods ready", live.len());
    // The first of the worst: pods come sorted by name from the API, so this is stable.
    let worst = problems
        .iter()
        .enumerate()
        .max_by_key(|(i, p)| (p.rank, std::cmp::Reverse(*i)))
        .map(|(_, p)| p);
    match worst {
        None => PodsHealth {
            ready: true,
            failing: false,
            reason: "AllReady".into(),
            message: count,
        },
        Some(w) => PodsHealth {
            ready: false,
            failing: w.rank == 3,
            reason: w.reason.clone(),
            message: format!("{count}; {}", w.detail),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "status": status,
        }))
        .expect("pod")
    }

    fn ready(name: &str) -> Pod {
        pod(
            name,
            json!({"phase": "Running", "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "True"}]}),
        )
    }

    fn waiting(name: &str, reason: &str, message: &str) -> Pod {
        pod(
            name,
            json!({"phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "True"},
                           {"type": "Ready", "status": "False"}],
            "containerStatuses": [{
                "name": "game-node", "ready": false, "restartCount": 7, "image": "x",
                "imageID": "",
                "state": {"waiting": {"reason": reason, "message": message}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}},
            }]}),
        )
    }

    #[test]
    fn all_ready_pods_are_ready() {
        let h = pods_health(&[ready("a"), ready("b")]);
        assert!(h.ready && !h.failing);
        assert_eq!(h.reason, "AllReady");
        assert_eq!(h.message, "2/2 pods ready");
    }

    #[test]
    fn no_pods_is_not_ready_but_not_failing() {
        let h = pods_health(&[]);
        assert!(!h.ready && !h.failing);
        assert_eq!(h.reason, "NoPods");
    }

    #[test]
    fn a_crash_loop_is_named_with_its_pod_and_last_exit() {
        let h = pods_health(&[
            ready("a"),
            waiting(
                "b",
                "CrashLoopBackOff",
                "back-off 5m0s restarting failed container",
            ),
            ready("c"),
        ]);
        assert!(!h.ready && h.failing);
        assert_eq!(h.reason, "CrashLoopBackOff");
        assert!(
            h.message
                .starts_with("2/3 pods ready; pod b: container game-node CrashLoopBackOff"),
            "{}",
            h.message
        );
        assert!(
            h.message.contains("last exit 1 Error, 7 restarts"),
            "{}",
            h.message
        );
    }

    #[test]
    fn image_pull_failures_are_failing() {
        for reason in ["ImagePullBackOff", "ErrImagePull", "ErrImageNeverPull"] {
            let h = pods_health(&[waiting("a", reason, "")]);
            assert!(h.failing, "{reason}");
            assert_eq!(h.reason, reason);
        }
    }

    #[test]
    fn the_worst_problem_wins_over_a_pod_still_starting() {
        let starting = waiting("a", "ContainerCreating", "");
        let h = pods_health(&[starting.clone(), waiting("b", "ErrImageNeverPull", "")]);
        assert_eq!(h.reason, "ErrImageNeverPull");
        // Only starting: reported, but not degraded.
        let h = pods_health(&[starting]);
        assert!(!h.ready && !h.failing);
        assert_eq!(h.reason, "ContainerCreating");
    }

    #[test]
    fn unschedulable_and_unready_pods_say_so() {
        let unschedulable = pod(
            "a",
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                "reason": "Unschedulable", "message": "0/3 nodes are available"}]}),
        );
        let h = pods_health(&[unschedulable]);
        assert_eq!(h.reason, "Unschedulable");
        assert!(!h.failing);
        assert!(
            h.message.contains("0/3 nodes are available"),
            "{}",
            h.message
        );
        let unready = pod(
            "b",
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}),
        );
        let h = pods_health(&[unready]);
        assert_eq!(h.reason, "ContainersNotReady");
    }

    #[test]
    fn terminating_pods_are_left_out() {
        let mut old = waiting("old", "CrashLoopBackOff", "");
        old.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        let h = pods_health(&[old, ready("new")]);
        assert!(h.ready);
        assert_eq!(h.message, "1/1 pods ready");
    }
}
