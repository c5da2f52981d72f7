//! Placeholder: the wake-latency bench comes next.
fn main() {}
