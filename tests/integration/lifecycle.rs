//! Integration tests: lifecycle.
use crate::util;
#[test] fn placeholder() { let _g = util::shared(); }
