//! Loading a profile: resolve each `--profile` argument to a built-in or a file,
//! check each layer against the schema (with line and column), fold other
//! spellings, merge the layers in order (later wins), apply `--set` overrides,
//! and validate the result as a whole.
//!
//! Layers are merged as YAML trees, not as typed structs, so that a layer only
//! changes the keys it writes. Every key a layer writes is remembered with its
//! location, so an error found after merging (a contradiction between two keys,
//! a core that does not exist) still points at the line that caused it.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};

use crate::builtin;
use crate::error::{ProfileError, ProfileErrorKind, SourceLocation};
use crate::schema::Profile;
use crate::validate::{validate, Violation};
use crate::HumanDuration;

/// How a built-in profile's layer is named as a source.
const BUILTIN_SOURCE: &str = "built-in profile ";

/// The upper bound on a profile file's size: a profile is configuration, and a
/// file larger than this is a mistake (a wrong path), not a profile.
pub const PROFILE_FILE_BYTES_MAX: u64 = 1 << 20;

/// A validated, merged profile and where each of its keys came from.
#[derive(Clone, Debug)]
pub struct LoadedProfile {
    /// The effective profile.
    pub profile: Profile,
    /// The layers it was built from, in order (`built-in low-latency`, a path, `--set ...`).
    pub layers: Vec<String>,
    locations: BTreeMap<String, SourceLocation>,
    /// The keys each layer wrote, in `layers`' order.
    layer_keys: Vec<std::collections::BTreeSet<String>>,
}

impl LoadedProfile {
    /// Whether some layer (a built-in profile among them) wrote `key`
    /// itself: not a default.
    pub fn written(&self, key: &str) -> bool {
        self.locations.contains_key(key)
    }

    /// Whether a profile file or `--set` wrote `key` itself (not a
    /// built-in profile, not a default).
    pub fn written_by_user(&self, key: &str) -> bool {
        self.locations
            .get(key)
            .is_some_and(|location| !location.source.starts_with(BUILTIN_SOURCE))
    }

    /// Where `key` (or its nearest ancestor that was written) was last set.
    /// `None` when the value is a schema default.
    pub fn location_of(&self, key: &str) -> Option<SourceLocation> {
        nearest_location(&self.locations, key)
    }

    /// The error for `violation`, pointing at where its key was written.
    /// Later stages (placement) use this to report problems they find.
    pub fn reject(&self, kind: ProfileErrorKind, violation: Violation) -> ProfileError {
        let (location, pointed_at) = self.violation_location(&violation);
        // Pointed at the key the user wrote, the message still names the
        // key the rule is about: say that one was left at its default.
        let hint = match pointed_at {
            Some(written) => {
                let default = format!(
                    "`{}` is not set in any layer, so it has its default; `{written}` is what this profile sets",
                    violation.key
                );
                Some(match violation.hint {
                    Some(hint) => format!("{default}: {hint}"),
                    None => default,
                })
            }
            None => violation.hint,
        };
        let error = ProfileError::new(kind, violation.message)
            .at_location(location)
            .at_key(violation.key);
        match hint {
            Some(hint) => error.with_hint(hint),
            None => error,
        }
    }

    /// Where to point for `violation`: its key where a layer wrote it;
    /// otherwise the written key its message names (a rule between two keys
    /// that fails on a default, `stack_pooling` left true while
    /// `--set runtime.wasm.memory_pooling=false` turns the other off: the
    /// one to point at is the one the user wrote); otherwise the nearest
    /// written section above its key.
    /// With it, the written key pointed at instead of the violation's own.
    fn violation_location<'a>(
        &'a self,
        violation: &Violation,
    ) -> (Option<SourceLocation>, Option<&'a str>) {
        if let Some(location) = self.locations.get(&violation.key) {
            return (Some(location.clone()), None);
        }
        let named = self
            .written_keys()
            .filter(|key| *key != violation.key && violation.message.contains(key))
            .max_by_key(|key| key.len());
        match named {
            Some(key) => (self.locations.get(key).cloned(), Some(key)),
            None => (self.location_of(&violation.key), None),
        }
    }

    /// The keys some layer wrote ([`Self::written_keys`]) at a value other
    /// than the schema's default: those that change what the node does.
    /// A key written at its default (as in saved `profiles show` output,
    /// which writes every key) changes nothing, so nothing need be said of it.
    pub fn changed_keys(&self) -> impl Iterator<Item = &str> {
        // Plain data: serializing cannot fail, and a failure would only
        // count every written key as changed.
        let ours = serde_json::to_value(&self.profile).unwrap_or_default();
        let defaults = serde_json::to_value(Profile::default()).unwrap_or_default();
        self.written_keys()
            .filter(move |key| {
                let (mine, default) = (value_at(&ours, key), value_at(&defaults, key));
                mine.is_none() || mine != default
            })
            .collect::<Vec<_>>()
            .into_iter()
    }

    /// Every leaf key path some layer wrote (`messaging.queue_size`, not
    /// `messaging`), in canonical spelling and sorted order.
    pub fn written_keys(&self) -> impl Iterator<Item = &str> {
        let keys: Vec<&String> = self.locations.keys().collect();
        keys.iter()
            .enumerate()
            .filter(|(index, key)| {
                // Sorted order puts a key's children right after it.
                keys.get(index + 1).is_none_or(|next| {
                    !(next.starts_with(&format!("{key}.")) || next.starts_with(&format!("{key}[")))
                })
            })
            .map(|(_, key)| key.as_str())
            .collect::<Vec<_>>()
            .into_iter()
    }

    /// The other transport's keys in this profile, sorted: those that
    /// differ from their defaults ([`crate::validate::idle_transport_keys`];
    /// a built-in profile's tuning, since a user's is refused) and those a
    /// layer wrote at their defaults. Each changes nothing.
    pub fn idle_transport_keys(&self) -> Vec<String> {
        let kind = self.profile.transport.kind;
        let mut keys = crate::validate::idle_transport_keys(&self.profile);
        for key in self.written_keys() {
            if crate::validate::is_idle_transport_key(kind, key)
                && !keys.iter().any(|known| known == key)
            {
                keys.push(key.to_owned());
            }
        }
        keys.sort();
        keys
    }

    /// The effective profile as YAML that loads back to a profile that
    /// behaves the same. The other transport's keys (a built-in profile's
    /// QUIC tuning under `transport.type: tcp`) are left at their defaults:
    /// they change nothing, and written in a file they would be refused.
    ///
    /// Module paths of `agents.deploy` are written absolute: relative, they
    /// would be read against wherever the output is saved, not against the
    /// profile that named them.
    pub fn to_yaml(&self) -> String {
        let mut profile = crate::validate::without_idle_transport_keys(&self.profile);
        let working = std::env::current_dir().unwrap_or_default();
        for (index, deployment) in profile.agents.deploy.iter_mut().enumerate() {
            let path = working.join(self.module_path(index));
            deployment.module = path.display().to_string();
        }
        profile_to_yaml(&profile)
    }

    /// Where the module of `agents.deploy[index]` is read from: relative
    /// to the profile file that names it; built-ins and `--set` are
    /// relative to the working directory. Empty for an index past the list.
    pub fn module_path(&self, index: usize) -> std::path::PathBuf {
        let Some(deployment) = self.profile.agents.deploy.get(index) else {
            return std::path::PathBuf::new();
        };
        let base = self
            .location_of(&format!("agents.deploy[{index}].module"))
            .map(|location| std::path::PathBuf::from(location.source))
            .filter(|source| source.is_file())
            .and_then(|source| source.parent().map(std::path::Path::to_path_buf))
            .unwrap_or_default();
        base.join(&deployment.module)
    }
}

