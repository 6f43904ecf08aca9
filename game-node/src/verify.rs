//! The offline fairness commands: `game-node verify` and `game-node chain new`, plus the seed-file
//! reader the node uses at startup.
//!
//! `verify` needs nothing but published values (salt, a revealed round hash, optionally the
//! terminating hash), so a player can check rounds without trusting the server. `chain new` is the
//! only place a seed is written; it writes it once, owner-only, and prints only the commitment.
//! Output goes to a caller-given writer so tests capture exactly what a user would see.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::fairness::{
    Chain, CrashCalculator, FairnessError, Hash32, MAX_CHAIN_LENGTH, format_x100, parse_hash,
    sha256, to_hex, verify_commitment,
};
use crate::secret_file;

/// The most rounds one `verify` run recomputes. At ~10 M crash points/s that is about a second of
/// work (and ~1 GB of JSON), enough for any audit, and a typo such as `--count 1e18` fails fast
/// instead of running for a week.
pub const MAX_VERIFY_COUNT: u64 = 10_000_000;

/// Recompute rounds offline from a revealed round hash backwards.
///
/// No `env =` on purpose: a verifier should see every input on its own command line.
#[derive(clap::Args, Debug, Clone)]
pub struct VerifyArgs {
    /// The table's public salt (the HMAC key, used verbatim as UTF-8 text).
    #[arg(long, value_name = "SALT")]
    pub salt: String,
    /// A revealed round hash (64 hex characters): the newest round to recompute.
    #[arg(long, value_name = "HEX")]
    pub hash: String,
    /// How many rounds to recompute: the given one and the `N-1` before it (SHA-256 of a round's
    /// hash is the previous round's hash).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub count: u64,
    /// One JSON object per round and line: {"hash": "<hex>", "crash_x100": <int>}.
    #[arg(long)]
    pub json: bool,
    /// The table's published terminating hash; with --round, checks that the hash belongs to it.
    #[arg(long, value_name = "HEX", requires = "round")]
    pub terminating: Option<String>,
    /// The round number of --hash; with --terminating, hashing it this many times must give the
    /// terminating hash.
    #[arg(long, value_name = "K", requires = "terminating")]
    pub round: Option<u64>,
    /// House edge in basis points (100 = 1 %), as published by the table.
    #[arg(long, value_name = "BP", default_value_t = 100)]
    pub house_edge_bp: u32,
    /// Crash cap in hundredths (100000000 = 1,000,000.00x), as published by the table.
    #[arg(long, value_name = "X100", default_value_t = 100_000_000)]
    pub max_x100: u64,
}

/// Create a new secret chain: write its seed to a file and print its public commitment.
#[derive(clap::Args, Debug, Clone)]
pub struct ChainNewArgs {
    /// Number of rounds the chain serves (1 to 100000000).
    #[arg(long, value_name = "L")]
    pub length: u64,
    /// Where to write the secret seed (64 hex characters and a newline, mode 0600).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Replace an existing seed file. Its old chain can then no longer be served or proven.
    #[arg(long)]
    pub force: bool,
}

/// Inputs of `verify`, checked before any output so an error never follows partial results.
struct VerifyPlan {
    calculator: CrashCalculator,
    hash: Hash32,
    count: u64,
    /// (terminating hash, round number of `hash`).
    commitment: Option<(Hash32, u64)>,
}

fn plan_verify(args: &VerifyArgs) -> anyhow::Result<VerifyPlan> {
    let calculator = CrashCalculator::new(&args.salt, args.house_edge_bp, args.max_x100)?;
    let hash = parse_hash(&args.hash).context("--hash")?;
    if args.count == 0 || args.count > MAX_VERIFY_COUNT {
        bail!(
            "--count must be between 1 and {MAX_VERIFY_COUNT}, got {}",
            args.count
        );
    }
    let commitment = match (&args.terminating, args.round) {
        (None, None) => None,
        (Some(terminating), Some(round)) => {
            let terminating = parse_hash(terminating).context("--terminating")?;
            if round == 0 {
                bail!("--round must be at least 1: rounds are numbered from 1");
            }
            if round > MAX_CHAIN_LENGTH {
                bail!("--round {round} is beyond the longest chain ({MAX_CHAIN_LENGTH} rounds)");
            }
            if args.count > round {
                bail!(
                    "--count {} goes past round 1: round {round} has only {round} rounds up to and including it",
                    args.count
                );
            }
            Some((terminating, round))
        }
        _ => bail!("--terminating and --round go together: give both or neither"),
    };
    Ok(VerifyPlan {
        calculator,
        hash,
        count: args.count,
        commitment,
    })
}

