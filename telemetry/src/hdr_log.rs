//! HdrHistogram interval logs: log format 1.3, each interval histogram V2
//! compressed with DEFLATE and tagged with its metric, the form HdrHistogram's
//! own tools (`HistogramLogProcessor`) read. Values are nanoseconds.
//!
//! A [`HdrLogWriter`] writes the header once and appends intervals as they
//! close, flushing each, so a log is readable while the engine runs and
//! complete up to the last closed interval if it stops.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use hdrhistogram::serialization::interval_log::{
    IntervalLogIterator, IntervalLogWriterBuilder, LogEntry, Tag,
};
use hdrhistogram::serialization::{Deserializer, V2DeflateSerializer};
use hdrhistogram::Histogram;

/// A histogram and the tag it is logged under.
pub type TaggedHistogram<'a> = (&'a str, &'a Histogram<u64>);

/// An interval log being written.
pub struct HdrLogWriter {
    path: PathBuf,
    file: std::fs::File,
    start: SystemTime,
}

impl HdrLogWriter {
    /// Create (truncate) `path` and write the log header; intervals are timed
    /// from `start`.
    pub fn create(path: &Path, start: SystemTime, comment: &str) -> io::Result<Self> {
        let mut file = std::fs::File::create(path)?;
        file.write_all(&header(comment, start)?)?;
        file.flush()?;
        Ok(Self {
            path: path.to_owned(),
            file,
            start,
        })
    }

    /// Where the log is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one interval, `[began, began + length)`, with one line per histogram.
    pub fn append(
        &mut self,
        began: SystemTime,
        length: Duration,
        histograms: &[TaggedHistogram<'_>],
    ) -> io::Result<()> {
        let offset = began.duration_since(self.start).unwrap_or_default();
        let lines = encode_intervals(offset, length, histograms)?;
        self.file.write_all(&lines)?;
        self.file.flush()
    }
}

/// A log's header: format version, `comment`, start and base time, and the
/// column legend HdrHistogram's own logs carry.
fn header(comment: &str, start: SystemTime) -> io::Result<Vec<u8>> {
    let mut header = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    let mut builder = IntervalLogWriterBuilder::new();
    builder
        .add_comment("[Histogram log format version 1.3]")
        .add_comment(comment)
        .add_comment("Values are nanoseconds; one tag per metric")
        .with_start_time(start)
        .with_base_time(start);
    drop(builder.begin_log_with(&mut header, &mut serializer)?);
    header.extend_from_slice(
        b"\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n",
    );
    Ok(header)
}

/// The interval lines for `histograms`, without a header.
fn encode_intervals(
    offset: Duration,
    length: Duration,
    histograms: &[TaggedHistogram<'_>],
) -> io::Result<Vec<u8>> {
    let mut lines = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    // A builder with no comments or times writes no header at all.
    let mut log = IntervalLogWriterBuilder::new().begin_log_with(&mut lines, &mut serializer)?;
    for (tag, histogram) in histograms {
        // Tags may not hold spaces, commas or colons; the engine's tags never do.
        let tag = Tag::new(tag).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("invalid tag `{tag}`"))
        })?;
        log.write_histogram(histogram, offset, length, Some(tag))
            .map_err(|error| io::Error::other(format!("cannot encode a histogram: {error:?}")))?;
    }
    drop(log);
    Ok(lines)
}

