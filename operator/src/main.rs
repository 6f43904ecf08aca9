//! `crashfleet-operator`: see `crashfleet-operator --help`.

use clap::{Parser, Subcommand};

/// The crashfleet operator: reconciles CrashTable resources (crashfleet.dev/v1alpha1) into
/// leader-elected game-node fleets.
#[derive(Parser)]
#[command(name = "crashfleet-operator", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CrashTable CustomResourceDefinition as YAML (what `crds/` and the Helm chart
    /// ship; `kubectl apply -f -` installs it).
    Crd,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => print!("{}", crashfleet_operator::crd_yaml()?),
    }
    Ok(())
}