/// Runs `game-node verify`. Returns `Ok(false)` when the commitment check fails (the caller exits
/// non-zero); bad input is an `Err` with a message meant for the user.
pub fn run_verify(args: &VerifyArgs, out: &mut dyn Write) -> anyhow::Result<bool> {
    let plan = plan_verify(args)?;
    let verdict = plan
        .commitment
        .map(|(terminating, round)| (verify_commitment(&plan.hash, &terminating, round), round));
    // Up to MAX_VERIFY_COUNT lines: never one write call per line on an unbuffered stdout.
    let mut w = BufWriter::new(out);
    let calc = &plan.calculator;

    if !args.json {
        writeln!(w, "salt:       {}", calc.salt())?;
        writeln!(
            w,
            "house edge: {}.{:02}% ({} bp)",
            calc.house_edge_bp() / 100,
            calc.house_edge_bp() % 100,
            calc.house_edge_bp()
        )?;
        writeln!(w, "crash cap:  {}", format_x100(calc.max_x100()))?;
        writeln!(w)?;
        writeln!(w, "{:<10}  {:<64}  {:>12}", "round", "hash", "crash")?;
    }

    let mut h = plan.hash;
    for offset in 0..plan.count {
        let crash = calc.crash_x100(&h);
        if args.json {
            // Built by hand to keep the documented layout exactly; hex needs no escaping.
            writeln!(
                w,
                "{{\"hash\": \"{}\", \"crash_x100\": {crash}}}",
                to_hex(&h)
            )?;
        } else {
            let label = match verdict {
                Some((_, round)) => (round - offset).to_string(),
                None if offset == 0 => "k".to_owned(),
                None => format!("k-{offset}"),
            };
            writeln!(w, "{label:<10}  {}  {:>12}", to_hex(&h), format_x100(crash))?;
        }
        h = sha256(&h);
    }

    if let (Some((ok, round)), Some((terminating, _))) = (verdict, plan.commitment) {
        let terminating = to_hex(&terminating);
        if args.json {
            writeln!(
                w,
                "{{\"commitment_ok\": {ok}, \"round\": {round}, \"terminating_hash\": \"{terminating}\"}}"
            )?;
        } else if ok {
            writeln!(w)?;
            writeln!(
                w,
                "commitment OK: SHA-256 applied {round} times to the hash gives the terminating hash {terminating}"
            )?;
        } else {
            writeln!(w)?;
            writeln!(
                w,
                "commitment FAILED: SHA-256 applied {round} times to the hash does not give {terminating}; \
                 this hash is not round {round} of that chain"
            )?;
        }
    }
    w.flush()?;
    Ok(verdict.is_none_or(|(ok, _)| ok))
}

/// Runs `game-node chain new`: a fresh seed from the OS, written owner-only; prints the
/// terminating hash to publish and the length. The seed itself is never printed.
pub fn run_chain_new(args: &ChainNewArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    // Checked before touching the file system or spending seconds hashing.
    if args.length == 0 || args.length > MAX_CHAIN_LENGTH {
        return Err(FairnessError::InvalidLength {
            length: args.length,
        })
        .context("--length");
    }
    let path = &args.out;
    let chain = if args.force {
        let (chain, seed) = Chain::generate(args.length, &mut rand::rngs::OsRng)?;
        secret_file::replace(path, &seed)?;
        chain
    } else {
        // Create the file first so an existing seed is reported before the chain is built.
        let file = secret_file::create(path).map_err(|err| {
            if err.kind() == std::io::ErrorKind::AlreadyExists {
                anyhow::anyhow!(
                    "{} already exists; refusing to overwrite a seed (pass --force to replace it, \
                     which abandons the chain it belongs to)",
                    path.display()
                )
            } else {
                anyhow::Error::new(err).context(format!("cannot create {}", path.display()))
            }
        })?;
        let written = Chain::generate(args.length, &mut rand::rngs::OsRng)
            .map_err(anyhow::Error::from)
            .and_then(|(chain, seed)| {
                secret_file::write(file, &seed)
                    .with_context(|| format!("writing {}", path.display()))?;
                Ok(chain)
            });
        match written {
            Ok(chain) => chain,
            Err(err) => {
                // Best effort: an empty or partial seed file would only mislead the next run.
                let _ = fs::remove_file(path);
                return Err(err);
            }
        }
    };
    writeln!(
        out,
        "terminating_hash: {}",
        to_hex(&chain.terminating_hash())
    )?;
    writeln!(out, "length: {}", chain.length())?;
    writeln!(
        out,
        "seed_file: {} (secret, owner-only: publish only the terminating hash)",
        path.display()
    )?;
    out.flush()?;
    Ok(())
}

