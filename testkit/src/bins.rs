//! The workspace's binaries for system tests (`CARGO_BIN_EXE_*` only exists inside the
//! package that owns a binary): built once per test process with the test command's own
//! features and dev-dependencies (`cargo build --workspace --all-features --bins --tests`:
//! the same feature unification as `cargo test --workspace --all-features`, so nothing is
//! built twice), then copied to `target/system-tests/bin/`. The
//! copies are what the tests run: `target/debug/NAME` is replaced by any later build of
//! another feature set (the local stack script builds the functions alone), and a process
//! must never start a half-replaced file or the other variant.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

static BINS: OnceLock<HashMap<String, PathBuf>> = OnceLock::new();

/// The workspace's root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit sits in the workspace")
        .to_owned()
}

/// The path of a workspace binary (`api`, `reaper`, `demo-agent`, `switchboard-local-ecs`,
/// `switchboard-dynamodb`, ...), built on first use.
pub fn bin(name: &str) -> PathBuf {
    let bins = BINS.get_or_init(build);
    bins.get(name).cloned().unwrap_or_else(|| {
        let mut known: Vec<&String> = bins.keys().collect();
        known.sort();
        panic!("the workspace has no binary {name}; it has {known:?}")
    })
}

/// The folder of the copies (for a script that takes a `BIN_DIR`).
pub fn bin_dir() -> PathBuf {
    let any = bin("demo-agent");
    any.parent().expect("a folder").to_owned()
}

fn build() -> HashMap<String, PathBuf> {
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args([
            "build",
            "--workspace",
            "--all-features",
            "--bins",
            "--tests",
            "--locked",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(&root)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("cargo build (the workspace's binaries)");
    assert!(
        output.status.success(),
        "cargo build --workspace --all-features --bins --tests failed"
    );
    let dir = root.join("target").join("system-tests").join("bin");
    std::fs::create_dir_all(&dir).expect("target/system-tests/bin");
    let mut bins = HashMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some("compiler-artifact"), Some(exe), Some(name)) = (
            message["reason"].as_str(),
            message["executable"].as_str(),
            message["target"]["name"].as_str(),
        ) else {
            continue;
        };
        // The binaries themselves: `--tests` also builds each binary's unit-test harness,
        // under the same target name.
        let is_bin = message["target"]["kind"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|k| k == "bin"));
        if !is_bin || message["profile"]["test"].as_bool() != Some(false) {
            continue;
        }
        let copy = dir.join(name);
        let partial = dir.join(format!(".{name}.{}", std::process::id()));
        std::fs::copy(exe, &partial).unwrap_or_else(|e| panic!("copying {exe}: {e}"));
        // A rename replaces the file whole, even under a process running the old one.
        std::fs::rename(&partial, &copy).expect("renaming the copy");
        bins.insert(name.to_owned(), copy);
    }
    bins
}
