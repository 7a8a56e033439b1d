//! The one error type of profile loading: a cause, and where it is.

use std::fmt;

/// Where in the user's input a key was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceLocation {
    /// A file path, `built-in profile NAME`, or `--set`.
    pub source: String,
    /// 1-based line, when the source is a file.
    pub line: Option<usize>,
    /// 1-based column, when the source is a file.
    pub column: Option<usize>,
}

impl fmt::Display for SourceLocation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.source)?;
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(formatter, ":{line}:{column}")?;
        }
        Ok(())
    }
}

/// What class of problem a [`ProfileError`] is, for callers that branch on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProfileErrorKind {
    /// The profile file could not be read.
    Unreadable,
    /// The text is not valid YAML.
    Syntax,
    /// `--profile NAME` names no built-in profile and no file.
    UnknownProfile,
    /// A key the schema does not have.
    UnknownKey,
    /// A value of the wrong type or out of range.
    InvalidValue,
    /// Two keys that cannot hold together.
    Contradiction,
    /// The plan cannot be laid on this machine (reported by placement).
    Placement,
    /// A `--set` argument that is not `key.path=value`.
    BadOverride,
}

/// A profile that cannot be used. Nothing is started when one is returned.
///
/// `Display` is one line: location, key, cause and a hint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileError {
    /// The class of problem.
    pub kind: ProfileErrorKind,
    /// The key path (`coordination.cluster.probe_timeout`), when one key is at fault.
    pub key: Option<String>,
    /// Where that key was written, when known.
    pub location: Option<SourceLocation>,
    /// The cause.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl ProfileError {
    /// An error of `kind` with `message` and nothing else yet.
    pub fn new(kind: ProfileErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            key: None,
            location: None,
            message: message.into(),
            hint: None,
        }
    }

    /// The same error, naming the key at fault.
    pub fn at_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// The same error, with where the key was written.
    pub fn at_location(mut self, location: Option<SourceLocation>) -> Self {
        if location.is_some() {
            self.location = location;
        }
        self
    }

    /// The same error, with advice.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for ProfileError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("profile error: ")?;
        if let Some(location) = &self.location {
            write!(formatter, "{location}: ")?;
        }
        if let Some(key) = &self.key {
            write!(formatter, "`{key}`: ")?;
        }
        formatter.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(formatter, " (hint: {hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ProfileError {}
