//! The web pages, against a real node:
//! - what the node serves: each page's ES modules, followed import by import from its entry
//!   module, are all served as JavaScript; the game page authenticates its socket with its first
//!   frame, never the URL; its error texts come from the node's error table and nowhere else;
//! - the modules' own unit tests in Node (tests/web/unit.test.mjs): money formatting and parsing,
//!   the fairness math on the known answers, the model's message handling, the clock, the backoff;
//! - the real page in headless Chromium (tests/web/e2e.mjs): register, bet with auto-cash-out,
//!   watch a whole round, verify it on /verify, and save screenshots.
//!
//! Node.js and Debian's chromium come from tests/install-deps.sh. Under `CI=true` a missing one
//! fails the test; elsewhere it is skipped with a message saying how to run it.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::TestServer;
use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// GET `path` from the node: 200 and the body.
async fn get(s: &TestServer, path: &str) -> (String, String) {
    let r = s
        .http
        .get(format!("{}{path}", s.url))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(r.status().as_u16(), 200, "GET {path}");
    let mime = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (mime, r.text().await.expect("body"))
}

/// The relative imports of a module (`import … from './x.js'`), as served paths (`/x.js`).
fn imports(source: &str) -> Vec<String> {
    source
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let rest = line.strip_prefix("} from '").or_else(|| {
                line.starts_with("import ")
                    .then(|| line.split(" from '").nth(1))
                    .flatten()
            })?;
            let spec = rest.split('\'').next()?;
            Some(format!("/{}", spec.strip_prefix("./")?))
        })
        .collect()
}

/// Every module a page loads, from its entry module through its imports: path → source. Each is
/// served with a JavaScript content type (a module with another type is refused by the browser).
async fn module_graph(s: &TestServer, entry: &str) -> BTreeMap<String, String> {
    let mut seen = BTreeMap::new();
    let mut todo = vec![entry.to_string()];
    while let Some(path) = todo.pop() {
        if seen.contains_key(&path) {
            continue;
        }
        let (mime, source) = get(s, &path).await;
        assert_eq!(mime, "text/javascript; charset=utf-8", "{path}");
        todo.extend(imports(&source));
        seen.insert(path, source);
    }
    seen
}