/// The value at key path `key` (`a.b`, `a.list[2].c`) in `value`.
fn value_at<'v>(value: &'v Value, key: &str) -> Option<&'v Value> {
    key.split('.').try_fold(value, |value, part| {
        let (name, indices) = part
            .split_once('[')
            .map_or((part, ""), |(name, rest)| (name, rest));
        let mut value = value.get(name)?;
        for index in indices.split('[').filter(|index| !index.is_empty()) {
            value = value.get(index.trim_end_matches(']').parse::<usize>().ok()?)?;
        }
        Some(value)
    })
}

/// `profile` as YAML that loads back to an equal profile.
pub fn profile_to_yaml(profile: &Profile) -> String {
    // Serializing plain data (strings, numbers, bools, lists, maps) cannot fail.
    serde_saphyr::to_string(profile).expect("a profile always serializes")
}

/// Load the profile named by `profiles` (built-in names or file paths, later
/// overlaying earlier) with `overrides` (`key.path=value`) applied last.
/// With no `profiles`, the `default` built-in is the base.
pub fn load(profiles: &[String], overrides: &[String]) -> Result<LoadedProfile, ProfileError> {
    let mut merged = Value::Object(Map::new());
    let mut locations = BTreeMap::new();
    let mut layers = Vec::new();
    let mut layer_keys = Vec::new();
    let default_base = [builtin::DEFAULT.to_owned()];
    let profiles = if profiles.is_empty() {
        &default_base[..]
    } else {
        profiles
    };
    for spec in profiles {
        let (source, text) = resolve_source(spec)?;
        let layer = parse_layer(&source, &text)?;
        layer_keys.push(layer.locations.keys().cloned().collect());
        merge_layer(&mut merged, &mut locations, layer);
        layers.push(source);
    }
    // The text of each `--set` whose value YAML read as a number or a
    // boolean, by key: where the key takes text, that text is meant.
    let mut override_texts = BTreeMap::new();
    for assignment in overrides {
        let layer = parse_override(assignment)?;
        layer_keys.push(layer.locations.keys().cloned().collect());
        match (&layer.scalar_text, layer.locations.keys().next()) {
            (Some(text), Some(key)) if layer.locations.len() == 1 => {
                override_texts.insert(key.clone(), text.clone());
            }
            // A later `--set` of the key with a string, or a mapping, wins.
            _ => layer.locations.keys().for_each(|key| {
                override_texts.remove(key);
            }),
        }
        merge_layer(&mut merged, &mut locations, layer);
        layers.push(format!("--set {}", shown_assignment(assignment)));
    }
    let locate = |key: &str| nearest_location(&locations, key);
    let mut failing_path = String::new();
    let profile: Profile =
        deserialize_taking_text(&mut merged, &mut override_texts).map_err(|error| {
            failing_path = error.path().to_string();
            let message = error.inner().to_string();
            let kind = if message.starts_with("unknown field") {
                ProfileErrorKind::UnknownKey
            } else {
                ProfileErrorKind::InvalidValue
            };
            let (message, hint) = match kind {
                ProfileErrorKind::UnknownKey => {
                    let hint = suggest_key(&message).map_or_else(
                        || "see docs/profiles.md for every key".to_owned(),
                        |key| format!("did you mean `{key}`?"),
                    );
                    (message, Some(hint))
                }
                _ => match reword(
                    &message,
                    !failing_path.is_empty() && failing_path != "." && failing_path != "?",
                ) {
                    Some((plain, hint)) => (plain, Some(hint)),
                    None => {
                        let hint = value_hint(&message);
                        (message, Some(hint))
                    }
                },
            };
            let error = ProfileError::new(kind, message)
                .at_key(failing_path.clone())
                .at_location(locate(&failing_path));
            match hint {
                Some(hint) => error.with_hint(hint),
                None => error,
            }
        })?;
    let mut loaded = LoadedProfile {
        profile,
        layers,
        locations,
        layer_keys,
    };
    fit_unwritten_keep_alive(&mut loaded);
    fit_unwritten_probe_interval(&mut loaded);
    // The other transport's keys first: the rules between keys of one
    // transport would otherwise name a key of it that changes nothing.
    if let Some(violation) = other_transports_keys_written(&loaded) {
        return Err(loaded.reject(ProfileErrorKind::Contradiction, violation));
    }
    match validate(&loaded.profile).into_iter().next() {
        Some(violation) => {
            let violation = name_the_later_layer(&loaded, violation);
            Err(loaded.reject(ProfileErrorKind::Contradiction, violation))
        }
        None => Ok(loaded),
    }
}

