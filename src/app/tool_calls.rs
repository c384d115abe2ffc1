//! The Cedar questions one tool call asks: what a policy sees of it.
//!
//! - Every path-bearing field of every built-in tool is made canonical
//!   (symlinks and `..` resolved), relative paths taken from the `cwd` Claude
//!   Code sends; a search without a path searches that folder. `path` is the
//!   first such path and `inside_agent_dir` says whether all of them are
//!   inside the agent's folder (the folder of `agents/<id>/`, or the project
//!   folder a `gov guard` session was registered with).
//! - A shell command (`Bash`, `Monitor`) is taken apart
//!   ([`crate::domain::shell`]) and asks one question per simple command,
//!   with that command in `context.shell` and the whole line in
//!   `context.line`. The call is allowed only when every question is.
//! - An MCP call (`mcp__server__tool`) carries `context.mcp`: its server,
//!   its tool, whether `entities.json` lists either, and its arguments as
//!   the tags of an `McpArguments` entity.

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::domain::request::{CedarRequest, EntityData, EntityRef};
use crate::domain::shell::{self, ShellLine, SimpleCommand};
use crate::store::policies::{canonical_tool_path_from, resolve_program};

/// Where a call runs: the governance repository, the agent's folder and the
/// folder the call runs in.
#[derive(Debug, Clone)]
pub struct CallSite {
    pub root: PathBuf,
    pub agent_dir: PathBuf,
    /// Absolute: Claude Code's `cwd`, or the agent's folder.
    pub cwd: PathBuf,
    /// The `PATH` programs are looked up on (the agent's, as the hook saw it).
    pub path_var: String,
}

impl CallSite {
    pub fn new(root: &Path, agent_dir: &Path, cwd: Option<&str>, path_var: Option<&str>) -> Self {
        let cwd = match cwd.map(str::trim).filter(|c| !c.is_empty()) {
            Some(c) if Path::new(c).is_absolute() => PathBuf::from(c),
            Some(c) => agent_dir.join(c),
            None => agent_dir.to_path_buf(),
        };
        CallSite {
            root: root.to_path_buf(),
            agent_dir: agent_dir.to_path_buf(),
            cwd,
            path_var: path_var.unwrap_or(DEFAULT_PATH).to_string(),
        }
    }

    /// A path as policies see it, and whether it is inside the agent folder.
    pub fn canonical(&self, raw: &str) -> (String, bool) {
        canonical_tool_path_from(&self.root, &self.agent_dir, &self.cwd, raw)
    }
}

/// The `PATH` used when the hook sent none.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The tools whose `command` is a shell command line.
pub const SHELL_TOOLS: &[&str] = &["Bash", "Monitor"];

/// The path-bearing fields of Claude Code's built-in tools (from the input
/// types of `@anthropic-ai/claude-agent-sdk` 0.3.332, `sdk-tools.d.ts`).
/// `Projects.path` names a document in a remote project, not a file; its
/// `local_path` is a file. Every tool is also checked on
/// [`GENERIC_PATH_FIELDS`].
pub const PATH_FIELDS: &[(&str, &[&str])] = &[
    ("Read", &["file_path"]),
    ("Write", &["file_path"]),
    ("Edit", &["file_path"]),
    ("NotebookEdit", &["notebook_path"]),
    ("Glob", &["path"]),
    ("Grep", &["path"]),
    ("Artifact", &["file_path", "out_dir", "file_paths"]),
    ("Projects", &["local_path"]),
    ("Workflow", &["scriptPath"]),
    ("EnterWorktree", &["path"]),
    ("ReadMcpResourceTool", &["uri"]),
    ("ReadMcpResourceDirTool", &["uri"]),
];

/// Fields read as paths for every tool, besides its own (MCP tools, tools
/// gov does not know yet, keys a tool does not document): a path there is
/// checked the same way.
const GENERIC_PATH_FIELDS: &[&str] = &[
    "file_path",
    "notebook_path",
    "path",
    "local_path",
    "out_dir",
    "file_paths",
    "scriptPath",
];

/// Tools that work on the folder they run in when given no path (a search,
/// a worktree, a shell command).
const CWD_WHEN_NO_PATH: &[&str] = &[
    "Glob",
    "Grep",
    "EnterWorktree",
    "Bash",
    "Monitor",
    "PowerShell",
];

