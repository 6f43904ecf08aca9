//! Pure builders: a CrashTable in, the objects its fleet needs out. No I/O, no clock, no
//! randomness (the Secrets' generated values are passed in), so every rule here is unit-tested
//! without a cluster and the reconciler only applies what these return.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, Secret, SecretKeySelector,
    SecretVolumeSource, SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec,
    TopologySpreadConstraint, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec as K8sIngressSpec, IngressTLS, ServiceBackendPort,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::crd::{CrashTable, ElectionBackend};

/// The HTTP port of every game-node (REST, WebSocket, probes).
pub const HTTP_PORT: i32 = 8080;
/// The game-node's separate `/metrics` listener (`CRASHFLEET_METRICS_LISTEN`): the Service and the
/// ServiceMonitor use it, the Ingress routes only `http`, so players cannot scrape the metrics.
pub const METRICS_PORT: i32 = 9090;
/// Trusted proxies when `spec.ingress` or `spec.gateway` is set and `spec.trustedProxies` is not:
/// the private address ranges (RFC 1918 and IPv6 unique-local), where every cluster's pod
/// network — and so the ingress or gateway controller — lives; pod CIDRs differ per cluster,
/// these cover them all.
pub const INGRESS_TRUSTED_PROXIES: &[&str] =
    &["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"];
/// Where the fairness Secret is mounted (read-only) in the pod.
pub const FAIRNESS_DIR: &str = "/var/run/crashfleet/fairness";
/// The key of the chain seed in Secret `<table>-fairness`.
pub const SEED_KEY: &str = "seed";
/// Where the signing Secret is mounted (read-only) in the pod.
pub const SIGNING_DIR: &str = "/var/run/crashfleet/signing";
/// Keys of Secret `<table>-signing`: the Ed25519 secret key (its 32-byte seed, hex) and the
/// public key (hex) the operator publishes in `status.fairness.signingKey`.
pub const SIGNING_KEY_KEY: &str = "key";
pub const PUBLIC_KEY_KEY: &str = "public-key";
/// Where ConfigMap `<table>-edge` is mounted (read-only) in the pod, and its key holding the
/// table's public URL (the game-node's `--public-url-file`).
pub const EDGE_DIR: &str = "/etc/crashfleet/edge";
pub const PUBLIC_URL_KEY: &str = "public-url";
/// Keys of Secret `<table>-auth`.
pub const JWT_KEY: &str = "jwt-secret";
pub const ADMIN_KEY: &str = "admin-token";
/// After the kubelet's SIGTERM a pod keeps serving this long while `/readyz` answers 503: the
/// pod's endpoint turns terminating at once, but every node's kube-proxy (and any ingress or
/// gateway) applies the change only after its own sync, and a drain that removes a pod without
/// deleting it is noticed only when the readiness probe fails (2 failures 2 s apart: 4 s). 5 s
/// covers both, so no player request is sent to a pod that stopped listening.
pub const DRAIN_DELAY_MS: u64 = 5_000;
/// The drain window, then a leader's hand-over, which needs its current round's remaining flight
/// at most (the next leader adopts it at once), and closing WebSockets: 30 s covers them all.
pub const TERMINATION_GRACE_SECONDS: i64 = 30;
const _: () = assert!(DRAIN_DELAY_MS < TERMINATION_GRACE_SECONDS as u64 * 1_000 / 2);

/// Names of a table's children.
pub fn lease_name(table: &str) -> String {
    format!("{table}-leader")
}
pub fn fairness_secret(table: &str) -> String {
    format!("{table}-fairness")
}
pub fn auth_secret(table: &str) -> String {
    format!("{table}-auth")
}
pub fn signing_secret(table: &str) -> String {
    format!("{table}-signing")
}
pub fn edge_config_map(table: &str) -> String {
    format!("{table}-edge")
}

/// `app.kubernetes.io/*` labels of every child, and the selector subset.
pub fn labels(table: &str) -> BTreeMap<String, String> {
    let mut l = selector(table);
    l.insert("app.kubernetes.io/name".into(), "game-node".into());
    l.insert("app.kubernetes.io/component".into(), "game-fleet".into());
    l.insert("app.kubernetes.io/part-of".into(), "crashfleet".into());
    l.insert(
        "app.kubernetes.io/managed-by".into(),
        "crashfleet-operator".into(),
    );
    l
}

/// The pod selector: stable for the Deployment's life (selectors are immutable).
pub fn selector(table: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/instance".to_string(), table.to_string()),
        ("crashfleet.dev/table".to_string(), table.to_string()),
    ])
}

/// Metadata of a child: name, namespace, labels, and the owner reference that lets the garbage
/// collector delete it with the table.
fn meta(ct: &CrashTable, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: ct.namespace(),
        labels: Some(labels(&ct.name_any())),
        owner_references: owner(ct).map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

fn owner(ct: &CrashTable) -> Option<OwnerReference> {
    ct.controller_owner_ref(&())
}

pub fn service_account(ct: &CrashTable) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(ct, ct.name_any()),
        automount_service_account_token: Some(true),
        ..ServiceAccount::default()
    }
}

/// Only what a node needs: its table's Lease (get/update it; create it the first time — `create`
/// cannot be limited by name) and events.
pub fn role(ct: &CrashTable) -> Role {
    let t = ct.name_any();
    Role {
        metadata: meta(ct, t.clone()),
        rules: Some(vec![
            PolicyRule {
                api_groups: Some(vec!["coordination.k8s.io".into()]),
                resources: Some(vec!["leases".into()]),
                resource_names: Some(vec![lease_name(&t)]),
                verbs: vec!["get".into(), "update".into()],
                ..PolicyRule::default()
            },
            PolicyRule {
                api_groups: Some(vec!["coordination.k8s.io".into()]),
                resources: Some(vec!["leases".into()]),
                verbs: vec!["create".into()],
                ..PolicyRule::default()
            },
            PolicyRule {
                api_groups: Some(vec!["".into(), "events.k8s.io".into()]),
                resources: Some(vec!["events".into()]),
                verbs: vec!["create".into(), "patch".into()],
                ..PolicyRule::default()
            },
        ]),
    }
}

pub fn role_binding(ct: &CrashTable) -> RoleBinding {
    let t = ct.name_any();
    RoleBinding {
        metadata: meta(ct, t.clone()),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: t.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: t,
            namespace: ct.namespace(),
            ..Subject::default()
        }]),
    }
}

/// Secret `<table>-fairness`: the chain seed. Built only when it does not exist yet (the
/// reconciler never overwrites it: a new seed would break the published commitment).
pub fn fairness_secret_object(ct: &CrashTable, seed_hex: &str) -> Secret {
    Secret {
        metadata: meta(ct, fairness_secret(&ct.name_any())),
        type_: Some("Opaque".into()),
        immutable: Some(true),
        data: Some(BTreeMap::from([(
            SEED_KEY.to_string(),
            ByteString(format!("{seed_hex}\n").into_bytes()),
        )])),
        ..Secret::default()
    }
}