/// Deserialize `merged`; where a key that takes text was given a number or
/// a boolean by `--set` (`node_name=1`, `data_directory=2024`,
/// `access_token=off`), take the text as written and try again. A YAML
/// file means what YAML says (quote `"1"` there), but on a command line
/// `--set node_name=1` can only mean the name "1".
fn deserialize_taking_text(
    merged: &mut Value,
    override_texts: &mut BTreeMap<String, String>,
) -> Result<Profile, serde_path_to_error::Error<serde_json::Error>> {
    loop {
        let error = match serde_path_to_error::deserialize(&*merged) {
            Ok(profile) => return Ok(profile),
            Err(error) => error,
        };
        let path = error.path().to_string();
        let message = error.inner().to_string();
        let wants_text =
            message.starts_with("invalid type:") && message.contains("expected a string");
        // Each key is retried at most once: the loop ends.
        match override_texts.remove(&path) {
            Some(text) if wants_text => insert_path(merged, &path, Value::String(text)),
            _ => return Err(error),
        }
    }
}

/// Pairs of keys judged against each other: (the key a violation names,
/// the key it is judged against).
const JUDGED_AGAINST: [(&str, &str); 2] = [
    (
        "coordination.cluster.probe_timeout",
        "coordination.cluster.probe_interval",
    ),
    (
        "transport.quic.keep_alive_interval",
        "transport.quic.idle_timeout",
    ),
];

/// A violation between two keys points at one of them; when the other was
/// written by a later layer (an overlay listed in the wrong order), the
/// hint says so: the layer named in the message is not the one to edit.
fn name_the_later_layer(loaded: &LoadedProfile, mut violation: Violation) -> Violation {
    let Some((_, other)) = JUDGED_AGAINST.iter().find(|(key, _)| *key == violation.key) else {
        return violation;
    };
    let position = |key: &str| {
        let source = loaded.locations.get(key)?.source.clone();
        let index = loaded.layers.iter().rposition(|layer| *layer == source)?;
        Some((index, source))
    };
    if let (Some((named_at, named)), Some((other_at, later))) =
        (position(&violation.key), position(other))
    {
        if other_at > named_at {
            // Listing the named layer last helps only when it writes the
            // other key too (as network-wan does the probe interval).
            let reorder = loaded
                .layer_keys
                .get(named_at)
                .is_some_and(|keys| keys.contains(*other));
            let hint = if reorder {
                format!(
                    "`{other}` here comes from {later}, listed after {named}: list {named} after it, or set `{other}` after both",
                )
            } else {
                format!("`{other}` here comes from {later}, listed after {named}: set `{other}` after both")
            };
            violation.hint = Some(match violation.hint {
                Some(earlier) => format!("{hint}; {earlier}"),
                None => hint,
            });
        }
    }
    violation
}

/// A QUIC keep-alive no layer wrote follows the idle timeout. Its default
/// (30s) does not fit under a short `idle_timeout`, and a profile that sets
/// only that (the performance tuning guide's low-latency block sets
/// `idle_timeout: 100ms` and no keep-alive) would be refused for a key it
/// never wrote. It becomes a third of the idle timeout instead, as the
/// built-in `low-latency` sets (30ms beside 100ms): two keep-alives can be
/// lost before a live connection is closed. A keep-alive someone wrote is
/// kept, and judged.
fn fit_unwritten_keep_alive(loaded: &mut LoadedProfile) {
    if loaded.written("transport.quic.keep_alive_interval") {
        return;
    }
    let quic = &mut loaded.profile.transport.quic;
    let idle = quic.idle_timeout.get();
    if !idle.is_zero() && quic.keep_alive_interval.get() >= idle {
        let third = u64::try_from((idle / 3).as_micros()).unwrap_or(u64::MAX);
        quic.keep_alive_interval = HumanDuration::from_micros(third.max(1));
    }
}

/// A SWIM probe interval no layer wrote follows the probe timeout. Its
/// default (1s) is not above a long `probe_timeout`, and the performance
/// tuning guide's cross-region and unreliable-network blocks set only that
/// (2s, 5s): they would be refused for a key they never wrote. The interval
/// becomes twice the timeout instead, room for the direct probe and then
/// the indirect ones (the built-in `network-unreliable` sets 10s beside
/// 5s). An interval someone wrote is kept, and judged.
fn fit_unwritten_probe_interval(loaded: &mut LoadedProfile) {
    if loaded.written("coordination.cluster.probe_interval") {
        return;
    }
    let cluster = &mut loaded.profile.coordination.cluster;
    let timeout = cluster.probe_timeout.get();
    if !timeout.is_zero() && cluster.probe_interval.get() <= timeout {
        let twice = u64::try_from(timeout.saturating_mul(2).as_micros()).unwrap_or(u64::MAX);
        cluster.probe_interval = HumanDuration::from_micros(twice);
    }
}

