//! The reconciler: a CrashTable in, its fleet applied (server-side apply, one field manager,
//! owner references), its status written back. The objects come from the pure [`builders`];
//! this module only reads, applies and reports.
//!
//! Secrets are the exception to "apply every time": the fairness seed and the auth keys are
//! created once and never overwritten (a new seed would break the published commitment; new
//! keys would end every session).

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use crate::builders;
use crate::crd::{CrashTable, CrashTableStatus, ElectionBackend, FairnessStatus};

/// The one field manager of everything the operator applies.
pub const MANAGER: &str = "crashfleet-operator";
/// Status is refreshed this often even without a watch event (leader changes live in a Lease).
pub const REFRESH: Duration = Duration::from_secs(10);
/// Key of the public terminating hash in Secret `<table>-fairness` (computed once, with the seed).
pub const TERMINATING_KEY: &str = "terminating-hash";
pub const CHAIN_LENGTH_KEY: &str = "chain-length";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("Secret {secret} (key {key}) referenced by spec.{field} is missing")]
    MissingSecret {
        field: &'static str,
        secret: String,
        key: String,
    },
    #[error("the fairness chain could not be built: {0}")]
    Fairness(String),
    /// A spec value the schema cannot check and the game-node would refuse.
    #[error("{0}")]
    InvalidSpec(String),
}

impl Error {
    /// A short CamelCase reason for conditions and events.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "ApiError",
            Error::MissingSecret { .. } => "MissingSecret",
            Error::Fairness(_) => "FairnessError",
            Error::InvalidSpec(_) => "InvalidSpec",
        }
    }
}

pub struct Context {
    pub client: Client,
    pub reporter: Reporter,
    /// Consecutive failed reconciles per table, for the retry back-off.
    pub failures: std::sync::Mutex<std::collections::HashMap<String, u32>>,
    /// Clients of redis-backend tables' Redis, for their leader in status.
    pub redis: crate::redis_status::RedisStatus,
}

impl Context {
    pub fn new(client: Client, reporter: Reporter) -> Context {
        Context {
            client,
            reporter,
            failures: std::sync::Mutex::new(std::collections::HashMap::new()),
            redis: crate::redis_status::RedisStatus::default(),
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, u32>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Retry delay after `n` consecutive failures: 2 s doubling to 5 minutes.
pub fn backoff(n: u32) -> Duration {
    Duration::from_secs((2u64 << (n.clamp(1, 9) - 1)).min(300))
}

fn apply_params() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

/// Server-side apply of one child (a no-op write when nothing changed: no churn).
async fn apply<K>(client: &Client, ns: &str, obj: &K) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    api.patch(&obj.name_any(), &apply_params(), &Patch::Apply(obj))
        .await?;
    Ok(())
}

/// Deletes an optional child that is no longer asked for (absent is fine).
async fn remove<K>(client: &Client, ns: &str, name: &str) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn random_hex(bytes: usize) -> String {
    use rand::Rng;
    let mut b = vec![0u8; bytes];
    rand::rng().fill(&mut b[..]);
    hex::encode(b)
}

/// Creates `secret` unless a Secret of that name exists; returns the one that exists afterwards.
async fn create_once(client: &Client, ns: &str, secret: Secret) -> Result<(Secret, bool), Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let name = secret.name_any();
    if let Some(existing) = api.get_opt(&name).await? {
        return Ok((existing, false));
    }
    match api.create(&PostParams::default(), &secret).await {
        Ok(s) => Ok((s, true)),
        // Another reconcile (or operator replica) created it first: use theirs.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok((api.get(&name).await?, false)),
        Err(e) => Err(e.into()),
    }
}

/// The fairness Secret: the seed, generated once, with its public terminating hash.
async fn ensure_fairness(client: &Client, ct: &CrashTable) -> Result<(Secret, bool), Error> {
    let ns = ct.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    if let Some(existing) = api
        .get_opt(&builders::fairness_secret(&ct.name_any()))
        .await?
    {
        return Ok((existing, false));
    }
    let length = ct.spec.fairness.chain_length.max(1) as u64;
    // One SHA-256 per link: ~1 s for 10 million, done once per table, off the async threads.
    let (terminating, seed) = tokio::task::spawn_blocking(move || {
        crashfleet_core::fairness::Chain::generate(length, &mut rand::rngs::OsRng)
            .map(|(chain, seed)| (chain.terminating_hash(), seed))
            .map_err(|e| Error::Fairness(e.to_string()))
    })
    .await
    .map_err(|e| Error::Fairness(e.to_string()))??;
    let mut secret =
        builders::fairness_secret_object(ct, &crashfleet_core::fairness::to_hex(&seed));
    if let Some(data) = secret.data.as_mut() {
        data.insert(
            TERMINATING_KEY.into(),
            ByteString(crashfleet_core::fairness::to_hex(&terminating).into_bytes()),
        );
        data.insert(
            CHAIN_LENGTH_KEY.into(),
            ByteString(length.to_string().into_bytes()),
        );
    }
    create_once(client, &ns, secret).await
}

/// The signing Secret: the table's Ed25519 key, generated once, with its public key.
async fn ensure_signing(client: &Client, ct: &CrashTable) -> Result<(Secret, bool), Error> {
    let key = crashfleet_core::settlement::signing::SigningKey::generate();
    let secret = builders::signing_secret_object(
        ct,
        &hex::encode(key.seed()),
        &hex::encode(key.public_key()),
    );
    create_once(client, &ct.namespace().unwrap_or_default(), secret).await
}

fn secret_text(s: &Secret, key: &str) -> Option<String> {
    s.data
        .as_ref()?
        .get(key)
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
        .map(|v| v.trim().to_string())
}

/// The Secrets the spec references must exist (the pods would crash-loop otherwise).
async fn check_references(client: &Client, ct: &CrashTable) -> Result<(), Error> {
    let ns = ct.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    for (field, r) in [
        ("redis", &ct.spec.redis.url_secret_ref),
        ("database", &ct.spec.database.url_secret_ref),
    ] {
        let found = api.get_opt(&r.name).await?;
        let has_key = found
            .as_ref()
            .and_then(|s| s.data.as_ref())
            .is_some_and(|d| d.contains_key(&r.key));
        if !has_key {
            return Err(Error::MissingSecret {
                field,
                secret: r.name.clone(),
                key: r.key.clone(),
            });
        }
    }
    Ok(())
}

/// What a redis-backend fleet published (see [`crate::redis_status`]), from the Redis its
/// Secret names.
async fn redis_published(
    ctx: &Context,
    ct: &CrashTable,
) -> Result<crate::redis_status::Published, String> {
    let r = &ct.spec.redis.url_secret_ref;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ct.namespace().unwrap_or_default());
    let secret = api.get(&r.name).await.map_err(|e| e.to_string())?;
    let url = secret_text(&secret, &r.key)
        .ok_or_else(|| format!("no key {} in Secret {}", r.key, r.name))?;
    ctx.redis.read(&url, &ct.name_any()).await
}

