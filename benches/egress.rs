//! Egress proxy bench (placeholder).
fn main() {}