/// The other transport's keys that a profile file or `--set` wrote: they
/// would change nothing, so the profile is refused with every one named.
/// A built-in profile's tuning of the other transport (`low-latency` tunes
/// QUIC) is let through when a later layer picks TCP; the engine names
/// those keys at boot.
fn other_transports_keys_written(loaded: &LoadedProfile) -> Option<Violation> {
    let written: Vec<String> = crate::validate::idle_transport_keys(&loaded.profile)
        .into_iter()
        .filter(|key| {
            loaded
                .location_of(key)
                .is_some_and(|location| !location.source.starts_with(BUILTIN_SOURCE))
        })
        .collect();
    let first = written.first()?.clone();
    let (this, other, hint) = match loaded.profile.transport.kind {
        crate::schema::TransportKind::Quic => (
            "QUIC",
            "TCP",
            "set `transport.type: tcp` to use them, or remove them",
        ),
        crate::schema::TransportKind::Tcp => {
            ("TCP", "QUIC", "remove them, or use `transport.type: quic`")
        }
    };
    Some(Violation {
        key: first,
        message: format!(
            "{} appl{} to the {other} transport only, and this profile uses {this}",
            written.join(", "),
            if written.len() == 1 { "ies" } else { "y" }
        ),
        hint: Some(hint.to_owned()),
    })
}

fn nearest_location(
    locations: &BTreeMap<String, SourceLocation>,
    key: &str,
) -> Option<SourceLocation> {
    let mut path = key;
    loop {
        if let Some(location) = locations.get(path) {
            return Some(location.clone());
        }
        path = &path[..path.rfind(['.', '['])?];
    }
}

/// `KEY=VALUE` as logs and reports may show it: a secret's value hidden
/// (the layer list is logged at boot and printed by every benchmark).
fn shown_assignment(assignment: &str) -> std::borrow::Cow<'_, str> {
    match assignment.split_once('=') {
        Some((key, _)) if key.trim().ends_with("access_token") => {
            std::borrow::Cow::Owned(format!("{key}=(hidden)"))
        }
        _ => std::borrow::Cow::Borrowed(assignment),
    }
}

/// Find the text of `spec`: a built-in name or a file path.
fn resolve_source(spec: &str) -> Result<(String, String), ProfileError> {
    if let Some(text) = builtin::get(spec) {
        return Ok((format!("{BUILTIN_SOURCE}{spec}"), text.to_owned()));
    }
    let path = Path::new(spec);
    let looks_like_path =
        spec.contains('/') || spec.ends_with(".yaml") || spec.ends_with(".yml") || path.exists();
    if !looks_like_path {
        return Err(ProfileError::new(
            ProfileErrorKind::UnknownProfile,
            format!("no built-in profile or file named `{spec}`"),
        )
        .with_hint(format!(
            "built-in profiles are: {}; or give a path to a YAML file",
            builtin::NAMES.join(", ")
        )));
    }
    let unreadable = |error: std::io::Error| {
        ProfileError::new(
            ProfileErrorKind::Unreadable,
            format!("cannot read profile file `{spec}`: {error}"),
        )
    };
    // Read at most one byte past the limit: a FIFO or device reports no size,
    // so the bound is enforced on what is read, not on metadata.
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| {
            std::io::Read::read_to_end(
                &mut std::io::Read::take(file, PROFILE_FILE_BYTES_MAX + 1),
                &mut bytes,
            )
        })
        .map_err(unreadable)?;
    if bytes.len() as u64 > PROFILE_FILE_BYTES_MAX {
        return Err(ProfileError::new(
            ProfileErrorKind::Unreadable,
            format!("profile file `{spec}` is over the {PROFILE_FILE_BYTES_MAX}-byte limit"),
        ));
    }
    let text = String::from_utf8(bytes).map_err(|_| {
        ProfileError::new(
            ProfileErrorKind::Unreadable,
            format!("profile file `{spec}` is not UTF-8 text"),
        )
    })?;
    Ok((spec.to_owned(), text))
}

/// One parsed layer: the keys it writes and where it writes them.
struct Layer {
    tree: Value,
    locations: BTreeMap<String, SourceLocation>,
    /// For a `--set` whose value YAML read as a number or a boolean: the
    /// value as written (see [`deserialize_taking_text`]).
    scalar_text: Option<String>,
}

/// Parse and check one YAML layer.
fn parse_layer(source: &str, text: &str) -> Result<Layer, ProfileError> {
    // Syntax first, so a broken file is reported as such and not as a type error.
    let tree: Value = serde_saphyr::from_str(text)
        .map_err(|error| saphyr_error(source, ProfileErrorKind::Syntax, &error, None))?;
    // An empty document (no text, or only `---` and comments) sets nothing,
    // as an empty file does.
    if tree.is_null() {
        return Ok(Layer {
            tree: Value::Object(Map::new()),
            locations: BTreeMap::new(),
            scalar_text: None,
        });
    }
    let mut failing_path = None;
    let typed = serde_saphyr::with_deserializer_from_str(text, |deserializer| {
        serde_path_to_error::deserialize::<_, Profile>(deserializer).map_err(|error| {
            failing_path = Some(error.path().to_string());
            error.into_inner()
        })
    });
    if let Err(error) = typed {
        let message = error.to_string();
        let kind = if message.contains("unknown field") {
            ProfileErrorKind::UnknownKey
        } else {
            ProfileErrorKind::InvalidValue
        };
        return Err(saphyr_error(source, kind, &error, failing_path));
    }
    let mut layer = Layer {
        tree,
        locations: locate_keys(source, text),
        scalar_text: None,
    };
    fold_aliases(&mut layer)?;
    Ok(layer)
}