#[test]
fn imports_are_read_from_both_import_forms() {
    let src = "import { a } from './format.js';\nimport * as m from './fairness.js';\n\
               import {\n  b, c,\n} from './render.js';\nconst x = 'from ./no.js';\n";
    assert_eq!(
        imports(src),
        ["/format.js", "/fairness.js", "/render.js"].map(String::from)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_page_loads_its_modules_and_every_one_is_served() {
    let s = TestServer::start(&[]).await;
    for (page, entry) in [
        ("/", "app.js"),
        ("/verify", "verify.js"),
        ("/lobby", "lobby.js"),
    ] {
        let (_, html) = get(&s, page).await;
        assert!(
            html.contains(&format!(
                "<script type=\"module\" src=\"{entry}\"></script>"
            )),
            "{page} loads {entry} as a module"
        );
        // Every address on the page is relative to it, so the table works under a path prefix
        // (a Gateway route's `pathPrefix`): no root-relative link, script or style.
        for attr in ["href=\"/", "src=\"/"] {
            assert!(!html.contains(attr), "{page} has a root-relative {attr}…");
        }
    }
    let game_modules = module_graph(&s, "/app.js").await;
    let verify_modules = module_graph(&s, "/verify.js").await;
    let lobby_modules = module_graph(&s, "/lobby.js").await;
    for (path, source) in game_modules
        .iter()
        .chain(&verify_modules)
        .chain(&lobby_modules)
    {
        for root in ["fetch('/", "'/api/", "'/ws'", "'/verify"] {
            assert!(!source.contains(root), "{path} addresses the root: {root}…");
        }
    }
    let game: BTreeSet<String> = game_modules.into_keys().collect();
    let verify: BTreeSet<String> = verify_modules.into_keys().collect();
    let lobby: BTreeSet<String> = lobby_modules.into_keys().collect();
    for m in [
        "/app.js",
        "/state.js",
        "/render.js",
        "/graph.js",
        "/socket.js",
        "/format.js",
        "/errors.js",
    ] {
        assert!(game.contains(m), "the game page loads {m}: {game:?}");
    }
    for m in ["/verify.js", "/format.js", "/fairness.js"] {
        assert!(verify.contains(m), "the verifier loads {m}: {verify:?}");
    }
    for m in ["/lobby.js", "/lobby-model.js", "/format.js"] {
        assert!(lobby.contains(m), "the lobby loads {m}: {lobby:?}");
    }
    // Every module file on disk is one a page loads: nothing is shipped that nothing uses.
    let on_disk: BTreeSet<String> = std::fs::read_dir(repo_root().join("game-node/web"))
        .expect("game-node/web")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".js"))
        .map(|f| format!("/{f}"))
        .collect();
    let loaded: BTreeSet<String> = game.union(&verify).chain(&lobby).cloned().collect();
    let unused: Vec<_> = on_disk.difference(&loaded).collect();
    assert!(unused.is_empty(), "modules no page loads: {unused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_authenticates_its_socket_with_the_first_frame_not_the_url() {
    let s = TestServer::start(&[]).await;
    let js: String = module_graph(&s, "/app.js").await.into_values().collect();
    assert!(
        !js.contains("?token=") && !js.contains("token=' +"),
        "the page still builds a ?token= WebSocket URL"
    );
    assert!(
        js.contains("sock.send(JSON.stringify({ type: 'auth', token }))"),
        "the page does not authenticate its socket with an auth frame on opening"
    );
    assert!(
        js.contains("'/auth/logout'"),
        "the page does not call the logout endpoint"
    );
}

/// The page's error texts come from the node's own error table, so a code added on the server
/// reaches the page and no copy can drift: `/errors.js` carries exactly that table, the page's
/// view imports it, and no other module holds a table of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_gets_its_error_texts_from_the_server() {
    let s = TestServer::start(&[]).await;
    let modules = module_graph(&s, "/app.js").await;
    let js = &modules["/errors.js"];
    let json = js
        .lines()
        .find_map(|l| l.strip_prefix("export const ERROR_TEXT = Object.freeze("))
        .and_then(|j| j.strip_suffix(");"))
        .expect("errors.js exports one frozen object");
    let served: serde_json::Map<String, Value> = serde_json::from_str(json).expect("JSON");
    let table = game_node::error::PLAYER_TEXT;
    assert_eq!(served.len(), table.len());
    for (code, text) in table {
        assert_eq!(served[*code], *text, "{code}");
    }
    assert_eq!(
        served["too_late"],
        "Too late — the round had already crashed"
    );
    assert!(
        imports(&modules["/render.js"]).contains(&"/errors.js".to_string()),
        "the view imports the served error table"
    );
    for (path, source) in &modules {
        if path != "/errors.js" {
            assert!(
                !source.contains("betting_closed:") && !source.contains("'betting_closed'"),
                "{path} keeps a copy of the error table"
            );
        }
    }
}

fn have_node() -> bool {
    std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn skip(msg: &str) {
    assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "{msg}");
    eprintln!("{msg}");
}

#[test]
fn the_page_modules_pass_their_unit_tests_in_node() {
    if !have_node() {
        return skip("SKIPPED web unit tests: needs node (run `bash tests/install-deps.sh`)");
    }
    let out = std::process::Command::new("node")
        .arg("--test")
        .arg(repo_root().join("tests/web/unit.test.mjs"))
        .output()
        .expect("run node --test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "the modules' unit tests failed:\n{stdout}\n{stderr}"
    );
    // node --test prints its totals; a run that found no test is a failure too.
    let passed = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("# pass "))
        .and_then(|n| n.trim().parse::<u32>().ok())
        .unwrap_or(0);
    assert!(passed >= 10, "only {passed} unit tests ran:\n{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_plays_and_verifies_a_round_in_a_real_browser() {
    let chromium =
        std::env::var("CRASHFLEET_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() || !have_node() {
        return skip("SKIPPED web e2e: needs node and chromium (run `bash tests/install-deps.sh`)");
    }
    // A 2.5 s betting window leaves a person (and the test) time to click.
    let s = TestServer::start(&["--betting-window-ms", "2500", "--doubling-ms", "2000"]).await;
    let artifacts = std::env::var("CRASHFLEET_ARTIFACTS").unwrap_or_else(|_| {
        std::env::temp_dir()
            .join("crashfleet-artifacts")
            .display()
            .to_string()
    });
    let url = s.url.clone();
    let script = repo_root().join("tests/web/run.sh");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .arg(script)
            .env("CRASHFLEET_URL", url)
            .env("CRASHFLEET_ARTIFACTS", &artifacts)
            .output()
    })
    .await
    .expect("join")
    .expect("run tests/web/run.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "the browser test failed:\n{stdout}\n{stderr}"
    );
    s.assert_audit().await;
}
