//! Namespaces and the root: user-namespace id maps, the mount plan as data, the root template.

pub mod mount;
pub mod template;
pub mod user;
