//! Integration tests: which interpreter runs (the real /usr/bin/python3 by default, a
//! virtualenv's, a pyenv shim resolved to its real interpreter) and --rootfs system trees.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rsandbox::{Command, Error, Status};

use crate::util;

/// Makes `p` and everything under it readable (and directories traversable) by anyone, so the
/// sandbox's host uid can reach a tempdir created 0700.
fn open_up(p: &Path) {
    let m = std::fs::symlink_metadata(p).unwrap();
    if m.file_type().is_symlink() {
        return;
    }
    let mode = if m.is_dir() || m.permissions().mode() & 0o111 != 0 {
        0o755
    } else {
        0o644
    };
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    if m.is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            open_up(&e.unwrap().path());
        }
    }
}

fn is_elf(p: &Path) -> bool {
    std::fs::read(p)
        .map(|b| b.starts_with(b"\x7fELF"))
        .unwrap_or(false)
}

/// The default interpreter is the real /usr/bin/python3 (an ELF binary), not a shim found on
/// the caller's PATH, and it is the one running inside.
#[test]
fn default_python_is_the_real_usr_bin_python3() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = util::sandbox();
    let code = "import os, sys\n\
                print(sys.executable)\n\
                print(open(os.path.realpath(sys.executable), 'rb').read(4) == b'\\x7fELF')\n\
                print(sys.prefix)\n\
                print('%d.%d' % sys.version_info[:2])";
    let out = util::py(&sb, code);
    assert_eq!(out.status, Status::Ok, "{out:?}");
    let lines: Vec<&str> = out.stdout.as_deref().unwrap().lines().collect();
    assert_eq!(lines[0], "/usr/bin/python3");
    assert_eq!(
        lines[1], "True",
        "sys.executable inside is not an ELF binary"
    );
    assert_eq!(lines[2], "/usr");
    let host = std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        .output()
        .unwrap();
    assert_eq!(lines[3], String::from_utf8_lossy(&host.stdout).trim());
    assert!(is_elf(&std::fs::canonicalize("/usr/bin/python3").unwrap()));
}

/// Creates a virtualenv (without pip, for speed) in `dir`/venv with a package `mypkg`
/// (VALUE = 42) in its site-packages; returns the venv's path.
fn make_venv(dir: &Path) -> PathBuf {
    let venv = dir.join("venv");
    let st = std::process::Command::new("/usr/bin/python3")
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .status()
        .unwrap();
    assert!(st.success(), "python3 -m venv failed");
    let out = std::process::Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ])
        .output()
        .unwrap();
    let site = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    assert!(site.starts_with(&venv), "{}", site.display());
    std::fs::create_dir_all(site.join("mypkg")).unwrap();
    std::fs::write(site.join("mypkg/__init__.py"), "VALUE = 42\n").unwrap();
    open_up(dir);
    venv
}

/// `python(VENV/bin/python)`: the venv's packages import, sys.prefix is the venv, and the
/// venv is bound read-only (writing into it fails with EROFS). The venv lives in a tempdir
/// under /tmp, where users make them.
#[test]
fn virtualenv_python_sees_its_packages_read_only() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let venv = make_venv(dir.path());
    let sb = util::builder()
        .python(venv.join("bin/python"))
        .build()
        .unwrap();
    let code = "import sys, mypkg\n\
                print(mypkg.VALUE)\n\
                print(sys.prefix)\n\
                print(sys.executable)\n\
                try:\n\
                \x20   open(sys.prefix + '/written', 'w')\n\
                \x20   print('writable')\n\
                except OSError as e:\n\
                \x20   import errno; print(errno.errorcode[e.errno])";
    let out = util::py(&sb, code);
    assert_eq!(out.status, Status::Ok, "{out:?}");
    let venv_s = venv.display().to_string();
    assert_eq!(
        out.stdout.as_deref(),
        Some(format!("42\n{venv_s}\n{venv_s}/bin/python\nEROFS\n").as_str())
    );
    assert!(!venv.join("written").exists());
}

/// As root, a pyenv shim (a bash script) resolves to the real interpreter under
/// /root/.pyenv/versions: that is sys.executable inside, and of /root only .pyenv is visible.
#[test]
fn pyenv_shim_resolves_to_the_real_interpreter() {
    let _g = util::shared();
    if !util::require("userns") || !util::require("root") {
        return;
    }
    let shim = Path::new("/root/.pyenv/shims/python3");
    if !shim.exists() {
        eprintln!(
            "SKIP: {} is absent; pyenv shim test not run",
            shim.display()
        );
        return;
    }
    assert!(
        std::fs::read(shim).unwrap().starts_with(b"#!"),
        "the shim is expected to be a script"
    );
    let sb = util::builder().python(shim).build().unwrap();
    let code = "import os, sys\n\
                print(sys.executable)\n\
                print(open(os.path.realpath(sys.executable), 'rb').read(4) == b'\\x7fELF')\n\
                print(sorted(os.listdir('/root')))\n\
                print(os.path.exists('/root/.pyenv/shims'))";
    let out = util::py(&sb, code);
    assert_eq!(out.status, Status::Ok, "{out:?}");
    let lines: Vec<&str> = out.stdout.as_deref().unwrap().lines().collect();
    assert!(
        lines[0].starts_with("/root/.pyenv/versions/"),
        "sys.executable = {}",
        lines[0]
    );
    assert_eq!(
        lines[1], "True",
        "the interpreter run inside is not an ELF binary"
    );
    assert_eq!(lines[2], "['.pyenv']", "/root shows more than .pyenv");
    assert_eq!(
        lines[3], "False",
        "the shims (the rest of .pyenv) are visible"
    );
    // The same interpreter the shim picks on the host.
    let host = std::process::Command::new(shim)
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .unwrap();
    assert_eq!(lines[0], String::from_utf8_lossy(&host.stdout).trim());
}

