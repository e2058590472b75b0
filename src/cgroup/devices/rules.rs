//! The device allow list: which character and block devices an instance may open or mknod,
//! and each rule as a cgroup v1 `devices.allow` line.

/// One allowed character/block device: (kind, major, minor), minor None = any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceRule {
    pub kind: DeviceKind,
    pub major: u32,
    /// `None`: every minor of `major`.
    pub minor: Option<u32>,
    pub read: bool,
    pub write: bool,
    pub mknod: bool,
}

/// Character or block device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    Char,
    /// No rule rsandbox makes grants a block device; the v2 program and v1 entries still
    /// express them, and tests check they stay denied.
    #[cfg_attr(not(test), allow(dead_code))]
    Block,
}

impl DeviceRule {
    /// Read and write of the character device `major:minor`, no mknod.
    pub fn char_rw(major: u32, minor: u32) -> DeviceRule {
        DeviceRule {
            kind: DeviceKind::Char,
            major,
            minor: Some(minor),
            read: true,
            write: true,
            mknod: false,
        }
    }

    /// The rule as a cgroup v1 `devices.allow` line (`c 195:0 rw`).
    pub fn v1_entry(&self) -> String {
        let kind = match self.kind {
            DeviceKind::Char => 'c',
            DeviceKind::Block => 'b',
        };
        let minor = self.minor.map_or("*".to_string(), |m| m.to_string());
        let access: String = [(self.read, 'r'), (self.write, 'w'), (self.mknod, 'm')]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, c)| *c)
            .collect();
        format!("{kind} {}:{minor} {access}", self.major)
    }
}

/// The major of every pty slave (`/dev/pts/N` is 136:N, whatever N).
pub const PTY_SLAVE_MAJOR: u32 = 136;

/// The minimal set: /dev/null (1:3), zero (1:5), full (1:7), random (1:8), urandom (1:9),
/// and the instance's own devpts (its ptmx, 5:2, and its ptys, 136:*), read+write, no mknod.
/// Only the instance's devpts is mounted inside: the host's ptys have the same numbers but no
/// node to open them by.
pub fn minimal() -> Vec<DeviceRule> {
    allow_list(&[])
}

/// An instance's allow list, the one both cgroup versions enforce (v1 `devices.allow`, v2 the
/// program of [`super::program`]): the minimal set plus `extra` (e.g. the GPU nodes it was granted).
pub fn allow_list(extra: &[DeviceRule]) -> Vec<DeviceRule> {
    let mut rules: Vec<DeviceRule> = [3, 5, 7, 8, 9]
        .into_iter()
        .map(|minor| DeviceRule::char_rw(1, minor))
        .collect();
    rules.push(DeviceRule::char_rw(5, 2));
    rules.push(DeviceRule {
        minor: None,
        ..DeviceRule::char_rw(PTY_SLAVE_MAJOR, 0)
    });
    for r in extra {
        if !rules.contains(r) {
            rules.push(*r);
        }
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_entries_name_kind_numbers_and_access() {
        assert_eq!(DeviceRule::char_rw(1, 3).v1_entry(), "c 1:3 rw");
        assert_eq!(minimal()[6].v1_entry(), "c 136:* rw");
        let block = DeviceRule {
            kind: DeviceKind::Block,
            major: 8,
            minor: Some(1),
            read: false,
            write: false,
            mknod: true,
        };
        assert_eq!(block.v1_entry(), "b 8:1 m");
    }

    #[test]
    fn allow_list_adds_what_the_minimal_set_lacks_once() {
        let nvidia = DeviceRule::char_rw(195, 0);
        let rules = allow_list(&[nvidia, DeviceRule::char_rw(1, 9), nvidia]);
        assert_eq!(rules.len(), 8);
        assert_eq!(rules[..7], minimal()[..]);
        assert_eq!(rules[7], nvidia);
    }
}