/// Write `histograms` to `path` as a log of one interval of `length` ending now.
pub fn write_single_interval(
    path: &Path,
    comment: &str,
    length: Duration,
    histograms: &[TaggedHistogram<'_>],
) -> io::Result<()> {
    let text = single_interval_text(comment, length, histograms)?;
    std::fs::write(path, text)
}

/// A whole log of one interval of `length` ending now, as bytes.
pub fn single_interval_text(
    comment: &str,
    length: Duration,
    histograms: &[TaggedHistogram<'_>],
) -> io::Result<Vec<u8>> {
    let now = SystemTime::now();
    let start = now.checked_sub(length).unwrap_or(now);
    let mut text = header(comment, start)?;
    text.extend(encode_intervals(Duration::ZERO, length, histograms)?);
    Ok(text)
}

/// One interval read back from a log.
#[derive(Debug)]
pub struct LoggedInterval {
    /// Its tag (`None` for an untagged line).
    pub tag: Option<String>,
    /// Start, relative to the log's base time.
    pub start: Duration,
    /// Length.
    pub length: Duration,
    /// The histogram.
    pub histogram: Histogram<u64>,
}

/// Why a log could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LogReadError {
    /// A line is not part of the format.
    #[error("line {line}: not an interval log line")]
    Syntax {
        /// 1-based line number of the first unparsable line.
        line: usize,
    },
    /// An interval's histogram does not decode.
    #[error("interval {index} ({tag}): {reason}")]
    Histogram {
        /// 0-based interval number.
        index: usize,
        /// Its tag.
        tag: String,
        /// What was wrong.
        reason: String,
    },
}

/// Every interval of the log `bytes`, in order.
pub fn read_log(bytes: &[u8]) -> Result<Vec<LoggedInterval>, LogReadError> {
    let mut intervals = Vec::new();
    let mut deserializer = Deserializer::new();
    for entry in IntervalLogIterator::new(bytes) {
        let entry = entry.map_err(|_| LogReadError::Syntax {
            line: first_bad_line(bytes),
        })?;
        let LogEntry::Interval(interval) = entry else {
            continue;
        };
        let tag = interval.tag().map(|tag| tag.as_str().to_owned());
        let fail = |reason: String| LogReadError::Histogram {
            index: intervals.len(),
            tag: tag.clone().unwrap_or_else(|| "untagged".into()),
            reason,
        };
        let encoded = base64::engine::general_purpose::STANDARD
            .decode(interval.encoded_histogram())
            .map_err(|error| fail(format!("bad base64: {error}")))?;
        possible_payload(&encoded).map_err(|reason| fail(format!("bad histogram: {reason}")))?;
        // hdrhistogram's decoder negates a run length without checking it
        // (i64::MIN overflows): with overflow checks on, a crafted log panics
        // inside it. A log is outside input, so a panic there is a bad log.
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            deserializer.deserialize(&mut encoded.as_slice())
        }))
        .map_err(|_| fail("bad histogram: its run lengths overflow".into()))?;
        let histogram: Histogram<u64> =
            decoded.map_err(|error| fail(format!("bad histogram: {error:?}")))?;
        intervals.push(LoggedInterval {
            tag,
            start: interval.start_timestamp(),
            length: interval.duration(),
            histogram,
        });
    }
    Ok(intervals)
}

/// hdrhistogram's V2 encodings: plain, and zlib-compressed.
const V2_COOKIE: u32 = 0x1c84_9313;
const V2_COMPRESSED_COOKIE: u32 = 0x1c84_9314;
/// A plain V2 histogram's header: cookie, payload length, normalizing
/// offset, significant digits, lowest, highest, integer-to-double ratio.
const V2_HEADER_BYTES: usize = 40;
/// The most deflate can expand: a 258-byte match costs at least 2 bits.
const DEFLATE_MAX_RATIO: usize = 1032;

/// Refuse a histogram whose header claims a payload its bytes cannot hold,
/// or whose counts hold a run length hdrhistogram cannot negate.
/// - hdrhistogram sizes its buffer from the claim (up to 4 GiB) before it
///   reads a byte of it, so a crafted log would make `engine hdr` allocate
///   and zero gigabytes per interval: the claim is checked first.
/// - A run of zero counts is encoded as a negative count; a count of
///   `i64::MIN` overflows its negation inside the decoder, a panic. The
///   reader also catches that panic, but a check beforehand keeps it out of
///   the process entirely (a fuzzer's panic hook aborts before any catch).
///
/// Anything else wrong is left to the decoder to report.
fn possible_payload(encoded: &[u8]) -> Result<(), String> {
    let word = |bytes: &[u8], at: usize| {
        bytes
            .get(at..at + 4)
            .map(|word| u32::from_be_bytes([word[0], word[1], word[2], word[3]]) as usize)
    };
    let refuse = |claimed: usize, room: usize| {
        Err(format!(
            "it claims {claimed} bytes of counts, more than its encoding can hold ({room} at most)"
        ))
    };
    match word(encoded, 0).map(|cookie| cookie as u32) {
        Some(V2_COOKIE) => {
            let room = encoded.len().saturating_sub(V2_HEADER_BYTES);
            match word(encoded, 4) {
                Some(claimed) if claimed > room => refuse(claimed, room),
                Some(claimed) => counts_can_be_negated(
                    encoded
                        .get(V2_HEADER_BYTES..V2_HEADER_BYTES + claimed)
                        .unwrap_or_default(),
                ),
                None => Ok(()),
            }
        }
        Some(V2_COMPRESSED_COOKIE) => {
            let compressed = encoded.get(8..).unwrap_or_default();
            let compressed = &compressed[..compressed.len().min(word(encoded, 4).unwrap_or(0))];
            // The inner header's first two words: its cookie, then the claim.
            let mut inner = [0u8; 8];
            let mut decoder = flate2::read::ZlibDecoder::new(compressed);
            if std::io::Read::read_exact(&mut decoder, &mut inner).is_err() {
                return Ok(());
            }
            let Some(claimed) = word(&inner, 4) else {
                return Ok(());
            };
            let room = compressed.len().saturating_mul(DEFLATE_MAX_RATIO);
            if claimed > room {
                return refuse(claimed, room);
            }
            // The rest of the header, then at most the claimed counts. A
            // stream that breaks early is the decoder's to report; what came
            // before the break is checked all the same (the decoder may have
            // read that far too).
            let mut plain = Vec::new();
            let wanted = (V2_HEADER_BYTES - 8 + claimed) as u64;
            let _ =
                std::io::Read::read_to_end(&mut std::io::Read::take(decoder, wanted), &mut plain);
            counts_can_be_negated(plain.get(V2_HEADER_BYTES - 8..).unwrap_or_default())
        }
        _ => Ok(()),
    }
}