/// Builds a minimal root filesystem: /bin/sh (dash) and the libraries `ldd` lists, at the same
/// paths and with the same top-level symlinks as the host, plus a marker file.
fn make_rootfs(dir: &Path, marker: &str) {
    let put = |host: &Path| {
        // Place each file at its real (symlink-free) directory, keeping its file name.
        let real_dir = std::fs::canonicalize(host.parent().unwrap()).unwrap();
        let dst = dir
            .join(real_dir.strip_prefix("/").unwrap())
            .join(host.file_name().unwrap());
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(host, &dst).unwrap();
    };
    put(Path::new("/bin/sh"));
    let ldd = std::process::Command::new("ldd")
        .arg("/bin/sh")
        .output()
        .unwrap();
    for line in String::from_utf8(ldd.stdout).unwrap().lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        if let Some(path) = line.split_whitespace().find(|w| w.starts_with('/')) {
            put(Path::new(path));
        }
    }
    for top in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let host = Path::new("/").join(top);
        if let Ok(target) = std::fs::read_link(&host) {
            std::os::unix::fs::symlink(target, dir.join(top)).unwrap();
        }
    }
    std::fs::create_dir_all(dir.join("usr/share")).unwrap();
    std::fs::write(dir.join("usr/share/rootfs-marker"), format!("{marker}\n")).unwrap();
    open_up(dir);
}

/// `/tmp/rsandbox-test-rootfs-UID`, emptied on creation and removed on drop.
struct RootfsDir(PathBuf);

impl RootfsDir {
    fn new() -> RootfsDir {
        use std::os::unix::fs::MetadataExt;
        let uid = std::fs::metadata("/proc/self").unwrap().uid();
        let p = std::env::temp_dir().join(format!("rsandbox-test-rootfs-{uid}"));
        match std::fs::symlink_metadata(&p) {
            Ok(m) => {
                assert!(
                    m.is_dir() && m.uid() == uid,
                    "{} is not our directory",
                    p.display()
                );
                std::fs::remove_dir_all(&p).unwrap();
            }
            Err(e) => assert_eq!(
                e.kind(),
                std::io::ErrorKind::NotFound,
                "{}: {e}",
                p.display()
            ),
        }
        std::fs::create_dir(&p).unwrap();
        RootfsDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for RootfsDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `rootfs(DIR)`: system directories come from DIR, not the host: the marker file is seen,
/// host-only files (python3, coreutils) are absent, and with no python in the tree,
/// Command::python is refused with a clear error.
#[test]
fn rootfs_replaces_the_host_system_dirs() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    // A fixed path per user, rebuilt each run: the engine keeps one template per rootfs path,
    // so a fresh tempdir would leave a new template behind on every run.
    let dir = RootfsDir::new();
    let marker = format!("marker-{}", std::process::id());
    make_rootfs(dir.path(), &marker);
    let sb = util::builder().rootfs(dir.path()).build().unwrap();
    let script = "read line < /usr/share/rootfs-marker; echo $line\n\
                  for f in /usr/bin/python3 /usr/bin/cat /bin/ls /usr/lib/os-release; do [ -e $f ] && echo present $f; done\n\
                  echo end";
    let out = sb
        .run(&Command::new("/bin/sh").args(["-c", script]))
        .unwrap();
    assert_eq!(out.status, Status::Ok, "{out:?}");
    assert_eq!(
        out.stdout.as_deref(),
        Some(format!("{marker}\nend\n").as_str())
    );

    // No python in the rootfs: python commands are refused, not run with the host's.
    match sb.run(&Command::python("print(1)")) {
        Err(Error::Invalid {
            field: "python", ..
        }) => {}
        other => {
            panic!("expected Error::Invalid for python under a rootfs without one, got {other:?}")
        }
    }
    // A program the rootfs lacks is not found (exit code 127 for the CLI).
    match sb.run(&Command::new("cat")) {
        Err(e @ Error::Exec { .. }) => assert_eq!(e.exit_code(), 127, "{e}"),
        other => panic!("expected Error::Exec for cat, got {other:?}"),
    }
}

/// A rootfs without a usr directory is refused when the sandbox is built.
#[test]
fn rootfs_without_usr_is_refused() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    match util::builder().rootfs(dir.path()).build() {
        Err(
            e @ Error::Invalid {
                field: "rootfs", ..
            },
        ) => assert!(e.to_string().contains("no usr"), "{e}"),
        Err(e) => panic!("expected Error::Invalid for rootfs, got {e:?}"),
        Ok(_) => panic!("a rootfs without usr was accepted"),
    }
}
