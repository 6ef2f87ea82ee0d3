//! A `Session` evaluates the modules of one project: it resolves `load()` paths, detects
//! load cycles, caches frozen modules, calls entry functions and records every derivation
//! and test they create.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

use starlark::codemap::{FileSpan, FileSpanRef};
use starlark::environment::{FrozenModule, Globals, Module};
use starlark::eval::{BeforeStmtFunc, Evaluator, FileLoader};
use starlark::syntax::{AstModule, Dialect};
use starlark::values::list::ListRef;
use starlark::values::structs::AllocStruct;
use starlark::values::tuple::TupleRef;
use starlark::values::{Value, ValueLike};

use super::loads::{self, MODULE_SYMBOL, is_identifier};
use super::value::{DerivationNode, DerivationValue, RunSpec, RunValue, SessionRef};
use super::{Error, SourceStore, builtins};
use crate::store::{Hash, StorePath};

/// A named tree of modules other than the project itself (e.g. Bramble's `lib/` as
/// `bramble`).
#[derive(Debug, Clone)]
pub struct Library {
    pub name: String,
    pub root: PathBuf,
}

/// What a session needs to know about the project.
#[derive(Debug, Clone)]
pub struct Options {
    /// Absolute project root (the directory holding `bramble.toml`).
    pub root: PathBuf,
    /// The project's module name (`[package] name`).
    pub package: String,
    /// Other module trees `load()` may name.
    pub libraries: Vec<Library>,
    /// `sys.platform` and the default `platform` of derivations.
    pub platform: String,
}

/// A test registered by `test()`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TestSpec {
    pub derivation: Hash,
    pub args: Vec<String>,
    /// `file:line` of the `test()` call.
    pub location: String,
}

/// What an entry function returned.
#[derive(Debug, Clone)]
pub enum Returned {
    /// `None`: the function only registered tests (or did nothing).
    Nothing,
    Derivations(Vec<Arc<DerivationNode>>),
    Run(RunSpec),
}

/// A public function of a module, for `bramble ls`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FunctionInfo {
    pub name: String,
    /// `name(a, b = 1)`.
    pub signature: String,
    pub doc: Option<String>,
    /// Callable without arguments (every parameter has a default): an entry point.
    pub entry_point: bool,
}

/// A module's documentation, for `bramble ls`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ModuleInfo {
    /// Path relative to its root (`lib/go.bramble`).
    pub file: String,
    pub doc: Option<String>,
    pub functions: Vec<FunctionInfo>,
}

#[derive(Default)]
pub(crate) struct Registry {
    pub(crate) derivations: HashMap<Hash, Arc<DerivationNode>>,
    pub(crate) tests: Vec<TestSpec>,
    pub(crate) sources: HashMap<(PathBuf, Vec<String>), StorePath>,
    /// `files()` results of this evaluation, by (directory, include, exclude, allow_empty): a
    /// function called for every derivation of a large graph globs once, not once per call.
    pub(crate) globs: HashMap<GlobKey, Vec<String>>,
}

/// What a `files()` call's result depends on.
pub(crate) type GlobKey = (PathBuf, Vec<String>, Vec<String>, bool);

/// Evaluation state for one project. Not `Send`: use it on one thread (see
/// `project::evaluate`, which runs it on a thread with a large stack).
pub struct Session<'a> {
    pub(crate) opts: Options,
    pub(crate) sources: &'a dyn SourceStore,
    pub(crate) printer: &'a dyn Fn(&str),
    globals: Globals,
    modules: RefCell<HashMap<PathBuf, FrozenModule>>,
    /// Modules being loaded, outermost first: (file, display name).
    loading: RefCell<Vec<(PathBuf, String)>>,
    /// Display file name → absolute directory and directory relative to its root.
    dirs: RefCell<HashMap<String, (PathBuf, String)>>,
    pub(crate) registry: RefCell<Registry>,
}

impl std::fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("opts", &self.opts).finish()
    }
}

/// The maximum depth of `.bramble` function calls (recursion is an error past it).
const MAX_CALL_DEPTH: usize = 2000;