/// A tool call reduced to Cedar questions.
#[derive(Debug, Clone)]
pub struct ToolQuestion {
    /// One per simple command of a shell line; otherwise exactly one.
    pub requests: Vec<CedarRequest>,
    /// The shell line, for shell tools.
    pub line: Option<ShellLine>,
}

impl ToolQuestion {
    /// Why this call may never be allowed without a person (empty: it may).
    pub fn not_reducible(&self) -> Vec<&'static str> {
        self.line
            .as_ref()
            .map(|l| l.dynamic.iter().map(|d| d.as_str()).collect())
            .unwrap_or_default()
    }
}

/// What a call brings besides its tool and input.
#[derive(Debug, Clone, Default)]
pub struct CallInfo<'a> {
    pub agent_id: &'a str,
    pub tool_name: &'a str,
    pub tool_input: Option<&'a Map<String, Value>>,
    /// Claude Code's subagent type, when a subagent makes the call.
    pub agent_type: Option<&'a str>,
}

/// Builds the questions. `agent` is the principal entity (with its group);
/// `listed` tells whether `entities.json` names an entity.
pub fn tool_question(
    site: &CallSite,
    call: &CallInfo<'_>,
    agent: EntityData,
    listed: impl Fn(&EntityRef) -> bool,
) -> ToolQuestion {
    let empty = Map::new();
    let input = call.tool_input.unwrap_or(&empty);
    let mut base = Map::new();
    let (cwd_shown, _) = site.canonical(&site.cwd.to_string_lossy());
    base.insert("cwd".into(), json!(cwd_shown));
    if let Some(t) = call.agent_type.filter(|t| !t.is_empty()) {
        base.insert("agent_type".into(), json!(t));
    }
    if let Some((path, inside)) = paths(site, call.tool_name, input) {
        base.insert("path".into(), json!(path));
        base.insert("inside_agent_dir".into(), json!(inside));
    }
    if let Some(c) = input.get("command").and_then(Value::as_str) {
        base.insert("command".into(), json!(c));
    }
    let url = input
        .get("url")
        .and_then(Value::as_str)
        .or_else(|| input.get("uri").and_then(Value::as_str))
        .filter(|u| !u.starts_with("file:"));
    if let Some(u) = url {
        base.insert("url".into(), json!(u));
    }
    let mut entities = vec![agent.clone()];
    let request = |context: Map<String, Value>, entities: Vec<EntityData>| CedarRequest {
        principal: agent.uid.clone(),
        action: "use_tool".into(),
        resource: EntityRef::new("Tool", call.tool_name),
        context,
        entities,
    };

    if let Some((server, tool)) = mcp_name(call.tool_name) {
        let tool_ref = EntityRef::new("Tool", call.tool_name);
        let server_ref = EntityRef::new("McpServer", server);
        let args_ref = EntityRef::new("McpArguments", call.tool_name);
        let is_listed = listed(&tool_ref) || listed(&server_ref);
        entities.push(EntityData {
            uid: tool_ref,
            attrs: Map::new(),
            parents: vec![server_ref],
            tags: Map::new(),
        });
        entities.push(EntityData {
            uid: args_ref.clone(),
            attrs: Map::new(),
            parents: vec![],
            tags: input
                .iter()
                .map(|(k, v)| (k.clone(), json!(tag_value(v))))
                .collect(),
        });
        let mut context = base;
        context.insert(
            "mcp".into(),
            json!({
                "server": server,
                "tool": tool,
                "listed": is_listed,
                "arguments": {"__entity": {"type": args_ref.kind, "id": args_ref.id}},
            }),
        );
        return ToolQuestion {
            requests: vec![request(context, entities)],
            line: None,
        };
    }

    if SHELL_TOOLS.contains(&call.tool_name) {
        if let Some(command) = input.get("command").and_then(Value::as_str) {
            let line = shell::parse(command);
            let line_ctx = line_context(site, &line);
            let mut requests = Vec::new();
            for cmd in &line.commands {
                let mut context = base.clone();
                context.insert("line".into(), line_ctx.clone());
                context.insert("shell".into(), command_context(site, cmd));
                requests.push(request(context, entities.clone()));
            }
            if requests.is_empty() {
                // Nothing runs (an empty line, only assignments, only
                // syntax gov does not read): one question about the line.
                let mut context = base;
                context.insert("line".into(), line_ctx);
                requests.push(request(context, entities));
            }
            return ToolQuestion {
                requests,
                line: Some(line),
            };
        }
    }
    ToolQuestion {
        requests: vec![request(base, entities)],
        line: None,
    }
}

