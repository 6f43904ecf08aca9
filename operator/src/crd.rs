//! The CrashTable API (`crashfleet.dev/v1alpha1`): the Rust types are the source of truth; the
//! CRD YAML in `crds/` is generated from them (`crashfleet-operator crd`), and a test fails when
//! the checked-in copy drifts.
//!
//! The schema rejects what it can at apply time (ranges, enums, CEL rules), including transition
//! rules that freeze the fairness commitment once set: players verify rounds against it, so a
//! change would silently break every proof.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, LocalObjectReference, ResourceRequirements, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// A crash-game table: a fleet of `game-node` replicas that elect one round leader, share one
/// PostgreSQL ledger and one Redis, and serve players over HTTP and WebSocket.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "crashfleet.dev",
    version = "v1alpha1",
    kind = "CrashTable",
    namespaced,
    shortname = "ct",
    status = "CrashTableStatus",
    derive = "PartialEq",
    doc = "A provably fair crash-game table served by a leader-elected fleet of game-node replicas.",
    scale = r#"{"specReplicasPath":".spec.replicas","statusReplicasPath":".status.replicas"}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".spec.replicas","description":"Desired game-node replicas"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyReplicas","description":"Replicas ready to take money"}"#,
    printcolumn = r#"{"name":"Leader","type":"string","jsonPath":".status.leader","description":"The replica running the rounds"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase","description":"Pending, Running, Paused or Degraded"}"#,
    printcolumn = r#"{"name":"Route","type":"string","jsonPath":".status.conditions[?(@.type==\"RouteAccepted\")].reason","description":"With spec.gateway: the HTTPRoute's state (Accepted, Pending, GatewayAPIMissing or the refusing Gateway's reason)"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"URL","type":"string","priority":1,"jsonPath":".status.publicUrl","description":"Where players reach the table (the lobby's link)"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.ingress) && has(self.gateway))").message("set spec.ingress or spec.gateway, not both: one table has one way in"))]
pub struct CrashTableSpec {
    /// Number of game-node replicas. Every replica serves players; one leads the rounds. Ignored
    /// while `autoscaling` is set (the HorizontalPodAutoscaler owns the count).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub replicas: i32,

    /// The game-node container image, e.g. `registry.example.com/crashfleet/game-node:0.1.0`.
    #[schemars(length(min = 1, max = 512))]
    pub image: String,

    /// The region this table runs in, shown in the lobby (`GET /api/v1/lobby`).
    #[serde(default = "default_region")]
    #[schemars(length(min = 1, max = 63))]
    pub region: String,

    /// The URL players reach this table at (`https://eu.example.com/crash/`), advertised in the
    /// lobby of every table sharing this Redis so players can measure and join it. Absent: the
    /// Ingress host (`https://` with its TLS secret, `http://` without), else the HTTPRoute's
    /// first exact host name under its path prefix (`https://`; set this field when the
    /// Gateway's listener is plain HTTP), else none (the lobby lists the table without a link).
    /// Written into ConfigMap `<table>-edge`, which the pods follow: changing it, or the Ingress
    /// or route it comes from, restarts no pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 8, max = 512),
        regex(pattern = r"^https?://[^\s?#@/]+(/[^\s?#]*)?$")
    )]
    pub public_url: Option<String>,

    /// How the replicas elect the round leader.
    #[serde(default)]
    pub leader_election: LeaderElectionSpec,

    /// Redis: the fleet's event bus, bet/cash-out arbiter and heartbeats (and the lock with the
    /// `redis` election backend).
    pub redis: SecretUrl,

    /// PostgreSQL: the ledger. Every table of a database shares one wallet per player.
    pub database: SecretUrl,

    /// The table's rules and rhythm.
    #[serde(default)]
    pub game: GameSpec,

    /// The fairness commitment's parameters. Immutable once set: players verify every round
    /// against the commitment built from them.
    #[serde(default)]
    pub fairness: FairnessSpec,

    /// Expose the table through an Ingress (WebSocket-friendly). Absent: no Ingress. Set
    /// `ingress` or `gateway`, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,

    /// Expose the table through the Gateway API: the operator builds an HTTPRoute `<table>`
    /// (gateway.networking.k8s.io/v1) that attaches to the Gateways named here and routes every
    /// path (the page, `/api`, `/ws`) to the table's Service, and reports the route's
    /// `Accepted`/`ResolvedRefs` conditions in this table's status. Absent: no HTTPRoute. Set
    /// `ingress` or `gateway`, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewaySpec>,

    /// Scale replicas on CPU with a HorizontalPodAutoscaler. Absent: `replicas` is fixed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,

    /// `true`: the leader stops opening rounds after the current one; nodes keep serving history
    /// and verification. `false` resumes play. No pod restarts: the operator sets the flag
    /// where the leader reads it with each renewal (the Lease's `crashfleet.dev/paused`
    /// annotation, or the Redis key `crashfleet:{<table>}:paused`).
    #[serde(default)]
    pub paused: bool,

    /// Reverse proxies whose `X-Forwarded-For` names the player: CIDRs (`10.0.0.0/8`,
    /// `fd00::/8`) or single addresses, without host bits after the prefix. Rate limits and logs
    /// then key on the player's address instead of the proxy's. Absent: with `ingress` or
    /// `gateway` set, the private ranges 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 and fc00::/7
    /// (ingress and gateway controller pods have cluster-internal private addresses, whatever the
    /// cluster's pod CIDR); without either, none. Any client inside a trusted range can name any
    /// address, so narrow this to the controller's pod CIDR where you know it. `[]` trusts no
    /// proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 32),
        inner(regex(
            pattern = r"^([0-9]{1,3}(\.[0-9]{1,3}){3}|[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*)(/[0-9]{1,3})?$"
        ))
    )]
    pub trusted_proxies: Option<Vec<String>>,

    /// Placement, resources and metadata of the game-node pods, merged into the Deployment's pod
    /// template. Absent: the operator's defaults (requests 250m CPU / 128Mi, limit 512Mi memory,
    /// spread across zones and hosts, the cluster's default scheduling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodSettings>,
}