/// Secret `<table>-signing`: the table's Ed25519 key, which signs every receipt and round-log head.
/// Built only when it does not exist yet and immutable, like the chain seed: the public key is
/// part of the table's commitment, and a node with another key refuses to start.
pub fn signing_secret_object(ct: &CrashTable, key_hex: &str, public_hex: &str) -> Secret {
    Secret {
        metadata: meta(ct, signing_secret(&ct.name_any())),
        type_: Some("Opaque".into()),
        immutable: Some(true),
        data: Some(BTreeMap::from([
            (
                SIGNING_KEY_KEY.to_string(),
                ByteString(format!("{key_hex}\n").into_bytes()),
            ),
            (
                PUBLIC_KEY_KEY.to_string(),
                ByteString(public_hex.as_bytes().to_vec()),
            ),
        ])),
        ..Secret::default()
    }
}

/// Secret `<table>-auth`: the session signing key and the admin token, shared by the replicas.
pub fn auth_secret_object(ct: &CrashTable, jwt_secret: &str, admin_token: &str) -> Secret {
    Secret {
        metadata: meta(ct, auth_secret(&ct.name_any())),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([
            (
                JWT_KEY.to_string(),
                ByteString(jwt_secret.as_bytes().to_vec()),
            ),
            (
                ADMIN_KEY.to_string(),
                ByteString(admin_token.as_bytes().to_vec()),
            ),
        ])),
        ..Secret::default()
    }
}

/// The proxies the game-node trusts for the client address (`spec.trustedProxies`, else the
/// private ranges behind an Ingress or a Gateway, else none).
pub fn trusted_proxies(ct: &CrashTable) -> Vec<String> {
    let behind_proxy = ct.spec.ingress.is_some() || ct.spec.gateway.is_some();
    match &ct.spec.trusted_proxies {
        Some(list) => list.clone(),
        None if behind_proxy => INGRESS_TRUSTED_PROXIES
            .iter()
            .map(|s| s.to_string())
            .collect(),
        None => Vec::new(),
    }
}

/// Where players reach the table (the game-node's `--public-url`): `spec.publicUrl`, else the
/// Ingress host (HTTPS when it has a TLS secret), else the HTTPRoute's first exact (non-wildcard)
/// host name under its path prefix, over HTTPS; else none.
pub fn public_url(ct: &CrashTable) -> Option<String> {
    let s = &ct.spec;
    if let Some(u) = &s.public_url {
        return Some(u.clone());
    }
    if let Some(i) = &s.ingress {
        let scheme = if i.tls_secret_name.is_some() {
            "https"
        } else {
            "http"
        };
        return Some(format!("{scheme}://{}/", i.host));
    }
    let g = s.gateway.as_ref()?;
    let host = g
        .hostnames
        .as_ref()?
        .iter()
        .find(|h| !h.starts_with("*."))?;
    let prefix = g
        .path_prefix
        .as_deref()
        .unwrap_or("/")
        .trim_end_matches('/');
    Some(format!("https://{host}{prefix}/"))
}

/// ConfigMap `<table>-edge`: what the pods read while they run about how players reach them —
/// the public URL (empty: none). Not in the pod template, so changing the table's way in (its
/// Ingress host, route, path prefix or `spec.publicUrl`) rolls no pod and drops no socket; the
/// kubelet rewrites the mounted file within its sync period (a minute by default).
pub fn edge_config_map_object(ct: &CrashTable) -> ConfigMap {
    ConfigMap {
        metadata: meta(ct, edge_config_map(&ct.name_any())),
        data: Some(BTreeMap::from([(
            PUBLIC_URL_KEY.to_string(),
            public_url(ct).unwrap_or_default(),
        )])),
        ..ConfigMap::default()
    }
}