/// Where a table's leader reads `spec.paused`: the Lease's [`PAUSED_ANNOTATION`] (kubernetes
/// backend) or the Redis key `crashfleet:{<table>}:paused` (redis backend). The leader re-reads
/// it with every renewal of its election record, so pausing finishes the round in progress and
/// resuming opens the next one without restarting a pod. Written only when it differs (a table
/// never paused never gets the annotation); `Ok(true)` when this pass changed it.
///
/// [`PAUSED_ANNOTATION`]: crashfleet_lease::PAUSED_ANNOTATION
async fn write_paused(ctx: &Context, ct: &CrashTable) -> Result<bool, String> {
    let (name, ns) = (ct.name_any(), ct.namespace().unwrap_or_default());
    let want = ct.spec.paused;
    match ct.spec.leader_election.backend {
        ElectionBackend::Kubernetes => {
            use crashfleet_lease::{PAUSED_ANNOTATION, lease_paused};
            let api = Api::<Lease>::namespaced(ctx.client.clone(), &ns);
            let lease_name = builders::lease_name(&name);
            let current = api.get_opt(&lease_name).await.map_err(|e| e.to_string())?;
            if current.as_ref().is_some_and(lease_paused) == want || (!want && current.is_none()) {
                return Ok(false);
            }
            // Server-side apply of the one annotation: the holder's renewals carry the record they
            // read, so it stays; created here if no leader has written the Lease yet.
            let patch = serde_json::json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": lease_name, "annotations": {PAUSED_ANNOTATION: want.to_string()}},
            });
            api.patch(&lease_name, &apply_params(), &Patch::Apply(&patch))
                .await
                .map_err(|e| e.to_string())?;
            Ok(true)
        }
        ElectionBackend::Redis => {
            let r = &ct.spec.redis.url_secret_ref;
            let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
            let secret = api.get(&r.name).await.map_err(|e| e.to_string())?;
            let url = secret_text(&secret, &r.key)
                .ok_or_else(|| format!("no key {} in Secret {}", r.key, r.name))?;
            ctx.redis.write_paused(&url, &name, want).await
        }
    }
}

/// A condition, keeping its transition time when its status did not change.
pub fn condition(
    old: &[Condition],
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
) -> Condition {
    let status = if ok { "True" } else { "False" }.to_string();
    let since = old
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(k8s_openapi::jiff::Timestamp::now()));
    Condition {
        type_: type_.into(),
        status,
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: since,
    }
}

async fn publish(ctx: &Context, ct: &CrashTable, type_: EventType, reason: &str, note: String) {
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&ev, &ct.object_ref(&())).await {
        warn!(error = %e, "could not publish an event");
    }
}

