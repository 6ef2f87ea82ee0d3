//! References on the command line: which functions of which modules to evaluate.

use std::path::{Path, PathBuf};

use super::{Error, Project};
use crate::lang::Session;

/// A parsed reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The module part: `./path`, `./...`, `github.com/me/proj/sub`, `…/...`.
    pub module: String,
    /// The function, when one is named.
    pub function: Option<String>,
}

/// One function to call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Absolute path of the module file.
    pub file: PathBuf,
    pub function: String,
}

fn bad(reference: &str, reason: impl Into<String>) -> Error {
    Error::BadReference {
        reference: reference.to_owned(),
        reason: reason.into(),
    }
}

impl Reference {
    /// Parse `module[:function]`.
    pub fn parse(text: &str) -> Result<Reference, Error> {
        let (module, function) = match text.rsplit_once(':') {
            Some((m, f)) => (m, Some(f)),
            None => (text, None),
        };
        if module.is_empty() {
            return Err(bad(
                text,
                "the module part is empty (use `./path:function`)",
            ));
        }
        if let Some(f) = function
            && !crate::lang::loads::is_identifier(f)
        {
            return Err(bad(text, format!("`{f}` is not a function name")));
        }
        if function.is_some() && module.ends_with("...") {
            return Err(bad(
                text,
                "`...` names every module below a directory; it takes no function",
            ));
        }
        Ok(Reference {
            module: module.to_owned(),
            function: function.map(str::to_owned),
        })
    }

    fn is_path(&self) -> bool {
        self.module.starts_with('.') || self.module.starts_with('/')
    }

    /// The functions this reference names, in a deterministic order.
    pub fn targets(
        &self,
        project: &Project,
        cwd: &Path,
        session: &Session,
    ) -> Result<Vec<Target>, Error> {
        let text = match &self.function {
            Some(f) => format!("{}:{f}", self.module),
            None => self.module.clone(),
        };
        let files = if let Some(dir) = self.module.strip_suffix("...") {
            let dir = dir.trim_end_matches('/');
            let dir = if self.is_path() {
                cwd.join(if dir.is_empty() { "." } else { dir })
            } else {
                module_dir(project, dir).ok_or_else(|| {
                    bad(
                        &text,
                        format!("`{dir}` is not inside project `{}`", project.name),
                    )
                })?
            };
            let dir = canonical_inside(&text, project, &dir)?;
            let files = all_modules(&dir)?;
            if files.is_empty() {
                return Err(Error::NoModules {
                    dir: session.display_name(&dir),
                });
            }
            files
        } else if self.is_path() {
            let base = cwd.join(&self.module);
            let file = if self.module.ends_with(".bramble") {
                base
            } else {
                let as_file = base.with_extension("bramble");
                let as_default = base.join("default.bramble");
                if as_file.is_file() && !self.module.ends_with('/') && self.module != "." {
                    as_file
                } else if as_default.is_file() {
                    as_default
                } else {
                    return Err(bad(
                        &text,
                        format!(
                            "neither `{}` nor `{}` exists",
                            as_file.display(),
                            as_default.display()
                        ),
                    ));
                }
            };
            if !file.is_file() {
                return Err(bad(&text, format!("`{}` does not exist", file.display())));
            }
            vec![canonical_inside(&text, project, &file)?]
        } else {
            vec![session.resolve_load(&self.module)?]
        };
        let mut targets = Vec::new();
        for file in files {
            match &self.function {
                Some(f) => targets.push(Target {
                    file,
                    function: f.clone(),
                }),
                None => {
                    let info = session.module_info(&file)?;
                    targets.extend(
                        info.functions
                            .into_iter()
                            .filter(|f| f.entry_point)
                            .map(|f| Target {
                                file: file.clone(),
                                function: f.name,
                            }),
                    );
                }
            }
        }
        Ok(targets)
    }
}

fn module_dir(project: &Project, module: &str) -> Option<PathBuf> {
    if module == project.name {
        return Some(project.root.clone());
    }
    let sub = module.strip_prefix(&format!("{}/", project.name))?;
    Some(project.root.join(sub))
}

fn canonical_inside(text: &str, project: &Project, path: &Path) -> Result<PathBuf, Error> {
    let canonical =
        std::fs::canonicalize(path).map_err(|e| bad(text, format!("`{}`: {e}", path.display())))?;
    if !canonical.starts_with(&project.root) {
        return Err(bad(
            text,
            format!(
                "`{}` is outside the project at `{}`",
                path.display(),
                project.root.display()
            ),
        ));
    }
    Ok(canonical)
}

/// Every `.bramble` file below `dir`, sorted, skipping hidden directories.
pub fn all_modules(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut files = Vec::new();
    let walker = walkdir::WalkDir::new(dir)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
    for entry in walker {
        let entry = entry.map_err(|e| {
            Error::Lang(crate::lang::Error::Walk {
                path: e
                    .path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                message: e.to_string(),
            })
        })?;
        if entry.file_type().is_file() && entry.path().extension().is_some_and(|x| x == "bramble") {
            files.push(entry.into_path());
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references() {
        let r = Reference::parse("./a/b:build").unwrap();
        assert_eq!(r.module, "./a/b");
        assert_eq!(r.function.as_deref(), Some("build"));
        assert_eq!(Reference::parse("./...").unwrap().function, None);
        assert!(Reference::parse(":x").is_err());
        assert!(Reference::parse("./a:1x").is_err());
        assert!(Reference::parse("./...:x").is_err());
        let r = Reference::parse("github.com/me/p/sub:f").unwrap();
        assert_eq!(r.module, "github.com/me/p/sub");
    }
}