/// `mcp__server__tool` → (`server`, `tool`).
pub fn mcp_name(tool_name: &str) -> Option<(&str, &str)> {
    let rest = tool_name.strip_prefix("mcp__")?;
    let (server, tool) = rest.split_once("__")?;
    (!server.is_empty() && !tool.is_empty()).then_some((server, tool))
}

/// An MCP argument as a tag: strings as they are, anything else as JSON.
fn tag_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Every path the call names, made canonical: the first one, and whether
/// all are inside the agent's folder. A path field that is not a string (or
/// a list of strings), or a glob that can leave its folder, counts as
/// outside.
fn paths(site: &CallSite, tool: &str, input: &Map<String, Value>) -> Option<(String, bool)> {
    // The tool's own fields first, then every generic one: a path key the
    // tool does not document may still be read by it, so it counts too.
    let own = PATH_FIELDS
        .iter()
        .find(|(t, _)| *t == tool)
        .map(|(_, f)| *f)
        .unwrap_or(&[]);
    let mut fields: Vec<&str> = own.to_vec();
    fields.extend(GENERIC_PATH_FIELDS.iter().filter(|f| !own.contains(f)));
    let mut first: Option<String> = None;
    let mut inside = true;
    let mut note = |path: String, ok: bool| {
        first.get_or_insert(path);
        inside &= ok;
    };
    let raw_path = |site: &CallSite, raw: &str, note: &mut dyn FnMut(String, bool)| {
        let (p, ok) = site.canonical(raw);
        note(p, ok);
    };
    let mut any = false;
    for key in fields {
        match input.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::String(raw)) if key == "uri" => {
                // An MCP resource: a `file:` URI names a file; other schemes
                // are not paths (they reach the policies as `url`).
                if let Some(p) = raw.strip_prefix("file://") {
                    any = true;
                    raw_path(site, p, &mut note);
                }
            }
            Some(Value::String(raw)) => {
                any = true;
                raw_path(site, raw, &mut note);
            }
            Some(Value::Array(items)) => {
                for item in items {
                    any = true;
                    match item.as_str() {
                        Some(raw) => raw_path(site, raw, &mut note),
                        None => note(item.to_string(), false),
                    }
                }
            }
            Some(other) => {
                any = true;
                note(other.to_string(), false);
            }
        }
    }
    if !any && CWD_WHEN_NO_PATH.contains(&tool) {
        let (p, ok) = site.canonical(&site.cwd.to_string_lossy());
        note(p, ok);
    }
    let glob_keys: &[&str] = if tool == "Glob" {
        &["pattern", "glob"]
    } else {
        &["glob"]
    };
    for key in glob_keys {
        match input.get(*key) {
            None | Some(Value::Null) => {}
            Some(Value::String(g)) if !glob_may_escape(g) => {}
            Some(other) => note(
                other
                    .as_str()
                    .map_or_else(|| other.to_string(), str::to_string),
                false,
            ),
        }
    }
    first.map(|p| (p, inside))
}

/// Whether a glob pattern can match outside the folder it is searched
/// from: absolute, from a home directory, or with a `..` component.
fn glob_may_escape(pattern: &str) -> bool {
    pattern.starts_with('/')
        || pattern.starts_with('~')
        || pattern.starts_with('\\')
        || pattern.split(['/', '\\']).any(|c| c == "..")
}

/// `context.line`: the whole command line.
fn line_context(site: &CallSite, line: &ShellLine) -> Value {
    let writes: Vec<String> = line
        .redirects()
        .filter(|r| r.writes && !is_stream(&r.target))
        .map(|r| redirect_target(site, &r.target).0)
        .collect();
    json!({
        "commands": line.commands.len() as i64,
        "joiners": line.joiners.iter().map(|j| j.as_str()).collect::<Vec<_>>(),
        "reducible": line.reducible(),
        "dynamic": line.dynamic.iter().map(|d| d.as_str()).collect::<Vec<_>>(),
        "writes": writes,
        "assignments": line.assignments,
    })
}

/// `/dev/null` and the standard streams: no file is written through them.
fn is_stream(target: &str) -> bool {
    matches!(target, "/dev/null" | "/dev/stdout" | "/dev/stderr")
}

