//! The builtins every `.bramble` file sees, beyond standard Starlark.
//!
//! - `derivation(name, builder, args=[], env={}, sources=None, outputs=["out"], platform=sys.platform, dao=False, root=None)`
//!   — with `dao=True` the derivation is a derivation-as-output: its `out` is a document of
//!   generated derivations that the build splices in its place (`crate::engine::dao`).
//!   `root` is a tree (a Debian package set, `lib/debian.bramble`) the build sees at `/usr`,
//!   with `/bin`, `/sbin`, `/lib`, `/lib64` linking into it (see `Derivation::root`).
//! - `files(include, exclude=[], allow_empty=False)`
//! - `run(derivation, cmd, args=[], paths=[], read_only_paths=[], hidden_paths=[], network=False)`
//!   — `bramble run` binds the project directory read-only; `paths` are the host paths the
//!   program may write (relative to the project root unless absolute), `read_only_paths` win
//!   over them, and version-control metadata (`.git`, `.hg`, `.svn`, `.jj`) is never
//!   writable. (Changed from the original, which bound the project read-write.)
//! - `test(derivation, args=[])`, `print(*args, sep=" ")`
//! - `sys.os`, `sys.arch`, `sys.platform`
//! - `assert.eq/ne/true/lt/contains/fails/fail`
//!
//! `args` and `env` values may be strings, ints, bools (as `str()` prints them: `True`) or
//! derivations (their first output's template); anything else is an error naming the
//! argument and its type. Errors raised here carry the span of the call site.

// `derivation()` mirrors its Starlark signature, generated into a nested function.
#![allow(clippy::too_many_arguments)]

use std::sync::Arc;

use starlark::environment::{Globals, GlobalsBuilder, LibraryExtension};
use starlark::eval::Evaluator;
use starlark::starlark_module;
use starlark::values::dict::DictRef;
use starlark::values::list::ListRef;
use starlark::values::none::NoneType;
use starlark::values::tuple::{TupleRef, UnpackTuple};
use starlark::values::{Value, ValueLike};

use super::session::{Session, TestSpec};
use super::value::{DerivationNode, DerivationValue, FilesValue, RunSpec, RunValue, SessionRef};
use super::{Error, files};
use crate::store::limits;
use crate::store::{BuildLimits, Derivation, Sources};

/// The globals of every `.bramble` module.
pub fn globals(platform: &str) -> Globals {
    let mut b = GlobalsBuilder::extended_by(&[
        LibraryExtension::StructType,
        LibraryExtension::Json,
        LibraryExtension::Map,
        LibraryExtension::Filter,
        LibraryExtension::Partial,
        LibraryExtension::SetType,
    ]);
    bramble_functions(&mut b);
    let (os, arch) = platform.split_once('-').map_or_else(
        || (std::env::consts::OS, std::env::consts::ARCH),
        |(arch, os)| (os, arch),
    );
    let (os, arch, platform) = (os.to_owned(), arch.to_owned(), platform.to_owned());
    b.namespace("sys", |s| {
        s.set("os", os.as_str());
        s.set("arch", arch.as_str());
        s.set("platform", platform.as_str());
    });
    b.namespace(super::loads::ASSERT_ALIAS, assert_functions);
    b.build()
}

fn err(e: Error) -> starlark::Error {
    starlark::Error::new_other(e)
}

fn session<'a>(eval: &'a Evaluator) -> &'a Session<'a> {
    eval.extra
        .and_then(|e| e.downcast_ref::<SessionRef>())
        .expect("bramble evaluators always carry their session")
        .0
}

fn type_error(function: &str, argument: &str, expected: &str, v: Value) -> starlark::Error {
    err(Error::ArgType {
        function: function.to_owned(),
        argument: argument.to_owned(),
        expected: expected.to_owned(),
        got: v.get_type().to_owned(),
    })
}

