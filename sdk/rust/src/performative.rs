//! The eleven FIPA performatives of ABI v1 and their codes.

/// What a message means: the ABI's performative, by code (`docs/agent-abi.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum Performative {
    /// Ask the receiver to perform an action (0).
    Request = 0,
    /// Tell the receiver a fact; also the usual answer (1).
    Inform = 1,
    /// Ask whether a proposition holds (2).
    QueryIf = 2,
    /// Ask for the object a reference denotes (3).
    QueryRef = 3,
    /// Offer to act under conditions (4).
    Propose = 4,
    /// Accept a proposal (5).
    AcceptProposal = 5,
    /// Reject a proposal (6).
    RejectProposal = 6,
    /// Agree to perform a requested action (7).
    Agree = 7,
    /// Refuse to perform a requested action (8).
    Refuse = 8,
    /// An action failed; the engine's own failures carry `caxton:…` text (9).
    Failure = 9,
    /// The receiver did not understand the message (10).
    NotUnderstood = 10,
}

impl Performative {
    /// Every performative, in code order.
    pub const ALL: [Performative; 11] = [
        Performative::Request,
        Performative::Inform,
        Performative::QueryIf,
        Performative::QueryRef,
        Performative::Propose,
        Performative::AcceptProposal,
        Performative::RejectProposal,
        Performative::Agree,
        Performative::Refuse,
        Performative::Failure,
        Performative::NotUnderstood,
    ];

    /// The ABI code.
    ///
    /// ```
    /// assert_eq!(caxton_agent::Performative::Inform.code(), 1);
    /// ```
    pub const fn code(self) -> i32 {
        self as i32
    }

    /// The performative of an ABI code, if it is one.
    ///
    /// ```
    /// use caxton_agent::Performative;
    /// assert_eq!(Performative::from_code(8), Some(Performative::Refuse));
    /// assert_eq!(Performative::from_code(11), None);
    /// ```
    pub fn from_code(code: i32) -> Option<Performative> {
        usize::try_from(code)
            .ok()
            .and_then(|index| Self::ALL.get(index).copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_nothing_else_decodes() {
        for (index, performative) in Performative::ALL.iter().enumerate() {
            assert_eq!(performative.code(), index as i32);
            assert_eq!(Performative::from_code(index as i32), Some(*performative));
        }
        assert_eq!(Performative::from_code(11), None);
        assert_eq!(Performative::from_code(-1), None);
    }
}