/// Loads a chain seed: 64 hex characters (surrounding whitespace ignored) from `path`, with the
/// permission policy of [`secret_file::read`] (the error names the fix: `chmod 600 FILE`, or
/// `defaultMode: 0400` on the Secret volume).
pub fn read_seed_file(path: &Path) -> anyhow::Result<Hash32> {
    secret_file::read(path, &secret_file::CHAIN_SEED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct VerifyCli {
        #[command(flatten)]
        args: VerifyArgs,
    }

    #[derive(Parser, Debug)]
    struct ChainCli {
        #[command(flatten)]
        args: ChainNewArgs,
    }

    const SALT: &str = "test-salt";
    const SEED: Hash32 = [9u8; 32];

    fn args(hash: &Hash32) -> VerifyArgs {
        VerifyArgs {
            salt: SALT.to_owned(),
            hash: to_hex(hash),
            count: 1,
            json: false,
            terminating: None,
            round: None,
            house_edge_bp: 100,
            max_x100: 100_000_000,
        }
    }

    fn run(args: &VerifyArgs) -> anyhow::Result<(bool, String)> {
        let mut out = Vec::new();
        let ok = run_verify(args, &mut out)?;
        Ok((ok, String::from_utf8(out).expect("utf-8 output")))
    }

    /// A fresh, empty directory under the system temp dir (no tempfile crate in this workspace).
    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "crashfleet-verify-{tag}-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        fs::create_dir_all(&dir).expect("create temp dir");
        dir
    }

    #[test]
    fn clap_defaults_and_pairing() {
        let cli = VerifyCli::try_parse_from(["verify", "--salt", "s", "--hash", "ab"])
            .expect("minimal args parse");
        assert_eq!(cli.args.count, 1);
        assert_eq!(cli.args.house_edge_bp, 100);
        assert_eq!(cli.args.max_x100, 100_000_000);
        assert!(!cli.args.json);
        for lone in [["--round", "3"], ["--terminating", "ab"]] {
            let mut argv = vec!["verify", "--salt", "s", "--hash", "ab"];
            argv.extend(lone);
            assert!(VerifyCli::try_parse_from(argv).is_err(), "{lone:?} alone");
        }
        assert!(VerifyCli::try_parse_from(["verify", "--hash", "ab"]).is_err());
        let chain = ChainCli::try_parse_from(["chain", "--length", "10", "--out", "f"])
            .expect("chain args parse");
        assert!(!chain.args.force);
    }

    #[test]
    fn json_lines_walk_backwards() {
        let chain = Chain::new(SEED, 20).expect("valid");
        let calc = CrashCalculator::new(SALT, 100, 100_000_000).expect("valid");
        let newest = chain.round_hash(12).expect("in range");
        let mut a = args(&newest);
        a.count = 12;
        a.json = true;
        let (ok, text) = run(&a).expect("valid input");
        assert!(ok);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 12);
        for (i, line) in lines.iter().enumerate() {
            let h = chain.round_hash(12 - i as u64).expect("in range");
            let expected = format!(
                "{{\"hash\": \"{}\", \"crash_x100\": {}}}",
                to_hex(&h),
                calc.crash_x100(&h)
            );
            assert_eq!(*line, expected);
            let parsed: serde_json::Value = serde_json::from_str(line).expect("valid JSON");
            assert_eq!(parsed["crash_x100"], calc.crash_x100(&h));
        }
    }

    #[test]
    fn human_output_is_a_table() {
        let chain = Chain::new(SEED, 5).expect("valid");
        let calc = CrashCalculator::new(SALT, 100, 100_000_000).expect("valid");
        let h = chain.round_hash(5).expect("in range");
        let mut a = args(&h);
        a.count = 3;
        let (ok, text) = run(&a).expect("valid input");
        assert!(ok);
        assert!(text.contains("house edge: 1.00% (100 bp)"), "{text}");
        assert!(text.contains("crash cap:  1000000.00x"), "{text}");
        let rows: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("round"))
            .collect();
        assert_eq!(rows.len(), 4, "{text}");
        assert!(rows[1].starts_with("k "), "{text}");
        assert!(rows[3].starts_with("k-2 "), "{text}");
        assert!(rows[1].contains(&to_hex(&h)));
        assert!(rows[1].ends_with(&format_x100(calc.crash_x100(&h))));
    }

    #[test]
    fn commitment_pass_and_fail() {
        let chain = Chain::new(SEED, 30).expect("valid");
        let t = to_hex(&chain.terminating_hash());
        let h = chain.round_hash(7).expect("in range");
        let mut a = args(&h);
        a.count = 7;
        a.terminating = Some(t.clone());
        a.round = Some(7);
        let (ok, text) = run(&a).expect("valid input");
        assert!(ok);
        assert!(text.contains("commitment OK"), "{text}");
        assert!(text.lines().any(|l| l.starts_with("7 ")), "{text}");
        assert!(text.lines().any(|l| l.starts_with("1 ")), "{text}");

        a.round = Some(8);
        let (ok, text) = run(&a).expect("valid input");
        assert!(!ok);
        assert!(text.contains("commitment FAILED"), "{text}");

        a.json = true;
        let (ok, text) = run(&a).expect("valid input");
        assert!(!ok);
        let last = text.lines().last().expect("has lines");
        let parsed: serde_json::Value = serde_json::from_str(last).expect("valid JSON");
        assert_eq!(parsed["commitment_ok"], false);
        assert_eq!(parsed["round"], 8);
        assert_eq!(parsed["terminating_hash"], t);
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        let good = args(&SEED);
        let cases: Vec<(VerifyArgs, &str)> = vec![
            (
                VerifyArgs {
                    hash: "xyz".into(),
                    ..good.clone()
                },
                "64 hexadecimal",
            ),
            (
                VerifyArgs {
                    count: 0,
                    ..good.clone()
                },
                "--count must be between 1",
            ),
            (
                VerifyArgs {
                    count: MAX_VERIFY_COUNT + 1,
                    ..good.clone()
                },
                "--count must be between 1",
            ),
            (
                VerifyArgs {
                    house_edge_bp: 10_001,
                    ..good.clone()
                },
                "house edge",
            ),
            (
                VerifyArgs {
                    max_x100: 99,
                    ..good.clone()
                },
                "crash cap",
            ),
            (
                VerifyArgs {
                    salt: String::new(),
                    ..good.clone()
                },
                "salt",
            ),
            (
                VerifyArgs {
                    round: Some(3),
                    ..good.clone()
                },
                "give both or neither",
            ),
            (
                VerifyArgs {
                    terminating: Some(to_hex(&SEED)),
                    round: Some(0),
                    ..good.clone()
                },
                "numbered from 1",
            ),
            (
                VerifyArgs {
                    terminating: Some(to_hex(&SEED)),
                    round: Some(2),
                    count: 3,
                    ..good.clone()
                },
                "goes past round 1",
            ),
            (
                VerifyArgs {
                    terminating: Some("00".into()),
                    round: Some(2),
                    ..good.clone()
                },
                "--terminating",
            ),
            (
                VerifyArgs {
                    terminating: Some(to_hex(&SEED)),
                    round: Some(MAX_CHAIN_LENGTH + 1),
                    ..good.clone()
                },
                "longest chain",
            ),
        ];
        for (bad, expected) in cases {
            let mut out = Vec::new();
            let err = run_verify(&bad, &mut out).expect_err("must be refused");
            let message = format!("{err:#}");
            assert!(message.contains(expected), "{message} lacks {expected:?}");
            assert!(out.is_empty(), "output before an error: {out:?}");
        }
    }

    #[cfg(unix)]
    fn mode_of(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).expect("exists").permissions().mode() & 0o777
    }

    #[cfg(unix)]
    fn set_mode(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn chain_new_writes_a_private_seed_and_prints_the_commitment() {
        let dir = temp_dir("new");
        let path = dir.join("seed.hex");
        let a = ChainNewArgs {
            length: 1500,
            out: path.clone(),
            force: false,
        };
        let mut out = Vec::new();
        run_chain_new(&a, &mut out).expect("creates the chain");
        let text = String::from_utf8(out).expect("utf-8");

        let content = fs::read_to_string(&path).expect("seed file");
        assert_eq!(content.len(), 65);
        assert!(content.ends_with('\n'));
        #[cfg(unix)]
        assert_eq!(mode_of(&path), 0o600);
        let seed = read_seed_file(&path).expect("readable seed");
        let chain = Chain::new(seed, 1500).expect("valid");
        assert!(text.contains(&format!(
            "terminating_hash: {}",
            to_hex(&chain.terminating_hash())
        )));
        assert!(text.contains("length: 1500"));
        assert!(!text.contains(content.trim()), "seed printed: {text}");

        // No silent overwrite; the old seed survives the refusal.
        let err = run_chain_new(&a, &mut Vec::new()).expect_err("exists");
        assert!(format!("{err:#}").contains("already exists"), "{err:#}");
        assert_eq!(fs::read_to_string(&path).expect("still there"), content);

        // --force replaces it with a fresh 0600 file even if the old one was looser.
        #[cfg(unix)]
        set_mode(&path, 0o644);
        let forced = ChainNewArgs { force: true, ..a };
        run_chain_new(&forced, &mut Vec::new()).expect("replaces");
        assert_ne!(fs::read_to_string(&path).expect("replaced"), content);
        #[cfg(unix)]
        assert_eq!(mode_of(&path), 0o600);
        assert_eq!(
            fs::read_dir(&dir).expect("list").count(),
            1,
            "temp file left"
        );
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn chain_new_refuses_bad_lengths_before_creating_the_file() {
        let dir = temp_dir("len");
        for length in [0, MAX_CHAIN_LENGTH + 1] {
            let a = ChainNewArgs {
                length,
                out: dir.join("seed.hex"),
                force: false,
            };
            let err = run_chain_new(&a, &mut Vec::new()).expect_err("bad length");
            assert!(
                format!("{err:#}").contains("invalid chain length"),
                "{err:#}"
            );
            assert!(!a.out.exists());
        }
        let missing_dir = ChainNewArgs {
            length: 5,
            out: dir.join("no/such/dir/seed.hex"),
            force: false,
        };
        let err = run_chain_new(&missing_dir, &mut Vec::new()).expect_err("no dir");
        assert!(format!("{err:#}").contains("cannot create"), "{err:#}");
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[cfg(unix)]
    #[test]
    fn seed_file_permissions_policy() {
        let dir = temp_dir("perm");
        let path = dir.join("seed");
        let hex = to_hex(&SEED);
        fs::write(&path, format!("{}\n", hex.to_uppercase())).expect("write");
        for (mode, accepted) in [
            (0o600, true),
            (0o400, true),
            (0o640, true),
            (0o440, true),
            (0o660, false),
            (0o644, false),
            (0o604, false),
            (0o602, false),
            (0o666, false),
        ] {
            set_mode(&path, mode);
            let result = read_seed_file(&path);
            assert_eq!(result.is_ok(), accepted, "mode {mode:o}: {result:?}");
            match result {
                Ok(seed) => assert_eq!(seed, SEED),
                Err(err) => {
                    let message = format!("{err:#}");
                    assert!(message.contains("chmod 600"), "{message}");
                    assert!(!message.contains(&hex), "{message}");
                }
            }
        }
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn seed_file_content_and_kind_are_checked() {
        let dir = temp_dir("content");
        let secretish = "not a seed but maybe secret";
        let cases: [(&str, String, &str); 3] = [
            ("short", format!("{secretish}\n"), "does not hold a seed"),
            ("big", "0".repeat(4096), "larger than"),
            ("empty", String::new(), "does not hold a seed"),
        ];
        for (name, content, expected) in cases {
            let path = dir.join(name);
            fs::write(&path, &content).expect("write");
            #[cfg(unix)]
            set_mode(&path, 0o600);
            let message = format!("{:#}", read_seed_file(&path).expect_err(name));
            assert!(message.contains(expected), "{message}");
            assert!(!message.contains(secretish), "{message}");
        }
        let message = format!("{:#}", read_seed_file(&dir).expect_err("a directory"));
        assert!(message.contains("not a regular file"), "{message}");
        let message = format!(
            "{:#}",
            read_seed_file(&dir.join("nope")).expect_err("missing")
        );
        assert!(message.contains("cannot open"), "{message}");
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