/// The event note when the table's public URL (what ConfigMap `<table>-edge` carries) changes —
/// a new table with a way in included, since its lobby link appearing is news to its operator
/// too; `None` when it stays as it was.
pub fn public_url_change(
    before: Option<&ConfigMap>,
    after: &ConfigMap,
    normalised: Option<&str>,
) -> Option<String> {
    let value = |cm: &ConfigMap| {
        cm.data
            .as_ref()
            .and_then(|d| d.get(builders::PUBLIC_URL_KEY))
            .cloned()
            .unwrap_or_default()
    };
    let (old, new) = (before.map(value).unwrap_or_default(), value(after));
    if old == new {
        return None;
    }
    let was = if old.is_empty() {
        "none".to_string()
    } else {
        old
    };
    Some(match normalised {
        Some(url) => format!(
            "the lobby links to {url} (was {was}); the pods follow it within the kubelet's sync \
             period, without restarting"
        ),
        None => {
            format!("the table has no public URL any more (was {was}): the lobby shows no link")
        }
    })
}

async fn write_status(
    client: &Client,
    ct: &CrashTable,
    status: CrashTableStatus,
) -> Result<(), Error> {
    if ct.status.as_ref() == Some(&status) {
        return Ok(()); // no churn
    }
    let api: Api<CrashTable> = Api::namespaced(client.clone(), &ct.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": "crashfleet.dev/v1alpha1",
        "kind": "CrashTable",
        "status": status,
    });
    api.patch_status(&ct.name_any(), &apply_params(), &Patch::Apply(patch))
        .await?;
    Ok(())
}

/// Whether the cluster serves version `v1` of the CRD `name` (looked up by name: `get` on
/// customresourcedefinitions is all the operator needs for it).
pub async fn crd_serves_v1(client: &Client, name: &str) -> Result<bool, Error> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    Ok(crds
        .get_opt(name)
        .await?
        .is_some_and(|c| c.spec.versions.iter().any(|v| v.name == "v1" && v.served)))
}

/// Whether the cluster serves `monitoring.coreos.com/v1` ServiceMonitors.
async fn service_monitors_available(client: &Client) -> Result<bool, Error> {
    crd_serves_v1(client, "servicemonitors.monitoring.coreos.com").await
}

/// One condition's state: (status is True, reason, message).
pub type ConditionState = (bool, String, String);

/// The route's conditions for the table's status, see [`route_conditions`].
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConditions {
    pub accepted: ConditionState,
    pub resolved_refs: ConditionState,
    /// A Gateway refused the route, or the Gateway API is missing.
    pub degraded: bool,
}

/// What became of the table's HTTPRoute this pass.
#[derive(Debug, Clone, PartialEq)]
pub enum RouteReport {
    /// `spec.gateway` is absent: no route (one left from before is deleted).
    NotAsked,
    /// `spec.gateway` is set but the cluster has no Gateway API (no HTTPRoute CRD): nothing
    /// applied; the table still serves inside the cluster.
    ApiMissing,
    /// Applied; what each Gateway said of it (empty: no controller has answered yet).
    Applied(Vec<builders::RouteParentStatus>),
}

/// Applies (or removes) the table's HTTPRoute and reads back what the Gateways said of it.
async fn reconcile_route(client: &Client, ct: &CrashTable) -> Result<RouteReport, Error> {
    let (ns, name) = (ct.namespace().unwrap_or_default(), ct.name_any());
    let want = builders::http_route(ct);
    if !crd_serves_v1(client, builders::HTTP_ROUTE_CRD).await? {
        return Ok(if want.is_some() {
            RouteReport::ApiMissing
        } else {
            RouteReport::NotAsked
        });
    }
    let ar = builders::http_route_resource();
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
    let Some(route) = want else {
        // Only a route this table owns is removed: one someone else made under the same name stays.
        if let Some(existing) = api.get_opt(&name).await?
            && existing
                .owner_references()
                .iter()
                .any(|o| Some(&o.uid) == ct.metadata.uid.as_ref())
        {
            remove_dynamic(&api, &name).await?;
        }
        return Ok(RouteReport::NotAsked);
    };
    let applied = api
        .patch(&name, &apply_params(), &Patch::Apply(&route))
        .await?;
    let applied = serde_json::to_value(&applied).map_err(|e| Error::InvalidSpec(e.to_string()))?;
    Ok(RouteReport::Applied(builders::route_parents(&applied)))
}