/// Turn a serde-saphyr error into a one-line [`ProfileError`].
fn saphyr_error(
    source: &str,
    kind: ProfileErrorKind,
    error: &serde_saphyr::Error,
    path: Option<String>,
) -> ProfileError {
    let full = error.to_string();
    let first_line = full.lines().next().unwrap_or_default();
    let message = strip_location_prefix(first_line);
    // The YAML library's wording names a setting of its own; say what is
    // wrong with the file instead.
    let duplicate;
    let message = match message.strip_prefix("duplicate mapping key: ") {
        Some(rest) => {
            let key = rest.split(',').next().unwrap_or(rest).trim();
            duplicate = format!(
                "`{key}` is written twice in one mapping; write each key once (the file may hold two examples: keep one)"
            );
            duplicate.as_str()
        }
        None => message,
    };
    let location = error.location().map(|location| SourceLocation {
        source: source.to_owned(),
        line: Some(location.line() as usize),
        column: Some(location.column() as usize),
    });
    let path = path.filter(|path| !path.is_empty() && path != "." && path != "?");
    if let Some((plain, hint)) = reword(message, path.is_some()) {
        let mut profile_error = ProfileError::new(kind, plain)
            .at_location(location)
            .with_hint(hint);
        if let Some(path) = path {
            profile_error = profile_error.at_key(path);
        }
        return profile_error;
    }
    let mut profile_error = ProfileError::new(kind, message.to_owned()).at_location(location);
    if let Some(path) = path {
        profile_error = profile_error.at_key(path);
    }
    if kind == ProfileErrorKind::InvalidValue {
        profile_error = profile_error.with_hint(value_hint(message));
    }
    if kind == ProfileErrorKind::Syntax {
        profile_error = profile_error.with_hint(if message.contains("tab") {
            "YAML indents with spaces only: replace the tab (the place named may be the line before it)"
        } else {
            "indent with spaces, write `: ` after each key, and quote text that holds `: ` or ` #`"
        });
    }
    if kind == ProfileErrorKind::UnknownKey {
        if let Some(suggestion) = suggest_key(message) {
            profile_error = profile_error.with_hint(format!("did you mean `{suggestion}`?"));
        } else {
            profile_error = profile_error.with_hint("see docs/profiles.md for every key");
        }
    }
    profile_error
}

/// The YAML and serde libraries' wording of a mistake, said in the
/// profile's terms: (message, hint). `under_key`: the mistake is in a
/// key's value, not at the top of the profile. `None` where their wording
/// already says it.
fn reword(message: &str, under_key: bool) -> Option<(String, String)> {
    if message.starts_with("multiple YAML documents detected") {
        return Some((
            "holds more than one YAML document (a `---` line between keys)".to_owned(),
            "a profile is one mapping of sections: remove the `---`, or put each document in a file of its own and give each with --profile".to_owned(),
        ));
    }
    if let Some(range) = whole_number_range(message) {
        let written = message.split('`').nth(1);
        let plain = match written {
            Some(written) => format!("`{written}` is not a whole number from {range}"),
            None => format!("is not a whole number from {range}"),
        };
        return Some((plain, format!("use a whole number from {range}")));
    }
    if message.contains("expected struct") || message.contains("expected mapping start") {
        return Some(if under_key {
            (
                "is a section of keys, not a single value".to_owned(),
                "write its keys below it, one per line as `key: value` with a space after the colon (`max_agents:5` reads as one word); with --set, name the key inside it (`runtime.max_agents=8`); `engine profiles keys` lists them".to_owned(),
            )
        } else {
            (
                "is not a mapping of sections".to_owned(),
                "a profile maps section names to their keys (`runtime:`, `messaging:`, …) at the top level: not a list (`- `) and not a single value".to_owned(),
            )
        });
    }
    None
}

/// For serde's "expected u32" (a negative number) and "invalid u32" (one
/// too large): the range of the key's type.
fn whole_number_range(message: &str) -> Option<&'static str> {
    let kind = message
        .strip_prefix("invalid ")
        .filter(|rest| !rest.contains(' '))
        .or_else(|| {
            message
                .starts_with("invalid value: integer")
                .then(|| message.rsplit("expected ").next())
                .flatten()
        })?;
    Some(match kind.trim() {
        "u8" => "0 to 255",
        "u16" => "0 to 65535",
        "u32" => "0 to 4294967295",
        "u64" | "usize" => "0 to 18446744073709551615",
        "i32" => "-2147483648 to 2147483647",
        "i64" => "-9223372036854775808 to 9223372036854775807",
        _ => return None,
    })
}

/// Advice for a value of the wrong shape, from serde's description of it.
fn value_hint(message: &str) -> String {
    // Whole numbers out of range are reworded first ([`reword`]).
    if message.contains("unknown variant") {
        "use one of the listed values".to_owned()
    } else if message.contains("expected a string") {
        // YAML reads `1`, `2024`, `off` as a number or a boolean.
        "this key takes text: put the value in quotes (`\"1\"`)".to_owned()
    } else if ["not a duration", "not a size", "not a CPU share"]
        .iter()
        .any(|unit| message.contains(unit))
    {
        "see the Units section of docs/profiles.md".to_owned()
    } else {
        "`engine profiles show default` prints every key with a valid value".to_owned()
    }
}

