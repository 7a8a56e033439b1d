//! A few seconds of fresh fuzzing on every CI run, with no fuzzing
//! toolchain: each target gets inputs mutated from its committed corpus
//! (byte flips, inserts, deletes, repeats, splices of two inputs, and the
//! target's dictionary tokens) by a seeded generator. It is blind, unlike
//! AFL++ (`scripts/fuzz.sh`), which follows coverage, but it tries inputs no
//! earlier run tried: the seed changes every run and is printed, and a
//! failure names the command that replays it.
//!
//! `CAXTON_FUZZ_SEED=N` replays a run; `CAXTON_FUZZ_SECONDS=S` sets each
//! target's share (default 2 s).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// xorshift64*: small, seedable, good enough to pick mutations.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound.max(1) as u64) as usize
    }
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_owned()
}

/// Every file under `directory`.
fn inputs(directory: &Path) -> Vec<Vec<u8>> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(directory) {
        for entry in entries.flatten() {
            if let Ok(bytes) = std::fs::read(entry.path()) {
                found.push(bytes);
            }
        }
    }
    found
}

/// The quoted tokens of an AFL++ dictionary (`name="token"`), unescaped.
fn dictionary(target: &str) -> Vec<Vec<u8>> {
    let path = fuzz_dir()
        .join("dictionaries")
        .join(format!("{target}.dict"));
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let quoted = line.split_once('"')?.1.strip_suffix('"')?;
            let mut token = Vec::new();
            let mut bytes = quoted.bytes();
            while let Some(byte) = bytes.next() {
                match (byte, bytes.clone().next()) {
                    (b'\\', Some(b'x')) => {
                        bytes.next();
                        let high = bytes.next()?;
                        let low = bytes.next()?;
                        let hex = [high, low];
                        token.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
                    }
                    (b'\\', Some(escaped)) => {
                        bytes.next();
                        token.push(escaped);
                    }
                    _ => token.push(byte),
                }
            }
            Some(token)
        })
        .collect()
}

/// One to eight stacked mutations of `input`.
fn mutate(input: &[u8], corpus: &[Vec<u8>], tokens: &[Vec<u8>], random: &mut Random) -> Vec<u8> {
    let mut data = input.to_vec();
    for _ in 0..=random.below(8) {
        let at = random.below(data.len() + 1);
        match random.below(8) {
            0 if !data.is_empty() => {
                let at = random.below(data.len());
                data[at] ^= 1 << random.below(8);
            }
            1 if !data.is_empty() => {
                let at = random.below(data.len());
                data[at] = [0, 0x7f, 0x80, 0xff, 1][random.below(5)];
            }
            2 => {
                let byte = random.next() as u8;
                data.insert(at, byte);
            }
            3 if at < data.len() => {
                let end = (at + 1 + random.below(16)).min(data.len());
                data.drain(at..end);
            }
            4 if at < data.len() => {
                let end = (at + 1 + random.below(32)).min(data.len());
                let piece = data[at..end].to_vec();
                data.splice(at..at, piece);
            }
            5 if !corpus.is_empty() => {
                let other = &corpus[random.below(corpus.len())];
                let from = random.below(other.len() + 1);
                data.truncate(at);
                data.extend_from_slice(&other[from..]);
            }
            6 if !tokens.is_empty() => {
                let token = &tokens[random.below(tokens.len())];
                data.splice(at..at, token.iter().copied());
            }
            _ => {
                let word = random.next().to_le_bytes();
                let width = [1, 2, 4, 8][random.below(4)];
                let end = (at + width).min(data.len());
                data.splice(at..end, word[..width].iter().copied());
            }
        }
    }
    data
}

#[test]
fn a_few_seconds_of_fresh_inputs_break_no_target() {
    let seed = std::env::var("CAXTON_FUZZ_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |since| since.as_nanos() as u64)
        })
        | 1;
    let share = Duration::from_secs_f64(
        std::env::var("CAXTON_FUZZ_SECONDS")
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or(2.0),
    );
    println!("fresh fuzzing with CAXTON_FUZZ_SEED={seed}, {share:?} per target");
    let findings = std::env::temp_dir().join(format!("caxton-fuzz-fresh-{seed}"));
    for (target, run) in caxton_fuzz::TARGETS {
        let corpus = inputs(&fuzz_dir().join("corpus").join(target));
        assert!(!corpus.is_empty(), "{target}: an empty corpus");
        let tokens = dictionary(target);
        let mut random = Random(seed ^ (target.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let started = Instant::now();
        let mut executions = 0u64;
        while started.elapsed() < share {
            let input = mutate(
                &corpus[random.below(corpus.len())],
                &corpus,
                &tokens,
                &mut random,
            );
            if catch_unwind(AssertUnwindSafe(|| run(&input))).is_err() {
                std::fs::create_dir_all(&findings).expect("a findings directory");
                let path = findings.join(format!("{target}-{executions}"));
                std::fs::write(&path, &input).expect("the finding written");
                panic!(
                    "{target} broke on a mutated input, kept in {}; replay with \
                     CAXTON_FUZZ_SEED={seed} cargo test -p caxton-fuzz --test fresh, and \
                     copy the input into fuzz/corpus/{target}/ once fixed",
                    path.display()
                );
            }
            executions += 1;
        }
        println!("{target}: {executions} fresh inputs");
        assert!(executions > 0, "{target}: nothing ran");
    }
}