async fn remove_dynamic(api: &Api<kube::api::DynamicObject>, name: &str) -> Result<(), Error> {
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The route's conditions for the table's status: `RouteAccepted` and `RouteResolvedRefs`, each
/// True only when every Gateway the route names says so; otherwise False with the first refusing
/// Gateway's own reason and message (or `GatewayAPIMissing` / `Pending`). `None` without
/// `spec.gateway`. The third value: whether a Gateway refused the route or the API is missing
/// (the table is `Degraded`: players cannot reach it the way the spec asks).
pub fn route_conditions(report: &RouteReport, route: &str) -> Option<RouteConditions> {
    match report {
        RouteReport::NotAsked => None,
        RouteReport::ApiMissing => {
            let msg = "the cluster has no Gateway API (CRD httproutes.gateway.networking.k8s.io, \
                       v1): install its standard channel; the table serves inside the cluster \
                       meanwhile"
                .to_string();
            let c = (false, "GatewayAPIMissing".to_string(), msg);
            Some(RouteConditions {
                accepted: c.clone(),
                resolved_refs: c,
                degraded: true,
            })
        }
        RouteReport::Applied(parents) => {
            let one =
                |pick: fn(&builders::RouteParentStatus) -> &Option<builders::RouteCondition>,
                 type_: &str| {
                    if parents.is_empty() {
                        return (
                            false,
                            "Pending".to_string(),
                            format!(
                                "HTTPRoute {route} applied; no Gateway has answered for it yet"
                            ),
                        );
                    }
                    for p in parents {
                        match pick(p) {
                            Some(c) if c.ok => {}
                            Some(c) => {
                                return (
                                    false,
                                    c.reason.clone(),
                                    format!("{}: {}", p.gateway, c.message),
                                );
                            }
                            None => {
                                return (
                                    false,
                                    "Pending".to_string(),
                                    format!("{} has not reported {type_} yet", p.gateway),
                                );
                            }
                        }
                    }
                    let gateways: Vec<&str> = parents.iter().map(|p| p.gateway.as_str()).collect();
                    (
                        true,
                        type_.to_string(),
                        format!("HTTPRoute {route}: {type_} by {}", gateways.join(", ")),
                    )
                };
            let accepted = one(|p| &p.accepted, "Accepted");
            let resolved = one(|p| &p.resolved_refs, "ResolvedRefs");
            let refused = parents
                .iter()
                .any(|p| p.accepted.as_ref().is_some_and(|c| !c.ok))
                || parents
                    .iter()
                    .any(|p| p.resolved_refs.as_ref().is_some_and(|c| !c.ok));
            Some(RouteConditions {
                accepted,
                resolved_refs: resolved,
                degraded: refused,
            })
        }
    }
}

/// One pass: make the world match the table, then report what is.
pub async fn reconcile(ct: Arc<CrashTable>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&ct, &ctx).await;
    metrics_record(started, result.is_err());
    if let Err(e) = &result {
        let old = ct.status.clone().unwrap_or_default();
        let mut status = old.clone();
        status.observed_generation = ct.metadata.generation;
        status.phase = Some("Degraded".into());
        let gen_ = ct.metadata.generation;
        status.conditions = vec![
            condition(
                &old.conditions,
                "Ready",
                false,
                e.reason(),
                e.to_string(),
                gen_,
            ),
            condition(
                &old.conditions,
                "Degraded",
                true,
                e.reason(),
                e.to_string(),
                gen_,
            ),
            condition(
                &old.conditions,
                "Progressing",
                false,
                e.reason(),
                e.to_string(),
                gen_,
            ),
        ];
        if let Some(f) = old
            .conditions
            .iter()
            .find(|c| c.type_ == "FairnessCommitted")
        {
            status.conditions.push(f.clone());
        }
        publish(&ctx, &ct, EventType::Warning, e.reason(), e.to_string()).await;
        let _ = write_status(&ctx.client, &ct, status).await;
    }
    result
}

async fn reconcile_inner(ct: &CrashTable, ctx: &Context) -> Result<Action, Error> {
    let action = reconcile_pass(ct, ctx).await?;
    // A success resets the back-off.
    ctx.failures().remove(&format!(
        "{}/{}",
        ct.namespace().unwrap_or_default(),
        ct.name_any()
    ));
    Ok(action)
}

