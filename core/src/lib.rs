#![doc = include_str!("../README.md")]
#![cfg_attr(not(feature = "std"), no_std)]
#![cfg_attr(docsrs, feature(doc_cfg))]

extern crate alloc;

mod detached;
mod flight;
mod handle;
#[cfg(feature = "std")]
mod limit;
pub mod mode;
mod observe;
mod outcome;
mod single;
#[cfg(feature = "std")]
mod slot;
mod spawn;
mod start;
mod state;
mod stats;
mod sync;
mod table;
mod timeout;
mod work;

#[cfg(feature = "std")]
mod batch;
#[cfg(feature = "std")]
mod batcher;
#[cfg(feature = "std")]
mod blocking;
#[cfg(feature = "std")]
mod group;

#[cfg(feature = "cache")]
pub mod cache;

#[cfg(feature = "std")]
pub use batcher::{Batcher, DEFAULT_MAX_BATCH, DEFAULT_YIELDS, Timed, Window, Yields};
#[cfg(feature = "std")]
pub use group::{DEFAULT_CAPACITY, DefaultHashBuilder, DetachedGroup, Group, SharedGroup, TryGroup};
#[cfg(feature = "std")]
pub use limit::WhenFull;
pub use outcome::{Aborted, Cause, Error, Outcome};
pub use single::Single;
pub use spawn::{Sleep, Spawn};
pub use stats::Counters;
pub use table::Table;

/// The named futures returned by the async methods, and what their bounds mention.
pub mod futures {
    pub use crate::start::{Start, TryStart};
    pub use crate::timeout::{TimedOut, Timeout};
    pub use crate::work::{TryWork, Work};
    // Batches (issue 14).
    #[cfg(feature = "std")]
    pub use crate::batch::{FetchMany, KeyIndex, Many, TryMany, TryWorkBatch, WorkBatch};
    #[cfg(feature = "std")]
    pub use crate::batcher::{Load, TryLoad, YieldTimes};
}