/// A redirection target: the streams of [`is_stream`] are not files in
/// anyone's folder but are harmless, so they count as inside.
fn redirect_target(site: &CallSite, raw: &str) -> (String, bool) {
    if is_stream(raw) {
        return (raw.to_string(), true);
    }
    site.canonical(raw)
}

/// `context.shell`: one simple command.
fn command_context(site: &CallSite, cmd: &SimpleCommand) -> Value {
    let program_path = resolve_program(&cmd.program, &site.path_var, &site.cwd)
        .map(|p| site.canonical(&p.to_string_lossy()).0)
        .unwrap_or_default();
    json!({
        "program": cmd.program,
        "program_path": program_path,
        "args": cmd.args.join(" "),
        "arg1": cmd.args.first().cloned().unwrap_or_default(),
        "argc": cmd.args.len() as i64,
        "wrapper": cmd.is_wrapper(),
        "args_inside_agent_dir": cmd.args.iter().all(|a| arg_inside(site, a)),
        "redirects_inside_agent_dir": cmd.redirects.iter().all(|r| redirect_target(site, &r.target).1),
    })
}

/// Whether an argument, read as a path, stays inside the agent's folder.
/// Any argument may be a path to the program that reads it, so each is
/// checked: an option's value after `=`, or from its first `/`
/// (`-C/etc`), is checked too. Conservative: `https://…` is a relative path
/// `https:/…`, inside; `-I../x` is checked as `/x`, outside.
fn arg_inside(site: &CallSite, arg: &str) -> bool {
    if let Some(opt) = arg.strip_prefix('-') {
        let value = match opt.split_once('=') {
            Some((_, v)) => v,
            None => match opt.find(['/', '~']) {
                Some(i) => &opt[i..],
                None => return true,
            },
        };
        if value.is_empty() {
            return true;
        }
        return site.canonical(value).1;
    }
    site.canonical(arg).1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mcp_names_split_into_server_and_tool() {
        assert_eq!(
            mcp_name("mcp__github__get_issue"),
            Some(("github", "get_issue"))
        );
        assert_eq!(mcp_name("mcp__a__b__c"), Some(("a", "b__c")));
        assert_eq!(mcp_name("mcp__github"), None);
        assert_eq!(mcp_name("Read"), None);
    }

    fn call_site(cwd: Option<&str>) -> (tempfile::TempDir, CallSite) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("repo");
        let agent = root.join("agents/a");
        std::fs::create_dir_all(agent.join("workspace")).expect("mkdir");
        let site = CallSite::new(&root, &agent, cwd, Some(""));
        (tmp, site)
    }

    fn input(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn every_path_field_of_every_built_in_tool_is_canonical() {
        let (_tmp, site) = call_site(None);
        for (tool, fields) in PATH_FIELDS {
            for field in *fields {
                let (inside, outside) = if *field == "uri" {
                    (
                        "file://workspace/x".to_string(),
                        "file:///etc/passwd".to_string(),
                    )
                } else {
                    (
                        "workspace/../workspace/x".to_string(),
                        "../../../etc/passwd".to_string(),
                    )
                };
                let wrap = |v: &str| {
                    if *field == "file_paths" {
                        json!([v])
                    } else {
                        json!(v)
                    }
                };
                let got = paths(&site, tool, &input(json!({ *field: wrap(&inside) })));
                assert_eq!(
                    got,
                    Some(("agents/a/workspace/x".to_string(), true)),
                    "{tool}.{field}"
                );
                let got = paths(&site, tool, &input(json!({ *field: wrap(&outside) })));
                assert!(
                    got.as_ref().is_some_and(|(_, ok)| !ok),
                    "{tool}.{field}: {got:?}"
                );
                // Not a string: outside.
                let got = paths(&site, tool, &input(json!({ *field: 7 })));
                assert!(got.is_some_and(|(_, ok)| !ok), "{tool}.{field}");
            }
        }
        // Every item of a list counts.
        let got = paths(
            &site,
            "Artifact",
            &input(json!({"file_paths": ["workspace/a", "/etc/passwd"]})),
        );
        assert_eq!(got, Some(("agents/a/workspace/a".to_string(), false)));
        // Any path key counts, also one the tool does not document
        // (`Projects.path` names a remote document; an absolute one is
        // still read as outside, to be safe).
        assert_eq!(
            paths(&site, "Projects", &input(json!({"path": "/x"}))),
            Some(("/x".to_string(), false))
        );
        assert_eq!(
            paths(
                &site,
                "Read",
                &input(json!({"file_path": "a", "notebook_path": "/etc/passwd"}))
            ),
            Some(("agents/a/a".to_string(), false))
        );
        // A non-file resource URI is no path.
        assert_eq!(
            paths(
                &site,
                "ReadMcpResourceTool",
                &input(json!({"uri": "docs://a"}))
            ),
            None
        );
    }

    #[test]
    fn a_call_without_a_path_means_the_folder_it_runs_in() {
        let (_tmp, site) = call_site(Some("workspace"));
        for tool in ["Glob", "Grep", "Bash", "EnterWorktree"] {
            assert_eq!(
                paths(&site, tool, &input(json!({"pattern": "*.rs"}))),
                Some(("agents/a/workspace".to_string(), true)),
                "{tool}"
            );
        }
        assert_eq!(paths(&site, "Read", &input(json!({}))), None);
        // Relative paths start from the call's cwd: `/` + `etc/passwd`.
        let (_tmp, root_site) = call_site(Some("/"));
        assert_eq!(
            paths(
                &root_site,
                "Read",
                &input(json!({"file_path": "etc/passwd"}))
            ),
            Some(("/etc/passwd".to_string(), false))
        );
        assert_eq!(
            paths(&root_site, "Grep", &input(json!({"pattern": "x"}))),
            Some(("/".to_string(), false))
        );
    }

    #[test]
    fn shell_lines_ask_one_question_per_command_and_mcp_calls_carry_their_arguments() {
        let (_tmp, site) = call_site(None);
        let agent = EntityData {
            uid: EntityRef::new("Agent", "a"),
            attrs: Map::new(),
            parents: vec![],
            tags: Map::new(),
        };
        let bash = input(json!({"command": "git status && ls -la /etc > out.txt"}));
        let q = tool_question(
            &site,
            &CallInfo {
                agent_id: "a",
                tool_name: "Bash",
                tool_input: Some(&bash),
                agent_type: Some("Explore"),
            },
            agent.clone(),
            |_| false,
        );
        assert_eq!(q.requests.len(), 2);
        assert!(q.not_reducible().is_empty());
        let first = &q.requests[0].context;
        assert_eq!(first["shell"]["program"], "git");
        assert_eq!(first["shell"]["arg1"], "status");
        assert_eq!(first["shell"]["args_inside_agent_dir"], true);
        assert_eq!(first["line"]["joiners"], json!(["and"]));
        assert_eq!(first["agent_type"], "Explore");
        assert_eq!(first["path"], "agents/a");
        let second = &q.requests[1].context;
        assert_eq!(second["shell"]["args"], "-la /etc");
        assert_eq!(second["shell"]["args_inside_agent_dir"], false);
        assert_eq!(second["line"]["writes"], json!(["agents/a/out.txt"]));

        let args = input(json!({"query": "q", "limit": 5}));
        let q = tool_question(
            &site,
            &CallInfo {
                agent_id: "a",
                tool_name: "mcp__docs__search",
                tool_input: Some(&args),
                agent_type: None,
            },
            agent,
            |e| e.kind == "McpServer" && e.id == "docs",
        );
        let r = &q.requests[0];
        assert_eq!(r.context["mcp"]["server"], "docs");
        assert_eq!(r.context["mcp"]["tool"], "search");
        assert_eq!(r.context["mcp"]["listed"], true);
        let tags = &r
            .entities
            .iter()
            .find(|e| e.uid.kind == "McpArguments")
            .expect("arguments")
            .tags;
        assert_eq!(tags["query"], "q");
        assert_eq!(tags["limit"], "5");
        assert!(r
            .entities
            .iter()
            .any(|e| e.uid.id == "mcp__docs__search" && e.parents[0].id == "docs"));
    }

    #[test]
    fn every_built_in_tool_with_paths_is_in_the_table() {
        for (tool, fields) in PATH_FIELDS {
            assert!(!fields.is_empty(), "{tool}");
        }
        assert!(glob_may_escape("../*"));
        assert!(glob_may_escape("/etc/*"));
        assert!(!glob_may_escape("src/**/*.rs"));
    }
}