async fn reconcile_pass(ct: &CrashTable, ctx: &Context) -> Result<Action, Error> {
    let client = &ctx.client;
    let ns = ct.namespace().unwrap_or_default();
    let name = ct.name_any();
    crate::builders::check_spec(ct).map_err(Error::InvalidSpec)?;
    check_references(client, ct).await?;

    let (fairness, created) = ensure_fairness(client, ct).await?;
    if created {
        info!(table = %name, "generated the table's chain seed");
        publish(
            ctx,
            ct,
            EventType::Normal,
            "FairnessCommitted",
            format!(
                "generated the hash chain ({} rounds); terminating hash {}",
                ct.spec.fairness.chain_length,
                secret_text(&fairness, TERMINATING_KEY).unwrap_or_default()
            ),
        )
        .await;
    }
    let (signing, signing_created) = ensure_signing(client, ct).await?;
    if signing_created {
        // Only the public half is ever logged or published.
        let public = secret_text(&signing, builders::PUBLIC_KEY_KEY).unwrap_or_default();
        info!(table = %name, public_key = %public, "generated the table's signing key");
        publish(
            ctx,
            ct,
            EventType::Normal,
            "SigningKeyCreated",
            format!(
                "Secret {} holds the table's Ed25519 signing key; public key {public}",
                builders::signing_secret(&name)
            ),
        )
        .await;
    }
    let (_, auth_created) = create_once(
        client,
        &ns,
        builders::auth_secret_object(ct, &random_hex(32), &random_hex(24)),
    )
    .await?;
    if auth_created {
        publish(
            ctx,
            ct,
            EventType::Normal,
            "Created",
            format!("Secret {}", builders::auth_secret(&name)),
        )
        .await;
    }

    apply(client, &ns, &builders::service_account(ct)).await?;
    apply(client, &ns, &builders::role(ct)).await?;
    apply(client, &ns, &builders::role_binding(ct)).await?;
    // Before the Deployment, so a new pod mounts the URL at once (it is optional all the same).
    let edge = builders::edge_config_map_object(ct);
    let edge_before = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .get_opt(&builders::edge_config_map(&name))
        .await?;
    apply(client, &ns, &edge).await?;
    let public_url =
        builders::public_url(ct).and_then(|u| crashfleet_core::net::public_url(&u).ok());
    if let Some(note) = public_url_change(edge_before.as_ref(), &edge, public_url.as_deref()) {
        publish(ctx, ct, EventType::Normal, "PublicUrlChanged", note).await;
    }
    // The Deployment as it was, to tell what this pass changed (events, not churn).
    let before = Api::<Deployment>::namespaced(client.clone(), &ns)
        .get_opt(&name)
        .await?;
    let desired = builders::deployment(ct);
    apply(client, &ns, &desired).await?;
    deployment_events(ctx, ct, before.as_ref(), &desired).await;
    let mut paused_note = String::new();
    match write_paused(ctx, ct).await {
        Ok(false) => {}
        Ok(true) if ct.spec.paused => {
            let note =
                "the current round finishes, then no new rounds until resumed (no pod restarts)";
            publish(ctx, ct, EventType::Normal, "Paused", note.into()).await;
        }
        Ok(true) => {
            let note = "the leader opens the next round (no pod restarts)";
            publish(ctx, ct, EventType::Normal, "Resumed", note.into()).await;
        }
        Err(e) => {
            warn!(table = %name, error = %e, "could not write the pause flag");
            paused_note = format!(" (pause flag not written: {e})");
        }
    }
    apply(client, &ns, &builders::service(ct)).await?;
    apply(client, &ns, &builders::pod_disruption_budget(ct)).await?;
    match builders::ingress(ct) {
        Some(i) => apply(client, &ns, &i).await?,
        None => remove::<Ingress>(client, &ns, &name).await?,
    }
    let route = reconcile_route(client, ct).await?;
    match builders::autoscaler(ct) {
        Some(h) => apply(client, &ns, &h).await?,
        None => remove::<HorizontalPodAutoscaler>(client, &ns, &name).await?,
    }

    // A ServiceMonitor only where the Prometheus Operator's CRD exists.
    if service_monitors_available(client).await? {
        let sm = builders::service_monitor(ct);
        let ar = kube::core::ApiResource {
            group: "monitoring.coreos.com".into(),
            version: "v1".into(),
            api_version: "monitoring.coreos.com/v1".into(),
            kind: "ServiceMonitor".into(),
            plural: "servicemonitors".into(),
        };
        let api: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
        api.patch(&name, &apply_params(), &Patch::Apply(&sm))
            .await?;
    }

    // What is: the Deployment's replicas, the Lease's holder, the commitment.
    let deployment = Api::<Deployment>::namespaced(client.clone(), &ns)
        .get_opt(&name)
        .await?;
    let dstatus = deployment.and_then(|d| d.status);
    let replicas = dstatus.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let ready = dstatus.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
    let lease_obj = Api::<Lease>::namespaced(client.clone(), &ns)
        .get_opt(&builders::lease_name(&name))
        .await?;
    let rounds_played: Option<i64> = lease_obj
        .as_ref()
        .and_then(|l| l.metadata.annotations.as_ref())
        .and_then(|a| a.get(crashfleet_lease::ROUNDS_PLAYED_ANNOTATION))
        .and_then(|v| v.parse().ok());
    let lease = lease_obj.and_then(|l| l.spec);
    let leader = lease
        .as_ref()
        .and_then(|l| l.holder_identity.clone())
        .filter(|h| !h.is_empty());
    let term = lease
        .as_ref()
        .and_then(|l| l.lease_transitions)
        .map(i64::from);
    // A redis-backend fleet never writes the Lease: its election record is the Redis lock.
    let mut leader_note = String::new();
    let (leader, term, rounds_played) = match ct.spec.leader_election.backend {
        ElectionBackend::Kubernetes => (leader, term, rounds_played),
        ElectionBackend::Redis => match redis_published(ctx, ct).await {
            Ok(p) => (p.leader, p.term, p.rounds_played),
            Err(e) => {
                warn!(table = %name, error = %e, "could not read the fleet's Redis for status");
                leader_note = format!(" (Redis: {e})");
                (None, None, None)
            }
        },
    };

    // Why pods are not ready, if they are not: `list` on the table's pods by its selector, each
    // pass (the status refresh is periodic anyway, so no watch is needed).
    let selector = builders::selector(&name)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods = Api::<Pod>::namespaced(client.clone(), &ns)
        .list(&ListParams::default().labels(&selector))
        .await?;
    let pods = crate::health::pods_health(&pods.items);

    let old = ct.status.clone().unwrap_or_default();
    let gen_ = ct.metadata.generation;
    let want = if ct.spec.autoscaling.is_some() {
        replicas.max(1)
    } else {
        ct.spec.replicas
    };
    let ready_ok = ready >= 1 && leader.is_some();
    let progressing = ready < want;
    let route_conds = route_conditions(&route, &name);
    let route_refused = route_conds.as_ref().is_some_and(|r| r.degraded);
    let phase = if ct.spec.paused {
        "Paused"
    } else if route_refused || (!ready_ok && pods.failing) {
        "Degraded"
    } else if ready_ok {
        "Running"
    } else {
        "Pending"
    };
    if let Some(RouteConditions {
        accepted: (ok, reason, message),
        ..
    }) = &route_conds
        && !old
            .conditions
            .iter()
            .any(|c| c.type_ == "RouteAccepted" && &c.reason == reason)
        && reason != "Pending"
    {
        // Once per change of what the Gateways say, not on every refresh.
        let kind = if *ok {
            EventType::Normal
        } else {
            EventType::Warning
        };
        let reason = if *ok {
            "RouteAccepted"
        } else {
            reason.as_str()
        };
        publish(ctx, ct, kind, reason, message.clone()).await;
    }
    let terminating = secret_text(&fairness, TERMINATING_KEY).unwrap_or_default();
    let signing_key = secret_text(&signing, builders::PUBLIC_KEY_KEY).unwrap_or_default();
    let chain_length = secret_text(&fairness, CHAIN_LENGTH_KEY)
        .and_then(|l| l.parse().ok())
        .unwrap_or(ct.spec.fairness.chain_length);
    let chain = chain_health(chain_length, rounds_played);
    if chain != ChainHealth::Fine
        && !old
            .conditions
            .iter()
            .any(|c| c.type_ == "FairnessCommitted" && c.reason == chain.reason())
    {
        // Once per change of state, not on every refresh.
        publish(
            ctx,
            ct,
            EventType::Warning,
            chain.reason(),
            chain.message(chain_length, rounds_played),
        )
        .await;
    }
    if pods.failing
        && !old
            .conditions
            .iter()
            .any(|c| c.type_ == "PodsReady" && c.reason == pods.reason)
    {
        publish(
            ctx,
            ct,
            EventType::Warning,
            &pods.reason,
            pods.message.clone(),
        )
        .await;
    }
    let status = CrashTableStatus {
        observed_generation: gen_,
        phase: Some(phase.into()),
        conditions: vec![
            condition(
                &old.conditions,
                "Ready",
                ready_ok,
                if ready_ok {
                    "LeaderElected"
                } else if ready == 0 {
                    "NoReadyReplicas"
                } else {
                    "NoLeader"
                },
                format!(
                    "{ready}/{want} replicas ready, leader {}{leader_note}{paused_note}",
                    leader.as_deref().unwrap_or("none")
                ),
                gen_,
            ),
            condition(
                &old.conditions,
                "Progressing",
                progressing,
                if progressing {
                    "RollingOut"
                } else {
                    "Complete"
                },
                format!("{ready} of {want} replicas ready"),
                gen_,
            ),
            condition(
                &old.conditions,
                "PodsReady",
                pods.ready,
                &pods.reason,
                pods.message.clone(),
                gen_,
            ),
            if pods.failing {
                condition(
                    &old.conditions,
                    "Degraded",
                    true,
                    &pods.reason,
                    pods.message.clone(),
                    gen_,
                )
            } else if let Some((_, reason, message)) = route_conds
                .as_ref()
                .filter(|r| r.degraded)
                .and_then(|r| [&r.accepted, &r.resolved_refs].into_iter().find(|c| !c.0))
            {
                condition(
                    &old.conditions,
                    "Degraded",
                    true,
                    reason,
                    message.clone(),
                    gen_,
                )
            } else {
                condition(
                    &old.conditions,
                    "Degraded",
                    false,
                    "AsExpected",
                    "all children applied".into(),
                    gen_,
                )
            },
            condition(
                &old.conditions,
                "FairnessCommitted",
                !terminating.is_empty() && chain != ChainHealth::Exhausted,
                chain.reason(),
                if chain == ChainHealth::Fine {
                    format!("terminating hash {terminating}")
                } else {
                    chain.message(chain_length, rounds_played)
                },
                gen_,
            ),
        ]
        .into_iter()
        .chain(route_conds.iter().flat_map(|r| {
            [
                ("RouteAccepted", &r.accepted),
                ("RouteResolvedRefs", &r.resolved_refs),
            ]
            .map(|(type_, (ok, reason, message))| {
                condition(&old.conditions, type_, *ok, reason, message.clone(), gen_)
            })
        }))
        .collect(),
        replicas: Some(replicas),
        ready_replicas: Some(ready),
        leader,
        term,
        fairness: Some(FairnessStatus {
            terminating_hash: terminating,
            salt: ct.spec.fairness.salt.clone(),
            chain_length,
            rounds_played,
            signing_key,
        }),
        public_url,
    };
    write_status(client, ct, status).await?;
    Ok(Action::requeue(REFRESH))
}