/// A value usable inside builder/args/env: strings, ints, bools, derivations.
fn arg_string(function: &str, argument: &str, v: Value) -> starlark::Result<String> {
    if let Some(s) = v.unpack_str() {
        return Ok(s.to_owned());
    }
    if let Some(d) = v.downcast_ref::<DerivationValue>() {
        return Ok(d.node.default_template().to_owned());
    }
    match v.get_type() {
        "int" | "bool" => Ok(v.to_str()),
        _ => Err(type_error(
            function,
            argument,
            "a string, int, bool or derivation",
            v,
        )),
    }
}

/// Items of a list or tuple.
fn sequence<'v>(function: &str, argument: &str, v: Value<'v>) -> starlark::Result<Vec<Value<'v>>> {
    if let Some(l) = ListRef::from_value(v) {
        Ok(l.content().to_vec())
    } else if let Some(t) = TupleRef::from_value(v) {
        Ok(t.content().to_vec())
    } else {
        Err(type_error(function, argument, "a list", v))
    }
}

/// A limit keyword of `derivation()`: `None` (the engine's default), a positive int (for
/// durations: seconds) or a string `parse` reads.
fn limit<T: TryFrom<u64>>(
    function: &str,
    argument: &str,
    v: Option<Value>,
    expected: &str,
    parse: impl Fn(&str) -> Result<u64, String>,
) -> starlark::Result<Option<T>> {
    let Some(v) = v.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    let bad = |problem: String| {
        err(Error::ArgValue {
            function: function.to_owned(),
            argument: argument.to_owned(),
            problem,
        })
    };
    let n = if let Some(i) = v.unpack_i32() {
        let n = u64::try_from(i).map_err(|_| bad(format!("{i} is negative")))?;
        parse(&n.to_string()).map_err(bad)?
    } else if let Some(t) = v.unpack_str() {
        parse(t).map_err(bad)?
    } else {
        return Err(type_error(function, argument, expected, v));
    };
    if n == 0 {
        return Err(bad("a limit must be positive".into()));
    }
    T::try_from(n)
        .map(Some)
        .map_err(|_| bad(format!("{n} is too large")))
}

fn string_list(function: &str, argument: &str, v: Option<Value>) -> starlark::Result<Vec<String>> {
    let Some(v) = v.filter(|v| !v.is_none()) else {
        return Ok(Vec::new());
    };
    sequence(function, argument, v)?
        .into_iter()
        .enumerate()
        .map(|(i, item)| arg_string(function, &format!("{argument}[{i}]"), item))
        .collect()
}

/// Refuse calls made while a module is being loaded.
fn check_not_loading(function: &str, eval: &Evaluator) -> starlark::Result<()> {
    match session(eval).loading_module() {
        Some(module) => Err(err(Error::TopLevel {
            function: function.to_owned(),
            module,
        })),
        None => Ok(()),
    }
}

fn call_site(eval: &Evaluator) -> (String, usize) {
    match eval.call_stack_top_location() {
        Some(span) => {
            let loc = span.resolve_span();
            (span.filename().to_owned(), loc.begin.line + 1)
        }
        None => ("<unknown>".to_owned(), 0),
    }
}

