//! Host error codes as one Rust error type, and the failure codes a handler
//! returns to the engine.

use core::fmt;

/// Called outside `caxton_handle` (or outside `wasm32`: there is no host).
pub(crate) const NO_MESSAGE: i32 = -1;
const OUT_OF_BOUNDS: i32 = -2;
const TOO_LARGE: i32 = -3;
const OUTBOX_FULL: i32 = -4;
const BAD_PERFORMATIVE: i32 = -5;
const UNKNOWN_RECEIVER: i32 = -6;
const BAD_UTF8: i32 = -7;
const NO_SENDER: i32 = -8;
pub(crate) const NOT_FOUND: i32 = -9;
const STATE_FULL: i32 = -10;

/// What went wrong, in a host call or in a handler.
///
/// Returned from [`Agent::handle`](crate::Agent::handle), an error fails the
/// message with [`Error::code`]: the sender reads `caxton:agent-failed:CODE`.
/// Host errors keep their ABI number as a positive code (1–10), so
/// `agent-failed:6` means a send named an unknown agent; codes 20–29 are the
/// SDK's own; a handler's own codes ([`Error::Failed`]) should start at 100.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// A host function was called outside a handler (code 1).
    NoMessage,
    /// A pointer and length outside the agent's memory (code 2).
    OutOfBounds,
    /// Content over 1 MiB, a name over 256 bytes, a key over 256 bytes or a
    /// value over 64 KiB (code 3).
    TooLarge,
    /// More than 1,024 sends, replies and forwards together in one handler
    /// call, or 1,024 open tickets (code 4).
    OutboxFull,
    /// A performative code the host does not know (code 5).
    BadPerformative,
    /// No deployed agent has the name a send gave (code 6).
    UnknownReceiver,
    /// A name that is not UTF-8 (code 7).
    BadUtf8,
    /// A ticket that is unknown or already used (code 8).
    NoSender,
    /// The agent already holds 4,096 state keys, or the value would take its
    /// state past its memory limit (code 10).
    StateFull,
    /// A host code this SDK does not know (a newer host), kept as is.
    Host(i32),
    /// Content or a state value that does not decode as the type asked for
    /// (code 20); the text says why.
    Decode(alloc::string::String),
    /// A value that cannot be encoded (code 21).
    Encode(alloc::string::String),
    /// The handler's own failure code (use 100 and up); a zero or negative
    /// code is reported as 100.
    Failed(i32),
}

impl Error {
    /// The code `caxton_handle` returns for this error (never 0).
    ///
    /// ```
    /// use caxton_agent::Error;
    /// assert_eq!(Error::UnknownReceiver.code(), 6);
    /// assert_eq!(Error::Failed(404).code(), 404);
    /// ```
    pub fn code(&self) -> i32 {
        match self {
            Error::NoMessage => 1,
            Error::OutOfBounds => 2,
            Error::TooLarge => 3,
            Error::OutboxFull => 4,
            Error::BadPerformative => 5,
            Error::UnknownReceiver => 6,
            Error::BadUtf8 => 7,
            Error::NoSender => 8,
            Error::StateFull => 10,
            Error::Host(code) => code.checked_neg().filter(|code| *code > 0).unwrap_or(99),
            Error::Decode(_) => 20,
            Error::Encode(_) => 21,
            Error::Failed(code) if *code > 0 => *code,
            Error::Failed(_) => 100,
        }
    }

    /// The error a negative host result stands for. `NOT_FOUND` is not one
    /// of them: the state functions turn it into `None`.
    pub(crate) fn from_host(code: i32) -> Error {
        match code {
            NO_MESSAGE => Error::NoMessage,
            OUT_OF_BOUNDS => Error::OutOfBounds,
            TOO_LARGE => Error::TooLarge,
            OUTBOX_FULL => Error::OutboxFull,
            BAD_PERFORMATIVE => Error::BadPerformative,
            UNKNOWN_RECEIVER => Error::UnknownReceiver,
            BAD_UTF8 => Error::BadUtf8,
            NO_SENDER => Error::NoSender,
            STATE_FULL => Error::StateFull,
            other => Error::Host(other),
        }
    }

    /// A host result: its value when not negative, the error otherwise.
    pub(crate) fn check(result: i32) -> Result<i32, Error> {
        if result < 0 {
            Err(Error::from_host(result))
        } else {
            Ok(result)
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoMessage => f.write_str("host function called outside a handler"),
            Error::OutOfBounds => f.write_str("pointer outside the agent's memory"),
            Error::TooLarge => f.write_str("content, name, key or value too large"),
            Error::OutboxFull => f.write_str("too many sends or open tickets"),
            Error::BadPerformative => f.write_str("unknown performative"),
            Error::UnknownReceiver => f.write_str("no agent of that name is deployed"),
            Error::BadUtf8 => f.write_str("name is not UTF-8"),
            Error::NoSender => f.write_str("ticket unknown or already used"),
            Error::StateFull => {
                f.write_str("state holds the most keys or bytes the agent may have")
            }
            Error::Host(code) => write!(f, "host error {code}"),
            Error::Decode(why) => write!(f, "cannot decode: {why}"),
            Error::Encode(why) => write!(f, "cannot encode: {why}"),
            Error::Failed(code) => write!(f, "handler failed with code {code}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_codes_become_their_positive_failure_codes() {
        for code in -10..=-1 {
            if code == NOT_FOUND {
                continue;
            }
            assert_eq!(Error::from_host(code).code(), -code, "host code {code}");
        }
        assert_eq!(Error::from_host(-42), Error::Host(-42));
        assert_eq!(Error::Host(-42).code(), 42);
        assert_eq!(
            Error::Host(7).code(),
            99,
            "a positive host code is not an error code"
        );
    }

    #[test]
    fn a_failure_code_is_never_zero() {
        assert_eq!(Error::Failed(0).code(), 100);
        assert_eq!(Error::Failed(-5).code(), 100);
        assert_eq!(Error::Failed(123).code(), 123);
        assert_eq!(Error::Decode("x".into()).code(), 20);
        assert_eq!(Error::check(3), Ok(3));
        assert_eq!(Error::check(UNKNOWN_RECEIVER), Err(Error::UnknownReceiver));
    }
}