/// Refuse counts (zig-zag LEB128, as HdrHistogram's V2 encoding writes
/// them: up to 8 bytes of 7 bits, a 9th of 8) holding `i64::MIN`, the one
/// run length whose negation overflows.
fn counts_can_be_negated(mut counts: &[u8]) -> Result<(), String> {
    while !counts.is_empty() {
        let mut value = 0u64;
        let mut used = 0;
        for (index, byte) in counts.iter().take(9).enumerate() {
            used = index + 1;
            if index == 8 {
                value |= u64::from(*byte) << 56;
                break;
            }
            value |= u64::from(byte & 0x7f) << (7 * index);
            if byte & 0x80 == 0 {
                break;
            }
        }
        // Zig-zag: the all-ones encoding decodes to i64::MIN.
        if value == u64::MAX {
            return Err("its run lengths overflow (a run of -i64::MIN zero counts)".into());
        }
        counts = &counts[used..];
    }
    Ok(())
}

/// The 1-based number of the first line the parser cannot place (for errors).
fn first_bad_line(bytes: &[u8]) -> usize {
    let text = String::from_utf8_lossy(bytes);
    for (index, line) in text.lines().enumerate() {
        let fine = line.is_empty()
            || line.starts_with('#')
            || line.starts_with('"')
            || IntervalLogIterator::new(format!("{line}\n").as_bytes()).all(|entry| entry.is_ok());
        if !fine {
            return index + 1;
        }
    }
    text.lines().count().max(1)
}

/// The intervals of `intervals` tagged `tag` (or untagged, for `None`) merged
/// into one histogram, with how many intervals went in.
pub fn merge_tag(
    intervals: &[LoggedInterval],
    tag: Option<&str>,
) -> Option<(Histogram<u64>, usize)> {
    let mut chosen = intervals
        .iter()
        .filter(|interval| interval.tag.as_deref() == tag);
    let first = chosen.next()?;
    let mut merged = first.histogram.clone();
    let mut count = 1;
    for interval in chosen {
        // Histograms of different bounds still merge: `add` resizes when it may.
        if merged.add(&interval.histogram).is_err() {
            continue;
        }
        count += 1;
    }
    Some((merged, count))
}