#[starlark_module]
fn bramble_functions(builder: &mut GlobalsBuilder) {
    /// Declare a build step. Returns a derivation whose `str()` is the template of its
    /// first output and whose attributes name each output's template. `timeout` and
    /// `max_silent_time` (a duration: `"90m"`, `"2h"`, or seconds), `memory` (per process:
    /// `"4G"`, or bytes) and `processes` bound its build instead of the engine's defaults.
    fn derivation<'v>(
        name: Value<'v>,
        builder: Value<'v>,
        args: Option<Value<'v>>,
        env: Option<Value<'v>>,
        sources: Option<Value<'v>>,
        outputs: Option<Value<'v>>,
        platform: Option<Value<'v>>,
        #[starlark(require = named, default = false)] dao: bool,
        #[starlark(require = named)] timeout: Option<Value<'v>>,
        #[starlark(require = named)] max_silent_time: Option<Value<'v>>,
        #[starlark(require = named)] memory: Option<Value<'v>>,
        #[starlark(require = named)] processes: Option<Value<'v>>,
        #[starlark(require = named)] root: Option<Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> starlark::Result<DerivationValue> {
        const F: &str = "derivation";
        let limits = BuildLimits {
            memory_bytes: limit(
                F,
                "memory",
                memory,
                "a size (`2G`) or bytes",
                limits::parse_size,
            )?,
            processes: limit(F, "processes", processes, "a number", |t| {
                t.parse()
                    .map_err(|_| format!("`{t}` is not a number of processes"))
            })?,
            silence_ms: limit(
                F,
                "max_silent_time",
                max_silent_time,
                "a duration (`2h`) or seconds",
                limits::parse_duration_ms,
            )?,
            timeout_ms: limit(
                F,
                "timeout",
                timeout,
                "a duration (`2h`) or seconds",
                limits::parse_duration_ms,
            )?,
        };
        check_not_loading(F, eval)?;
        let s = session(eval);
        let name = name
            .unpack_str()
            .ok_or_else(|| type_error(F, "name", "a string", name))?
            .to_owned();
        let builder = arg_string(F, "builder", builder)?;
        let args = string_list(F, "args", args)?;
        let mut env_map = std::collections::BTreeMap::new();
        if let Some(env) = env.filter(|v| !v.is_none()) {
            let dict =
                DictRef::from_value(env).ok_or_else(|| type_error(F, "env", "a dict", env))?;
            for (k, v) in dict.iter() {
                let key = k
                    .unpack_str()
                    .ok_or_else(|| type_error(F, "env key", "a string", k))?;
                env_map.insert(key.to_owned(), arg_string(F, &format!("env[{key:?}]"), v)?);
            }
        }
        let outputs = match outputs.filter(|v| !v.is_none()) {
            None => vec!["out".to_owned()],
            Some(v) => sequence(F, "outputs", v)?
                .into_iter()
                .enumerate()
                .map(|(i, o)| {
                    o.unpack_str()
                        .map(str::to_owned)
                        .ok_or_else(|| type_error(F, &format!("outputs[{i}]"), "a string", o))
                })
                .collect::<starlark::Result<_>>()?,
        };
        let platform = match platform.filter(|v| !v.is_none()) {
            None => s.opts.platform.clone(),
            Some(p) => p
                .unpack_str()
                .ok_or_else(|| type_error(F, "platform", "a string", p))?
                .to_owned(),
        };
        let root = match root.filter(|v| !v.is_none()) {
            None => None,
            Some(r) => {
                let Some(node) = r.downcast_ref::<DerivationValue>() else {
                    return Err(type_error(F, "root", "a derivation (a package set)", r));
                };
                Some(node.node.default_template().to_owned())
            }
        };
        let mut drv = Derivation {
            args,
            builder,
            dao,
            env: env_map,
            limits,
            name,
            outputs,
            platform,
            root,
            sources: None,
        };
        if let Some(src) = sources.filter(|v| !v.is_none()) {
            let files = src
                .downcast_ref::<FilesValue>()
                .ok_or_else(|| type_error(F, "sources", "the result of `files()`", src))?;
            // Validate the name first: it becomes part of nothing yet, but errors read better.
            drv.validate().map_err(|e| err(e.into()))?;
            let key = (files.base.clone(), files.files.clone());
            let cached = s.registry.borrow().sources.get(&key).cloned();
            let path = match cached {
                Some(p) => p,
                None => {
                    let p = s
                        .sources
                        .add_sources(&drv.name, &files.base, &files.files)
                        .map_err(|error| {
                            err(Error::Sources {
                                name: drv.name.clone(),
                                error: Box::new(error),
                            })
                        })?;
                    s.registry.borrow_mut().sources.insert(key, p.clone());
                    p
                }
            };
            drv.sources = Some(Sources {
                files: files.files.clone(),
                path,
            });
        }
        let templates = drv.validate_templates().map_err(|e| err(e.into()))?;
        let node = Arc::new(DerivationNode::new(drv, templates.dependencies().to_vec()));
        s.registry
            .borrow_mut()
            .derivations
            .entry(node.hash)
            .or_insert_with(|| node.clone());
        Ok(DerivationValue { node })
    }

    /// Files matching glob patterns (`**` crosses directories), relative to the directory of
    /// the calling file, sorted. Zero matches is an error unless `allow_empty = True`.
    fn files<'v>(
        #[starlark(require = pos)] include: Value<'v>,
        #[starlark(require = named)] exclude: Option<Value<'v>>,
        #[starlark(require = named, default = false)] allow_empty: bool,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> starlark::Result<FilesValue> {
        const F: &str = "files";
        let patterns = |arg: &str, v: Value<'v>| -> starlark::Result<Vec<String>> {
            if let Some(s) = v.unpack_str() {
                return Ok(vec![s.to_owned()]);
            }
            sequence(F, arg, v)?
                .into_iter()
                .enumerate()
                .map(|(i, p)| {
                    p.unpack_str()
                        .map(str::to_owned)
                        .ok_or_else(|| type_error(F, &format!("{arg}[{i}]"), "a string", p))
                })
                .collect()
        };
        let include = patterns("include", include)?;
        let exclude = match exclude.filter(|v| !v.is_none()) {
            Some(v) => patterns("exclude", v)?,
            None => Vec::new(),
        };
        let (file, _) = call_site(eval);
        let s = session(eval);
        let (base, base_rel) = s
            .dir_of(&file)
            .unwrap_or_else(|| (s.opts.root.clone(), String::new()));
        let key = (base.clone(), include, exclude, allow_empty);
        let cached = s.registry.borrow().globs.get(&key).cloned();
        let found = match cached {
            Some(found) => found,
            None => {
                let (_, include, exclude, _) = &key;
                let found =
                    files::glob(&base, &base_rel, include, exclude, allow_empty).map_err(err)?;
                s.registry.borrow_mut().globs.insert(key, found.clone());
                found
            }
        };
        Ok(FilesValue {
            base,
            base_rel,
            files: found,
        })
    }

    /// Describe a command to run from a derivation's output (`bramble run` uses it). The
    /// project is read-only to it except `paths`; `.git` and other VCS metadata never writable.
    fn run<'v>(
        derivation: Value<'v>,
        cmd: &str,
        #[starlark(require = named)] args: Option<Value<'v>>,
        #[starlark(require = named)] paths: Option<Value<'v>>,
        #[starlark(require = named)] read_only_paths: Option<Value<'v>>,
        #[starlark(require = named)] hidden_paths: Option<Value<'v>>,
        #[starlark(require = named, default = false)] network: bool,
    ) -> starlark::Result<RunValue> {
        const F: &str = "run";
        let drv = derivation
            .downcast_ref::<DerivationValue>()
            .ok_or_else(|| type_error(F, "derivation", "a derivation", derivation))?;
        Ok(RunValue {
            spec: Arc::new(RunSpec {
                derivation: drv.node.hash,
                cmd: cmd.to_owned(),
                args: string_list(F, "args", args)?,
                paths: string_list(F, "paths", paths)?,
                read_only_paths: string_list(F, "read_only_paths", read_only_paths)?,
                hidden_paths: string_list(F, "hidden_paths", hidden_paths)?,
                network,
            }),
        })
    }

    /// Register a test: building `derivation` with extra `args` must succeed.
    fn test<'v>(
        derivation: Value<'v>,
        #[starlark(require = named)] args: Option<Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> starlark::Result<NoneType> {
        const F: &str = "test";
        check_not_loading(F, eval)?;
        let drv = derivation
            .downcast_ref::<DerivationValue>()
            .ok_or_else(|| type_error(F, "derivation", "a derivation", derivation))?;
        let args = string_list(F, "args", args)?;
        let (file, line) = call_site(eval);
        session(eval).registry.borrow_mut().tests.push(TestSpec {
            derivation: drv.node.hash,
            args,
            location: format!("{file}:{line}"),
        });
        Ok(NoneType)
    }

    /// Print to stderr, prefixed with the calling file and line.
    fn print<'v>(
        #[starlark(args)] args: UnpackTuple<Value<'v>>,
        #[starlark(require = named, default = " ")] sep: &str,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> starlark::Result<NoneType> {
        let text = args
            .items
            .iter()
            .map(|v| v.to_str())
            .collect::<Vec<_>>()
            .join(sep);
        let (file, line) = call_site(eval);
        (session(eval).printer)(&format!("{file}:{line}: {text}"));
        Ok(NoneType)
    }
}

