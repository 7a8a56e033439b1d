//! `engine hdr report` and `engine hdr plot`: reading HdrHistogram interval
//! logs, the engine's or anyone's.

use caxton_telemetry::hdr_log::{merge_tag, read_log, tags, LoggedInterval};
use caxton_telemetry::plot::{self, Series};

use crate::cli::HdrCommand;
use crate::commands::{emit, CommandError};

fn read(path: &std::path::Path) -> Result<Vec<LoggedInterval>, CommandError> {
    let bytes = std::fs::read(path).map_err(|error| {
        CommandError::BadInput(format!("cannot read `{}`: {error}", path.display()))
    })?;
    let intervals = read_log(&bytes).map_err(|error| {
        CommandError::BadInput(format!(
            "`{}` is not a readable HDR log: {error}",
            path.display()
        ))
    })?;
    if intervals.is_empty() {
        return Err(CommandError::BadInput(format!(
            "`{}` holds no histograms",
            path.display()
        )));
    }
    Ok(intervals)
}

fn tag_name(tag: &Option<String>) -> &str {
    tag.as_deref().unwrap_or("(untagged)")
}

/// The tags to use from `intervals`: `wanted`, or all of them.
fn chosen_tags(
    path: &std::path::Path,
    intervals: &[LoggedInterval],
    wanted: Option<&str>,
) -> Result<Vec<Option<String>>, CommandError> {
    let present = tags(intervals);
    match wanted {
        None => Ok(present),
        Some(tag)
            if present
                .iter()
                .any(|candidate| candidate.as_deref() == Some(tag)) =>
        {
            Ok(vec![Some(tag.to_owned())])
        }
        Some(tag) => Err(CommandError::BadInput(format!(
            "`{}` has no tag `{tag}`; its tags: {}",
            path.display(),
            present.iter().map(tag_name).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// Run `engine hdr report|plot`.
pub fn run(command: HdrCommand) -> Result<(), CommandError> {
    match command {
        HdrCommand::Report {
            file,
            tag,
            unit_ratio,
        } => {
            if !(unit_ratio.is_finite() && unit_ratio > 0.0) {
                return Err(CommandError::BadInput(format!(
                    "--unit-ratio {unit_ratio} must be a positive number"
                )));
            }
            let intervals = read(&file)?;
            let chosen = chosen_tags(&file, &intervals, tag.as_deref())?;
            let single = chosen.len() == 1;
            let mut out = String::new();
            for tag in &chosen {
                let Some((histogram, count)) = merge_tag(&intervals, tag.as_deref()) else {
                    continue;
                };
                if !single {
                    out.push_str(&format!(
                        "#[Tag {}: {count} intervals, values divided by {unit_ratio}]\n",
                        tag_name(tag)
                    ));
                }
                out.push_str(&caxton_telemetry::percentile_distribution(
                    &histogram, unit_ratio,
                ));
                if !single {
                    out.push('\n');
                }
            }
            emit(&out)
        }
        HdrCommand::Plot {
            files,
            output,
            tag,
            title,
        } => {
            let mut series = Vec::new();
            for argument in &files {
                // `FILE:TAG` picks one tag of one file.
                let (file, file_tag) = match argument.rsplit_once(':') {
                    Some((file, tag)) if !std::path::Path::new(argument).exists() => {
                        (file, Some(tag.to_owned()))
                    }
                    _ => (argument.as_str(), tag.clone()),
                };
                let path = std::path::Path::new(file);
                let intervals = read(path)?;
                let name = path.file_name().map_or_else(
                    || file.to_owned(),
                    |name| name.to_string_lossy().into_owned(),
                );
                for tag in chosen_tags(path, &intervals, file_tag.as_deref())? {
                    if let Some((histogram, _)) = merge_tag(&intervals, tag.as_deref()) {
                        series.push(Series {
                            label: format!("{name} {}", tag_name(&tag)),
                            histogram,
                        });
                    }
                }
            }
            plot::write(&output, &title, &series)
                .map_err(|error| CommandError::BadInput(error.to_string()))?;
            emit(&format!(
                "wrote {} ({} curves)\n",
                output.display(),
                series.len()
            ))
        }
        HdrCommand::Dump { .. } => unreachable!("dispatched to remote::hdr_dump"),
    }
}
