//! Integration tests: io.
use crate::util;
#[test] fn placeholder() { let _g = util::shared(); }
