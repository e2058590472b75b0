//! Integration tests: cli.
use crate::util;
#[test] fn placeholder() { let _g = util::shared(); }