/// What a platform team sets on the game-node pods. Each field is Kubernetes' own type and
/// means what it means on a Pod; the operator owns everything else in the template.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodSettings {
    /// CPU and memory requests and limits of the game-node container. Replaces the operator's
    /// defaults as a whole (requests 250m CPU / 128Mi memory, limit 512Mi memory) when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node labels a node must carry to run the table's pods (Pod `spec.nodeSelector`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Taints the table's pods tolerate (Pod `spec.tolerations`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Node and pod (anti-)affinity (Pod `spec.affinity`). The operator's zone and host spreading
    /// (topology spread constraints) stays in place beside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// The PriorityClass of the table's pods (Pod `spec.priorityClassName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub priority_class_name: Option<String>,
    /// When the kubelet pulls the game-node image: `Always`, `IfNotPresent` or `Never`. Absent:
    /// Kubernetes' default (`Always` for `:latest`, else `IfNotPresent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,
    /// Secrets (in the table's namespace) with credentials for the image's registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,
    /// Extra labels on the pods. The operator's own labels (`app.kubernetes.io/*`,
    /// `crashfleet.dev/table`: the Deployment's selector, the Service's and the budget's) win
    /// over a label of the same key here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Extra annotations on the pods (e.g. for a service mesh or a log collector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// A container's image pull policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum ImagePullPolicy {
    /// Pull on every start.
    Always,
    /// Pull only when the node does not have the image.
    IfNotPresent,
    /// Never pull: the image must be on the node already.
    Never,
}

impl ImagePullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ImagePullPolicy::Always => "Always",
            ImagePullPolicy::IfNotPresent => "IfNotPresent",
            ImagePullPolicy::Never => "Never",
        }
    }
}

fn default_replicas() -> i32 {
    3
}

fn default_region() -> String {
    "default".to_string()
}

/// Which mechanism elects the round leader.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ElectionBackend {
    /// A `coordination.k8s.io/v1` Lease named `<table>-leader` (term = `leaseTransitions`).
    #[default]
    Kubernetes,
    /// A Redis lock (`SET NX PX`, term from `INCR`).
    Redis,
}

/// Leader election settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeaderElectionSpec {
    /// `kubernetes` (a Lease) or `redis` (a lock in the table's Redis).
    #[serde(default)]
    pub backend: ElectionBackend,
    /// How long a leader's lease lasts without renewal. A dead leader is replaced about this long
    /// after its last renewal; the leader steps down at two thirds of it if renewals fail.
    #[serde(default = "default_lease_seconds")]
    #[schemars(range(min = 1, max = 60))]
    pub lease_duration_seconds: i32,
}

fn default_lease_seconds() -> i32 {
    2
}

impl Default for LeaderElectionSpec {
    fn default() -> Self {
        LeaderElectionSpec {
            backend: ElectionBackend::default(),
            lease_duration_seconds: default_lease_seconds(),
        }
    }
}

/// A URL kept in a Secret of the table's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretUrl {
    /// The Secret and key holding the URL (`redis://…`, `postgres://…`).
    pub url_secret_ref: SecretKeyRef,
}

