//! `engine agents new` and `engine agents build`: Rust agent projects on the
//! agent SDK (`sdk/rust`), from an empty directory to a `.wasm` ready for
//! `engine agents deploy`.
//!
//! Building is cargo's job; this module only writes the project, checks the
//! `wasm32-unknown-unknown` target is there (naming the fix when it is not),
//! runs cargo with that target and reads the module's path from cargo's own
//! artifact messages, so a custom `CARGO_TARGET_DIR` is honoured.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::commands::{emit, CommandError};

/// The target agents are built for.
pub const WASM_TARGET: &str = "wasm32-unknown-unknown";

/// Where this engine's source tree keeps the SDK, as built.
const SDK_IN_SOURCE_TREE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk/rust");

/// Longest project name: the agent-name limit.
const NAME_MAX: usize = 64;

/// `engine agents new NAME`: write a ready-to-build agent project in
/// `parent/NAME`.
pub fn new_project(name: &str, parent: &Path, sdk: Option<&Path>) -> Result<(), CommandError> {
    check_project_name(name)?;
    let sdk = locate_sdk(sdk)?;
    let dir = parent.join(name);
    if dir.exists() {
        return Err(CommandError::BadInput(format!(
            "`{}` already exists; choose another name or remove it",
            dir.display()
        )));
    }
    let write = |relative: &str, text: String| -> Result<(), CommandError> {
        let path = dir.join(relative);
        if let Some(folder) = path.parent() {
            std::fs::create_dir_all(folder).map_err(|error| cannot_write(folder, &error))?;
        }
        std::fs::write(&path, text).map_err(|error| cannot_write(&path, &error))
    };
    write("Cargo.toml", cargo_toml(name, &sdk))?;
    write("src/lib.rs", LIB_RS.replace("{name}", name))?;
    write("README.md", README.replace("{name}", name))?;
    write(".cargo/config.toml", CARGO_CONFIG.to_owned())?;
    write(".gitignore", "/target\n".to_owned())?;
    emit(&format!(
        "created agent project `{name}` in {dir}\n\
         next:\n  engine agents build {dir}\n  engine agents deploy {dir}/target/{WASM_TARGET}/release/{name}.wasm\n  engine send {name} hi\n",
        dir = dir.display()
    ))
}

/// `engine agents build DIR`: build the project's agent for wasm32 (release
/// unless `debug`) and print where the module is.
pub fn build_project(dir: &Path, debug: bool) -> Result<(), CommandError> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(CommandError::BadInput(format!(
            "`{}` has no Cargo.toml: give the directory of an agent project (`engine agents new NAME` makes one)",
            dir.display()
        )));
    }
    check_wasm_target()?;
    let mut command = Command::new(cargo());
    // Cargo reads `.cargo/config.toml` from the directory it runs in: the
    // project's own settings (the stack size) apply wherever this was typed.
    command
        .current_dir(dir)
        .arg("build")
        .arg("--target")
        .arg(WASM_TARGET)
        .arg("--manifest-path")
        .arg("Cargo.toml")
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if !debug {
        command.arg("--release");
    }
    let output = command
        .output()
        .map_err(|error| CommandError::Failed(format!("cannot run cargo: {error}")))?;
    if !output.status.success() {
        return Err(CommandError::Failed(format!(
            "cargo could not build `{}` (its messages are above)",
            dir.display()
        )));
    }
    let modules = wasm_artifacts(&String::from_utf8_lossy(&output.stdout));
    if modules.is_empty() {
        return Err(CommandError::Failed(format!(
            "cargo built `{}` but produced no .wasm: the package needs `[lib] crate-type = [\"cdylib\"]`",
            dir.display()
        )));
    }
    let mut text = String::new();
    for module in modules {
        let size = std::fs::metadata(&module)
            .map(|meta| meta.len())
            .unwrap_or(0);
        text.push_str(&format!(
            "built {} ({:.1} KiB)\ndeploy: engine agents deploy {}\n",
            module.display(),
            size as f64 / 1024.0,
            module.display()
        ));
    }
    emit(&text)
}

/// The `.wasm` files among cargo's JSON messages (`compiler-artifact`).
fn wasm_artifacts(messages: &str) -> Vec<PathBuf> {
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact")
        .flat_map(|message| {
            message["filenames"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|name| name.as_str().map(PathBuf::from))
        })
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "wasm")
        })
        .collect()
}

/// The cargo that built this engine's tools, or the one on `PATH`.
fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// Refuse to build when the Rust toolchain lacks the wasm32 standard
/// library, with the command that adds it.
pub fn check_wasm_target() -> Result<(), CommandError> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let libdir = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", WASM_TARGET])
        .output()
        .map_err(|error| CommandError::Failed(format!("cannot run {rustc}: {error}")))?;
    let path = String::from_utf8_lossy(&libdir.stdout).trim().to_owned();
    let installed = libdir.status.success()
        && std::fs::read_dir(&path).is_ok_and(|mut entries| {
            entries.any(|entry| {
                entry.is_ok_and(|entry| entry.file_name().to_string_lossy().starts_with("libcore-"))
            })
        });
    if installed {
        Ok(())
    } else {
        Err(CommandError::BadInput(format!(
            "the Rust target {WASM_TARGET} is not installed: run `rustup target add {WASM_TARGET}` \
             (scripts/bootstrap.sh --test does it when it can reach the toolchain server)"
        )))
    }
}

