//! `game-node verify` with untrusted arguments (a player pastes a hash, a salt, counts): parsed by
//! the real clap definition and run. Bad input must be an error, never a panic; the work is bounded
//! here (count, round) only so each run stays fast — the limits themselves are the CLI's.
#![no_main]

use clap::Parser;
use game_node::verify::{VerifyArgs, run_verify};
use libfuzzer_sys::fuzz_target;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: VerifyArgs,
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // One argument per line, e.g. "--salt\nabc\n--hash\n00…".
    let argv = std::iter::once("verify").chain(text.split('\n'));
    let Ok(cli) = Cli::try_parse_from(argv) else {
        return;
    };
    if cli.args.count > 64 || cli.args.round.is_some_and(|r| r > 4_096) {
        return;
    }
    let mut out = Vec::new();
    let _ = run_verify(&cli.args, &mut out);
});