/// The Starlark heap of one module's evaluation may grow to this many bytes; past it the
/// evaluation fails with Starlark's own error (checked every so often, so a single huge
/// allocation may still pass it: [`catching`] handles that one).
const MAX_HEAP_BYTES: usize = 2 << 30;

thread_local! {
    /// The statement being evaluated on this thread, set before each one by [`record_stmt`]:
    /// where a panic in the evaluator is reported.
    static LAST_STMT: RefCell<Option<FileSpan>> = const { RefCell::new(None) };
    /// How many [`catching`] calls are active on this thread (their panics are not printed).
    static CATCHING: Cell<usize> = const { Cell::new(0) };
}

fn record_stmt(span: FileSpanRef<'_>, _continued: bool, _eval: &mut Evaluator<'_, '_, '_>) {
    LAST_STMT.with(|s| *s.borrow_mut() = Some(span.to_file_span()));
}

/// Run `f` (an evaluation), turning a panic into [`Error::Aborted`] at the statement being
/// evaluated. starlark-rust panics rather than failing on some allocations: a list or
/// string too large for its heap (`[0] * 1000000000`: `AlignedSize must not exceed
/// u32::MAX`), or bumpalo running out of memory.
///
/// starlark-rust also calls builtins with constant arguments (`list(range(2000000000))`)
/// while it compiles a top-level statement, before that statement starts: `top_level` (the
/// module's top-level statements, each with whether it is a `def`, empty for a call) lets
/// such a panic name the `def` compiled after the last statement run.
///
/// An error without a location (Starlark's heap limit) gets the statement being evaluated.
fn catching<V>(
    file: &str,
    top_level: &[(FileSpan, bool)],
    f: impl FnOnce() -> starlark::Result<V>,
) -> Result<starlark::Result<V>, Error> {
    static QUIET_HOOK: Once = Once::new();
    QUIET_HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CATCHING.with(Cell::get) == 0 {
                default(info);
            }
        }));
    });
    let outer = LAST_STMT.with(|s| s.borrow_mut().take());
    CATCHING.with(|c| c.set(c.get() + 1));
    let result = std::panic::catch_unwind(AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(c.get() - 1));
    let inner = LAST_STMT.with(|s| std::mem::replace(&mut *s.borrow_mut(), outer));
    match result {
        Ok(Err(mut e)) => {
            if let (None, Some(at)) = (e.span(), &inner) {
                e.set_span(at.span, &at.file);
            }
            Ok(Err(e))
        }
        Ok(ok) => Ok(ok),
        Err(payload) => Err(panic_error(payload, inner, file, top_level)),
    }
}

fn panic_error(
    payload: Box<dyn std::any::Any + Send>,
    inner: Option<FileSpan>,
    file: &str,
    top_level: &[(FileSpan, bool)],
) -> Error {
    {
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "a panic".into());
        let show = |span: &FileSpan| {
            let at = span.resolve_span().begin;
            format!("{}:{}:{}", span.filename(), at.line + 1, at.column + 1)
        };
        // The top-level statement after the last one started, if it is a `def`.
        let next_def = match &inner {
            None => top_level.first(),
            Some(last) => top_level
                .iter()
                .position(|(s, _)| s == last)
                .and_then(|i| top_level.get(i + 1)),
        }
        .filter(|(_, is_def)| *is_def)
        .map(|(s, _)| s);
        let location = match (&inner, next_def) {
            (None, None) => file.to_owned(),
            (None, Some(def)) => show(def),
            (Some(last), None) => show(last),
            (Some(last), Some(def)) => format!("{} (or the `def` at {})", show(last), show(def)),
        };
        Error::Aborted { location, message }
    }
}

fn dialect() -> Dialect {
    Dialect {
        enable_f_strings: true,
        // Names bound by `load()` stay private to the loading module.
        enable_load_reexport: false,
        ..Dialect::Extended
    }
}

pub(crate) fn render(err: starlark::Error) -> Error {
    let text = err.to_string();
    Error::Eval {
        rendered: loads::unrewrite_loads(&loads::unrename_assert(&tidy_traceback(
            text.trim_end().trim_start_matches("error: "),
        ))),
    }
}