/// How much of the hash chain is left. A table whose chain runs out can play no more rounds
/// under its commitment (a hash is never reused): warn well ahead, so a new table (new
/// commitment) can be prepared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainHealth {
    Fine,
    /// Less than a tenth (and at most 100,000 rounds) left.
    NearlyExhausted,
    Exhausted,
}

pub fn chain_health(chain_length: i64, rounds_played: Option<i64>) -> ChainHealth {
    let Some(played) = rounds_played else {
        return ChainHealth::Fine;
    };
    let left = chain_length - played;
    if left <= 0 {
        ChainHealth::Exhausted
    } else if left <= (chain_length / 10).min(100_000) {
        ChainHealth::NearlyExhausted
    } else {
        ChainHealth::Fine
    }
}

impl ChainHealth {
    pub fn reason(self) -> &'static str {
        match self {
            ChainHealth::Fine => "ChainGenerated",
            ChainHealth::NearlyExhausted => "ChainNearlyExhausted",
            ChainHealth::Exhausted => "ChainExhausted",
        }
    }

    fn message(self, chain_length: i64, played: Option<i64>) -> String {
        let played = played.unwrap_or(0);
        format!(
            "{played} of {chain_length} rounds played, {} left: create a new table (a new commitment) \
             before the chain runs out; no hash is ever reused",
            (chain_length - played).max(0)
        )
    }
}

