//! The Starlark values Bramble adds: derivations, file sets and `run()` descriptions.
//!
//! All three are "simple" values (no Starlark values inside them), so they can live on any
//! heap, frozen or not, and be shared by reference counting.
//!
//! `unsafe_code` is allowed in this file only because `#[derive(ProvidesStaticType)]` (from
//! starlark-rust) expands to an `unsafe impl`; no unsafe code is written here by hand.
#![allow(unsafe_code)]

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use allocative::Allocative;
use starlark::collections::StarlarkHasher;
use starlark::starlark_simple_value;
use starlark::values::{
    Heap, NoSerialize, ProvidesStaticType, StarlarkValue, Value, ValueLike, starlark_value,
};

use crate::store::{Derivation, Hash, OutputRef};

/// A derivation created by `derivation()`: the store derivation, with its canonical JSON
/// hashed exactly once.
#[derive(Debug)]
pub struct DerivationNode {
    pub drv: Derivation,
    pub hash: Hash,
    /// The outputs of other derivations its templates name.
    pub dependencies: Vec<OutputRef>,
    /// `{{ <hash>:<output> }}` for each output, in `drv.outputs` order.
    pub templates: Vec<String>,
}

impl DerivationNode {
    /// Hash `drv` once and prepare the templates of its outputs. `dependencies` are what
    /// [`Derivation::validate_templates`] found for it.
    pub fn new(drv: Derivation, dependencies: Vec<OutputRef>) -> DerivationNode {
        let hash = drv.hash();
        let hash_text = hash.to_string();
        let templates = drv
            .outputs
            .iter()
            .map(|o| format!("{{{{ {hash_text}:{o} }}}}"))
            .collect();
        DerivationNode {
            drv,
            hash,
            dependencies,
            templates,
        }
    }

    /// The template of the first output: what `str(drv)` is.
    pub fn default_template(&self) -> &str {
        &self.templates[0]
    }

    /// The template of `output`, if the derivation has it.
    pub fn output_template(&self, output: &str) -> Option<&str> {
        self.drv
            .outputs
            .iter()
            .position(|o| o == output)
            .map(|i| self.templates[i].as_str())
    }
}

/// The Starlark value of a derivation.
#[derive(Debug, Clone, ProvidesStaticType, NoSerialize, Allocative)]
pub struct DerivationValue {
    #[allocative(skip)]
    pub node: Arc<DerivationNode>,
}
starlark_simple_value!(DerivationValue);

impl fmt::Display for DerivationValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.node.default_template())
    }
}

#[starlark_value(type = "derivation")]
impl<'v> StarlarkValue<'v> for DerivationValue {
    fn equals(&self, other: Value<'v>) -> starlark::Result<bool> {
        Ok(other
            .downcast_ref::<DerivationValue>()
            .is_some_and(|o| o.node.hash == self.node.hash))
    }

    fn write_hash(&self, hasher: &mut StarlarkHasher) -> starlark::Result<()> {
        std::hash::Hash::hash(&self.node.hash, hasher);
        Ok(())
    }

    fn get_attr(&self, attribute: &str, heap: Heap<'v>) -> Option<Value<'v>> {
        match attribute {
            "name" => Some(heap.alloc(self.node.drv.name.as_str())),
            "outputs" => Some(
                heap.alloc(
                    self.node
                        .drv
                        .outputs
                        .iter()
                        .map(|o| o.as_str())
                        .collect::<Vec<_>>(),
                ),
            ),
            output => self.node.output_template(output).map(|t| heap.alloc(t)),
        }
    }

    fn dir_attr(&self) -> Vec<String> {
        let mut attrs = vec!["name".to_owned(), "outputs".to_owned()];
        attrs.extend(self.node.drv.outputs.iter().cloned());
        attrs
    }

    fn add(&self, rhs: Value<'v>, heap: Heap<'v>) -> Option<starlark::Result<Value<'v>>> {
        let rhs = rhs.unpack_str()?;
        Some(Ok(
            heap.alloc(format!("{}{rhs}", self.node.default_template()))
        ))
    }

    fn radd(&self, lhs: Value<'v>, heap: Heap<'v>) -> Option<starlark::Result<Value<'v>>> {
        let lhs = lhs.unpack_str()?;
        Some(Ok(
            heap.alloc(format!("{lhs}{}", self.node.default_template()))
        ))
    }
}

/// A sorted set of files below one directory, as returned by `files()`.
#[derive(Debug, Clone, PartialEq, Eq, ProvidesStaticType, NoSerialize, Allocative)]
pub struct FilesValue {
    /// Absolute directory the paths are relative to (the directory of the calling file).
    /// Never part of a hash.
    #[allocative(skip)]
    pub base: PathBuf,
    /// `base` relative to the project root, `/`-separated (`""` for the root): for messages.
    pub base_rel: String,
    /// Paths relative to `base`, `/`-separated, sorted and unique.
    pub files: Vec<String>,
}
starlark_simple_value!(FilesValue);

impl fmt::Display for FilesValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "files({:?})", self.files)
    }
}

#[starlark_value(type = "files")]
impl<'v> StarlarkValue<'v> for FilesValue {
    fn length(&self) -> starlark::Result<i32> {
        Ok(i32::try_from(self.files.len()).unwrap_or(i32::MAX))
    }

    fn iterate_collect(&self, heap: Heap<'v>) -> starlark::Result<Vec<Value<'v>>> {
        Ok(self.files.iter().map(|f| heap.alloc(f.as_str())).collect())
    }

    fn equals(&self, other: Value<'v>) -> starlark::Result<bool> {
        Ok(other.downcast_ref::<FilesValue>() == Some(self))
    }

    fn add(&self, rhs: Value<'v>, heap: Heap<'v>) -> Option<starlark::Result<Value<'v>>> {
        let rhs = rhs.downcast_ref::<FilesValue>()?;
        if rhs.base != self.base {
            return Some(Err(starlark::Error::new_other(
                crate::lang::Error::FilesBaseMismatch {
                    left: self.base_rel.clone(),
                    right: rhs.base_rel.clone(),
                },
            )));
        }
        let mut files = self.files.clone();
        files.extend(rhs.files.iter().cloned());
        files.sort();
        files.dedup();
        Some(Ok(heap.alloc(FilesValue {
            base: self.base.clone(),
            base_rel: self.base_rel.clone(),
            files,
        })))
    }
}

/// What `run()` returns: a command to run from a derivation's output.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RunSpec {
    /// Hash of the derivation whose output holds the command.
    pub derivation: Hash,
    /// The command, relative to the output or absolute.
    pub cmd: String,
    pub args: Vec<String>,
    /// Host paths visible read-write.
    pub paths: Vec<String>,
    /// Host paths visible read-only.
    pub read_only_paths: Vec<String>,
    /// Host paths hidden (an empty directory mounted over them).
    pub hidden_paths: Vec<String>,
    /// Whether the command gets the host network.
    pub network: bool,
}

/// The Starlark value of `run()`.
#[derive(Debug, Clone, ProvidesStaticType, NoSerialize, Allocative)]
pub struct RunValue {
    #[allocative(skip)]
    pub spec: Arc<RunSpec>,
}
starlark_simple_value!(RunValue);

impl fmt::Display for RunValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<run {} {}>", self.spec.derivation, self.spec.cmd)
    }
}

#[starlark_value(type = "run")]
impl<'v> StarlarkValue<'v> for RunValue {}

/// What builtins find in `Evaluator::extra`: the session evaluating this code.
#[derive(Debug, ProvidesStaticType)]
pub struct SessionRef<'a>(pub &'a crate::lang::Session<'a>);