/// Frames of a repeated run kept before the rest are summarised.
const REPEATED_FRAMES_SHOWN: usize = 3;

/// Drop the frame of the synthetic entry snippet and collapse runs of identical frames
/// (deep recursion) into one line.
fn tidy_traceback(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<String> = Vec::with_capacity(lines.len());
    let mut i = 0;
    let mut previous: Option<(&str, &str)> = None;
    let mut repeats = 0usize;
    let flush = |out: &mut Vec<String>, repeats: usize| {
        if repeats > REPEATED_FRAMES_SHOWN {
            out.push(format!(
                "  ... {} more identical frames",
                repeats - REPEATED_FRAMES_SHOWN
            ));
        }
    };
    while i < lines.len() {
        let line = lines[i];
        if line.starts_with("  * ") && i + 1 < lines.len() && lines[i + 1].starts_with("      ") {
            let frame = (line, lines[i + 1]);
            i += 2;
            if line.starts_with("  * <") && frame.1.trim() == "__entry()" {
                continue;
            }
            if previous == Some(frame) {
                repeats += 1;
                if repeats > REPEATED_FRAMES_SHOWN {
                    continue;
                }
            } else {
                flush(&mut out, repeats);
                repeats = 1;
                previous = Some(frame);
            }
            out.push(frame.0.to_owned());
            out.push(frame.1.to_owned());
            continue;
        }
        flush(&mut out, repeats);
        repeats = 0;
        previous = None;
        out.push(line.to_owned());
        i += 1;
    }
    flush(&mut out, repeats);
    out.join("\n")
}

impl<'a> Session<'a> {
    pub fn new(opts: Options, sources: &'a dyn SourceStore, printer: &'a dyn Fn(&str)) -> Self {
        let globals = builtins::globals(&opts.platform);
        Session {
            opts,
            sources,
            printer,
            globals,
            modules: RefCell::default(),
            loading: RefCell::default(),
            dirs: RefCell::default(),
            registry: RefCell::default(),
        }
    }

    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// Every derivation created so far, by hash.
    pub fn derivations(&self) -> HashMap<Hash, Arc<DerivationNode>> {
        self.registry.borrow().derivations.clone()
    }

    /// Every test registered so far, in registration order.
    pub fn tests(&self) -> Vec<TestSpec> {
        self.registry.borrow().tests.clone()
    }

    /// The name `file` is shown under: relative to the project or library root.
    pub fn display_name(&self, file: &Path) -> String {
        if let Ok(rel) = file.strip_prefix(&self.opts.root) {
            return slash(rel);
        }
        for lib in &self.opts.libraries {
            if let Ok(rel) = file.strip_prefix(&lib.root) {
                return format!("{}/{}", lib.name, slash(rel));
            }
        }
        file.display().to_string()
    }

    /// The module being loaded, if any (then `derivation()` is refused).
    pub(crate) fn loading_module(&self) -> Option<String> {
        self.loading.borrow().last().map(|(_, name)| name.clone())
    }

    /// The directory of the file a span names (absolute, and relative to its root).
    pub(crate) fn dir_of(&self, display: &str) -> Option<(PathBuf, String)> {
        self.dirs.borrow().get(display).cloned()
    }

    fn register_dir(&self, display: &str, file: &Path) {
        let dir = file.parent().unwrap_or(&self.opts.root).to_path_buf();
        let rel = match display.rsplit_once('/') {
            Some((d, _)) => d.to_owned(),
            None => String::new(),
        };
        self.dirs
            .borrow_mut()
            .insert(display.to_owned(), (dir, rel));
    }