/// Failed reconciles retry with a short, fixed back-off (the controller's own queue dedups).
/// Events for what a pass did to the Deployment: created, scaled, rolled out.
async fn deployment_events(
    ctx: &Context,
    ct: &CrashTable,
    before: Option<&Deployment>,
    desired: &Deployment,
) {
    let image = |d: &Deployment| {
        d.spec
            .template
            .spec
            .as_ref()
            .and_then(|p| p.containers.first())
            .and_then(|c| c.image.clone())
    };
    let name = ct.name_any();
    let Some(before) = before else {
        publish(
            ctx,
            ct,
            EventType::Normal,
            "Created",
            format!(
                "Deployment {name} with {} replicas",
                desired.spec.replicas.unwrap_or(0)
            ),
        )
        .await;
        return;
    };
    if let Some(want) = desired.spec.replicas
        && before.spec.replicas != Some(want)
    {
        publish(
            ctx,
            ct,
            EventType::Normal,
            "Scaled",
            format!(
                "Deployment {name} from {} to {want} replicas",
                before.spec.replicas.unwrap_or(0)
            ),
        )
        .await;
    }
    if image(before) != image(desired) {
        publish(
            ctx,
            ct,
            EventType::Normal,
            "RollingOut",
            format!("image {}", image(desired).unwrap_or_default()),
        )
        .await;
    }
}

/// Failed reconciles retry with exponential back-off per table (2 s doubling to 5 min), so a
/// table waiting for a missing Secret is retried promptly at first and cheaply later.
pub fn error_policy(ct: Arc<CrashTable>, e: &Error, ctx: Arc<Context>) -> Action {
    let key = format!("{}/{}", ct.namespace().unwrap_or_default(), ct.name_any());
    let n = {
        let mut f = ctx.failures();
        let n = f.entry(key).or_insert(0);
        *n += 1;
        *n
    };
    let delay = backoff(n);
    warn!(error = %e, attempt = n, retry_in_s = delay.as_secs(), "reconcile failed");
    Action::requeue(delay)
}

fn metrics_record(started: Instant, failed: bool) {
    metrics::counter!("crashfleet_operator_reconciles_total").increment(1);
    if failed {
        metrics::counter!("crashfleet_operator_reconcile_errors_total").increment(1);
    }
    metrics::histogram!("crashfleet_operator_reconcile_duration_seconds")
        .record(started.elapsed().as_secs_f64());
}

#[cfg(test)]
mod chain_tests {
    use super::{ChainHealth, chain_health};

    #[test]
    fn back_off_doubles_to_five_minutes() {
        use super::backoff;
        use std::time::Duration;
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(2), Duration::from_secs(4));
        assert_eq!(backoff(5), Duration::from_secs(32));
        assert_eq!(backoff(8), Duration::from_secs(256));
        assert_eq!(backoff(9), Duration::from_secs(300));
        assert_eq!(backoff(50), Duration::from_secs(300));
    }

    #[test]
    fn warns_ahead_of_exhaustion() {
        assert_eq!(chain_health(10_000_000, None), ChainHealth::Fine);
        assert_eq!(chain_health(10_000_000, Some(9_899_999)), ChainHealth::Fine);
        assert_eq!(
            chain_health(10_000_000, Some(9_900_000)),
            ChainHealth::NearlyExhausted
        );
        assert_eq!(
            chain_health(5_000, Some(4_500)),
            ChainHealth::NearlyExhausted
        );
        assert_eq!(chain_health(5_000, Some(4_499)), ChainHealth::Fine);
        assert_eq!(chain_health(5_000, Some(5_000)), ChainHealth::Exhausted);
    }
}