/// A key of a Secret in the table's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key inside the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// The table's rules. Amounts are integers in minor units (100 = 1.00); multipliers integers in
/// hundredths (250 = 2.50x).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minBet <= self.maxBet").message("minBet must not exceed maxBet"))]
// The edge and the cap are stored with the commitment and every node refuses to start on other
// values (a changed crash formula would make published rounds unverifiable), so a change would
// only stall a rollout of pods that never start: refuse it at apply time instead. The operator
// commits as soon as the table exists, so they are frozen from creation. A different edge or cap
// is a new table (a new commitment).
#[x_kube(validation = Rule::new("self.houseEdgeBasisPoints == oldSelf.houseEdgeBasisPoints").message("game.houseEdgeBasisPoints is part of the published fairness commitment and cannot change; create a new table for another edge"))]
#[x_kube(validation = Rule::new("self.maxMultiplierX100 == oldSelf.maxMultiplierX100").message("game.maxMultiplierX100 is part of the published fairness commitment and cannot change; create a new table for another cap"))]
pub struct GameSpec {
    /// House edge in basis points (100 = 1%). Part of the fairness commitment: fixed when the
    /// table is created.
    #[serde(default = "default_edge")]
    #[schemars(range(min = 0, max = 10000))]
    pub house_edge_basis_points: i32,
    /// Crash point cap in hundredths (100000000 = 1,000,000.00x). Part of the commitment: fixed
    /// when the table is created.
    #[serde(default = "default_max_multiplier")]
    #[schemars(range(min = 101, max = 100000000))]
    pub max_multiplier_x100: i64,
    /// Smallest stake, minor units.
    #[serde(default = "default_min_bet")]
    #[schemars(range(min = 1))]
    pub min_bet: i64,
    /// Largest stake, minor units.
    #[serde(default = "default_max_bet")]
    #[schemars(range(min = 1, max = 1000000000000_i64))]
    pub max_bet: i64,
    /// Largest payout of one bet, minor units.
    #[serde(default = "default_max_payout")]
    #[schemars(range(min = 1))]
    pub max_payout: i64,
    /// Bets one player may place per round.
    #[serde(default = "default_bets_per_player")]
    #[schemars(range(min = 1, max = 100))]
    pub bets_per_player: i32,
    /// Length of the betting window, ms.
    #[serde(default = "default_betting_window")]
    #[schemars(range(min = 100, max = 600000))]
    pub betting_window_ms: i64,
    /// Multiplier ticks per second while flying.
    #[serde(default = "default_tick_rate")]
    #[schemars(range(min = 1, max = 100))]
    pub tick_rate_hz: i32,
    /// Pause after a crash before the next round opens, ms.
    #[serde(default = "default_pause")]
    #[schemars(range(min = 0, max = 600000))]
    pub pause_ms: i64,
    /// Milliseconds of flight for the multiplier to reach 2.00x (the curve is e^(g·t)).
    #[serde(default = "default_doubling")]
    #[schemars(range(min = 100, max = 600000))]
    pub doubling_ms: i64,
    /// Credit given to each new player, minor units (demo money; 0 for real-money tables, which
    /// credit players through the admin API).
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub demo_credit: i64,
}

fn default_edge() -> i32 {
    100
}
fn default_max_multiplier() -> i64 {
    100_000_000
}
fn default_min_bet() -> i64 {
    10
}
fn default_max_bet() -> i64 {
    1_000_000
}
fn default_max_payout() -> i64 {
    100_000_000
}
fn default_bets_per_player() -> i32 {
    2
}
fn default_betting_window() -> i64 {
    5_000
}
fn default_tick_rate() -> i32 {
    10
}
fn default_pause() -> i64 {
    3_000
}
fn default_doubling() -> i64 {
    11_500
}

impl Default for GameSpec {
    fn default() -> Self {
        GameSpec {
            house_edge_basis_points: default_edge(),
            max_multiplier_x100: default_max_multiplier(),
            min_bet: default_min_bet(),
            max_bet: default_max_bet(),
            max_payout: default_max_payout(),
            bets_per_player: default_bets_per_player(),
            betting_window_ms: default_betting_window(),
            tick_rate_hz: default_tick_rate(),
            pause_ms: default_pause(),
            doubling_ms: default_doubling(),
            demo_credit: 0,
        }
    }
}

