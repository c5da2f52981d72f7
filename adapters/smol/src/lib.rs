//! smol glue for [`coalescer`]: detached work and timeouts (filled in by the adapters issue).

pub use coalescer;
