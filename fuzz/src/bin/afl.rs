//! The AFL++ entry point: `CAXTON_FUZZ_TARGET=NAME` picks the target
//! (`scripts/fuzz.sh` sets it).

fn main() {
    let name = std::env::var("CAXTON_FUZZ_TARGET").unwrap_or_default();
    let Some(run) = caxton_fuzz::target(&name) else {
        let names: Vec<&str> = caxton_fuzz::TARGETS.iter().map(|(name, _)| *name).collect();
        eprintln!("set CAXTON_FUZZ_TARGET to one of: {}", names.join(", "));
        std::process::exit(2);
    };
    afl::fuzz!(|data: &[u8]| {
        run(data);
    });
}
