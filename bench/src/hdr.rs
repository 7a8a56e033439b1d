//! Writing histograms as HdrHistogram interval logs (log format 1.3, V2
//! DEFLATE-compressed histograms, one tag per metric), the format
//! HdrHistogram's own tools read.

use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;

/// Write `histogram` (nanoseconds) to `path` as a one-interval log tagged `tag`.
pub fn write_interval_log(path: &Path, tag: &str, histogram: &Histogram<u64>) -> io::Result<()> {
    let mut file = BufWriter::new(std::fs::File::create(path)?);
    let mut serializer = V2DeflateSerializer::new();
    let now = SystemTime::now();
    let mut builder = IntervalLogWriterBuilder::new();
    builder
        .add_comment("Caxton benchmark histogram; values in nanoseconds")
        .with_start_time(now)
        .with_base_time(now);
    let mut log = builder.begin_log_with(&mut file, &mut serializer)?;
    // Tags may not contain spaces, commas or colons; scenario names never do.
    let tag = Tag::new(tag).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("invalid tag `{tag}`"))
    })?;
    log.write_histogram(histogram, Duration::ZERO, Duration::from_secs(1), Some(tag))
        .map_err(|error| io::Error::other(format!("{error:?}")))?;
    drop(log);
    file.flush()
}