/// The distinct tags of `intervals`, in order of first appearance.
pub fn tags(intervals: &[LoggedInterval]) -> Vec<Option<String>> {
    let mut seen: Vec<Option<String>> = Vec::new();
    for interval in intervals {
        if !seen.contains(&interval.tag) {
            seen.push(interval.tag.clone());
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(values: &[u64]) -> Histogram<u64> {
        let mut histogram = crate::nanosecond_histogram();
        for &value in values {
            histogram.record(value).expect("in range");
        }
        histogram
    }

    #[test]
    fn intervals_round_trip_and_merge_per_tag() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.hlog");
        let start = SystemTime::now();
        let mut writer = HdrLogWriter::create(&path, start, "test").expect("create");
        let first = histogram(&[100, 200, 300]);
        let second = histogram(&[1_000, 2_000]);
        let other = histogram(&[7]);
        writer
            .append(
                start,
                Duration::from_secs(1),
                &[("a", &first), ("b", &other)],
            )
            .expect("append");
        writer
            .append(
                start + Duration::from_secs(1),
                Duration::from_secs(1),
                &[("a", &second)],
            )
            .expect("append");
        let intervals = read_log(&std::fs::read(&path).expect("read")).expect("parse");
        assert_eq!(intervals.len(), 3);
        assert_eq!(intervals[2].start, Duration::from_secs(1));
        assert_eq!(tags(&intervals), vec![Some("a".into()), Some("b".into())]);
        let (merged, count) = merge_tag(&intervals, Some("a")).expect("tag a");
        assert_eq!(count, 2);
        assert_eq!(merged.len(), 5);
        assert_eq!(merged.max(), second.max());
        assert!(merge_tag(&intervals, Some("missing")).is_none());
    }

    #[test]
    fn a_corrupt_line_is_reported_by_number() {
        let mut text =
            single_interval_text("t", Duration::from_secs(1), &[("a", &histogram(&[5]))])
                .expect("encode");
        text.extend_from_slice(b"Tag=a,0.0,1.0,5.0,this is not base64!\n");
        match read_log(&text) {
            Err(LogReadError::Histogram { index: 1, .. }) | Err(LogReadError::Syntax { .. }) => {}
            other => panic!("expected an error for the corrupt line, got {other:?}"),
        }
    }

    /// A log line holding `encoded` as its histogram.
    fn line_with(encoded: &[u8]) -> Vec<u8> {
        use base64::Engine as _;
        format!(
            "Tag=a,0.0,1.0,5.0,{}\n",
            base64::engine::general_purpose::STANDARD.encode(encoded)
        )
        .into_bytes()
    }

    /// `plain` deflated inside a compressed V2 header, as logs carry it.
    fn compressed_v2(plain: &[u8]) -> Vec<u8> {
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut zlib, plain).expect("compress");
        let zlib = zlib.finish().expect("compressed");
        let mut compressed = Vec::new();
        compressed.extend_from_slice(&V2_COMPRESSED_COOKIE.to_be_bytes());
        compressed.extend_from_slice(&(zlib.len() as u32).to_be_bytes());
        compressed.extend_from_slice(&zlib);
        compressed
    }

    #[test]
    fn a_histogram_claiming_more_counts_than_it_holds_is_refused_before_any_allocation() {
        // Plain V2: a header claiming 2 GiB of counts, followed by none.
        let mut plain = Vec::new();
        plain.extend_from_slice(&V2_COOKIE.to_be_bytes());
        plain.extend_from_slice(&(1u32 << 31).to_be_bytes());
        plain.extend_from_slice(&[0; V2_HEADER_BYTES - 8]);
        // Compressed V2: the same claim inside a few bytes of zlib.
        let mut inner = Vec::new();
        inner.extend_from_slice(&V2_COOKIE.to_be_bytes());
        inner.extend_from_slice(&(1u32 << 31).to_be_bytes());
        let compressed = compressed_v2(&inner);
        for encoded in [plain, compressed] {
            match read_log(&line_with(&encoded)) {
                Err(LogReadError::Histogram { reason, .. }) => {
                    assert!(
                        reason.contains("claims 2147483648 bytes of counts"),
                        "{reason}"
                    );
                }
                other => panic!("expected a refused claim, got {other:?}"),
            }
        }
        // What the engine writes passes the check.
        let written = single_interval_text(
            "t",
            Duration::from_secs(1),
            &[("a", &histogram(&[5, 9_000]))],
        )
        .expect("encode");
        assert_eq!(read_log(&written).expect("reads").len(), 1);
    }

    #[test]
    fn a_run_length_that_cannot_be_negated_is_refused_before_the_decoder() {
        // A plain V2 histogram whose only count is zig-zag i64::MIN: nine
        // bytes, eight with the high bit, then 0xff.
        let counts = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        let mut plain = Vec::new();
        plain.extend_from_slice(&V2_COOKIE.to_be_bytes());
        plain.extend_from_slice(&(counts.len() as u32).to_be_bytes());
        plain.extend_from_slice(&0u32.to_be_bytes()); // normalizing offset
        plain.extend_from_slice(&3u32.to_be_bytes()); // significant digits
        plain.extend_from_slice(&1u64.to_be_bytes()); // lowest
        plain.extend_from_slice(&1_000_000u64.to_be_bytes()); // highest
        plain.extend_from_slice(&1f64.to_bits().to_be_bytes()); // ratio
        plain.extend_from_slice(&counts);
        assert_eq!(
            possible_payload(&plain),
            Err("its run lengths overflow (a run of -i64::MIN zero counts)".into())
        );
        // The same inside zlib, as logs carry it.
        let compressed = compressed_v2(&plain);
        match read_log(&line_with(&compressed)) {
            Err(LogReadError::Histogram { reason, .. }) => {
                assert!(reason.contains("run lengths overflow"), "{reason}");
            }
            other => panic!("expected refused run lengths, got {other:?}"),
        }
        // A real run of zeros (a negative count) still passes.
        assert_eq!(counts_can_be_negated(&[0x01, 0x02]), Ok(()));
    }
}
