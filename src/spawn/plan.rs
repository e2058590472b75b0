//! Writes an `ExecPlan` into the region shared with the reaper (parent side).
//!
//! The region is a `MAP_SHARED` memfd that the reaper maps at `at` (the supervisor's own address
//! when the reaper is its clone, another one when the fork server cloned it): the plan's
//! pointers are written for the reaper's address, so it reads the plan in place, without
//! parsing or allocating. Writers are serialised by the instance's
//! exec lock; the reaper reads only between `OP_EXEC` and its reply.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use std::ptr;

use super::proto::{ExecPlan, Rlimit, MAX_RLIMITS};
use crate::sys::host::SharedRegion;

/// Size of each instance's shared region; bounds argv + environment of one program.
pub const REGION_LEN: usize = 16 << 20;

/// What to start, as the supervisor prepared it.
pub struct ExecSpec<'a> {
    pub argv: &'a [CString],
    pub envp: &'a [CString],
    /// Candidate executable paths, in order.
    pub paths: &'a [CString],
    pub cwd: &'a CStr,
    pub uid: u32,
    pub gid: u32,
    pub clear_groups: bool,
    pub rlimits: &'a [Rlimit],
    /// The seccomp program, if any.
    pub filter: Option<&'a [libc::sock_filter]>,
    /// The filter notifies on violations: hand the listener to the supervisor.
    pub notify: bool,
    pub cgroup_mode: u32,
    /// CPUs the program may run on (empty: unchanged).
    pub cpus: &'a [usize],
    /// fds 0-2 are a pty slave, to be made the controlling terminal.
    pub tty: bool,
}

/// The plan did not fit in the region.
#[derive(Debug)]
pub struct TooLarge {
    pub needed: usize,
}

struct Bump<'r> {
    region: &'r SharedRegion,
    /// The region's address in the reaper.
    at: usize,
    off: usize,
    needed: usize,
}

impl Bump<'_> {
    fn alloc(&mut self, len: usize, align: usize) -> *mut u8 {
        let start = (self.off + align - 1) & !(align - 1);
        self.needed = start + len;
        if start + len > self.region.len() {
            self.off = self.region.len();
            return ptr::null_mut();
        }
        self.off = start + len;
        // SAFETY: start + len <= region length, so the pointer stays inside the mapping.
        unsafe { self.region.as_ptr().add(start) }
    }

    /// Where `p` (ours) is in the reaper; null stays null.
    fn theirs<T>(&self, p: *const T) -> *const T {
        if p.is_null() {
            return p;
        }
        (p as usize - self.region.as_ptr() as usize + self.at) as *const T
    }

    fn cstr(&mut self, s: &CStr) -> *const c_char {
        let b = s.to_bytes_with_nul();
        let p = self.alloc(b.len(), 1);
        if !p.is_null() {
            // SAFETY: p has room for b.len() bytes (checked by alloc); the regions are disjoint.
            unsafe { ptr::copy_nonoverlapping(b.as_ptr(), p, b.len()) };
        }
        self.theirs(p as *const c_char)
    }

    fn array(&mut self, items: &[CString]) -> *const *const c_char {
        let ptrs: Vec<*const c_char> = items.iter().map(|s| self.cstr(s)).collect();
        let n = ptrs.len() + 1;
        let p = self.alloc(
            n * std::mem::size_of::<*const c_char>(),
            std::mem::align_of::<*const c_char>(),
        ) as *mut *const c_char;
        if !p.is_null() {
            // SAFETY: p is aligned and has room for n pointers (checked by alloc).
            unsafe {
                ptr::copy_nonoverlapping(ptrs.as_ptr(), p, ptrs.len());
                *p.add(ptrs.len()) = ptr::null();
            }
        }
        self.theirs(p)
    }
}

/// Lays `spec` out in `region`, which the reaper maps at `at`; the caller must hold the
/// instance's exec lock.
pub fn write(region: &SharedRegion, at: usize, spec: &ExecSpec<'_>) -> Result<(), TooLarge> {
    assert!(spec.rlimits.len() <= MAX_RLIMITS);
    let mut bump = Bump {
        region,
        at,
        off: std::mem::size_of::<ExecPlan>(),
        needed: 0,
    };
    let argv = bump.array(spec.argv);
    let envp = bump.array(spec.envp);
    let paths = bump.array(spec.paths);
    let cwd = bump.cstr(spec.cwd);
    let (filter, filter_len) = match spec.filter {
        Some(prog) => {
            let p = bump.alloc(
                std::mem::size_of_val(prog),
                std::mem::align_of::<libc::sock_filter>(),
            ) as *mut libc::sock_filter;
            if !p.is_null() {
                // SAFETY: p is aligned with room for the whole program (checked by alloc).
                unsafe { ptr::copy_nonoverlapping(prog.as_ptr(), p, prog.len()) };
            }
            (
                bump.theirs(p as *const libc::sock_filter),
                prog.len() as u32,
            )
        }
        None => (ptr::null(), 0),
    };
    if bump.off >= region.len()
        || argv.is_null()
        || envp.is_null()
        || paths.is_null()
        || cwd.is_null()
        || (spec.filter.is_some() && filter.is_null())
    {
        let needed = bump.needed.max(
            spec.argv
                .iter()
                .chain(spec.envp)
                .map(|s| s.as_bytes().len() + 9)
                .sum(),
        );
        return Err(TooLarge { needed });
    }
    let mut affinity = [0u64; 16];
    for &c in spec.cpus.iter().filter(|&&c| c < 1024) {
        affinity[c / 64] |= 1 << (c % 64);
    }
    let mut rlimits = [Rlimit::default(); MAX_RLIMITS];
    rlimits[..spec.rlimits.len()].copy_from_slice(spec.rlimits);
    let plan = ExecPlan {
        argv,
        envp,
        paths,
        cwd,
        uid: spec.uid,
        gid: spec.gid,
        clear_groups: spec.clear_groups as u32,
        nrlimits: spec.rlimits.len() as u32,
        rlimits,
        filter,
        filter_len,
        notify: spec.notify as u32,
        cgroup_mode: spec.cgroup_mode,
        affinity,
        affinity_len: if spec.cpus.is_empty() {
            0
        } else {
            std::mem::size_of::<[u64; 16]>() as u32
        },
        tty: spec.tty as u32,
    };
    // SAFETY: the region starts page-aligned and is larger than ExecPlan; no reader runs now.
    unsafe { ptr::write(region.as_ptr() as *mut ExecPlan, plan) };
    Ok(())
}
