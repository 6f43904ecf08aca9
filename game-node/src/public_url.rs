//! Where players reach this node's table, as the lobby advertises it: fixed by `--public-url`,
//! or read from `--public-url-file` while the node runs.
//!
//! The file is how the operator moves a table's way in (a new Ingress host, a route's path
//! prefix, `spec.publicUrl` itself) without rolling its pods: it writes the URL into a ConfigMap
//! the pods mount, and the kubelet rewrites the mounted file in place. An environment variable in
//! the pod template would restart every pod — and drop every player's socket — for a change that
//! only alters a lobby link.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{info, warn};

/// How often the file is read at most. The heartbeat asks each interval and the standalone lobby
/// on every request; anyone can call the lobby, so the read is bounded here, not by them.
const REREAD_EVERY: Duration = Duration::from_secs(1);

/// The advertised URL (normalised to end in `/`), or none.
pub enum PublicUrl {
    Fixed(Option<String>),
    File { path: PathBuf, seen: Mutex<Seen> },
}

/// What the file held when last read.
#[derive(Default)]
pub struct Seen {
    at: Option<Instant>,
    /// The file's text (`None`: no file), to log only changes.
    raw: Option<String>,
    url: Option<String>,
}

impl PublicUrl {
    /// From the configuration: the flag's URL (validated with the rest of the configuration),
    /// else the file, else none.
    pub fn new(url: Option<&str>, file: Option<PathBuf>) -> Self {
        match file {
            Some(path) if url.is_none() => PublicUrl::File {
                path,
                seen: Mutex::new(Seen::default()),
            },
            _ => PublicUrl::Fixed(url.and_then(|u| crashfleet_core::net::public_url(u).ok())),
        }
    }

    /// The URL to advertise now. A missing or empty file is no URL; one the node would refuse as
    /// `--public-url` is no URL either, logged once per change (a wrong link is worse than none).
    pub fn current(&self) -> Option<String> {
        let (path, seen) = match self {
            PublicUrl::Fixed(u) => return u.clone(),
            PublicUrl::File { path, seen } => (path, seen),
        };
        let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.at.is_some_and(|at| at.elapsed() < REREAD_EVERY) {
            return seen.url.clone();
        }
        let first = seen.at.is_none();
        seen.at = Some(Instant::now());
        // A few bytes from a tmpfs the kubelet writes: read in place, not worth a blocking task.
        let raw = match std::fs::read_to_string(path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                warn!(file = %path.display(), error = %e, "cannot read --public-url-file; keeping the last URL");
                return seen.url.clone();
            }
        };
        if !first && raw == seen.raw {
            return seen.url.clone();
        }
        let url = match raw.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(u) => match crashfleet_core::net::public_url(u) {
                Ok(u) => Some(u),
                Err(e) => {
                    warn!(file = %path.display(), error = %e, "ignoring the public URL in --public-url-file");
                    None
                }
            },
        };
        if first || url != seen.url {
            info!(file = %path.display(), public_url = url.as_deref().unwrap_or("(none)"), "advertised public URL");
        }
        seen.raw = raw;
        seen.url = url;
        seen.url.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_url(path: &std::path::Path) -> PublicUrl {
        PublicUrl::new(None, Some(path.to_path_buf()))
    }

    #[test]
    fn the_flag_wins_and_is_normalised() {
        let u = PublicUrl::new(Some("https://eu.example.com"), Some("/nowhere".into()));
        assert_eq!(u.current().as_deref(), Some("https://eu.example.com/"));
        assert_eq!(PublicUrl::new(None, None).current(), None);
    }

    #[test]
    fn the_file_is_followed_as_it_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("public-url");
        let u = file_url(&path);
        assert_eq!(u.current(), None, "no file yet: no URL");
        let reread = |u: &PublicUrl| {
            if let PublicUrl::File { seen, .. } = u {
                seen.lock().expect("lock").at = None;
            }
            u.current()
        };
        std::fs::write(&path, "http://crash.localtest.me\n").expect("write");
        assert_eq!(reread(&u).as_deref(), Some("http://crash.localtest.me/"));
        std::fs::write(&path, "https://eu.example.com/crash/").expect("write");
        // Within the re-read interval the last answer stands.
        assert_eq!(u.current().as_deref(), Some("http://crash.localtest.me/"));
        assert_eq!(reread(&u).as_deref(), Some("https://eu.example.com/crash/"));
        std::fs::write(&path, "eu.example.com").expect("write");
        assert_eq!(
            reread(&u),
            None,
            "a URL the flag would refuse is not advertised"
        );
        std::fs::write(&path, "").expect("write");
        assert_eq!(reread(&u), None);
        std::fs::write(&path, "http://10.0.0.1:8080/").expect("write");
        assert_eq!(reread(&u).as_deref(), Some("http://10.0.0.1:8080/"));
        std::fs::remove_file(&path).expect("remove");
        assert_eq!(reread(&u), None, "the file removed: no URL");
    }
}