#[cfg(test)]
mod route_tests {
    use super::{RouteConditions, RouteReport, route_conditions};
    use crate::builders::{RouteCondition, RouteParentStatus};

    fn cond(ok: bool, reason: &str) -> Option<RouteCondition> {
        Some(RouteCondition {
            ok,
            reason: reason.into(),
            message: format!("{reason} said"),
        })
    }

    fn parent(gw: &str, accepted: Option<RouteCondition>) -> RouteParentStatus {
        RouteParentStatus {
            gateway: gw.into(),
            accepted,
            resolved_refs: cond(true, "ResolvedRefs"),
        }
    }

    #[test]
    fn no_gateway_no_route_conditions() {
        assert!(route_conditions(&RouteReport::NotAsked, "t").is_none());
    }

    #[test]
    fn a_missing_gateway_api_is_said_and_degrades_the_table() {
        let RouteConditions {
            accepted,
            resolved_refs: resolved,
            degraded,
        } = route_conditions(&RouteReport::ApiMissing, "t").expect("conditions");
        assert_eq!(
            (accepted.0, accepted.1.as_str()),
            (false, "GatewayAPIMissing")
        );
        assert!(accepted.2.contains("standard channel"), "{}", accepted.2);
        // One sentence for `kubectl describe`: no source indentation carried into it.
        assert!(!accepted.2.contains("  "), "{:?}", accepted.2);
        assert_eq!(resolved.1, "GatewayAPIMissing");
        assert!(degraded);
    }

    #[test]
    fn a_route_nobody_answered_for_is_pending_not_degraded() {
        let RouteConditions {
            accepted, degraded, ..
        } = route_conditions(&RouteReport::Applied(vec![]), "t").expect("conditions");
        assert_eq!((accepted.0, accepted.1.as_str()), (false, "Pending"));
        assert!(!degraded);
    }

    #[test]
    fn accepted_only_when_every_gateway_accepts_else_the_refusers_reason() {
        let all = RouteReport::Applied(vec![
            parent("infra/edge", cond(true, "Accepted")),
            parent("games/local", cond(true, "Accepted")),
        ]);
        let RouteConditions {
            accepted,
            resolved_refs: resolved,
            degraded,
        } = route_conditions(&all, "t").expect("conditions");
        assert!(accepted.0 && resolved.0 && !degraded);
        assert!(
            accepted.2.contains("infra/edge, games/local"),
            "{}",
            accepted.2
        );

        let one_refuses = RouteReport::Applied(vec![
            parent("infra/edge", cond(true, "Accepted")),
            parent("games/local", cond(false, "NotAllowedByListeners")),
        ]);
        let RouteConditions {
            accepted,
            resolved_refs: resolved,
            degraded,
        } = route_conditions(&one_refuses, "t").expect("conditions");
        assert_eq!(
            (accepted.0, accepted.1.as_str()),
            (false, "NotAllowedByListeners")
        );
        assert!(accepted.2.starts_with("games/local: "), "{}", accepted.2);
        assert!(resolved.0);
        assert!(degraded);

        let silent = RouteReport::Applied(vec![parent("infra/edge", None)]);
        let RouteConditions {
            accepted, degraded, ..
        } = route_conditions(&silent, "t").expect("conditions");
        assert_eq!(accepted.1, "Pending");
        assert!(!degraded);
    }
}

#[cfg(test)]
mod public_url_tests {
    use super::*;

    fn edge(url: &str) -> ConfigMap {
        ConfigMap {
            data: Some([(builders::PUBLIC_URL_KEY.to_string(), url.to_string())].into()),
            ..ConfigMap::default()
        }
    }

    #[test]
    fn a_public_url_change_is_news_and_staying_the_same_is_not() {
        let url = "https://eu.example.com/crash";
        let norm = Some("https://eu.example.com/crash/");
        // No way in, before and after (a new table without one): nothing to say.
        assert_eq!(public_url_change(None, &edge(""), None), None);
        assert_eq!(public_url_change(Some(&edge(url)), &edge(url), norm), None);
        assert_eq!(
            public_url_change(None, &edge(url), norm).as_deref(),
            Some(
                "the lobby links to https://eu.example.com/crash/ (was none); the pods follow \
                 it within the kubelet's sync period, without restarting"
            )
        );
        assert_eq!(
            public_url_change(Some(&edge("http://crash.localtest.me/")), &edge(url), norm)
                .as_deref(),
            Some(
                "the lobby links to https://eu.example.com/crash/ (was \
                 http://crash.localtest.me/); the pods follow it within the kubelet's sync \
                 period, without restarting"
            )
        );
        assert_eq!(
            public_url_change(Some(&edge(url)), &edge(""), None).as_deref(),
            Some(
                "the table has no public URL any more (was https://eu.example.com/crash): the \
                 lobby shows no link"
            )
        );
        // A ConfigMap someone emptied of its key counts as no URL.
        let bare = ConfigMap::default();
        assert_eq!(public_url_change(Some(&bare), &edge(""), None), None);
    }
}