/// What the schema cannot check and the game-node would refuse at start (a crash loop): every
/// trusted proxy must parse as the game-node parses it, and so must the public URL.
pub fn check_spec(ct: &CrashTable) -> Result<(), String> {
    for c in trusted_proxies(ct) {
        c.parse::<crashfleet_core::net::Cidr>()
            .map_err(|e| format!("spec.trustedProxies: {e}"))?;
    }
    if let Some(u) = public_url(ct) {
        crashfleet_core::net::public_url(&u).map_err(|e| format!("spec.publicUrl: {e}"))?;
    }
    let region = &ct.spec.region;
    if region.trim().is_empty() || region.chars().any(char::is_control) {
        return Err("spec.region: not blank, without control characters".into());
    }
    Ok(())
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

fn env_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn env_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// The game-node's configuration as environment variables (every flag has a `CRASHFLEET_*`
/// equivalent; see `game-node serve --help`).
pub fn game_env(ct: &CrashTable) -> Vec<EnvVar> {
    let t = ct.name_any();
    let s = &ct.spec;
    let g = &s.game;
    let lease_ms = i64::from(s.leader_election.lease_duration_seconds) * 1_000;
    let mut v = vec![
        env_field("POD_NAME", "metadata.name"),
        env_field("POD_NAMESPACE", "metadata.namespace"),
        env("CRASHFLEET_LISTEN", format!("0.0.0.0:{HTTP_PORT}")),
        env("CRASHFLEET_DATA_DIR", "/var/lib/crashfleet"),
        env("CRASHFLEET_TABLE", t.clone()),
        env("CRASHFLEET_REGION", s.region.clone()),
        env(
            "CRASHFLEET_LEADER_ELECTION",
            match s.leader_election.backend {
                ElectionBackend::Kubernetes => "kubernetes",
                ElectionBackend::Redis => "redis",
            },
        ),
        env("CRASHFLEET_LEASE_NAME", lease_name(&t)),
        // Renew well inside the lease; step down at two thirds of it.
        env("CRASHFLEET_LEASE_DURATION_MS", lease_ms.to_string()),
        env(
            "CRASHFLEET_RENEW_DEADLINE_MS",
            (lease_ms * 2 / 3).to_string(),
        ),
        env(
            "CRASHFLEET_RETRY_PERIOD_MS",
            (lease_ms / 6).max(10).to_string(),
        ),
        env_secret(
            "CRASHFLEET_REDIS_URL",
            &s.redis.url_secret_ref.name,
            &s.redis.url_secret_ref.key,
        ),
        env_secret(
            "CRASHFLEET_DATABASE_URL",
            &s.database.url_secret_ref.name,
            &s.database.url_secret_ref.key,
        ),
        env_secret("CRASHFLEET_JWT_SECRET", &auth_secret(&t), JWT_KEY),
        env_secret("CRASHFLEET_ADMIN_TOKEN", &auth_secret(&t), ADMIN_KEY),
        env(
            "CRASHFLEET_CHAIN_SEED_FILE",
            format!("{FAIRNESS_DIR}/{SEED_KEY}"),
        ),
        env(
            "CRASHFLEET_SIGNING_KEY_FILE",
            format!("{SIGNING_DIR}/{SIGNING_KEY_KEY}"),
        ),
        env(
            "CRASHFLEET_CHAIN_LENGTH",
            s.fairness.chain_length.to_string(),
        ),
        env(
            "CRASHFLEET_HOUSE_EDGE_BP",
            g.house_edge_basis_points.to_string(),
        ),
        env(
            "CRASHFLEET_MAX_MULTIPLIER_X100",
            g.max_multiplier_x100.to_string(),
        ),
        env("CRASHFLEET_MIN_BET", g.min_bet.to_string()),
        env("CRASHFLEET_MAX_BET", g.max_bet.to_string()),
        env("CRASHFLEET_MAX_PAYOUT", g.max_payout.to_string()),
        env("CRASHFLEET_BETS_PER_PLAYER", g.bets_per_player.to_string()),
        env(
            "CRASHFLEET_BETTING_WINDOW_MS",
            g.betting_window_ms.to_string(),
        ),
        env("CRASHFLEET_PAUSE_MS", g.pause_ms.to_string()),
        env("CRASHFLEET_TICK_RATE_HZ", g.tick_rate_hz.to_string()),
        env("CRASHFLEET_DOUBLING_MS", g.doubling_ms.to_string()),
        env("CRASHFLEET_DEMO_CREDIT", g.demo_credit.to_string()),
        env(
            "CRASHFLEET_METRICS_LISTEN",
            format!("0.0.0.0:{METRICS_PORT}"),
        ),
        env("CRASHFLEET_DRAIN_DELAY_MS", DRAIN_DELAY_MS.to_string()),
        env("RUST_LOG", "info"),
    ];
    let proxies = trusted_proxies(ct);
    if !proxies.is_empty() {
        v.push(env("CRASHFLEET_TRUSTED_PROXIES", proxies.join(",")));
    }
    if s.ingress
        .as_ref()
        .is_some_and(|i| i.tls_secret_name.is_some())
    {
        // Players reach the table over HTTPS only: browsers should refuse plain HTTP to it.
        v.push(env("CRASHFLEET_HSTS", "true"));
    }
    if !s.fairness.salt.is_empty() {
        v.push(env("CRASHFLEET_SALT", s.fairness.salt.clone()));
    }
    // The URL itself is in ConfigMap `<table>-edge`, followed while the pod runs.
    v.push(env(
        "CRASHFLEET_PUBLIC_URL_FILE",
        format!("{EDGE_DIR}/{PUBLIC_URL_KEY}"),
    ));
    // `spec.paused` is not in the template: the operator writes it where the leader reads it
    // with its election record (the Lease's annotation, or a Redis key), so pausing or resuming
    // rolls no pod.
    v
}

fn probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

/// The pod template's labels: `spec.pod.labels`, then the operator's own on top — the selector
/// labels must stay exactly the operator's (a pod relabelled away from them would be orphaned
/// by its Deployment and dropped from the Service), and the `app.kubernetes.io/*` ones are the
/// fleet's identity for dashboards and the ServiceMonitor.
pub fn pod_labels(ct: &CrashTable) -> BTreeMap<String, String> {
    let mut l = ct
        .spec
        .pod
        .as_ref()
        .and_then(|p| p.labels.clone())
        .unwrap_or_default();
    l.extend(labels(&ct.name_any()));
    l
}

pub fn deployment(ct: &CrashTable) -> Deployment {
    let t = ct.name_any();
    let default_settings = crate::crd::PodSettings::default();
    let settings = ct.spec.pod.as_ref().unwrap_or(&default_settings);
    let quantity = |s: &str| Quantity(s.to_string());
    let container = Container {
        name: "game-node".into(),
        image: Some(ct.spec.image.clone()),
        args: Some(vec!["serve".into()]),
        ports: Some(vec![
            ContainerPort {
                name: Some("http".into()),
                container_port: HTTP_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("metrics".into()),
                container_port: METRICS_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
        ]),
        env: Some(game_env(ct)),
        // Alive while the process answers; ready only while it can take money.
        // The node listens before it is set up (migrations, Redis, the hash chain: a chain of
        // 10 million hashes took 17 s on a busy 2-CPU node), and answers nothing until then: the
        // startup probe gives it 5 minutes before the liveness probe may restart it.
        startup_probe: Some(probe("/healthz", 2, 150)),
        liveness_probe: Some(probe("/healthz", 10, 3)),
        readiness_probe: Some(probe("/readyz", 2, 2)),
        resources: Some(
            settings
                .resources
                .clone()
                .unwrap_or_else(|| ResourceRequirements {
                    requests: Some(BTreeMap::from([
                        ("cpu".into(), quantity("250m")),
                        ("memory".into(), quantity("128Mi")),
                    ])),
                    limits: Some(BTreeMap::from([("memory".into(), quantity("512Mi"))])),
                    ..ResourceRequirements::default()
                }),
        ),
        image_pull_policy: settings.image_pull_policy.map(|p| p.as_str().to_string()),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "fairness".into(),
                mount_path: FAIRNESS_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "signing".into(),
                mount_path: SIGNING_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "edge".into(),
                mount_path: EDGE_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "data".into(),
                mount_path: "/var/lib/crashfleet".into(),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    };
    let pod = PodSpec {
        service_account_name: Some(t.clone()),
        termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(65_532),
            run_as_group: Some(65_532),
            fs_group: Some(65_532),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        topology_spread_constraints: Some(vec![
            TopologySpreadConstraint {
                max_skew: 1,
                topology_key: "topology.kubernetes.io/zone".into(),
                when_unsatisfiable: "ScheduleAnyway".into(),
                label_selector: Some(LabelSelector {
                    match_labels: Some(selector(&t)),
                    ..LabelSelector::default()
                }),
                ..TopologySpreadConstraint::default()
            },
            TopologySpreadConstraint {
                max_skew: 1,
                topology_key: "kubernetes.io/hostname".into(),
                when_unsatisfiable: "ScheduleAnyway".into(),
                label_selector: Some(LabelSelector {
                    match_labels: Some(selector(&t)),
                    ..LabelSelector::default()
                }),
                ..TopologySpreadConstraint::default()
            },
        ]),
        node_selector: settings.node_selector.clone(),
        tolerations: settings.tolerations.clone(),
        affinity: settings.affinity.clone(),
        priority_class_name: settings.priority_class_name.clone(),
        image_pull_secrets: settings.image_pull_secrets.clone(),
        containers: vec![container],
        volumes: Some(vec![
            Volume {
                name: "fairness".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(fairness_secret(&t)),
                    default_mode: Some(0o400),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            },
            Volume {
                name: "signing".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(signing_secret(&t)),
                    default_mode: Some(0o400),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            },
            // Mounted whole (a subPath mount is never updated) and optional: the operator
            // applies it before the Deployment, and a node without it only lacks a lobby link.
            Volume {
                name: "edge".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: edge_config_map(&t),
                    optional: Some(true),
                    default_mode: Some(0o444),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            },
            Volume {
                name: "data".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            },
        ]),
        ..PodSpec::default()
    };
    Deployment {
        metadata: meta(ct, t.clone()),
        spec: DeploymentSpec {
            // With autoscaling the HPA owns the count: leave the field to it.
            replicas: ct.spec.autoscaling.is_none().then_some(ct.spec.replicas),
            selector: LabelSelector {
                match_labels: Some(selector(&t)),
                ..LabelSelector::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                // The whole new set first, then the old pods go together: each old pod drains
                // (not ready, then its sockets closed with 1001) while every pod left ready is a
                // new one, so a player's socket moves once. One pod at a time would let a socket
                // from the first old pod land on a second old pod and move again. Costs twice
                // the pods for the length of a rollout; where the cluster cannot place them all,
                // the rollout goes as fast as new pods become ready (never below `replicas`).
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::String("100%".into())),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels(ct)),
                    annotations: settings.annotations.clone().filter(|a| !a.is_empty()),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    }
}

pub fn service(ct: &CrashTable) -> Service {
    let t = ct.name_any();
    Service {
        metadata: meta(ct, t.clone()),
        spec: Some(ServiceSpec {
            selector: Some(selector(&t)),
            ports: Some(vec![
                ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    target_port: Some(IntOrString::String("http".into())),
                    protocol: Some("TCP".into()),
                    app_protocol: Some("http".into()),
                    ..ServicePort::default()
                },
                ServicePort {
                    name: Some("metrics".into()),
                    port: METRICS_PORT,
                    target_port: Some(IntOrString::String("metrics".into())),
                    protocol: Some("TCP".into()),
                    app_protocol: Some("http".into()),
                    ..ServicePort::default()
                },
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Voluntary disruptions (drains, upgrades) take at most one replica at a time.
pub fn pod_disruption_budget(ct: &CrashTable) -> PodDisruptionBudget {
    let t = ct.name_any();
    PodDisruptionBudget {
        metadata: meta(ct, t.clone()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector(&t)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

/// An Ingress for ingress-nginx: long WebSocket timeouts, no request buffering.
pub fn ingress(ct: &CrashTable) -> Option<Ingress> {
    let spec = ct.spec.ingress.as_ref()?;
    let t = ct.name_any();
    let mut metadata = meta(ct, t.clone());
    metadata.annotations = Some(BTreeMap::from([
        (
            "nginx.ingress.kubernetes.io/proxy-read-timeout".to_string(),
            "3600".to_string(),
        ),
        (
            "nginx.ingress.kubernetes.io/proxy-send-timeout".to_string(),
            "3600".to_string(),
        ),
        (
            "nginx.ingress.kubernetes.io/proxy-buffering".to_string(),
            "off".to_string(),
        ),
    ]));
    Some(Ingress {
        metadata,
        spec: Some(K8sIngressSpec {
            ingress_class_name: spec.class_name.clone(),
            tls: spec.tls_secret_name.as_ref().map(|s| {
                vec![IngressTLS {
                    hosts: Some(vec![spec.host.clone()]),
                    secret_name: Some(s.clone()),
                }]
            }),
            rules: Some(vec![IngressRule {
                host: Some(spec.host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some("/".into()),
                        path_type: "Prefix".into(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: t,
                                port: Some(ServiceBackendPort {
                                    name: Some("http".into()),
                                    ..ServiceBackendPort::default()
                                }),
                            }),
                            ..IngressBackend::default()
                        },
                    }],
                }),
            }]),
            ..K8sIngressSpec::default()
        }),
        ..Ingress::default()
    })
}

/// The Gateway API's group; the operator uses only its standard-channel `HTTPRoute` (v1).
pub const GATEWAY_API_GROUP: &str = "gateway.networking.k8s.io";
/// The CRD that must exist for the operator to build routes (looked up by name).
pub const HTTP_ROUTE_CRD: &str = "httproutes.gateway.networking.k8s.io";

/// `HTTPRoute` as the dynamic API addresses it: the operator does not compile in the Gateway
/// API's types, it writes and reads the few fields it needs.
pub fn http_route_resource() -> kube::core::ApiResource {
    kube::core::ApiResource {
        group: GATEWAY_API_GROUP.into(),
        version: "v1".into(),
        api_version: format!("{GATEWAY_API_GROUP}/v1"),
        kind: "HTTPRoute".into(),
        plural: "httproutes".into(),
    }
}

/// The table's HTTPRoute `<table>`: attached to `spec.gateway.parentRefs`, answering for
/// `hostnames`, every path to the Service's `http` port (the page, `/api`, `/ws`; a WebSocket
/// is an HTTP/1.1 upgrade on the same route). Under a `pathPrefix` the prefix is replaced by `/`
/// on the way in, and the bare prefix redirects to the prefix with a slash, so that the page's
/// relative addresses resolve under it.
pub fn http_route(ct: &CrashTable) -> Option<serde_json::Value> {
    let spec = ct.spec.gateway.as_ref()?;
    let t = ct.name_any();
    let parent_refs: Vec<serde_json::Value> = spec
        .parent_refs
        .iter()
        .map(|p| {
            let mut r = serde_json::json!({
                "group": GATEWAY_API_GROUP, "kind": "Gateway", "name": p.name,
            });
            if let Some(ns) = &p.namespace {
                r["namespace"] = ns.clone().into();
            }
            if let Some(section) = &p.section_name {
                r["sectionName"] = section.clone().into();
            }
            r
        })
        .collect();
    let backend = serde_json::json!([{"kind": "Service", "name": t, "port": 80}]);
    let prefix = spec
        .path_prefix
        .as_deref()
        .map(|p| p.trim_end_matches('/'))
        .filter(|p| !p.is_empty());
    let rules = match prefix {
        None => serde_json::json!([{
            "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
            "backendRefs": backend,
        }]),
        Some(p) => serde_json::json!([
            {
                "matches": [{"path": {"type": "Exact", "value": p}}],
                "filters": [{"type": "RequestRedirect", "requestRedirect": {
                    "path": {"type": "ReplaceFullPath", "replaceFullPath": format!("{p}/")},
                    "statusCode": 301,
                }}],
            },
            {
                "matches": [{"path": {"type": "PathPrefix", "value": p}}],
                "filters": [{"type": "URLRewrite", "urlRewrite": {
                    "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"},
                }}],
                "backendRefs": backend,
            },
        ]),
    };
    let mut route_spec = serde_json::json!({"parentRefs": parent_refs, "rules": rules});
    if let Some(hosts) = &spec.hostnames {
        route_spec["hostnames"] = serde_json::json!(hosts);
    }
    Some(serde_json::json!({
        "apiVersion": format!("{GATEWAY_API_GROUP}/v1"),
        "kind": "HTTPRoute",
        "metadata": meta(ct, t),
        "spec": route_spec,
    }))
}

/// What the Gateways say of the route, from its `status.parents`: for each parent, its
/// `Accepted` and `ResolvedRefs` conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteParentStatus {
    /// `<namespace>/<name>` of the Gateway (the route's namespace when the ref names none).
    pub gateway: String,
    pub accepted: Option<RouteCondition>,
    pub resolved_refs: Option<RouteCondition>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteCondition {
    pub ok: bool,
    pub reason: String,
    pub message: String,
}

/// Reads `status.parents[*]` of an HTTPRoute (as JSON). Conditions a controller wrote for an
/// older generation of the route are skipped: they describe a spec that is gone.
pub fn route_parents(route: &serde_json::Value) -> Vec<RouteParentStatus> {
    let ns = route["metadata"]["namespace"].as_str().unwrap_or_default();
    let generation = route["metadata"]["generation"].as_i64();
    let condition = |conds: &serde_json::Value, type_: &str| {
        conds.as_array()?.iter().find_map(|c| {
            if c["type"] != type_ {
                return None;
            }
            if let (Some(want), Some(seen)) = (generation, c["observedGeneration"].as_i64())
                && seen < want
            {
                return None;
            }
            Some(RouteCondition {
                ok: c["status"] == "True",
                reason: c["reason"].as_str().unwrap_or_default().to_string(),
                message: c["message"].as_str().unwrap_or_default().to_string(),
            })
        })
    };
    route["status"]["parents"]
        .as_array()
        .map(|parents| {
            parents
                .iter()
                .map(|p| RouteParentStatus {
                    gateway: format!(
                        "{}/{}",
                        p["parentRef"]["namespace"].as_str().unwrap_or(ns),
                        p["parentRef"]["name"].as_str().unwrap_or_default()
                    ),
                    accepted: condition(&p["conditions"], "Accepted"),
                    resolved_refs: condition(&p["conditions"], "ResolvedRefs"),
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn autoscaler(ct: &CrashTable) -> Option<HorizontalPodAutoscaler> {
    let a = ct.spec.autoscaling.as_ref()?;
    let t = ct.name_any();
    Some(HorizontalPodAutoscaler {
        metadata: meta(ct, t.clone()),
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: t,
            },
            min_replicas: Some(a.min_replicas),
            max_replicas: a.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(a.target_cpu_utilization_percentage),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            ..HorizontalPodAutoscalerSpec::default()
        },
        ..HorizontalPodAutoscaler::default()
    })
}

/// A Prometheus Operator ServiceMonitor for the table's `/metrics` on the Service's `metrics` port
/// (applied only when the cluster has that CRD). Built as JSON: the operator does not depend on
/// its Rust types.
pub fn service_monitor(ct: &CrashTable) -> serde_json::Value {
    let t = ct.name_any();
    let m = meta(ct, t.clone());
    serde_json::json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": m,
        "spec": {
            "selector": {"matchLabels": selector(&t)},
            "endpoints": [{"port": "metrics", "path": "/metrics", "interval": "15s"}],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{CrashTableSpec, IngressSpec};

    fn table() -> CrashTable {
        let spec: CrashTableSpec = serde_json::from_value(serde_json::json!({
            "image": "registry.example/game-node:1",
            "redis": {"urlSecretRef": {"name": "redis", "key": "url"}},
            "database": {"urlSecretRef": {"name": "pg", "key": "url"}},
        }))
        .expect("spec");
        let mut ct = CrashTable::new("alpha", spec);
        ct.metadata.namespace = Some("games".into());
        ct.metadata.uid = Some("uid-1".into());
        ct
    }

    fn env_of(d: &Deployment) -> BTreeMap<String, EnvVar> {
        d.spec
            .template
            .spec
            .as_ref()
            .map(|p| p.containers[0].env.clone().unwrap_or_default())
            .unwrap_or_default()
            .into_iter()
            .map(|e| (e.name.clone(), e))
            .collect()
    }

    #[test]
    fn every_child_is_owned_labelled_and_named_after_the_table() {
        let ct = table();
        let metas = [
            service_account(&ct).metadata,
            role(&ct).metadata,
            role_binding(&ct).metadata,
            deployment(&ct).metadata,
            service(&ct).metadata,
            pod_disruption_budget(&ct).metadata,
        ];
        for m in metas {
            assert_eq!(m.name.as_deref(), Some("alpha"));
            assert_eq!(m.namespace.as_deref(), Some("games"));
            let owner = &m.owner_references.expect("owner")[0];
            assert_eq!(
                (owner.kind.as_str(), owner.name.as_str()),
                ("CrashTable", "alpha")
            );
            assert_eq!(owner.controller, Some(true));
            let l = m.labels.expect("labels");
            assert_eq!(l["app.kubernetes.io/instance"], "alpha");
            assert_eq!(l["app.kubernetes.io/managed-by"], "crashfleet-operator");
        }
    }

    fn gateway(prefix: Option<&str>) -> CrashTable {
        let mut ct = table();
        ct.spec.gateway = Some(crate::crd::GatewaySpec {
            parent_refs: vec![
                crate::crd::GatewayParentRef {
                    name: "edge".into(),
                    namespace: Some("infra".into()),
                    section_name: Some("http".into()),
                },
                crate::crd::GatewayParentRef {
                    name: "local".into(),
                    namespace: None,
                    section_name: None,
                },
            ],
            hostnames: Some(vec!["crash.example.com".into()]),
            path_prefix: prefix.map(String::from),
        });
        ct
    }

    #[test]
    fn the_http_route_attaches_to_the_gateways_and_routes_everything_to_the_service() {
        assert!(http_route(&table()).is_none());
        let r = http_route(&gateway(None)).expect("a route");
        assert_eq!(r["apiVersion"], "gateway.networking.k8s.io/v1");
        assert_eq!(r["kind"], "HTTPRoute");
        assert_eq!(r["metadata"]["name"], "alpha");
        assert_eq!(r["metadata"]["namespace"], "games");
        assert_eq!(r["metadata"]["ownerReferences"][0]["kind"], "CrashTable");
        assert_eq!(r["metadata"]["ownerReferences"][0]["controller"], true);
        let parents = &r["spec"]["parentRefs"];
        assert_eq!(
            parents[0],
            serde_json::json!({"group": "gateway.networking.k8s.io", "kind": "Gateway",
                               "name": "edge", "namespace": "infra", "sectionName": "http"})
        );
        assert_eq!(parents[1]["name"], "local");
        assert!(
            parents[1].get("namespace").is_none(),
            "the table's namespace"
        );
        assert_eq!(
            r["spec"]["hostnames"],
            serde_json::json!(["crash.example.com"])
        );
        let rules = r["spec"]["rules"].as_array().expect("rules");
        assert_eq!(rules.len(), 1);
        assert_eq!(
            rules[0]["matches"],
            serde_json::json!([{"path": {"type": "PathPrefix", "value": "/"}}])
        );
        // The Service's player port (80 → the pods' `http`); `metrics` is never routed.
        assert_eq!(
            rules[0]["backendRefs"],
            serde_json::json!([{"kind": "Service", "name": "alpha", "port": 80}])
        );
        let svc = service(&table());
        let ports = svc.spec.expect("spec").ports.expect("ports");
        assert!(
            ports
                .iter()
                .any(|p| p.port == 80 && p.name.as_deref() == Some("http"))
        );
        // Behind a Gateway the node trusts the private ranges for X-Forwarded-For.
        assert_eq!(trusted_proxies(&gateway(None)), INGRESS_TRUSTED_PROXIES);
    }

    #[test]
    fn under_a_path_prefix_the_route_strips_it_and_redirects_the_bare_prefix() {
        for prefix in ["/crash", "/crash/"] {
            let r = http_route(&gateway(Some(prefix))).expect("a route");
            let rules = r["spec"]["rules"].as_array().expect("rules");
            assert_eq!(rules.len(), 2, "{prefix}");
            assert_eq!(rules[0]["matches"][0]["path"]["type"], "Exact");
            assert_eq!(rules[0]["matches"][0]["path"]["value"], "/crash");
            let redirect = &rules[0]["filters"][0]["requestRedirect"];
            assert_eq!(redirect["path"]["replaceFullPath"], "/crash/");
            assert_eq!(redirect["statusCode"], 301);
            assert!(rules[0].get("backendRefs").is_none());
            assert_eq!(rules[1]["matches"][0]["path"]["value"], "/crash");
            assert_eq!(
                rules[1]["filters"][0]["urlRewrite"]["path"]["replacePrefixMatch"],
                "/"
            );
            assert_eq!(rules[1]["backendRefs"][0]["name"], "alpha");
        }
        // "/" is no prefix at all.
        let r = http_route(&gateway(Some("/"))).expect("a route");
        assert_eq!(r["spec"]["rules"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn the_gateways_answers_are_read_per_parent_and_stale_ones_skipped() {
        let route = serde_json::json!({
            "metadata": {"namespace": "games", "generation": 3},
            "status": {"parents": [
                {"parentRef": {"name": "edge", "namespace": "infra"},
                 "conditions": [
                    {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "ok", "observedGeneration": 3},
                    {"type": "ResolvedRefs", "status": "False", "reason": "BackendNotFound", "message": "no alpha", "observedGeneration": 3},
                 ]},
                {"parentRef": {"name": "local"},
                 "conditions": [
                    {"type": "Accepted", "status": "False", "reason": "NotAllowedByListeners", "message": "old", "observedGeneration": 2},
                 ]},
            ]},
        });
        let parents = route_parents(&route);
        assert_eq!(parents.len(), 2);
        assert_eq!(parents[0].gateway, "infra/edge");
        assert!(parents[0].accepted.as_ref().is_some_and(|c| c.ok));
        let refs = parents[0].resolved_refs.as_ref().expect("ResolvedRefs");
        assert_eq!((refs.ok, refs.reason.as_str()), (false, "BackendNotFound"));
        assert_eq!(parents[1].gateway, "games/local");
        assert!(
            parents[1].accepted.is_none(),
            "generation 2 describes an older spec"
        );
        assert!(route_parents(&serde_json::json!({"metadata": {}})).is_empty());
    }

    #[test]
    fn the_role_grants_only_the_tables_lease_and_events() {
        let r = role(&table());
        let rules = r.rules.expect("rules");
        assert_eq!(
            rules[0].resource_names,
            Some(vec!["alpha-leader".to_string()])
        );
        assert_eq!(rules[0].verbs, ["get", "update"]);
        assert_eq!(rules[1].verbs, ["create"]);
        let all: Vec<&String> = rules.iter().flat_map(|r| r.verbs.iter()).collect();
        assert!(
            !all.iter()
                .any(|v| ["*", "delete", "list", "watch"].contains(&v.as_str()))
        );
    }

    #[test]
    fn the_deployment_runs_game_node_safely_with_the_specs_configuration() {
        let ct = table();
        let d = deployment(&ct);
        let spec = &d.spec;
        assert_eq!(spec.replicas, Some(3));
        let ru = spec
            .strategy
            .as_ref()
            .and_then(|s| s.rolling_update.as_ref())
            .expect("ru");
        assert_eq!(ru.max_unavailable, Some(IntOrString::Int(0)));
        assert_eq!(ru.max_surge, Some(IntOrString::String("100%".into())));
        let pod = spec.template.spec.as_ref().expect("pod");
        assert_eq!(pod.termination_grace_period_seconds, Some(30));
        // The drain window fits in the grace period with room for the hand-over.
        let drain = pod.containers[0]
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "CRASHFLEET_DRAIN_DELAY_MS")
            .and_then(|e| e.value.as_deref())
            .expect("CRASHFLEET_DRAIN_DELAY_MS");
        assert_eq!(drain, "5000");
        assert_eq!(pod.service_account_name.as_deref(), Some("alpha"));
        let c = &pod.containers[0];
        let sc = c.security_context.as_ref().expect("sc");
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(
            sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
            Some(vec!["ALL".to_string()])
        );
        assert_eq!(
            c.readiness_probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref())
                .and_then(|h| h.path.as_deref()),
            Some("/readyz")
        );
        assert_eq!(
            c.liveness_probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref())
                .and_then(|h| h.path.as_deref()),
            Some("/healthz")
        );
        // Setup may take minutes (a long hash chain); liveness must not cut it short.
        let startup = c.startup_probe.as_ref().expect("a startup probe");
        let budget = startup.period_seconds.unwrap_or(10) * startup.failure_threshold.unwrap_or(3);
        assert!(budget >= 300, "startup budget {budget} s");
        let env = env_of(&d);
        let value = |k: &str| env[k].value.clone().unwrap_or_default();
        assert_eq!(value("CRASHFLEET_LEADER_ELECTION"), "kubernetes");
        assert_eq!(value("CRASHFLEET_LEASE_NAME"), "alpha-leader");
        assert_eq!(value("CRASHFLEET_TABLE"), "alpha");
        assert_eq!(value("CRASHFLEET_HOUSE_EDGE_BP"), "100");
        assert_eq!(value("CRASHFLEET_CHAIN_LENGTH"), "10000000");
        // Timings valid for game-node: retry < renew deadline < lease.
        let (lease, renew, retry): (u64, u64, u64) = (
            value("CRASHFLEET_LEASE_DURATION_MS").parse().expect("n"),
            value("CRASHFLEET_RENEW_DEADLINE_MS").parse().expect("n"),
            value("CRASHFLEET_RETRY_PERIOD_MS").parse().expect("n"),
        );
        assert!(retry < renew && renew < lease, "{retry} {renew} {lease}");
        // Secrets by reference, never by value.
        let secret = |k: &str| {
            env[k]
                .value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
                .map(|s| (s.name.clone(), s.key.clone()))
        };
        assert_eq!(
            secret("CRASHFLEET_REDIS_URL"),
            Some(("redis".into(), "url".into()))
        );
        assert_eq!(
            secret("CRASHFLEET_DATABASE_URL"),
            Some(("pg".into(), "url".into()))
        );
        assert_eq!(
            secret("CRASHFLEET_JWT_SECRET"),
            Some(("alpha-auth".into(), JWT_KEY.into()))
        );
        assert!(env["POD_NAME"].value_from.is_some());
        assert!(env["POD_NAMESPACE"].value_from.is_some());
        assert!(
            !env.contains_key("CRASHFLEET_SALT"),
            "no salt until one is set"
        );
    }

    #[test]
    fn optional_children_follow_the_spec() {
        let mut ct = table();
        assert!(ingress(&ct).is_none());
        assert!(autoscaler(&ct).is_none());
        ct.spec.ingress = Some(IngressSpec {
            host: "crash.example.com".into(),
            class_name: Some("nginx".into()),
            tls_secret_name: Some("crash-tls".into()),
        });
        ct.spec.autoscaling =
            serde_json::from_value(serde_json::json!({"minReplicas": 3, "maxReplicas": 10}))
                .expect("a");
        let i = ingress(&ct).expect("ingress");
        let ann = i.metadata.annotations.expect("annotations");
        assert_eq!(
            ann["nginx.ingress.kubernetes.io/proxy-read-timeout"],
            "3600"
        );
        let h = autoscaler(&ct).expect("hpa");
        assert_eq!(h.spec.max_replicas, 10);
        // The HPA owns the replica count.
        assert_eq!(deployment(&ct).spec.replicas, None);
    }

    #[test]
    fn the_service_monitor_scrapes_the_tables_service() {
        let sm = service_monitor(&table());
        assert_eq!(sm["metadata"]["name"], "alpha");
        assert_eq!(sm["metadata"]["ownerReferences"][0]["kind"], "CrashTable");
        assert_eq!(
            sm["spec"]["selector"]["matchLabels"]["crashfleet.dev/table"],
            "alpha"
        );
        assert_eq!(sm["spec"]["endpoints"][0]["port"], "metrics");
        // The Service it selects carries the same labels and names the port, which reaches the
        // container's metrics listener — the address the game-node is told to serve it on.
        let svc = service(&table());
        let labels = svc.metadata.labels.expect("labels");
        assert_eq!(labels["crashfleet.dev/table"], "alpha");
        let ports = svc.spec.expect("spec").ports.expect("ports");
        assert_eq!(ports[0].name.as_deref(), Some("http"));
        let metrics = ports
            .iter()
            .find(|p| p.name.as_deref() == Some("metrics"))
            .expect("a metrics port");
        assert_eq!(
            metrics.target_port,
            Some(IntOrString::String("metrics".into()))
        );
        let d = deployment(&table());
        let pod = d.spec.template.spec.as_ref().expect("pod");
        let container_port = pod.containers[0]
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some("metrics"))
            .expect("a metrics container port");
        assert_eq!(container_port.container_port, METRICS_PORT);
        assert_eq!(
            env_of(&d)["CRASHFLEET_METRICS_LISTEN"].value.as_deref(),
            Some("0.0.0.0:9090")
        );
        // Players reach only `http` through the Ingress.
        let mut ct = table();
        ct.spec.ingress = Some(IngressSpec {
            host: "crash.example.com".into(),
            class_name: None,
            tls_secret_name: None,
        });
        let i = ingress(&ct).expect("ingress");
        let rules = i.spec.expect("spec").rules.expect("rules");
        let backend = &rules[0].http.as_ref().expect("http").paths[0].backend;
        assert_eq!(
            backend
                .service
                .as_ref()
                .and_then(|s| s.port.as_ref())
                .and_then(|p| p.name.as_deref()),
            Some("http")
        );
    }

    #[test]
    fn trusted_proxies_default_to_private_ranges_only_behind_an_ingress() {
        let proxies = |ct: &CrashTable| {
            env_of(&deployment(ct))
                .get("CRASHFLEET_TRUSTED_PROXIES")
                .and_then(|e| e.value.clone())
        };
        let mut ct = table();
        // No Ingress: players reach the pods directly (or through something we did not create).
        assert_eq!(proxies(&ct), None);
        ct.spec.ingress = Some(IngressSpec {
            host: "crash.example.com".into(),
            class_name: Some("nginx".into()),
            tls_secret_name: None,
        });
        assert_eq!(
            proxies(&ct).as_deref(),
            Some("10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7")
        );
        assert!(check_spec(&ct).is_ok(), "the default parses in game-node");
        // Set explicitly: exactly that list; `[]` trusts no proxy even behind an Ingress.
        ct.spec.trusted_proxies = Some(vec!["10.244.0.0/16".into()]);
        assert_eq!(proxies(&ct).as_deref(), Some("10.244.0.0/16"));
        ct.spec.trusted_proxies = Some(vec![]);
        assert_eq!(proxies(&ct), None);
        // What game-node would refuse at start is refused before any pod crash-loops.
        ct.spec.trusted_proxies = Some(vec!["10.244.1.0/16".into()]);
        assert!(check_spec(&ct).is_err());
    }

    #[test]
    fn hsts_is_on_when_the_ingress_serves_tls() {
        let hsts = |ct: &CrashTable| env_of(&deployment(ct)).contains_key("CRASHFLEET_HSTS");
        let mut ct = table();
        assert!(!hsts(&ct));
        ct.spec.ingress = Some(IngressSpec {
            host: "crash.example.com".into(),
            class_name: None,
            tls_secret_name: None,
        });
        assert!(!hsts(&ct), "plain HTTP: no HSTS");
        ct.spec.ingress = Some(IngressSpec {
            host: "crash.example.com".into(),
            class_name: None,
            tls_secret_name: Some("crash-tls".into()),
        });
        assert!(hsts(&ct));
    }

    #[test]
    fn the_public_url_comes_from_the_spec_the_ingress_or_the_route() {
        assert_eq!(
            edge_config_map_object(&table()).metadata.name.as_deref(),
            Some("alpha-edge")
        );
        let url = |ct: &CrashTable| Some(url_of(ct)).filter(|u| !u.is_empty());
        assert_eq!(url(&table()), None, "no way in: no link");
        let mut ct = table();
        ct.spec.ingress = Some(IngressSpec {
            host: "eu.example.com".into(),
            class_name: None,
            tls_secret_name: None,
        });
        assert_eq!(url(&ct).as_deref(), Some("http://eu.example.com/"));
        ct.spec.ingress = Some(IngressSpec {
            host: "eu.example.com".into(),
            class_name: None,
            tls_secret_name: Some("tls".into()),
        });
        assert_eq!(url(&ct).as_deref(), Some("https://eu.example.com/"));
        assert_eq!(
            url(&gateway(Some("/crash/"))).as_deref(),
            Some("https://crash.example.com/crash/")
        );
        assert_eq!(
            url(&gateway(None)).as_deref(),
            Some("https://crash.example.com/")
        );
        let mut wild = gateway(None);
        if let Some(g) = wild.spec.gateway.as_mut() {
            g.hostnames = Some(vec!["*.example.com".into()]);
        }
        assert_eq!(url(&wild), None, "a wildcard names no host to link to");
        // The spec's own URL wins, and one the node would refuse is refused before any pod runs.
        ct.spec.public_url = Some("http://10.0.0.1:8080/eu".into());
        assert_eq!(url(&ct).as_deref(), Some("http://10.0.0.1:8080/eu"));
        assert!(check_spec(&ct).is_ok());
        ct.spec.public_url = Some("http://x:notaport/".into());
        assert!(check_spec(&ct).is_err());
    }

    #[test]
    fn moving_the_way_in_changes_no_pod_template() {
        // Ingress → route → another path prefix → an explicit URL: only the ConfigMap changes,
        // so no rollout drops the players' sockets for a new lobby link.
        let template =
            |ct: &CrashTable| serde_json::to_value(&deployment(ct).spec.template).expect("json");
        let mut ingress = table();
        ingress.spec.ingress = Some(IngressSpec {
            host: "eu.example.com".into(),
            class_name: None,
            tls_secret_name: None,
        });
        let mut explicit = gateway(Some("/crash/"));
        explicit.spec.public_url = Some("https://elsewhere.example.com/".into());
        let first = template(&ingress);
        for other in [gateway(None), gateway(Some("/crash/")), explicit] {
            assert_ne!(url_of(&other), url_of(&ingress));
            assert_eq!(template(&other), first, "{:?}", url_of(&other));
        }
        let env = env_of(&deployment(&ingress));
        assert_eq!(
            env["CRASHFLEET_PUBLIC_URL_FILE"].value.as_deref(),
            Some("/etc/crashfleet/edge/public-url")
        );
        assert!(!env.contains_key("CRASHFLEET_PUBLIC_URL"));
        let pod = deployment(&ingress).spec.template.spec.expect("pod");
        let edge = pod
            .volumes
            .expect("volumes")
            .into_iter()
            .find(|v| v.name == "edge")
            .expect("the edge volume");
        let source = edge.config_map.expect("a ConfigMap volume");
        assert_eq!(source.name, "alpha-edge");
        assert_eq!(
            source.optional,
            Some(true),
            "a pod starts before its ConfigMap"
        );
        let mount = pod.containers[0].volume_mounts.clone().expect("mounts");
        let mount = mount
            .iter()
            .find(|m| m.name == "edge")
            .expect("the edge mount");
        assert_eq!(mount.mount_path, EDGE_DIR);
        assert!(
            mount.sub_path.is_none(),
            "a subPath mount is never updated in place"
        );
    }

    /// The public URL the table's edge ConfigMap carries (empty: none).
    fn url_of(ct: &CrashTable) -> String {
        edge_config_map_object(ct).data.unwrap_or_default()[PUBLIC_URL_KEY].clone()
    }

    #[test]
    fn spec_pod_is_merged_into_the_template_and_cannot_move_the_selector() {
        let mut ct = table();
        ct.spec.pod = Some(
            serde_json::from_value(serde_json::json!({
                "resources": {"requests": {"cpu": "1", "memory": "1Gi"},
                              "limits": {"cpu": "2", "memory": "2Gi"}},
                "nodeSelector": {"crashfleet.dev/real-node": "true"},
                "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "games",
                                 "effect": "NoSchedule"}],
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]}}},
                "priorityClassName": "games-critical",
                "imagePullPolicy": "Never",
                "imagePullSecrets": [{"name": "registry-creds"}],
                "labels": {"team": "games", "crashfleet.dev/table": "someone-else",
                           "app.kubernetes.io/instance": "other"},
                "annotations": {"prometheus.io/scrape": "false"},
            }))
            .expect("spec.pod"),
        );
        let d = deployment(&ct);
        let meta = d
            .spec
            .template
            .metadata
            .as_ref()
            .expect("template metadata");
        let labels = meta.labels.as_ref().expect("labels");
        assert_eq!(labels["team"], "games", "extra labels reach the pods");
        // The operator's labels win: the selector still selects every pod.
        for (k, v) in selector("alpha") {
            assert_eq!(labels[&k], v, "{k}");
        }
        assert_eq!(
            d.spec.selector.match_labels.as_ref().expect("selector"),
            &selector("alpha")
        );
        assert_eq!(
            meta.annotations.as_ref().expect("annotations")["prometheus.io/scrape"],
            "false"
        );
        let pod = d.spec.template.spec.as_ref().expect("pod");
        assert_eq!(
            pod.node_selector.as_ref().expect("nodeSelector")["crashfleet.dev/real-node"],
            "true"
        );
        assert_eq!(
            pod.tolerations.as_ref().expect("tolerations")[0]
                .value
                .as_deref(),
            Some("games")
        );
        assert!(
            pod.affinity
                .as_ref()
                .and_then(|a| a.node_affinity.as_ref())
                .is_some()
        );
        assert_eq!(pod.priority_class_name.as_deref(), Some("games-critical"));
        assert_eq!(
            pod.image_pull_secrets.as_ref().expect("pull secrets")[0].name,
            "registry-creds"
        );
        // The operator's spreading stays beside the user's affinity.
        assert_eq!(
            pod.topology_spread_constraints.as_ref().map(Vec::len),
            Some(2)
        );
        let c = &pod.containers[0];
        assert_eq!(c.image_pull_policy.as_deref(), Some("Never"));
        let r = c.resources.as_ref().expect("resources");
        assert_eq!(r.requests.as_ref().expect("requests")["cpu"].0, "1");
        assert_eq!(r.limits.as_ref().expect("limits")["memory"].0, "2Gi");
        // The security context is not the user's to loosen.
        assert_eq!(
            c.security_context
                .as_ref()
                .and_then(|s| s.read_only_root_filesystem),
            Some(true)
        );
    }

    #[test]
    fn without_spec_pod_the_template_keeps_the_defaults() {
        let d = deployment(&table());
        let meta = d
            .spec
            .template
            .metadata
            .as_ref()
            .expect("template metadata");
        assert_eq!(meta.labels.as_ref(), Some(&labels("alpha")));
        assert_eq!(meta.annotations, None);
        let pod = d.spec.template.spec.as_ref().expect("pod");
        assert_eq!(pod.node_selector, None);
        assert_eq!(pod.tolerations, None);
        assert_eq!(pod.affinity, None);
        assert_eq!(pod.priority_class_name, None);
        assert_eq!(pod.image_pull_secrets, None);
        let c = &pod.containers[0];
        assert_eq!(c.image_pull_policy, None);
        let r = c.resources.as_ref().expect("resources");
        assert_eq!(r.requests.as_ref().expect("requests")["cpu"].0, "250m");
        assert_eq!(r.limits.as_ref().expect("limits")["memory"].0, "512Mi");
    }

    #[test]
    fn the_fairness_secret_is_immutable_and_holds_the_seed() {
        let s = fairness_secret_object(&table(), "ab".repeat(32).as_str());
        assert_eq!(s.metadata.name.as_deref(), Some("alpha-fairness"));
        assert_eq!(s.immutable, Some(true));
        let seed = &s.data.expect("data")[SEED_KEY];
        assert_eq!(seed.0.len(), 65);
    }

    #[test]
    fn the_signing_key_is_an_immutable_secret_mounted_owner_only() {
        let s = signing_secret_object(&table(), &"ab".repeat(32), &"cd".repeat(32));
        assert_eq!(s.metadata.name.as_deref(), Some("alpha-signing"));
        assert_eq!(s.immutable, Some(true));
        let data = s.data.expect("data");
        assert_eq!(
            data[SIGNING_KEY_KEY].0,
            format!("{}\n", "ab".repeat(32)).into_bytes()
        );
        assert_eq!(data[PUBLIC_KEY_KEY].0, "cd".repeat(32).into_bytes());
        let d = deployment(&table());
        let pod = d.spec.template.spec.expect("pod");
        let volume = pod
            .volumes
            .expect("volumes")
            .into_iter()
            .find(|v| v.name == "signing")
            .expect("the signing volume");
        let source = volume.secret.expect("a Secret volume");
        assert_eq!(source.secret_name.as_deref(), Some("alpha-signing"));
        assert_eq!(source.default_mode, Some(0o400));
        let container = &pod.containers[0];
        let mount = container
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == "signing")
            .expect("mounted");
        assert_eq!(
            (mount.mount_path.as_str(), mount.read_only),
            (SIGNING_DIR, Some(true))
        );
        let file = container
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "CRASHFLEET_SIGNING_KEY_FILE")
            .and_then(|e| e.value.clone());
        assert_eq!(file, Some(format!("{SIGNING_DIR}/{SIGNING_KEY_KEY}")));
    }
}