    /// Resolve a `load()` path to a module file.
    pub fn resolve_load(&self, load: &str) -> Result<PathBuf, Error> {
        let mut best: Option<(&str, &Path)> = None;
        let roots = std::iter::once((self.opts.package.as_str(), self.opts.root.as_path())).chain(
            self.opts
                .libraries
                .iter()
                .map(|l| (l.name.as_str(), l.root.as_path())),
        );
        for (name, root) in roots {
            let matches = load == name || load.starts_with(&format!("{name}/"));
            if matches && best.is_none_or(|(b, _)| name.len() > b.len()) {
                best = Some((name, root));
            }
        }
        let Some((name, root)) = best else {
            return Err(Error::UnknownModule {
                load: load.to_owned(),
                prefix: load.split('/').next().unwrap_or(load).to_owned(),
                package: self.opts.package.clone(),
            });
        };
        let sub = load[name.len()..].trim_start_matches('/');
        if sub
            .split('/')
            .any(|c| c == ".." || c == "." || (c.is_empty() && !sub.is_empty()))
            || sub.ends_with(".bramble")
        {
            return Err(Error::BadLoadPath {
                load: load.to_owned(),
                reason: "module paths are `/`-separated names without `.`, `..` or the `.bramble` extension".into(),
            });
        }
        let file = root.join(format!("{sub}.bramble"));
        let default = root.join(sub).join("default.bramble");
        let (has_file, has_default) = (!sub.is_empty() && file.is_file(), default.is_file());
        match (has_file, has_default) {
            (true, false) => Ok(file),
            (false, true) => Ok(default),
            (true, true) => Err(Error::AmbiguousModule {
                load: load.to_owned(),
                file: self.display_name(&file),
                default: self.display_name(&default),
            }),
            (false, false) => Err(Error::ModuleNotFound {
                load: load.to_owned(),
                file: self.display_name(&file),
                default: self.display_name(&default),
            }),
        }
    }

    /// Load (once) and return the frozen module of `file`, an absolute path.
    pub fn load_module(&self, file: &Path) -> Result<FrozenModule, Error> {
        self.load_loaded(file).map_err(render)?;
        Ok(self.modules.borrow()[file].clone())
    }

    fn load_loaded(&self, file: &Path) -> Result<(), starlark::Error> {
        if self.modules.borrow().contains_key(file) {
            return Ok(());
        }
        let display = self.display_name(file);
        if let Some(pos) = self.loading.borrow().iter().position(|(f, _)| f == file) {
            let mut cycle: Vec<String> = self.loading.borrow()[pos..]
                .iter()
                .map(|(_, n)| format!("`{n}`"))
                .collect();
            cycle.push(format!("`{display}`"));
            return Err(starlark::Error::new_other(Error::LoadCycle {
                cycle: cycle.join(" -> "),
            }));
        }
        let source = std::fs::read_to_string(file).map_err(|error| {
            starlark::Error::new_other(Error::ReadFile {
                path: display.clone(),
                error,
            })
        })?;
        let source = loads::rewrite(&display, &source).map_err(|p| {
            let (line, column) = line_col(&source, p.offset);
            starlark::Error::new_other(Error::Source {
                file: display.clone(),
                line,
                column,
                message: p.message,
            })
        })?;
        let ast = AstModule::parse(&display, source, &dialect())?;
        self.register_dir(&display, file);
        self.loading
            .borrow_mut()
            .push((file.to_path_buf(), display.clone()));
        let result = self.eval_module(ast, &display);
        self.loading.borrow_mut().pop();
        let module = result?;
        self.modules.borrow_mut().insert(file.to_path_buf(), module);
        Ok(())
    }

    fn eval_module(&self, ast: AstModule, display: &str) -> Result<FrozenModule, starlark::Error> {
        Module::with_temp_heap(|module| {
            {
                let extra = SessionRef(self);
                let mut eval = self.evaluator(&module, &extra)?;
                catching(display, &top_level(&ast), || {
                    eval.eval_module(ast, &self.globals)
                })
                .map_err(starlark::Error::new_other)??;
            }
            // `<module>`: a struct of every public name, for `load("path/name")`.
            let fields: Vec<(String, Value)> = module
                .names()
                .filter(|n| !n.as_str().starts_with('_'))
                .filter_map(|n| module.get(n.as_str()).map(|v| (n.as_str().to_owned(), v)))
                .collect();
            let all = module.heap().alloc(AllocStruct(fields));
            module.set(MODULE_SYMBOL, all);
            module.freeze().map_err(starlark::Error::new_other)
        })
    }

