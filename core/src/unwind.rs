//! Catching a panic in the work, so that the flight's other waiters are released at once.
//!
//! With `std`, the work (and the blocking closure) runs under `catch_unwind`, which costs
//! nothing until a panic: the flight is marked panicked, every waiter gets
//! [`Aborted`](crate::Aborted), and the panic is resumed in the caller that ran the work.
//! Without `std` panics cannot be caught: a panic unwinds through the caller's future like a
//! cancellation, so a work-mode flight promotes a follower and a shared flight carries on with
//! the callers that are left.

use crate::handle::Handle;
use crate::table::Table;

#[cfg(feature = "std")]
pub(crate) type Caught = crate::outcome::Payload;
#[cfg(not(feature = "std"))]
pub(crate) type Caught = core::convert::Infallible;

/// Runs `f`, catching a panic where the platform can.
pub(crate) fn catch<R>(f: impl FnOnce() -> R) -> Result<R, Caught> {
    #[cfg(feature = "std")]
    {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
    }
    #[cfg(not(feature = "std"))]
    {
        Ok(f())
    }
}

/// The work panicked in the caller that owns `handle`: release the flight, resume the panic.
pub(crate) fn fail<G: Table, R: core::ops::Deref<Target = G>>(
    handle: &mut Handle<G, R>,
    caught: Caught,
) -> ! {
    #[cfg(feature = "std")]
    {
        handle.fail(caught)
    }
    #[cfg(not(feature = "std"))]
    {
        let _ = handle;
        match caught {}
    }
}

/// A number unique to the calling thread while it lives (0 without `std`).
pub(crate) fn thread_token() -> usize {
    #[cfg(feature = "std")]
    {
        crate::sync::thread_token()
    }
    #[cfg(not(feature = "std"))]
    {
        0
    }
}