/// Names become the crate, the module file and the agent: one rule for all.
fn check_project_name(name: &str) -> Result<(), CommandError> {
    let mut chars = name.chars();
    let starts_well = chars.next().is_some_and(|first| first.is_ascii_lowercase());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if starts_well && rest_ok && name.len() <= NAME_MAX {
        Ok(())
    } else {
        Err(CommandError::BadInput(format!(
            "`{name}` cannot name an agent project: use a lowercase letter, then lowercase letters, \
             digits or `_`, at most {NAME_MAX} in all (it names the crate, the .wasm and the agent)"
        )))
    }
}

/// The SDK directory projects depend on, made absolute: a directory whose
/// `Cargo.toml` is the `caxton-agent` package (a checkout's root is not:
/// its `sdk/rust` is).
fn locate_sdk(given: Option<&Path>) -> Result<PathBuf, CommandError> {
    let candidate = given.map_or_else(|| PathBuf::from(SDK_IN_SOURCE_TREE), Path::to_path_buf);
    let is_sdk = |directory: &Path| {
        std::fs::read_to_string(directory.join("Cargo.toml")).is_ok_and(|manifest| {
            manifest
                .lines()
                .any(|line| line.replace(' ', "") == "name=\"caxton-agent\"")
        })
    };
    if is_sdk(&candidate) {
        if let Ok(found) = candidate.canonicalize() {
            return Ok(found);
        }
    }
    let inside = candidate.join("sdk/rust");
    let hint = if is_sdk(&inside) {
        format!(" (the SDK of that checkout is `{}`)", inside.display())
    } else {
        String::new()
    };
    Err(CommandError::BadInput(format!(
        "no agent SDK at `{}`{hint}: pass --sdk with the path of a Caxton checkout's sdk/rust",
        candidate.display()
    )))
}

fn cannot_write(path: &Path, error: &std::io::Error) -> CommandError {
    CommandError::BadInput(format!("cannot write `{}`: {error}", path.display()))
}

fn cargo_toml(name: &str, sdk: &Path) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"
publish = false

# A cdylib is what becomes `{name}.wasm`.
[lib]
crate-type = ["cdylib"]

[dependencies]
caxton-agent = {{ path = "{sdk}" }}

# A project of its own, even inside another workspace.
[workspace]

# Agents are small, loaded often and kept warm by the hundred: build for size.
[profile.release]
opt-level = "z"
lto = true
codegen-units = 1
panic = "abort"
strip = true
"#,
        sdk = sdk.display()
    )
}

const LIB_RS: &str = r#"//! {name}: a Caxton agent. Answers every message with `inform` and a
//! greeting; an empty message fails with code 100.
#![no_std]

extern crate alloc;

use caxton_agent::{Agent, Error, Message, Performative};

/// One value per instance; its fields live between messages.
#[derive(Default)]
pub struct Handler {
    greeted: u64,
}

impl Agent for Handler {
    fn handle(&mut self, message: &Message) -> Result<(), Error> {
        let content = message.content();
        if content.is_empty() {
            return Err(Error::Failed(100));
        }
        self.greeted += 1;
        let mut answer = alloc::vec::Vec::from(&b"hello from {name}: "[..]);
        answer.extend_from_slice(&content);
        message.reply(Performative::Inform, &answer)
    }
}

caxton_agent::export!(Handler);
"#;

const README: &str = r#"# {name}

A Caxton agent in Rust, on the agent SDK (`caxton-agent`).

```sh
engine agents build .                                              # or: cargo build --release
engine agents deploy target/wasm32-unknown-unknown/release/{name}.wasm
engine send {name} hi                                              # inform: hello from {name}: hi
cargo test --target "$(rustc -vV | sed -n 's/^host: //p')"          # the handler's logic, on this machine
```

`cargo test` alone builds the tests for the WebAssembly target that
`.cargo/config.toml` sets, where they cannot run: name the host's target.

The handler is `src/lib.rs`. The SDK's documentation: `cargo doc --open -p caxton-agent`.
"#;

const CARGO_CONFIG: &str = r#"# `cargo build` here builds the agent's WebAssembly module.
[build]
target = "wasm32-unknown-unknown"

# A 64 KiB shadow stack instead of rustc's 1 MiB default: the module then
# starts with two pages of memory, within every profile's
# `runtime.agent_heap_size`. Raise it if the agent keeps large arrays on
# the stack or recurses deeply.
[target.wasm32-unknown-unknown]
rustflags = ["-C", "link-arg=-zstack-size=65536"]
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_names_follow_one_rule() {
        for good in ["hello", "a", "order_book2"] {
            assert!(check_project_name(good).is_ok(), "{good}");
        }
        let too_long = "a".repeat(NAME_MAX + 1);
        for bad in [
            "",
            "Hello",
            "2fast",
            "with-dash",
            "dot.ted",
            too_long.as_str(),
        ] {
            assert!(check_project_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_wasm_artifacts_are_taken_from_cargos_messages() {
        let messages = r#"{"reason":"compiler-artifact","filenames":["/t/libcaxton_agent.rlib"]}
{"reason":"compiler-message","message":{}}
{"reason":"compiler-artifact","filenames":["/t/wasm32-unknown-unknown/release/hello.wasm"]}
not json
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            wasm_artifacts(messages),
            [PathBuf::from(
                "/t/wasm32-unknown-unknown/release/hello.wasm"
            )]
        );
    }
}