/// `error: line 3 column 3: unknown field ...` → `unknown field ...`.
fn strip_location_prefix(line: &str) -> &str {
    let line = line.strip_prefix("error: ").unwrap_or(line);
    if line.starts_with("line ") {
        if let Some((_, rest)) = line.split_once(": ") {
            return rest;
        }
    }
    line
}

/// From "unknown field `fanoutt`, expected one of a, b", the closest expected name.
fn suggest_key(message: &str) -> Option<String> {
    let unknown = message.split('`').nth(1)?;
    let expected = message.split_once("expected one of ")?.1;
    expected
        .split(',')
        .map(|name| name.trim().trim_matches('`'))
        .map(|name| (crate::names::slips_between(unknown, name), name))
        .filter(|&(distance, _)| distance <= 3)
        .min()
        .map(|(_, name)| name.to_owned())
}

/// Map every key path written in `text` to its line and column.
fn locate_keys(source: &str, text: &str) -> BTreeMap<String, SourceLocation> {
    use serde_saphyr::granit_parser::{Event, Parser};

    enum Frame {
        Mapping { path: String, key: Option<String> },
        Sequence { path: String, index: usize },
    }
    let mut locations = BTreeMap::new();
    let mut stack: Vec<Frame> = Vec::new();
    for item in Parser::new_from_str(text) {
        // The text already parsed once; a failure here only ends the map early.
        let Ok((event, span)) = item else { break };
        // Comments and anchor metadata are not nodes: they must not consume a pending key.
        if !matches!(
            event,
            Event::Scalar(..)
                | Event::MappingStart(..)
                | Event::SequenceStart(..)
                | Event::MappingEnd
                | Event::SequenceEnd
                | Event::Alias(..)
        ) {
            continue;
        }
        let location = SourceLocation {
            source: source.to_owned(),
            line: Some(span.start.line()),
            column: Some(span.start.col() + 1),
        };
        // The path of the node this event starts, if it is a value (not a key).
        let node_path = match stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Mapping { path, key }) => match key.take() {
                Some(key) => Some(join(path, &key)),
                None => {
                    if let Event::Scalar(name, ..) = &event {
                        let key_path = join(path, name);
                        locations.insert(key_path, location.clone());
                        *key = Some(name.to_string());
                    }
                    None
                }
            },
            Some(Frame::Sequence { path, index }) => {
                let item_path = format!("{path}[{index}]");
                if matches!(
                    event,
                    Event::Scalar(..)
                        | Event::MappingStart(..)
                        | Event::SequenceStart(..)
                        | Event::Alias(..)
                ) {
                    *index += 1;
                    locations.insert(item_path.clone(), location.clone());
                }
                Some(item_path)
            }
        };
        match event {
            Event::MappingStart(..) => stack.push(Frame::Mapping {
                path: node_path.unwrap_or_default(),
                key: None,
            }),
            Event::SequenceStart(..) => stack.push(Frame::Sequence {
                path: node_path.unwrap_or_default(),
                index: 0,
            }),
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
            }
            _ => {}
        }
    }
    locations
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Other spellings folded into their canonical keys: (other path, canonical path).
const KEY_ALIASES: [(&str, &str); 5] = [
    ("messaging.worker_threads", "runtime.worker_threads"),
    (
        "transport.max_streams",
        "transport.quic.max_concurrent_streams",
    ),
    (
        "transport.max_concurrent_streams",
        "transport.quic.max_concurrent_streams",
    ),
    (
        "transport.congestion_control",
        "transport.quic.congestion_control",
    ),
    ("transport.idle_timeout", "transport.quic.idle_timeout"),
];

/// Keys that may be written as a bool standing for `KEY.enabled`.
const BOOL_SHORTHANDS: [&str; 2] = ["runtime.cpu_affinity", "messaging.priority_routing"];

/// Rewrite a layer into canonical keys, so that layers merge key by key.
fn fold_aliases(layer: &mut Layer) -> Result<(), ProfileError> {
    let mut folded_from: Vec<&str> = Vec::new();
    for (alias, canonical) in KEY_ALIASES {
        let Some(value) = remove_path(&mut layer.tree, alias) else {
            continue;
        };
        let alias_location = layer.locations.get(alias).cloned();
        if let Some(existing) = get_path(&layer.tree, canonical) {
            if *existing != value {
                // Name the spelling the profile used: an earlier alias
                // (`max_streams`) may have put the canonical key there.
                let other = KEY_ALIASES
                    .iter()
                    .take_while(|(earlier, _)| *earlier != alias)
                    .find(|(earlier, target)| *target == canonical && folded_from.contains(earlier))
                    .map_or(canonical, |(earlier, _)| *earlier);
                return Err(ProfileError::new(
                    ProfileErrorKind::Contradiction,
                    format!("sets {value} while `{other}` in the same profile sets {existing}"),
                )
                .at_key(alias)
                .at_location(alias_location)
                .with_hint(if other == canonical {
                    format!("`{alias}` is another spelling of `{canonical}`; keep one")
                } else {
                    format!("`{alias}` and `{other}` both spell `{canonical}`; keep one")
                }));
            }
        }
        folded_from.push(alias);
        insert_path(&mut layer.tree, canonical, value);
        if let Some(location) = layer.locations.remove(alias) {
            layer.locations.insert(canonical.to_owned(), location);
        }
    }
    for key in BOOL_SHORTHANDS {
        if let Some(Value::Bool(enabled)) = get_path(&layer.tree, key).cloned() {
            let mut block = Map::new();
            block.insert("enabled".to_owned(), Value::Bool(enabled));
            insert_path(&mut layer.tree, key, Value::Object(block));
            if let Some(location) = layer.locations.get(key).cloned() {
                layer.locations.insert(format!("{key}.enabled"), location);
            }
        }
    }
    Ok(())
}

