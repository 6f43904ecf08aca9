//! The `game-node` binary: a thin CLI over the library (serve, verify, chain, migrate, openapi).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use game_node::config::ServeConfig;
use tokio_util::sync::CancellationToken;

/// mimalloc instead of glibc's allocator: under load the node allocates and frees many small
/// buffers per request across threads, and glibc's malloc/free (with its heap consolidation)
/// took ~14 % of the node's CPU at 5,000 bets/s (perf, docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// crashfleet game node: provably fair multiplayer crash rounds, standalone with one command or
/// as one replica of a fleet.
#[derive(Parser, Debug)]
#[command(
    name = "game-node",
    version,
    about,
    long_about = None,
    args_conflicts_with_subcommands = true,
    after_help = "Logs go to stderr: JSON lines in a pod (KUBERNETES_SERVICE_HOST set), text otherwise; \
                  CRASHFLEET_LOG_FORMAT=json|text overrides, RUST_LOG sets the level (default info)."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// `serve` is the default command; its flags may be given without it.
    #[command(flatten)]
    serve: ServeConfig,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the node (HTTP, WebSocket, rounds). The default.
    Serve(Box<ServeConfig>),
    /// Recompute rounds offline from a revealed hash and the salt; `verify receipt` checks a
    /// player's signed receipts against the table's settlement and round log.
    Verify(VerifyCommand),
    /// Manage secret hash chains.
    Chain {
        #[command(subcommand)]
        command: ChainCommand,
    },
    /// Apply the ledger migrations and exit.
    Migrate {
        /// `sqlite://PATH` or `postgres://...`.
        #[arg(long, env = "CRASHFLEET_DATABASE_URL")]
        database_url: String,
    },
    /// Print the OpenAPI document of the REST API.
    Openapi,
}

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct VerifyCommand {
    #[command(subcommand)]
    what: Option<VerifyWhat>,
    #[command(flatten)]
    rounds: Option<game_node::verify::VerifyArgs>,
}

#[derive(Subcommand, Debug)]
enum VerifyWhat {
    /// Check signed receipts: each bet settled as signed, its round in the signed round log, the
    /// crash point from the chain. Exits 1 when a check fails.
    Receipt(game_node::receipt_check::ReceiptArgs),
}

#[derive(Subcommand, Debug)]
enum ChainCommand {
    /// Create a secret chain seed (file mode 0600) and print the terminating hash.
    New(game_node::verify::ChainNewArgs),
}

/// JSON lines or human text. `CRASHFLEET_LOG_FORMAT` (`json` or `text`) decides; without it a node
/// in a pod (the kubelet sets `KUBERNETES_SERVICE_HOST` in every container) logs JSON, which log
/// collectors parse, and a node started by hand logs text for a terminal.
fn json_logs(format: Option<&str>, in_pod: bool) -> bool {
    match format {
        Some(f) if f.eq_ignore_ascii_case("json") => true,
        Some(f) if f.eq_ignore_ascii_case("text") => false,
        _ => in_pod,
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = json_logs(
        std::env::var("CRASHFLEET_LOG_FORMAT").ok().as_deref(),
        std::env::var_os("KUBERNETES_SERVICE_HOST").is_some(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn serve(cfg: ServeConfig) -> anyhow::Result<()> {
    // Every WebSocket player is a file descriptor: lift the soft limit (often 1024) to what the
    // node may hold, up to the hard limit the operator allows.
    let want = cfg.max_connections as u64 + 1024;
    match rlimit::increase_nofile_limit(want) {
        Ok(got) if got < want => tracing::warn!(
            "file-descriptor limit is {got}: fewer than --max-connections {} players can connect \
             (raise the hard limit, e.g. ulimit -Hn or the container runtime's nofile)",
            cfg.max_connections
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("could not raise the file-descriptor limit: {e}"),
    }
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", cfg.listen))?;
    // The first SIGTERM or Ctrl-C begins the drain window, a second one ends it.
    let (begin, hurry) = (CancellationToken::new(), CancellationToken::new());
    {
        let (begin, hurry) = (begin.clone(), hurry.clone());
        tokio::spawn(async move {
            let mut signals = Signals::new();
            signals.next().await;
            tracing::info!("shutting down");
            begin.cancel();
            signals.next().await;
            hurry.cancel();
        });
    }
    game_node::node::run(listener, cfg, begin, hurry).await
}

/// SIGTERM (what the kubelet sends) and Ctrl-C, one at a time.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Self {
        Signals {
            #[cfg(unix)]
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok(),
        }
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        let term = async {
            match &mut self.term {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            () = term => {},
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Verify(VerifyCommand {
            what: Some(VerifyWhat::Receipt(args)),
            ..
        })) => {
            let mut out = std::io::stdout().lock();
            match game_node::receipt_check::run(&args, &mut out) {
                Ok(true) => Ok(()),
                Ok(false) => return ExitCode::from(1),
                Err(e) => Err(e),
            }
        }
        Some(Command::Verify(VerifyCommand {
            rounds: Some(args), ..
        })) => {
            let mut out = std::io::stdout().lock();
            match game_node::verify::run_verify(&args, &mut out) {
                Ok(true) => Ok(()),
                Ok(false) => return ExitCode::from(1),
                Err(e) => Err(e),
            }
        }
        Some(Command::Verify(_)) => Err(anyhow::anyhow!(
            "verify needs --salt and --hash (rounds), or the receipt subcommand; see --help"
        )),
        Some(Command::Chain {
            command: ChainCommand::New(args),
        }) => game_node::verify::run_chain_new(&args, &mut std::io::stdout().lock()),
        Some(Command::Openapi) => {
            println!("{}", game_node::api::openapi_json());
            Ok(())
        }
        Some(Command::Migrate { database_url }) => {
            init_tracing();
            runtime().and_then(|rt| {
                rt.block_on(async {
                    let l = game_node::ledger::SqlLedger::connect(&database_url, 1).await?;
                    l.close().await;
                    println!("migrations applied");
                    Ok(())
                })
            })
        }
        Some(Command::Serve(cfg)) => {
            init_tracing();
            runtime().and_then(|rt| rt.block_on(serve(*cfg)))
        }
        None => {
            init_tracing();
            runtime().and_then(|rt| rt.block_on(serve(cli.serve)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("game-node: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::json_logs;

    #[test]
    fn pods_log_json_unless_told_otherwise() {
        assert!(json_logs(None, true));
        assert!(!json_logs(None, false));
        assert!(json_logs(Some("json"), false));
        assert!(json_logs(Some("JSON"), false));
        assert!(!json_logs(Some("text"), true));
        // An unknown value falls back to where the node runs rather than failing the start.
        assert!(json_logs(Some("xml"), true));
        assert!(!json_logs(Some("xml"), false));
    }
}
