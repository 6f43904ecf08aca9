//! Files that hold a table's 32-byte secrets — the chain seed and the Ed25519 signing key — as 64
//! hex characters: how they are read (with a permission policy), created (owner-only from the
//! first instant) and replaced.
//!
//! Both secrets are equally dangerous in other hands: whoever reads the seed predicts every crash
//! point, whoever reads the signing key can sign receipts and log heads in the table's name. So
//! both files follow one policy.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::fairness::{Hash32, parse_hash, to_hex};

/// A secret file holds 64 hex characters and a newline; anything bigger is not one, and reading
/// is capped so a wrong path (a log, a device) cannot make the node read gigabytes.
const MAX_SECRET_FILE_BYTES: u64 = 1024;

/// Permission bits that make a secret file unacceptable: any access for other users, or write
/// access for the group. Group *read* is allowed because Kubernetes mounts Secret files with
/// group read (0440) whenever the pod sets `fsGroup`, whatever `defaultMode` says.
#[cfg(unix)]
const FORBIDDEN_MODE: u32 = 0o027;

/// Mode of a new secret file: owner read/write only.
#[cfg(unix)]
const NEW_FILE_MODE: u32 = 0o600;

/// What a secret file holds, for messages that tell the user what is at stake.
pub struct SecretKind {
    /// "seed file", "signing key file".
    pub file: &'static str,
    /// "a seed", "a signing key".
    pub holds: &'static str,
    /// What other users could do with the file (after "other users could ").
    pub exposure: &'static str,
}

pub const CHAIN_SEED: SecretKind = SecretKind {
    file: "seed file",
    holds: "a seed",
    exposure: "read or change the seed and so predict or choose every crash point",
};

pub const SIGNING_KEY: SecretKind = SecretKind {
    file: "signing key file",
    holds: "a signing key",
    exposure: "read or change the table's signing key and so sign receipts and log heads in its \
               name",
};

/// Loads a secret: 64 hex characters (surrounding whitespace ignored) from `path`.
///
/// Permission policy (unix): the file must be a regular file that other users can neither read
/// nor write, and that its group cannot write (mask 0027); otherwise this is an error. Group read
/// is accepted (Kubernetes gives Secret files mode 0440 under `fsGroup`) with a warning in the
/// log. The error names the fix: `chmod 600 FILE`, or `defaultMode: 0400` on the Secret volume.
pub fn read(path: &Path, kind: &SecretKind) -> anyhow::Result<Hash32> {
    let (shown, what) = (path.display(), kind.file);
    // Looked at before opening so a FIFO or device at the path cannot block or flood us, and
    // again on the opened handle so the file cannot be swapped in between.
    let before = fs::metadata(path).with_context(|| format!("cannot open {what} {shown}"))?;
    if !before.is_file() {
        bail!("{what} {shown} is not a regular file");
    }
    let file = File::open(path).with_context(|| format!("cannot open {what} {shown}"))?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot stat {what} {shown}"))?;
    if !meta.is_file() {
        bail!("{what} {shown} is not a regular file");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & FORBIDDEN_MODE != 0 {
            bail!(
                "{what} {shown} has mode {mode:04o}: other users could {}. Run `chmod 600 {shown}` \
                 (in Kubernetes, mount the Secret with defaultMode: 0400)",
                kind.exposure
            );
        }
        if mode & 0o040 != 0 {
            tracing::warn!(
                path = %shown,
                mode = format!("{mode:04o}"),
                "{what} is readable by its group; fine for a Kubernetes Secret with fsGroup, \
                 otherwise run chmod 600"
            );
        }
    }
    let mut text = String::new();
    file.take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("{what} {shown} is not readable text"))?;
    if text.len() as u64 > MAX_SECRET_FILE_BYTES {
        bail!("{what} {shown} is larger than {MAX_SECRET_FILE_BYTES} bytes: not a {what}");
    }
    parse_hash(&text).with_context(|| format!("{what} {shown} does not hold {}", kind.holds))
}

