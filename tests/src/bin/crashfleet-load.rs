//! `crashfleet-load`: load generator for crashfleet game nodes (see `--help` and
//! docs/BENCHMARKS.md). The work is in `crashfleet_tests::load`, shared with the chaos suite.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use crashfleet_tests::load::{self, LoadArgs};

fn main() -> ExitCode {
    let args = LoadArgs::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("crashfleet-load: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(load::main_with(args)) {
        Ok(report) => {
            print!("{}", report.table());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("crashfleet-load: {e:#}");
            ExitCode::from(2)
        }
    }
}
