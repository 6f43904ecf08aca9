//! `crashfleet-operator`: see `crashfleet-operator --help`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use clap::{Args, Parser, Subcommand};
use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::DynamicObject;
use kube::runtime::controller::Controller;
use kube::runtime::events::Reporter;
use kube::runtime::watcher;
use kube::{Api, Client};
use metrics_exporter_prometheus::PrometheusBuilder;
use tracing::{info, warn};

use crashfleet_operator::builders;
use crashfleet_operator::controller::{self, Context};
use crashfleet_operator::crd::CrashTable;

/// The crashfleet operator: reconciles CrashTable resources (crashfleet.dev/v1alpha1) into
/// leader-elected game-node fleets.
#[derive(Parser)]
#[command(name = "crashfleet-operator", version, about, long_about = None)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// `run`'s options, for running without the subcommand name.
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Watch CrashTables and reconcile them (the default). Uses the in-cluster service account,
    /// or `$KUBECONFIG` outside a cluster.
    Run(RunArgs),
    /// Print the CrashTable CustomResourceDefinition as YAML (what `crds/` and the Helm chart
    /// ship; `kubectl apply -f -` installs it).
    Crd,
}

#[derive(Args, Clone)]
struct RunArgs {
    /// Address of `/healthz`, `/readyz` and `/metrics` (Prometheus).
    #[arg(
        long,
        env = "CRASHFLEET_OPERATOR_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    listen: SocketAddr,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "CRASHFLEET_OPERATOR_NAMESPACE")]
    namespace: Option<String>,
    /// Log as JSON lines (for log collectors) instead of text.
    #[arg(long, env = "CRASHFLEET_OPERATOR_JSON_LOGS")]
    json_logs: bool,
    /// Run active/standby: only the holder of Lease `crashfleet-operator` in this namespace
    /// reconciles; the others wait to take over. Unset: this process always reconciles (one
    /// replica, or a local run).
    #[arg(long, env = "CRASHFLEET_OPERATOR_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,
    /// This replica's identity in the Lease (default: `$POD_NAME`, else the hostname).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
}

/// The operator's own Lease: standby replicas take over within ~15 s of the active one dying.
const OPERATOR_LEASE: &str = "crashfleet-operator";

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Crd) => {
            print!("{}", crashfleet_operator::crd_yaml()?);
            Ok(())
        }
        Some(Command::Run(args)) => run(args),
        None => run(cli.run),
    }
}

#[tokio::main]
async fn run(args: RunArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if args.json_logs {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let metrics = PrometheusBuilder::new().install_recorder()?;
    for name in [
        "crashfleet_operator_reconciles_total",
        "crashfleet_operator_reconcile_errors_total",
    ] {
        metrics::counter!(name).increment(0);
    }
    let client = Client::try_default().await?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    info!(addr = %listener.local_addr()?, "health and metrics");
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ready" }))
        .route(
            "/metrics",
            get(move || std::future::ready(metrics.render())),
        );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!(error = %e, "health server stopped");
        }
    });

    let (tables, deployments) = match &args.namespace {
        Some(ns) => (
            Api::<CrashTable>::namespaced(client.clone(), ns),
            Api::<Deployment>::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        Reporter {
            controller: "crashfleet-operator".into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    ));
    // Active/standby: wait for the Lease; stop reconciling (and exit, to be restarted as a
    // standby) the moment it is lost, before another replica can take it.
    let stop = tokio_util::sync::CancellationToken::new();
    let mut elector = None;
    if let Some(ns) = &args.lease_namespace {
        use crashfleet_lease::LeaderElector;
        let identity = args
            .identity
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "crashfleet-operator".into());
        let e = crashfleet_lease::LeaseElector::without_ledger(
            client.clone(),
            ns,
            OPERATOR_LEASE,
            &identity,
            crashfleet_lease::ElectionTimings {
                lease_duration: std::time::Duration::from_secs(15),
                renew_deadline: std::time::Duration::from_secs(10),
                retry_period: std::time::Duration::from_secs(2),
            },
        );
        let signal = tokio_util::sync::CancellationToken::new();
        let on_signal = signal.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            on_signal.cancel();
        });
        info!(%identity, lease = OPERATOR_LEASE, namespace = %ns, "waiting to become the active operator");
        let Some(leadership) = e.acquire(&signal).await? else {
            return Ok(());
        };
        info!("active: reconciling");
        let lost = leadership.lost.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            lost.cancelled().await;
            stop.cancel();
        });
        elector = Some(e);
    }
    info!(
        namespace = args.namespace.as_deref().unwrap_or("(all)"),
        "reconciling CrashTables"
    );
    let stopped = stop.clone();
    let mut controller = Controller::new(tables, watcher::Config::default())
        .owns(deployments, watcher::Config::default());
    // A route's status changes when a Gateway controller answers for it: watched, so the table's
    // conditions follow within moments. Only where the Gateway API is installed at start (a
    // watch on a missing API fails on every retry); without it, and for CRDs installed later,
    // the periodic refresh reads the route.
    if controller::crd_serves_v1(&client, builders::HTTP_ROUTE_CRD).await? {
        let ar = builders::http_route_resource();
        let routes = match &args.namespace {
            Some(ns) => Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar),
            None => Api::<DynamicObject>::all_with(client.clone(), &ar),
        };
        controller = controller.owns_with(routes, ar, watcher::Config::default());
        info!("watching HTTPRoutes (gateway.networking.k8s.io/v1)");
    }
    controller
        .graceful_shutdown_on(async move { stopped.cancelled().await })
        .shutdown_on_signal()
        .run(controller::reconcile, controller::error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::debug!(table = %obj.name, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile error"),
            }
        })
        .await;
    if let Some(e) = elector {
        use crashfleet_lease::LeaderElector;
        let lost = stop.is_cancelled();
        e.release().await;
        if lost {
            anyhow::bail!("lost the operator Lease; exiting to rejoin as a standby");
        }
    }
    info!("crashfleet-operator stopped");
    Ok(())
}