fn fail(message: String) -> starlark::Error {
    err(Error::Assertion { message })
}

fn with_msg(base: String, msg: Option<&str>) -> String {
    match msg {
        Some(m) => format!("{base}: {m}"),
        None => base,
    }
}

#[starlark_module]
fn assert_functions(builder: &mut GlobalsBuilder) {
    /// Fail unless `a == b`.
    fn eq<'v>(
        #[starlark(require = pos)] a: Value<'v>,
        #[starlark(require = pos)] b: Value<'v>,
        #[starlark(require = named)] msg: Option<&str>,
    ) -> starlark::Result<NoneType> {
        if a.equals(b)? {
            Ok(NoneType)
        } else {
            Err(fail(with_msg(
                format!("assert.eq: {} != {}", a.to_repr(), b.to_repr()),
                msg,
            )))
        }
    }

    /// Fail if `a == b`.
    fn ne<'v>(
        #[starlark(require = pos)] a: Value<'v>,
        #[starlark(require = pos)] b: Value<'v>,
        #[starlark(require = named)] msg: Option<&str>,
    ) -> starlark::Result<NoneType> {
        if a.equals(b)? {
            Err(fail(with_msg(
                format!("assert.ne: both are {}", a.to_repr()),
                msg,
            )))
        } else {
            Ok(NoneType)
        }
    }

    /// Fail unless `cond` is truthy.
    fn r#true<'v>(
        #[starlark(require = pos)] cond: Value<'v>,
        #[starlark(require = named)] msg: Option<&str>,
    ) -> starlark::Result<NoneType> {
        if cond.to_bool() {
            Ok(NoneType)
        } else {
            Err(fail(with_msg(
                format!("assert.true: {} is not true", cond.to_repr()),
                msg,
            )))
        }
    }

    /// Fail unless `a < b`.
    fn lt<'v>(
        #[starlark(require = pos)] a: Value<'v>,
        #[starlark(require = pos)] b: Value<'v>,
        #[starlark(require = named)] msg: Option<&str>,
    ) -> starlark::Result<NoneType> {
        if a.compare(b)? == std::cmp::Ordering::Less {
            Ok(NoneType)
        } else {
            Err(fail(with_msg(
                format!(
                    "assert.lt: {} is not less than {}",
                    a.to_repr(),
                    b.to_repr()
                ),
                msg,
            )))
        }
    }

    /// Fail unless `item in container`.
    fn contains<'v>(
        #[starlark(require = pos)] container: Value<'v>,
        #[starlark(require = pos)] item: Value<'v>,
        #[starlark(require = named)] msg: Option<&str>,
    ) -> starlark::Result<NoneType> {
        if container.is_in(item)? {
            Ok(NoneType)
        } else {
            Err(fail(with_msg(
                format!(
                    "assert.contains: {} is not in {}",
                    item.to_repr(),
                    container.to_repr()
                ),
                msg,
            )))
        }
    }

    /// Call `f()` and fail unless it fails; with `contains`, its error must mention it.
    /// Returns the error message.
    fn fails<'v>(
        #[starlark(require = pos)] f: Value<'v>,
        #[starlark(require = named)] contains: Option<&str>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> starlark::Result<String> {
        match eval.eval_function(f, &[], &[]) {
            Ok(v) => Err(fail(format!(
                "assert.fails: {} returned {} instead of failing",
                f.to_repr(),
                v.to_repr()
            ))),
            Err(e) => {
                let message = e.without_diagnostic().to_string();
                match contains {
                    Some(c) if !message.contains(c) => Err(fail(format!(
                        "assert.fails: the error does not contain {c:?}: {message}"
                    ))),
                    _ => Ok(message),
                }
            }
        }
    }

    /// Fail with `msg`.
    fn fail(#[starlark(require = pos)] msg: &str) -> starlark::Result<NoneType> {
        Err(fail(msg.to_owned()))
    }
}
