//! `engine agents new` and `engine agents build`: from nothing to a Rust
//! agent answering `engine send`, with the commands the README gives, and
//! clear refusals of what cannot work.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{start_engine, stderr, stdout};

/// `engine` with `arguments`, cargo's own target-directory setting removed
/// so a project builds into its own `target/` as it would for a user.
fn engine_in(dir: &Path, arguments: &[&str], environment: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_engine"));
    command
        .current_dir(dir)
        .args(arguments)
        .env("RUST_LOG", "warn")
        .env_remove("CAXTON_ADMIN_TOKEN")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET");
    for (key, value) in environment {
        command.env(key, value);
    }
    command.output().expect("engine runs")
}

#[test]
fn a_new_project_builds_deploys_and_answers_in_three_commands() {
    let work = tempfile::tempdir().expect("tempdir");
    let created = engine_in(work.path(), &["agents", "new", "hello"], &[]);
    assert!(created.status.success(), "{}", stderr(&created));
    for file in [
        "Cargo.toml",
        "src/lib.rs",
        "README.md",
        ".cargo/config.toml",
    ] {
        assert!(
            work.path().join("hello").join(file).is_file(),
            "{file} written"
        );
    }
    assert!(
        stdout(&created).contains("engine agents build ./hello"),
        "{}",
        stdout(&created)
    );

    let built = engine_in(work.path(), &["agents", "build", "hello"], &[]);
    assert!(built.status.success(), "{}", stderr(&built));
    let module = work
        .path()
        .join("hello/target/wasm32-unknown-unknown/release/hello.wasm");
    assert!(
        stdout(&built).contains(&format!("built {}", module.display())),
        "{}",
        stdout(&built)
    );
    let size = std::fs::metadata(&module).expect("module built").len();
    assert!(size > 0 && size <= 64 * 1024, "hello.wasm is {size} bytes");

    let running = start_engine(&["--profile", "low-latency"]);
    let admin = running.admin_address().to_string();
    let relative = "hello/target/wasm32-unknown-unknown/release/hello.wasm";
    let deployed = engine_in(
        work.path(),
        &["agents", "deploy", relative, "--admin", &admin],
        &[],
    );
    assert!(deployed.status.success(), "{}", stderr(&deployed));
    let answered = engine_in(
        work.path(),
        &["send", "hello", "hi", "--admin", &admin],
        &[],
    );
    assert!(answered.status.success(), "{}", stderr(&answered));
    assert_eq!(stdout(&answered), "inform: hello from hello: hi\n");
    // The template's own failure code reaches the sender.
    let failed = engine_in(work.path(), &["send", "hello", "", "--admin", &admin], &[]);
    assert_eq!(failed.status.code(), Some(1), "{}", stderr(&failed));
    assert!(
        stdout(&failed).contains("caxton:agent-failed:100"),
        "{}",
        stdout(&failed)
    );
    let (status, rest) = running.terminate();
    assert_eq!(status.code(), Some(0), "{rest}");
}

#[test]
fn what_cannot_work_is_refused_with_the_reason() {
    let work = tempfile::tempdir().expect("tempdir");
    let refused = |arguments: &[&str], environment: &[(&str, &str)], needle: &str| {
        let output = engine_in(work.path(), arguments, environment);
        common::assert_refused_saying(&output, &format!("{arguments:?}"), needle);
    };
    refused(
        &["agents", "new", "Hello"],
        &[],
        "cannot name an agent project",
    );
    refused(
        &["agents", "new", "with-dash"],
        &[],
        "cannot name an agent project",
    );
    refused(
        &["agents", "new", "nosdk", "--sdk", "/nonexistent/sdk"],
        &[],
        "no agent SDK at `/nonexistent/sdk`",
    );
    assert!(
        !work.path().join("nosdk").exists(),
        "nothing written on refusal"
    );
    // A checkout's root is not the SDK: said so, with where the SDK is.
    let root = format!("{}/..", env!("CARGO_MANIFEST_DIR"));
    refused(
        &["agents", "new", "rooted", "--sdk", &root],
        &[],
        "the SDK of that checkout is",
    );
    std::fs::create_dir(work.path().join("taken")).expect("mkdir");
    refused(&["agents", "new", "taken"], &[], "already exists");
    refused(&["agents", "build", "."], &[], "has no Cargo.toml");

    // A toolchain without the wasm32 standard library: the build names the fix.
    let created = engine_in(work.path(), &["agents", "new", "lacking"], &[]);
    assert!(created.status.success(), "{}", stderr(&created));
    let fake_rustc = work.path().join("rustc-without-wasm32");
    std::fs::write(
        &fake_rustc,
        "#!/bin/sh\necho /nonexistent/lib/rustlib/wasm32-unknown-unknown/lib\n",
    )
    .expect("write");
    std::fs::set_permissions(
        &fake_rustc,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    refused(
        &["agents", "build", "lacking"],
        &[("RUSTC", fake_rustc.to_str().expect("utf-8 path"))],
        "rustup target add wasm32-unknown-unknown",
    );
}
