//! The one table of languages the daemon runs from source (`/run_code`, and `/v1/run` with
//! `code`): where the source goes, how it is compiled and run, and which host toolchain it
//! needs. A language whose toolchain is missing on this host is refused with a message that
//! says so.

use std::path::Path;

/// How one language is built and run. Paths are host paths that are also visible inside
/// (every toolchain here lives under `/usr`, which instances bind read-only).
#[derive(Debug)]
pub(crate) struct Language {
    /// The name clients send (SandboxFusion's names).
    pub(crate) name: &'static str,
    /// The file the code is written to, in the work dir.
    pub(crate) source: &'static str,
    /// The compile step's argv, run in the work dir, if any.
    pub(crate) compile: Option<&'static [&'static str]>,
    /// The run step's argv; `PYTHON` stands for the sandbox's Python interpreter.
    pub(crate) run: &'static [&'static str],
    /// Host files that must exist for this language to be offered.
    pub(crate) needs: &'static [&'static str],
    /// Extra environment of both steps.
    pub(crate) env: &'static [(&'static str, &'static str)],
}

/// Stands for the sandbox's resolved Python interpreter in `Language::run`.
pub(crate) const PYTHON: &str = "{python}";

pub(crate) const LANGUAGES: &[Language] = &[
    Language {
        name: "python",
        source: "main.py",
        compile: None,
        run: &[PYTHON, "main.py"],
        needs: &[],
        env: &[],
    },
    Language {
        name: "bash",
        source: "main.sh",
        compile: None,
        run: &["/bin/bash", "main.sh"],
        needs: &["/bin/bash"],
        env: &[],
    },
    Language {
        name: "cpp",
        source: "main.cpp",
        compile: Some(&[
            "/usr/bin/g++",
            "-O2",
            "-std=c++17",
            "-o",
            "main",
            "main.cpp",
        ]),
        run: &["./main"],
        needs: &["/usr/bin/g++"],
        env: &[],
    },
    Language {
        name: "nodejs",
        source: "main.js",
        compile: None,
        run: &["/usr/bin/node", "main.js"],
        needs: &["/usr/bin/node"],
        env: &[],
    },
    Language {
        name: "go",
        source: "main.go",
        compile: Some(&["/usr/bin/go", "build", "-o", "main", "main.go"]),
        run: &["./main"],
        needs: &["/usr/bin/go"],
        env: &[("GOCACHE", "/tmp/go-cache"), ("GOPATH", "/tmp/go")],
    },
    Language {
        name: "rust",
        source: "main.rs",
        compile: Some(&["/usr/bin/rustc", "-O", "-o", "main", "main.rs"]),
        run: &["./main"],
        needs: &["/usr/bin/rustc"],
        env: &[],
    },
    Language {
        name: "java",
        source: "Main.java",
        compile: Some(&["/usr/bin/javac", "-d", ".", "Main.java"]),
        run: &["/usr/bin/java", "-cp", ".", "Main"],
        needs: &["/usr/bin/javac", "/usr/bin/java"],
        env: &[],
    },
    Language {
        name: "perl",
        source: "main.pl",
        compile: None,
        run: &["/usr/bin/perl", "main.pl"],
        needs: &["/usr/bin/perl"],
        env: &[],
    },
    Language {
        name: "ruby",
        source: "main.rb",
        compile: None,
        run: &["/usr/bin/ruby", "main.rb"],
        needs: &["/usr/bin/ruby"],
        env: &[],
    },
    Language {
        name: "php",
        source: "main.php",
        compile: None,
        run: &["/usr/bin/php", "main.php"],
        needs: &["/usr/bin/php"],
        env: &[],
    },
    Language {
        name: "lua",
        source: "main.lua",
        compile: None,
        run: &["/usr/bin/lua", "main.lua"],
        needs: &["/usr/bin/lua"],
        env: &[],
    },
];

/// The file stem a session's code goes under instead of `main`: a session's work dir keeps the
/// client's files across runs, and running code must not overwrite one called `main.py` (or a
/// program called `main`). One-shot runs keep SandboxFusion's `main` names.
pub(crate) const SESSION_STEM: &str = "rsandbox_cell";

impl Language {
    /// The source file's name and the compile and run argvs, with the stem `main` (the source
    /// `main.EXT`, the program `main` or `./main`) replaced by `stem` when given. Java keeps
    /// `Main`: the class name must match the file's.
    pub(crate) fn names(&self, stem: Option<&str>) -> (String, Option<Vec<String>>, Vec<String>) {
        let name = |arg: &&str| -> String {
            match stem {
                Some(stem) if *arg == "main" => stem.to_string(),
                Some(stem) if *arg == "./main" => format!("./{stem}"),
                Some(stem) if arg.starts_with("main.") => format!("{stem}{}", &arg[4..]),
                _ => arg.to_string(),
            }
        };
        (
            name(&self.source),
            self.compile.map(|c| c.iter().map(name).collect()),
            self.run.iter().map(name).collect(),
        )
    }
}

/// Why a language cannot be run here; the text is the client's message.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LangError {
    #[error("language {name:?} is not supported by rsandbox; available on this host: {}", .available.join(", "))]
    Unknown {
        name: String,
        available: Vec<&'static str>,
    },
    #[error("language {name:?} needs {missing}, which this host does not have; available on this host: {}", .available.join(", "))]
    Missing {
        name: String,
        missing: &'static str,
        available: Vec<&'static str>,
    },
}

/// Looks a language up (unknown, or no toolchain here: an error for the client).
pub(crate) fn find(name: &str) -> Result<&'static Language, LangError> {
    let Some(lang) = LANGUAGES.iter().find(|l| l.name == name) else {
        return Err(LangError::Unknown {
            name: name.to_string(),
            available: available(),
        });
    };
    if let Some(missing) = lang.needs.iter().find(|p| !Path::new(p).exists()) {
        return Err(LangError::Missing {
            name: name.to_string(),
            missing,
            available: available(),
        });
    }
    Ok(lang)
}

/// The names of the languages whose toolchain this host has.
pub(crate) fn available() -> Vec<&'static str> {
    LANGUAGES
        .iter()
        .filter(|l| l.needs.iter().all(|p| Path::new(p).exists()))
        .map(|l| l.name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_python_and_bash_are_always_there() {
        let mut names: Vec<_> = LANGUAGES.iter().map(|l| l.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), LANGUAGES.len());
        assert!(find("python").is_ok() && find("bash").is_ok());
        let e = find("cobol").unwrap_err().to_string();
        assert!(e.contains("not supported") && e.contains("python"), "{e}");
    }

    #[test]
    fn a_session_stem_renames_main_everywhere_but_java() {
        let by = |n: &str| LANGUAGES.iter().find(|l| l.name == n).unwrap();
        let (src, compile, run) = by("cpp").names(Some("cell"));
        assert_eq!(src, "cell.cpp");
        assert_eq!(
            compile.unwrap(),
            [
                "/usr/bin/g++",
                "-O2",
                "-std=c++17",
                "-o",
                "cell",
                "cell.cpp"
            ]
        );
        assert_eq!(run, ["./cell"]);
        assert_eq!(by("python").names(Some("cell")).2, [PYTHON, "cell.py"]);
        assert_eq!(by("python").names(None).0, "main.py");
        let (src, compile, run) = by("java").names(Some("cell"));
        assert_eq!(
            (src.as_str(), run.last().unwrap().as_str()),
            ("Main.java", "Main")
        );
        assert!(compile.unwrap().iter().any(|a| a == "Main.java"));
    }
}
