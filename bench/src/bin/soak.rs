//! The soak (`scripts/soak.sh DURATION`): an engine with persistence under
//! load while faults are injected, then the books checked. See
//! `caxton_bench::soak`.
//!
//! `soak DURATION [--engine PATH] [--output DIR] [--rate 400] [--kill-every 60s]
//! [--redeploy-every 20s] [--fill-every 90s] [--fill-for 10s] [--no-fill]`

use std::path::PathBuf;
use std::time::Duration;

use caxton_bench::soak::{run, SoakConfig};

fn duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 90s, 10m, 1h"))?;
    let seconds = match unit {
        "" | "s" => number,
        "m" => number * 60,
        "h" => number * 3600,
        _ => return Err(format!("`{text}` is not a duration like 90s, 10m, 1h")),
    };
    if seconds == 0 {
        return Err(format!("`{text}` is zero"));
    }
    Ok(Duration::from_secs(seconds))
}

fn main() {
    let mut arguments = std::env::args().skip(1);
    let usage =
        "usage: soak DURATION [--engine PATH] [--output DIR] [--rate 400] [--kill-every 60s] \
                 [--redeploy-every 20s] [--fill-every 90s] [--fill-for 10s] [--no-fill]";
    let fail = |message: String| -> ! {
        caxton_bench::stderr_line!("soak: {message}\n{usage}");
        std::process::exit(2)
    };
    let total = arguments
        .next()
        .map(|text| duration(&text))
        .unwrap_or_else(|| Err("DURATION is missing".into()));
    let mut config = SoakConfig {
        engine: PathBuf::from("target/release/engine"),
        duration: total.unwrap_or_else(|message| fail(message)),
        output: std::env::temp_dir().join(format!("caxton-soak-{}", std::process::id())),
        kill_every: Duration::from_secs(60),
        redeploy_every: Duration::from_secs(20),
        rate: 400,
        fill: Some((Duration::from_secs(90), Duration::from_secs(10))),
    };
    while let Some(flag) = arguments.next() {
        if flag == "--no-fill" {
            config.fill = None;
            continue;
        }
        let value = arguments
            .next()
            .unwrap_or_else(|| fail(format!("{flag} needs a value")));
        match flag.as_str() {
            "--engine" => config.engine = PathBuf::from(value),
            "--output" => config.output = PathBuf::from(value),
            "--kill-every" => {
                config.kill_every = duration(&value).unwrap_or_else(|message| fail(message))
            }
            "--redeploy-every" => {
                config.redeploy_every = duration(&value).unwrap_or_else(|message| fail(message))
            }
            "--rate" => {
                config.rate = value
                    .parse()
                    .ok()
                    .filter(|rate| *rate > 0)
                    .unwrap_or_else(|| {
                        fail(format!("--rate `{value}`: operations per second, above 0"))
                    })
            }
            "--fill-every" | "--fill-for" => {
                let parsed = duration(&value).unwrap_or_else(|message| fail(message));
                let (every, lasting) = config
                    .fill
                    .get_or_insert((Duration::from_secs(90), Duration::from_secs(10)));
                if flag == "--fill-every" {
                    *every = parsed;
                } else {
                    *lasting = parsed;
                }
            }
            other => fail(format!("unknown flag {other}")),
        }
    }
    println!("{}", caxton_bench::machine_line());
    println!(
        "soak: {} s at {} operations/s (open loop), SIGKILL every {} s, redeploy every {} s, {}; output in {}",
        config.duration.as_secs(),
        config.rate,
        config.kill_every.as_secs(),
        config.redeploy_every.as_secs(),
        config.fill.map_or("no full data directory".to_owned(), |(every, lasting)| format!(
            "data directory full for {} s every {} s",
            lasting.as_secs(),
            every.as_secs()
        )),
        config.output.display()
    );
    let total = config.duration.as_secs();
    let report = run(&config, &|seconds| {
        use std::io::Write as _;
        let _ = write!(std::io::stderr(), "\rsoak: {seconds}/{total} s");
    })
    .unwrap_or_else(|message| {
        caxton_bench::stderr_line!("\nsoak: {message}");
        std::process::exit(1)
    });
    caxton_bench::stderr_line!();
    print!("{}", report.summary());
    if !report.passed() {
        std::process::exit(1);
    }
}