    fn evaluator<'v, 'e>(
        &'e self,
        module: &'e Module<'v>,
        extra: &'e SessionRef<'e>,
    ) -> Result<Evaluator<'v, 'e, 'e>, starlark::Error> {
        let mut eval = Evaluator::new(module);
        eval.set_loader(self);
        eval.extra = Some(extra);
        eval.set_max_callstack_size(MAX_CALL_DEPTH)
            .map_err(starlark::Error::new_other)?;
        eval.set_max_heap_size(MAX_HEAP_BYTES)
            .map_err(starlark::Error::new_other)?;
        eval.before_stmt_for_dap(BeforeStmtFunc::Fn(&record_stmt));
        Ok(eval)
    }

    /// Documentation and public functions of a module, for `bramble ls`.
    pub fn module_info(&self, file: &Path) -> Result<ModuleInfo, Error> {
        let module = self.load_module(file)?;
        let docs = module.documentation();
        let mut functions = Vec::new();
        for (name, item) in docs.members.iter() {
            // Skip private names and names bound by `load()` (not exported).
            if name.starts_with('_') || !matches!(module.get_option(name), Ok(Some(_))) {
                continue;
            }
            if let starlark::docs::DocItem::Member(starlark::docs::DocMember::Function(f)) = item {
                functions.push(function_info(name, f));
            }
        }
        functions.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(ModuleInfo {
            file: self.display_name(file),
            doc: docs.docs.map(|d| doc_text(&d)),
            functions,
        })
    }

    /// Call `function` of the module in `file` with no arguments. The call is evaluated as
    /// the Starlark snippet `load("<file>", f = "<function>"); f()`, so privacy, error
    /// rendering and the call stack are exactly those of `.bramble` code.
    pub fn call_function(&self, file: &Path, function: &str) -> Result<Returned, Error> {
        let display = self.display_name(file);
        let Some(file_text) = file.to_str().filter(|f| !f.contains(['"', '\\', '\n'])) else {
            return Err(Error::BadLoadPath {
                load: display,
                reason: "the path cannot be written in a load statement".into(),
            });
        };
        if !is_identifier(function) {
            return Err(Error::NoFunction {
                module: display,
                function: function.to_owned(),
            });
        }
        let module = self.load_module(file)?;
        if function.starts_with('_') || !matches!(module.get_option(function), Ok(Some(_))) {
            return Err(Error::NoFunction {
                module: display,
                function: function.to_owned(),
            });
        }
        let info = self.module_info(file)?;
        if let Some(f) = info.functions.iter().find(|f| f.name == function)
            && !f.entry_point
        {
            return Err(Error::NeedsArguments {
                reference: format!("{display}:{function}"),
                signature: f.signature.clone(),
            });
        }
        let snippet = format!("load(\"{file_text}\", __entry = \"{function}\")\n__entry()\n");
        let ast = AstModule::parse(&format!("<{display}:{function}>"), snippet, &dialect())
            .map_err(render)?;
        Module::with_temp_heap(|module| {
            let extra = SessionRef(self);
            let mut eval = self.evaluator(&module, &extra).map_err(render)?;
            let result = catching(&display, &[], || eval.eval_module(ast, &self.globals))?
                .map_err(render)?;
            classify(result).ok_or_else(|| Error::BadReturn {
                module: display.clone(),
                function: function.to_owned(),
                got: result.get_type().to_owned(),
            })
        })
    }

    /// Evaluate REPL input chunk by chunk in one module. `next` yields chunks (complete
    /// statements); `out` receives the repr of each non-`None` result or an error.
    pub fn repl(
        &self,
        mut next: impl FnMut() -> Option<String>,
        mut out: impl FnMut(Result<String, Error>),
    ) {
        let display = "<repl>";
        self.dirs
            .borrow_mut()
            .insert(display.to_owned(), (self.opts.root.clone(), String::new()));
        Module::with_temp_heap(|module| {
            let extra = SessionRef(self);
            let Ok(mut eval) = self.evaluator(&module, &extra) else {
                return;
            };
            while let Some(chunk) = next() {
                let result = loads::rewrite(display, &chunk)
                    .map_err(|p| Error::Assertion { message: p.message })
                    .and_then(|src| AstModule::parse(display, src, &dialect()).map_err(render))
                    .and_then(|ast| {
                        catching(display, &[], || eval.eval_module(ast, &self.globals))?
                            .map_err(render)
                    });
                match result {
                    Ok(v) if v.is_none() => {}
                    Ok(v) => out(Ok(v.to_repr())),
                    Err(e) => out(Err(e)),
                }
            }
        });
    }
}