/// Opens a new file for a secret, failing if anything exists at `path` (O_EXCL also refuses to
/// follow a symlink planted there). Mode 0600 is set at creation, so the secret is never visible
/// to others, not even for an instant.
pub fn create(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(NEW_FILE_MODE);
    }
    options.open(path)
}

/// Writes the secret and makes it durable: losing a seed or a key after publishing its
/// commitment would leave the table unable to run or to prove its rounds.
pub fn write(mut file: File, secret: &Hash32) -> std::io::Result<()> {
    file.write_all(format!("{}\n", to_hex(secret)).as_bytes())?;
    file.sync_all()
}

/// A file name in `path`'s directory that nobody else picks: `.<name>.<pid>.<random>.tmp`.
fn temp_beside(path: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .with_context(|| format!("{} does not name a file", path.display()))?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(
        ".{}.{:08x}.tmp",
        std::process::id(),
        rand::random::<u32>()
    ));
    let temp = dir.join(temp_name);
    Ok((dir, temp))
}

/// Persists a rename or link in `dir`; best effort, as not every file system can sync a directory.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Writes a new 0600 file beside `path` and renames it over the old one. The old file is never
/// opened for writing, so its (possibly looser) mode is never kept, and a crash half-way leaves
/// either the old secret or the new one, never a truncated file.
pub fn replace(path: &Path, secret: &Hash32) -> anyhow::Result<()> {
    let (dir, temp) = temp_beside(path)?;
    let file = create(&temp).with_context(|| format!("cannot create {}", temp.display()))?;
    let result = write(file, secret)
        .and_then(|()| fs::rename(&temp, path))
        .with_context(|| format!("cannot replace {}", path.display()));
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result?;
    sync_dir(&dir);
    Ok(())
}

/// Creates `path` holding `secret` unless something exists there already: `Ok(true)` when this
/// call created it, `Ok(false)` when it existed (the caller then reads what is there).
///
/// The file appears whole or not at all: it is written and synced under a temporary name and then
/// hard-linked to `path`, which fails if `path` exists. Nodes of a local fleet that share one
/// directory and start at the same instant therefore all end up with the same secret, and none
/// ever reads a half-written one.
pub fn create_once(path: &Path, secret: &Hash32) -> anyhow::Result<bool> {
    let (dir, temp) = temp_beside(path)?;
    let file = create(&temp).with_context(|| format!("cannot create {}", temp.display()))?;
    let linked = write(file, secret).and_then(|()| fs::hard_link(&temp, path));
    let _ = fs::remove_file(&temp);
    match linked {
        Ok(()) => {
            sync_dir(&dir);
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn mode_of(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).expect("stat").permissions().mode() & 0o777
    }

    #[test]
    fn create_once_keeps_the_first_secret_and_leaves_no_temporary_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("signing.key");
        assert!(create_once(&path, &[1; 32]).expect("create"));
        assert!(!create_once(&path, &[2; 32]).expect("second"));
        assert_eq!(read(&path, &SIGNING_KEY).expect("read"), [1; 32]);
        #[cfg(unix)]
        assert_eq!(mode_of(&path), 0o600);
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("signing.key")]);
    }

    #[test]
    fn racing_creators_all_read_one_whole_secret() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("signing.key");
        let read_back: Vec<(bool, Hash32)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8u8)
                .map(|i| {
                    let path = &path;
                    s.spawn(move || {
                        let created = create_once(path, &[i + 1; 32]).expect("create");
                        (created, read(path, &SIGNING_KEY).expect("read"))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("join"))
                .collect()
        });
        assert_eq!(read_back.iter().filter(|(created, _)| *created).count(), 1);
        assert!(read_back.iter().all(|(_, k)| *k == read_back[0].1));
    }

    #[cfg(unix)]
    #[test]
    fn messages_name_the_kind_of_secret() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("signing.key");
        fs::write(&path, "zz\n").expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let message = format!("{:#}", read(&path, &SIGNING_KEY).expect_err("0644"));
        assert!(message.contains("signing key file"), "{message}");
        assert!(message.contains("sign receipts"), "{message}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        let message = format!("{:#}", read(&path, &SIGNING_KEY).expect_err("not hex"));
        assert!(message.contains("does not hold a signing key"), "{message}");
    }
}
