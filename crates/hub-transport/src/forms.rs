//! The three forms of every call of the host and of a peer, written once: the blocking form
//! (`recv`), the `try_` form (`try_recv`) and the `_timeout` form (`recv_timeout`) are each the
//! call's `*_until` form with a [`Deadline`] (never, now, or after the timeout), its error seen
//! as that form reports it. The facades (`host`, `peer`) only say what their `*_until` form is.
//!
//! "Wait forever" is a loop over the `*_until` form with no deadline: a deadline that never
//! passes is never reported, and would mean waiting on (for a send of a loan, with the loan it
//! gave back). Everything here is generic and inlined: no allocation and no dynamic dispatch
//! on the way of a message.

use std::time::Duration;

use crate::error::{
    LoanError, LoanTimeoutError, RecvError, RecvTimeoutError, SendCopyError, SendCopyTimeoutError,
    SendError, SendTimeoutError, TryLoanError, TryRecvError, TrySendCopyError, TrySendError,
};
use crate::frame::Loan;
use crate::link::Deadline;

/// The error of a call's `*_until` form: the blocking form's failure, or the deadline passed,
/// with what to try again with (`A`: a send of a loan gets the loan back, the others `()`).
pub(crate) trait Until<A>: Sized {
    /// What the blocking form fails with.
    type Failed;
    /// What the `_timeout` form fails with.
    type Timeout;
    /// `Ok`: the deadline passed, with what to try again with; `Err`: the blocking form's
    /// failure.
    fn expired(self) -> Result<A, Self::Failed>;
    /// This error as the `_timeout` form reports it.
    fn into_timeout(self) -> Self::Timeout;
}

/// The blocking form: `until` with no deadline, from `arg`.
#[inline]
pub(crate) fn forever<A, T, E: Until<A>>(
    mut arg: A,
    mut until: impl FnMut(A, Deadline) -> Result<T, E>,
) -> Result<T, E::Failed> {
    loop {
        match until(arg, Deadline::Never) {
            Ok(value) => return Ok(value),
            // No deadline passes: not reached, and would mean waiting on.
            Err(error) => arg = error.expired()?,
        }
    }
}

/// The `_timeout` form: `until` with a deadline `timeout` from now.
#[inline]
pub(crate) fn within<A, T, E: Until<A>>(
    timeout: Duration,
    until: impl FnOnce(Deadline) -> Result<T, E>,
) -> Result<T, E::Timeout> {
    until(Deadline::after(timeout)).map_err(E::into_timeout)
}

/// The `try_` form of a send of a loan, from the send that gives the loan back when the ring
/// is full (`Ok(Some(loan))`).
#[inline]
pub(crate) fn try_send_loan(sent: Result<Option<Loan>, SendError>) -> Result<(), TrySendError> {
    match sent {
        Ok(None) => Ok(()),
        Ok(Some(loan)) => Err(TrySendError::Full(loan)),
        Err(error) => Err(TrySendError::Failed(error)),
    }
}

/// The `try_` form of a receive, from its `*_until` form with [`Deadline::Now`].
#[inline]
pub(crate) fn try_recv<T>(received: Result<T, RecvTimeoutError>) -> Result<T, TryRecvError> {
    received.map_err(|error| match error {
        RecvTimeoutError::Timeout => TryRecvError::Empty,
        RecvTimeoutError::Failed(error) => TryRecvError::Failed(error),
    })
}

impl Until<()> for TryLoanError {
    type Failed = LoanError;
    type Timeout = LoanTimeoutError;

    #[inline]
    fn expired(self) -> Result<(), LoanError> {
        match self {
            TryLoanError::NoFreeSlots { .. } => Ok(()),
            TryLoanError::Failed(error) => Err(error),
        }
    }

    #[inline]
    fn into_timeout(self) -> LoanTimeoutError {
        match self {
            TryLoanError::NoFreeSlots { .. } => LoanTimeoutError::Timeout,
            TryLoanError::Failed(error) => LoanTimeoutError::Failed(error),
        }
    }
}

impl Until<Loan> for SendTimeoutError {
    type Failed = SendError;
    type Timeout = SendTimeoutError;

    #[inline]
    fn expired(self) -> Result<Loan, SendError> {
        match self {
            SendTimeoutError::Timeout(back) => Ok(back),
            SendTimeoutError::Failed(error) => Err(error),
        }
    }

    #[inline]
    fn into_timeout(self) -> SendTimeoutError {
        self
    }
}

impl Until<()> for TrySendCopyError {
    type Failed = SendCopyError;
    type Timeout = SendCopyTimeoutError;

    #[inline]
    fn expired(self) -> Result<(), SendCopyError> {
        match self {
            TrySendCopyError::Full | TrySendCopyError::NoFreeSlots { .. } => Ok(()),
            TrySendCopyError::Failed(error) => Err(error),
        }
    }

    #[inline]
    fn into_timeout(self) -> SendCopyTimeoutError {
        match self {
            TrySendCopyError::Failed(error) => SendCopyTimeoutError::Failed(error),
            TrySendCopyError::Full | TrySendCopyError::NoFreeSlots { .. } => {
                SendCopyTimeoutError::Timeout
            }
        }
    }
}

impl Until<()> for RecvTimeoutError {
    type Failed = RecvError;
    type Timeout = RecvTimeoutError;

    #[inline]
    fn expired(self) -> Result<(), RecvError> {
        match self {
            RecvTimeoutError::Timeout => Ok(()),
            RecvTimeoutError::Failed(error) => Err(error),
        }
    }

    #[inline]
    fn into_timeout(self) -> RecvTimeoutError {
        self
    }
}