impl FileLoader for Session<'_> {
    fn load(&self, path: &str) -> starlark::Result<FrozenModule> {
        let file = if Path::new(path).is_absolute() {
            // Only `call_function` writes absolute paths; keep them inside known roots.
            let file = PathBuf::from(path);
            let inside = file.starts_with(&self.opts.root)
                || self
                    .opts
                    .libraries
                    .iter()
                    .any(|l| file.starts_with(&l.root));
            if !inside || file.components().any(|c| c.as_os_str() == "..") {
                return Err(starlark::Error::new_other(Error::BadLoadPath {
                    load: path.to_owned(),
                    reason: "absolute paths are not module paths".into(),
                }));
            }
            file
        } else {
            self.resolve_load(path)
                .map_err(starlark::Error::new_other)?
        };
        self.load_loaded(&file)?;
        Ok(self.modules.borrow()[&file].clone())
    }
}

/// The top-level statements of `ast`, each with whether it is a `def`.
fn top_level(ast: &AstModule) -> Vec<(FileSpan, bool)> {
    use starlark::syntax::ast::StmtP;
    let statements = match &ast.statement().node {
        StmtP::Statements(list) => list.iter().collect(),
        _ => vec![ast.statement()],
    };
    statements
        .into_iter()
        .map(|s| (ast.file_span(s.span), matches!(s.node, StmtP::Def(_))))
        .collect()
}

fn classify(value: Value<'_>) -> Option<Returned> {
    if value.is_none() {
        return Some(Returned::Nothing);
    }
    if let Some(d) = value.downcast_ref::<DerivationValue>() {
        return Some(Returned::Derivations(vec![d.node.clone()]));
    }
    if let Some(r) = value.downcast_ref::<RunValue>() {
        return Some(Returned::Run((*r.spec).clone()));
    }
    let items: Vec<Value> = if let Some(l) = ListRef::from_value(value) {
        l.content().to_vec()
    } else if let Some(t) = TupleRef::from_value(value) {
        t.content().to_vec()
    } else {
        return None;
    };
    items
        .into_iter()
        .map(|v| v.downcast_ref::<DerivationValue>().map(|d| d.node.clone()))
        .collect::<Option<Vec<_>>>()
        .map(Returned::Derivations)
}

fn function_info(name: &str, f: &starlark::docs::DocFunction) -> FunctionInfo {
    let p = &f.params;
    let mut parts = Vec::new();
    let mut entry_point = true;
    let param = |d: &starlark::docs::DocParam, entry: &mut bool| match &d.default_value {
        Some(v) => format!("{} = {v}", d.name),
        None => {
            *entry = false;
            d.name.clone()
        }
    };
    for d in p.pos_only.iter().chain(&p.pos_or_named) {
        parts.push(param(d, &mut entry_point));
    }
    if let Some(a) = &p.args {
        parts.push(format!("*{}", a.name));
    } else if !p.named_only.is_empty() {
        parts.push("*".into());
    }
    for d in &p.named_only {
        parts.push(param(d, &mut entry_point));
    }
    if let Some(k) = &p.kwargs {
        parts.push(format!("**{}", k.name));
    }
    FunctionInfo {
        name: name.to_owned(),
        signature: format!("{name}({})", parts.join(", ")),
        doc: f.docs.as_ref().map(doc_text),
        entry_point,
    }
}

fn doc_text(d: &starlark::docs::DocString) -> String {
    match &d.details {
        Some(details) => format!("{}\n\n{details}", d.summary),
        None => d.summary.clone(),
    }
}

fn slash(p: &Path) -> String {
    p.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let before = &source[..offset.min(source.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |n| before.len() - n - 1)
        + 1;
    (line, column)
}