/// The fairness commitment's parameters.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(oldSelf.chainLength) || (has(self.chainLength) && self.chainLength == oldSelf.chainLength)").message("fairness.chainLength is part of the published commitment and cannot change"))]
#[x_kube(validation = Rule::new("!has(oldSelf.salt) || oldSelf.salt == '' || (has(self.salt) && self.salt == oldSelf.salt)").message("fairness.salt cannot change once set: players verify rounds with it"))]
pub struct FairnessSpec {
    /// Rounds the hash chain serves (one hash per round). The operator generates the secret
    /// seed once, into Secret `<table>-fairness`; the terminating hash is published in status
    /// before the first round.
    #[serde(default = "default_chain_length")]
    #[schemars(range(min = 1, max = 100000000))]
    pub chain_length: i64,
    /// The public salt, fixed *after* the commitment is published (e.g. a future block hash, so
    /// nobody could grind the chain against it). To do so: create the table with `paused: true`,
    /// read `status.fairness.terminatingHash`, then set this and `paused: false`. Empty: the first
    /// replica generates one. Final once a round has been played.
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub salt: String,
}

fn default_chain_length() -> i64 {
    10_000_000
}

impl Default for FairnessSpec {
    fn default() -> Self {
        FairnessSpec {
            chain_length: default_chain_length(),
            salt: String::new(),
        }
    }
}

/// An Ingress in front of the table's Service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    /// The public host name, e.g. `crash.example.com`.
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    /// The IngressClass (e.g. `nginx` for ingress-nginx).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// A TLS Secret for `host`. Absent: plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret_name: Option<String>,
}

/// The table's HTTPRoute: where it attaches and what it answers for.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    /// The Gateways (and, optionally, which of their listeners) the route attaches to. The
    /// Gateway's listener must allow routes from this namespace (`allowedRoutes`).
    #[schemars(length(min = 1, max = 32))]
    pub parent_refs: Vec<GatewayParentRef>,
    /// Host names the route answers for, e.g. `crash.example.com` (a leading `*.` is a wildcard).
    /// Absent: every host the Gateway's listener accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 16),
        inner(regex(
            pattern = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
        ))
    )]
    pub hostnames: Option<Vec<String>>,
    /// Serve the table under this path prefix, e.g. `/crash`: requests under it reach the node
    /// with the prefix replaced by `/` (the route's URLRewrite filter), and the page works there
    /// because it addresses everything relative to its own location. Absent: `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^/[A-Za-z0-9._~/-]*$"))]
    pub path_prefix: Option<String>,
}

/// A Gateway the route attaches to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayParentRef {
    /// The Gateway's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The Gateway's namespace. Absent: the table's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
    /// One listener of the Gateway, by name. Absent: every listener that accepts the route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub section_name: Option<String>,
}

/// CPU-based autoscaling.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must not exceed maxReplicas"))]
pub struct AutoscalingSpec {
    /// The fewest replicas.
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: i32,
    /// The most replicas.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Target average CPU utilisation, percent of requests.
    #[serde(default = "default_cpu_target")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percentage: i32,
}

fn default_cpu_target() -> i32 {
    70
}

/// What the operator observed, per the Kubernetes API conventions.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CrashTableStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Pending`, `Running`, `Paused` or `Degraded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// `Ready`, `Progressing`, `Degraded`, `PodsReady` (with a stuck pod's reason, e.g.
    /// `CrashLoopBackOff`, `ImagePullBackOff`, `Unschedulable`), `FairnessCommitted`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Replicas the Deployment runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Replicas ready to take money.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// The replica leading the rounds (the Lease's holder; with the `redis` backend, the Redis
    /// lock's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// The leadership term (the Lease's transitions; with `redis`, the lock's term).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<i64>,
    /// The published fairness commitment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fairness: Option<FairnessStatus>,
    /// Where players reach the table, as every lobby links to it: `spec.publicUrl`, else the
    /// Ingress host, else the HTTPRoute's first exact hostname and path prefix (normalised to end
    /// in `/`). The pods read it from ConfigMap `<table>-edge`, so a change restarts none of them;
    /// absent when the table has no way in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
}

/// The published fairness commitment.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FairnessStatus {
    /// SHA-256 terminating hash of the chain: round n's hash, hashed n more times, gives it.
    pub terminating_hash: String,
    /// The salt rounds are computed with (empty until fixed).
    #[serde(default)]
    pub salt: String,
    /// Rounds the chain serves.
    pub chain_length: i64,
    /// Rounds played so far, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rounds_played: Option<i64>,
    /// The table's Ed25519 public key (64 hex digits): every bet's and cash-out's receipt and
    /// every round-log head verifies against it (its secret half is in Secret `<table>-signing`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub signing_key: String,
}