fn get_path<'a>(tree: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(tree, |node, key| node.as_object()?.get(key))
}

fn remove_path(tree: &mut Value, path: &str) -> Option<Value> {
    let (parent, last) = match path.rsplit_once('.') {
        Some((parent, last)) => (
            parent
                .split('.')
                .try_fold(tree, |node, key| node.as_object_mut()?.get_mut(key))?,
            last,
        ),
        None => (tree, path),
    };
    parent.as_object_mut()?.remove(last)
}

fn insert_path(tree: &mut Value, path: &str, value: Value) {
    let mut node = tree;
    let mut keys = path.split('.').peekable();
    while let Some(key) = keys.next() {
        if !node.is_object() {
            *node = Value::Object(Map::new());
        }
        let Value::Object(map) = node else {
            unreachable!("made an object just above")
        };
        if keys.peek().is_none() {
            map.insert(key.to_owned(), value);
            return;
        }
        node = map
            .entry(key.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

/// Merge `layer` over `merged`: mappings merge key by key; anything else replaces.
fn merge_layer(merged: &mut Value, locations: &mut BTreeMap<String, SourceLocation>, layer: Layer) {
    fn merge(base: &mut Value, overlay: Value) {
        match (base, overlay) {
            (Value::Object(base), Value::Object(overlay)) => {
                for (key, value) in overlay {
                    match base.get_mut(&key) {
                        Some(existing) => merge(existing, value),
                        None => {
                            base.insert(key, value);
                        }
                    }
                }
            }
            (base, overlay) => *base = overlay,
        }
    }
    merge(merged, layer.tree);
    for key in layer.locations.keys() {
        // A replaced list forgets where the old items were written.
        let item_prefix = format!("{key}[");
        locations.retain(|existing, _| !existing.starts_with(&item_prefix));
    }
    locations.extend(layer.locations);
}

/// Parse `key.path=value` into a one-key layer. The value is read as YAML, so
/// `true`, `8`, `500ms` and `[0, 1]` mean what they would in a file.
fn parse_override(assignment: &str) -> Result<Layer, ProfileError> {
    let bad = |message: &str| {
        ProfileError::new(
            ProfileErrorKind::BadOverride,
            format!("`--set {assignment}`: {message}"),
        )
        .with_hint("write --set section.key=value, for example --set runtime.worker_threads=4")
    };
    let (key, raw_value) = assignment
        .split_once('=')
        .ok_or_else(|| bad("missing `=`"))?;
    let key = key.trim();
    let valid_segment = |segment: &str| {
        !segment.is_empty()
            && segment
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if !key.split('.').all(valid_segment) {
        return Err(bad("the key must be dot-separated names"));
    }
    if raw_value.trim().is_empty() {
        return Err(bad("missing value after `=`"));
    }
    let value: Value =
        serde_saphyr::from_str(raw_value).unwrap_or_else(|_| Value::String(raw_value.to_owned()));
    // Not null (`~`, `null`): on a key that takes text that is a mistake
    // to report, not a name to take.
    let scalar_text =
        matches!(value, Value::Number(_) | Value::Bool(_)).then(|| raw_value.trim().to_owned());
    let location = SourceLocation {
        source: format!("--set {assignment}"),
        line: None,
        column: None,
    };
    // The key and every key inside a mapping value: each of them is now
    // this override's, not whichever earlier layer wrote it.
    let mut locations = BTreeMap::new();
    locate_value(key, &value, &location, &mut locations);
    let mut tree = Value::Object(Map::new());
    insert_path(&mut tree, key, value);
    let mut layer = Layer {
        tree,
        locations,
        scalar_text,
    };
    fold_aliases(&mut layer)?;
    Ok(layer)
}

/// Record `location` for `key` and for every key under it in `value`.
fn locate_value(
    key: &str,
    value: &Value,
    location: &SourceLocation,
    locations: &mut BTreeMap<String, SourceLocation>,
) {
    locations.insert(key.to_owned(), location.clone());
    if let Value::Object(fields) = value {
        for (field, inner) in fields {
            locate_value(&format!("{key}.{field}"), inner, location, locations);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_located_by_line_and_column() {
        let text = "runtime:\n  max_agents: 5\n  cpu_affinity:\n    # a comment between a key and its block\n    pinned_agents:\n      - agent_id: a\n        cpu_cores: [0, 7]\n";
        let locations = locate_keys("f.yaml", text);
        let at = |key: &str| {
            locations
                .get(key)
                .map(|location| (location.line, location.column))
        };
        assert_eq!(at("runtime.max_agents"), Some((Some(2), Some(3))));
        assert_eq!(
            at("runtime.cpu_affinity.pinned_agents[0].agent_id"),
            Some((Some(6), Some(9)))
        );
        assert_eq!(
            at("runtime.cpu_affinity.pinned_agents[0].cpu_cores[1]"),
            Some((Some(7), Some(24)))
        );
    }

    #[test]
    fn every_builtin_keeps_the_admin_endpoint_off_common_tool_ports() {
        // 9090 is Prometheus's own port; a host that scrapes the engine runs both.
        for name in crate::BUILTIN_NAMES {
            let loaded = load(&[(*name).to_owned()], &[]).expect("loads");
            let listen = loaded.profile.observability.admin.listen;
            assert_eq!(listen.port(), crate::DEFAULT_ADMIN_PORT, "{name}");
            assert!(listen.ip().is_loopback(), "{name}");
        }
    }

    #[test]
    fn an_unwritten_keep_alive_fits_under_a_short_idle_timeout_and_a_written_one_is_judged() {
        let directory = tempfile::tempdir().expect("temp dir");
        let path = directory.path().join("guide.yaml");
        // The performance tuning guide's low-latency block sets the idle
        // timeout and no keep-alive.
        std::fs::write(&path, "transport:\n  type: quic\n  idle_timeout: 100ms\n").expect("write");
        let file = path.to_str().expect("utf-8").to_owned();
        let loaded = load(std::slice::from_ref(&file), &[]).expect("loads");
        let quic = &loaded.profile.transport.quic;
        assert_eq!(quic.idle_timeout, HumanDuration::from_millis(100));
        assert_eq!(quic.keep_alive_interval, HumanDuration::from_micros(33_333));
        // From --set too; a long idle timeout keeps the default keep-alive.
        let set = load(&[], &["transport.idle_timeout=60ms".to_owned()]).expect("loads");
        assert_eq!(
            set.profile.transport.quic.keep_alive_interval,
            HumanDuration::from_micros(20_000)
        );
        let default = load(&[], &[]).expect("loads");
        assert_eq!(
            default.profile.transport.quic.keep_alive_interval,
            HumanDuration::from_secs(30)
        );
        // Written, it is the user's, and still refused when it cannot work.
        let error = load(
            &[file],
            &["transport.quic.keep_alive_interval=1s".to_owned()],
        )
        .expect_err("refused");
        assert!(error.to_string().contains("keep_alive_interval"), "{error}");
    }

    #[test]
    fn later_layers_win_key_by_key() {
        let loaded =
            load(&["low-latency".to_owned(), "cluster-large".to_owned()], &[]).expect("loads");
        let cluster = &loaded.profile.coordination.cluster;
        assert_eq!(
            cluster.probe_interval.get().as_secs(),
            2,
            "from cluster-large"
        );
        assert_eq!(
            loaded.profile.messaging.batch_size, 1,
            "from low-latency, untouched by the overlay"
        );
        let location = loaded
            .location_of("coordination.cluster.probe_interval")
            .expect("written");
        assert_eq!(location.source, "built-in profile cluster-large");
    }

    #[test]
    fn set_overrides_fold_shorthands() {
        let loaded = load(
            &["low-latency".to_owned()],
            &[
                "runtime.cpu_affinity=false".to_owned(),
                "transport.max_streams=70".to_owned(),
            ],
        )
        .expect("loads");
        assert!(!loaded.profile.runtime.cpu_affinity.enabled);
        assert_eq!(loaded.profile.transport.quic.max_concurrent_streams, 70);
        assert_eq!(
            loaded.profile.transport.max_streams, None,
            "aliases never stay set"
        );
    }

    /// A rule between two keys that fails on a default points at the key
    /// that was written, with its source, not at the default's section.
    #[test]
    fn a_violation_on_a_default_points_at_the_written_key_it_names() {
        let refused = load(&[], &["runtime.wasm.memory_pooling=false".to_owned()])
            .expect_err("stack pooling needs memory pooling")
            .to_string();
        assert!(
            refused.contains("--set runtime.wasm.memory_pooling=false")
                && refused.contains("runtime.wasm.stack_pooling"),
            "{refused}"
        );
    }

    /// Every handler sliced needs stacks to slice them on.
    #[test]
    fn slicing_every_handler_needs_pooled_stacks() {
        let refused = load(
            &[],
            &[
                "runtime.wasm.direct_quick_handlers=false".to_owned(),
                "runtime.wasm.stack_pooling=false".to_owned(),
            ],
        )
        .expect_err("nothing to slice on")
        .to_string();
        assert!(
            refused.contains("runtime.wasm.direct_quick_handlers")
                && refused.contains("stack_pooling"),
            "{refused}"
        );
        let low_latency = load(&["low-latency".to_owned()], &[]).expect("loads");
        assert!(!low_latency.profile.runtime.wasm.direct_quick_handlers);
    }

    /// The layer list is logged and printed: a secret set on the command
    /// line is named, its value not.
    #[test]
    fn a_token_set_on_the_command_line_is_not_shown() {
        let token = "0123456789abcdef0123";
        let loaded =
            load(&[], &[format!("observability.admin.access_token={token}")]).expect("loads");
        let shown = loaded.layers.join(" + ");
        assert!(
            !shown.contains(token) && shown.contains("observability.admin.access_token=(hidden)"),
            "{shown}"
        );
    }

    #[test]
    fn queue_bytes_must_take_the_largest_message() {
        let refused = load(&[], &["messaging.queue_bytes=1KB".to_owned()])
            .expect_err("below one message")
            .to_string();
        assert!(
            refused.contains("messaging.queue_bytes") && refused.contains("max_upload_size"),
            "{refused}"
        );
        assert!(load(&[], &["messaging.queue_bytes=64MB".to_owned()]).is_ok());
    }

    #[test]
    fn suggestions_pick_the_nearest_key() {
        assert_eq!(
            suggest_key(
                "unknown field `gosip_fanout`, expected one of gossip_interval, gossip_fanout"
            ),
            Some("gossip_fanout".to_owned())
        );
        assert_eq!(
            suggest_key("unknown field `zzzzzzzz`, expected one of gossip_interval, gossip_fanout"),
            None
        );
    }
}
